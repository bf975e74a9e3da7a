"""Small builders for Grafana 10 dashboard JSON (the dashboards themselves are in dashboards.py).

Every panel gets a unit, thresholds and a description; every query goes to the datasource chosen
by the ``DS_PROMETHEUS`` variable, so the same JSON works when provisioned and when imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]
DATASOURCE: Json = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
GRID_WIDTH = 24


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL target and its legend."""

    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True, slots=True)
class Panel:
    """A panel before layout: ``width`` of the 24 columns, ``height`` in grid rows."""

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str
    kind: str = "timeseries"  # timeseries | stat | bargauge
    thresholds: tuple[tuple[str, float | None], ...] = (("green", None),)
    width: int = 12
    height: int = 8
    decimals: int | None = None
    overrides: tuple[Json, ...] = field(default=())


def threshold_steps(*steps: tuple[str, float | None]) -> tuple[tuple[str, float | None], ...]:
    """Colour steps, lowest first; the first step's value is None (the base colour)."""
    return steps


def _target(query: Query, ref: str) -> Json:
    target: Json = {
        "datasource": DATASOURCE,
        "expr": query.expr,
        "legendFormat": query.legend or "__auto",
        "range": not query.instant,
        "instant": query.instant,
        "refId": ref,
    }
    return target


def _field_defaults(panel: Panel) -> Json:
    defaults: Json = {
        "unit": panel.unit,
        "min": 0,
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": color, "value": value} for color, value in panel.thresholds],
        },
        "color": {"mode": "thresholds" if panel.kind != "timeseries" else "palette-classic"},
    }
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "thresholdsStyle": {"mode": "line" if len(panel.thresholds) > 1 else "off"},
        }
    return defaults


def _options(panel: Panel) -> Json:
    if panel.kind == "stat":
        return {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        }
    if panel.kind == "bargauge":
        return {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "displayMode": "gradient",
            "orientation": "horizontal",
            "showUnfilled": True,
        }
    return {
        "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> Json:
    refs = "ABCDEFGHIJ"
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": [_target(q, refs[i]) for i, q in enumerate(panel.queries)],
        "fieldConfig": {"defaults": _field_defaults(panel), "overrides": list(panel.overrides)},
        "options": _options(panel),
    }


def _row_json(title: str, panel_id: int, y: int) -> Json:
    return {
        "id": panel_id,
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
        "panels": [],
    }


def layout(rows: list[tuple[str, list[Panel]]]) -> list[Json]:
    """Place rows of panels left to right, wrapping at 24 columns; ids are stable by position."""
    placed: list[Json] = []
    y = 0
    for title, panels in rows:
        placed.append(_row_json(title, len(placed) + 1, y))
        y += 1
        x, row_height = 0, 0
        for panel in panels:
            if x + panel.width > GRID_WIDTH:
                x, y, row_height = 0, y + row_height, 0
            placed.append(_panel_json(panel, len(placed) + 1, x, y))
            x += panel.width
            row_height = max(row_height, panel.height)
        y += row_height
    return placed


def datasource_variable() -> Json:
    return {
        "name": "DS_PROMETHEUS",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def query_variable(name: str, label: str, metric: str, description: str) -> Json:
    """A multi-value variable from ``label_values(metric, name)``; "All" matches a missing label."""
    return {
        "name": name,
        "label": label,
        "description": description,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": f"label_values({metric}, {name})",
        "query": {"query": f"label_values({metric}, {name})", "refId": f"{name}-values"},
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "refresh": 2,
        "sort": 1,
        "hide": 0,
        "options": [],
        "regex": "",
    }


def dashboard(
    uid: str, title: str, description: str, variables: list[Json], panels: list[Json]
) -> Json:
    """A whole dashboard, Grafana 10 schema, refreshing every 10 s over the last hour."""
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["coupon-issuer"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [],
        "annotations": {"list": []},
        "templating": {"list": [datasource_variable(), *variables]},
        "panels": panels,
    }
