"""What every coupon-issuer dashboard shares: the datasource, the variables, panel defaults.

Every panel gets a unit, thresholds and a description; every query goes to the datasource chosen by
the ``DS_PROMETHEUS`` variable, so the same JSON works when provisioned and when imported.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Protocol, Self, TypeVar

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants
from grafana_foundation_sdk.models import common, dashboard

DATASOURCE = common.DataSourceRef(type_val="prometheus", uid="${DS_PROMETHEUS}")
RATE = "$__rate_interval"
NS = 'namespace=~"$namespace"'
LAG = 'namespace=~"$namespace", group=~"$group", topic=~"$topic"'
# The JSON declares the schema of Grafana 10.3/10.4, which it conforms to: Grafana 10 and 11 load
# it as is and newer versions migrate it on load (the SDK's default, 42, is newer than Grafana 10).
SCHEMA_VERSION = 39

Steps = Sequence[tuple[str, float | None]]
GOOD: Steps = (("green", None),)


def query(expr: str, legend: str = "") -> prometheus.Dataquery:
    """A PromQL range query on the selected datasource; an empty legend lets Grafana name series."""
    return (
        prometheus.Dataquery()
        .datasource(DATASOURCE)
        .expr(expr)
        .legend_format(legend or "__auto")
        .range()
    )


def rate_by(metric: str, by: str, selector: str, legend: str = "") -> prometheus.Dataquery:
    """A counter's per-second rate summed by one label; each series named by it by default."""
    return query(f"sum by ({by}) (rate({metric}{{{selector}}}[{RATE}]))", legend or f"{{{{{by}}}}}")


def quantiles(metric: str, selector: str, by: str = "") -> list[prometheus.Dataquery]:
    """p50, p95 and p99 of a histogram, summed over every series of ``selector``."""
    grouping = f"le{', ' + by if by else ''}"
    return [
        query(
            f"histogram_quantile({q}, sum by ({grouping}) (rate({metric}_bucket{{{selector}}}[{RATE}])))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def thresholds(steps: Steps) -> dashboard_builder.ThresholdsConfig:
    """Absolute colour steps, lowest first; the first step's value is None (the base colour)."""
    return (
        dashboard_builder.ThresholdsConfig()
        .mode(dashboard.ThresholdsMode.ABSOLUTE)
        .steps([dashboard.Threshold(value=value, color=color) for color, value in steps])
    )


class _PanelBuilder(Protocol):
    """What the SDK's panel builders (stat, timeseries, bargauge...) have in common."""

    def title(self, title: str) -> Self: ...
    def description(self, description: str) -> Self: ...
    def datasource(self, datasource: common.DataSourceRef) -> Self: ...
    def targets(self, targets: list[cogbuilder.Builder[variants.Dataquery]]) -> Self: ...
    def unit(self, unit: str) -> Self: ...
    def min(self, min_val: float) -> Self: ...
    def thresholds(self, thresholds: cogbuilder.Builder[dashboard.ThresholdsConfig]) -> Self: ...
    def color_scheme(self, color: cogbuilder.Builder[dashboard.FieldColor]) -> Self: ...
    def span(self, w: int) -> Self: ...
    def height(self, h: int) -> Self: ...


P = TypeVar("P", bound=_PanelBuilder)


def _panel(
    panel: P,
    title: str,
    description: str,
    unit: str,
    queries: Sequence[prometheus.Dataquery],
    steps: Steps,
    colour: dashboard.FieldColorModeId,
    size: tuple[int, int],
) -> P:
    """What every panel sets: text, queries A, B, C... on the datasource, unit, colours, size."""
    width, height = size
    return (
        panel.title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets([q.ref_id(ref) for ref, q in zip(string.ascii_uppercase, queries, strict=False)])
        .unit(unit)
        .min(0)
        .thresholds(thresholds(steps))
        .color_scheme(dashboard_builder.FieldColor().mode(colour))
        .span(width)
        .height(height)
    )


def _last_value() -> common_builder.ReduceDataOptions:
    return common_builder.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)


def stat_panel(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[prometheus.Dataquery],
    steps: Steps = GOOD,
) -> stat.Panel:
    """A headline number (6 columns by 5 rows) on a background coloured by its thresholds."""
    colour = dashboard.FieldColorModeId.THRESHOLDS
    return (
        _panel(stat.Panel(), title, description, unit, queries, steps, colour, (6, 5))
        .reduce_options(_last_value())
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.AREA)
        .justify_mode(common.BigValueJustifyMode.AUTO)
        .orientation(common.VizOrientation.AUTO)
        .text_mode(common.BigValueTextMode.AUTO)
    )


def timeseries_panel(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[prometheus.Dataquery],
    steps: Steps = GOOD,
    width: int = 12,
) -> timeseries.Panel:
    """Lines over time (8 rows high); thresholds above the base colour are drawn as lines."""
    colour = dashboard.FieldColorModeId.PALETTE_CLASSIC
    threshold_lines = (
        common.GraphThresholdsStyleMode.LINE
        if len(steps) > 1
        else common.GraphThresholdsStyleMode.OFF
    )
    return (
        _panel(timeseries.Panel(), title, description, unit, queries, steps, colour, (width, 8))
        .draw_style(common.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .span_nulls(False)
        .thresholds_style(common_builder.GraphThresholdsStyleConfig().mode(threshold_lines))
        .legend(
            common_builder.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(
            common_builder.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )


def bargauge_panel(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[prometheus.Dataquery],
    steps: Steps = GOOD,
) -> bargauge.Panel:
    """Horizontal bars of each series' last value (12 columns by 8 rows)."""
    colour = dashboard.FieldColorModeId.THRESHOLDS
    return (
        _panel(bargauge.Panel(), title, description, unit, queries, steps, colour, (12, 8))
        .reduce_options(_last_value())
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .orientation(common.VizOrientation.HORIZONTAL)
        .show_unfilled(True)
    )


def _query_variable(
    name: str, label: str, metric: str, description: str
) -> dashboard_builder.QueryVariable:
    """A multi-value variable from ``label_values(metric, name)``; "All" matches a missing label."""
    values = f"label_values({metric}, {name})"
    return (
        dashboard_builder.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DATASOURCE)
        .definition(values)
        .query({"query": values, "refId": f"{name}-values"})
        .include_all(True)
        .all_value(".*")
        .multi(True)
        .current(dashboard.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
        .hide(dashboard.VariableHide.DONT_HIDE)
        .options([])
        .regex("")
    )


def variables() -> list[cogbuilder.Builder[dashboard.VariableModel]]:
    """The datasource, then namespace, consumer group and topic, each narrowing the next."""
    return [
        dashboard_builder.DatasourceVariable("DS_PROMETHEUS")
        .label("Prometheus")
        .type("prometheus")
        .hide(dashboard.VariableHide.DONT_HIDE)
        .regex(""),
        _query_variable(
            "namespace",
            "Namespace",
            "coupon_api_issue_requests_total",
            "Kubernetes namespace (added by the Prometheus Operator); All also matches none.",
        ),
        _query_variable(
            "group",
            "Consumer group",
            f"coupon_consumer_lag_messages{{{NS}}}",
            "Consumer group of the issue workers, as reported by the lag exporter.",
        ),
        _query_variable(
            "topic",
            "Topic",
            f'coupon_consumer_lag_messages{{{NS}, group=~"$group"}}',
            "Request topic, as reported by the lag exporter.",
        ),
    ]


Panel = stat.Panel | timeseries.Panel | bargauge.Panel


def new_dashboard(
    uid: str, title: str, description: str, rows: Sequence[tuple[str, Sequence[Panel]]]
) -> dashboard_builder.Dashboard:
    """Rows of panels, laid out left to right by the builder; ids are stable by position."""
    board = (
        dashboard_builder.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["coupon-issuer"])
        .editable()
        .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
        .version(1)
        .refresh("10s")
        .time("now-1h", "now")
        .timezone("browser")
        .live_now(False)
        .links([])
        .annotations([])
        .variables(variables())
    )
    panel_id = 0
    for row_title, panels in rows:
        panel_id += 1
        board = board.with_row(dashboard_builder.Row(row_title).id(panel_id))
        for panel in panels:
            panel_id += 1
            board = board.with_panel(panel.id(panel_id))
    return board
