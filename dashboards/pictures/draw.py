"""One dashboard to one PNG: Grafana's grid, dark theme, and its three panel types.

Rows and panels sit where their ``gridPos`` puts them (24 columns, 30 px row units). Time series
get their unit on the y axis, dashed threshold lines (``thresholdsStyle`` "line"), and the legend
table the dashboards ask for (name from ``legendFormat``, last and max); a stat shows each
series' last value on the colour of its threshold step with its sparkline; a bar gauge draws
each series' last value as a bar. A panel none of whose queries returned a series with data is
drawn as "No data" and named in :class:`EmptyPanelsError` once the picture is written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator, MultipleLocator

from dashboards.pictures.grafana import (
    CLASSIC_PALETTE,
    GRID_CELL_HEIGHT,
    GRID_CELL_MARGIN,
    GRID_COLUMNS,
    Series,
    duration,
    expand,
    format_value,
    interval_ms,
    legend,
    rate_interval_ms,
    step_seconds,
    threshold_colour,
)

# expression, start, end, step (Unix seconds) -> the series Prometheus' query_range answered
Fetch = Callable[[str, float, float, float], list[Series]]

BACKGROUND, PANEL, BORDER, TEXT, WEAK, GRID = (
    "#111217",
    "#181B1F",
    "#2A2D33",
    "#CCCCDC",
    "#8E8E99",
    "#2C3235",
)
WIDTH_PX, PAD_PX, HEADER_PX, DPI = 1600, 16, 64, 100
TITLE_PX, LEGEND_ROW_PX = 26, 15


@dataclass
class PanelResult:
    """What one panel asked and drew: its title, the queries as sent, the series with data."""

    title: str
    queries: list[str]
    series: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.series


class EmptyPanelsError(AssertionError):
    """Panels whose queries returned no series with data (the picture was still written)."""

    def __init__(self, dashboard: str, panels: Sequence[PanelResult]) -> None:
        self.panels = list(panels)
        lines = [f"  {p.title!r}: {' | '.join(p.queries)}" for p in panels]
        super().__init__(f"{dashboard}: panels without data:\n" + "\n".join(lines))


@dataclass
class _Canvas:
    figure: Figure
    height_px: float

    def rect(self, x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        """Pixel box (from the top left) in figure fractions (from the bottom left)."""
        return (x / WIDTH_PX, 1 - (y + h) / self.height_px, w / WIDTH_PX, h / self.height_px)

    def text(self, x: float, y: float, s: str, **kw: Any) -> None:
        self.figure.text(x / WIDTH_PX, 1 - y / self.height_px, s, **kw)

    def box(self, x: float, y: float, w: float, h: float, colour: str, edge: str = BORDER) -> None:
        left, bottom, width, height = self.rect(x, y, w, h)
        self.figure.add_artist(
            Rectangle(
                (left, bottom),
                width,
                height,
                transform=self.figure.transFigure,
                facecolor=colour,
                edgecolor=edge,
                linewidth=0.8,
                zorder=-1,  # figure artists draw over axes unless below them
            )
        )


def variable_values(board: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(values substituted in queries, texts shown in the header) of the dashboard's variables
    as saved: "All" is the variable's ``allValue`` (``.*``), the datasource is "Prometheus"."""
    values: dict[str, str] = {}
    shown: dict[str, str] = {}
    for variable in board.get("templating", {}).get("list", []):
        name, label = variable["name"], variable.get("label") or variable["name"]
        if variable.get("type") == "datasource":
            values[name], shown[label] = "Prometheus", "Prometheus"
            continue
        current = variable.get("current", {}).get("value")
        picked = current[0] if isinstance(current, list) and current else current
        if picked == "$__all":
            values[name], shown[label] = str(variable.get("allValue") or ".*"), "All"
        else:
            values[name], shown[label] = str(picked), str(picked)
    return values, shown


def render_dashboard(
    board: Mapping[str, Any],
    fetch: Fetch,
    start: float,
    end: float,
    out: Path,
    *,
    scrape_interval_ms: int,
) -> list[PanelResult]:
    """Draw ``board`` over [start, end] into ``out`` (PNG); raise EmptyPanelsError after writing
    it when a panel had no data. ``scrape_interval_ms`` is the datasource's scrape interval."""
    panels = board["panels"]
    bottom_units = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_px = GRID_CELL_HEIGHT + GRID_CELL_MARGIN
    height_px = HEADER_PX + bottom_units * unit_px + PAD_PX
    figure = plt.figure(figsize=(WIDTH_PX / DPI, height_px / DPI), dpi=DPI, facecolor=BACKGROUND)
    canvas = _Canvas(figure, height_px)
    values, shown = variable_values(board)
    _header(canvas, str(board["title"]), shown, start, end)
    column_px = (WIDTH_PX - 2 * PAD_PX + GRID_CELL_MARGIN) / GRID_COLUMNS
    results = []
    try:
        for panel in panels:
            g = panel["gridPos"]
            x = PAD_PX + g["x"] * column_px
            y = HEADER_PX + g["y"] * unit_px
            w = g["w"] * column_px - GRID_CELL_MARGIN
            h = g["h"] * GRID_CELL_HEIGHT + (g["h"] - 1) * GRID_CELL_MARGIN
            if panel["type"] == "row":
                canvas.text(x, y + 20, f"⌄  {panel['title']}", color=TEXT, fontsize=11)
                continue
            queried = _query_panel(panel, fetch, start, end, w, values, scrape_interval_ms)
            results.append(queried.result)
            _draw_panel(canvas, panel, queried, (x, y, w, h), start, end)
        figure.savefig(out, facecolor=BACKGROUND)
    finally:
        plt.close(figure)
    empty = [r for r in results if r.empty]
    if empty:
        raise EmptyPanelsError(str(board["title"]), empty)
    return results


def _header(
    canvas: _Canvas, title: str, shown: Mapping[str, str], start: float, end: float
) -> None:
    canvas.text(PAD_PX, 26, title, color=TEXT, fontsize=15, weight="bold")
    bar = "    ".join(f"{label}: {value}" for label, value in shown.items())
    canvas.text(PAD_PX, 50, bar, color=WEAK, fontsize=9)
    first = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M:%S")
    last = datetime.fromtimestamp(end, UTC).strftime("%H:%M:%S UTC")
    canvas.text(WIDTH_PX - PAD_PX, 26, f"{first} to {last}", color=WEAK, fontsize=9, ha="right")


@dataclass
class _Queried:
    result: PanelResult
    named: list[tuple[str, Series]]  # display name, series (with data), in query order


def _query_panel(
    panel: Mapping[str, Any],
    fetch: Fetch,
    start: float,
    end: float,
    width_px: float,
    values: Mapping[str, str],
    scrape_interval_ms: int,
) -> _Queried:
    """Each target's expression with Grafana's interval variables for this panel's width."""
    interval = interval_ms((end - start) * 1000, int(width_px), scrape_interval_ms)
    step = step_seconds(end - start, interval)
    variables = {
        **values,
        "__interval": duration(interval),
        "__interval_ms": str(interval),
        "__rate_interval": duration(rate_interval_ms(interval, scrape_interval_ms)),
    }
    # query_range evaluates at start + k*step; Grafana aligns the range to the step
    aligned_start, aligned_end = math.floor(start / step) * step, math.floor(end / step) * step
    result = PanelResult(str(panel["title"]), [])
    named = []
    for target in panel.get("targets", []):
        expression = expand(target["expr"], variables)
        result.queries.append(expression)
        for series in fetch(expression, aligned_start, aligned_end, step):
            if series.has_data:
                name = legend(target.get("legendFormat", ""), series.labels, expression)
                named.append((name, series))
                result.series.append(name)
    return _Queried(result, named)


def _draw_panel(
    canvas: _Canvas,
    panel: Mapping[str, Any],
    queried: _Queried,
    box: tuple[float, float, float, float],
    start: float,
    end: float,
) -> None:
    x, y, w, h = box
    canvas.box(x, y, w, h, PANEL)
    canvas.text(x + 8, y + 17, str(panel["title"]), color=TEXT, fontsize=9.5, weight="bold")
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit = str(defaults.get("unit", "short"))
    steps = defaults.get("thresholds", {}).get("steps", [])
    inner = (x + 1, y + TITLE_PX, w - 2, h - TITLE_PX - 1)
    if not queried.named:
        ix, iy, iw, ih = inner
        canvas.text(ix + iw / 2, iy + ih / 2, "No data", color=WEAK, fontsize=12, ha="center")
    elif panel["type"] == "stat":
        _stat(canvas, queried.named, inner, unit, steps)
    elif panel["type"] == "bargauge":
        _bargauge(canvas, queried.named, inner, unit, steps)
    else:
        custom = defaults.get("custom", {})
        lines = custom.get("thresholdsStyle", {}).get("mode") == "line"
        _timeseries(canvas, queried.named, inner, unit, steps if lines else [], (start, end))


def _last(series: Series) -> float:
    """Grafana's ``lastNotNull``: the newest value that is a number."""
    return next((v for v in reversed(series.values) if not math.isnan(v)), math.nan)


def _finite(values: Sequence[float]) -> list[float]:
    return [v if math.isfinite(v) else math.nan for v in values]


def _timeseries(
    canvas: _Canvas,
    named: Sequence[tuple[str, Series]],
    box: tuple[float, float, float, float],
    unit: str,
    steps: Sequence[Mapping[str, Any]],
    span: tuple[float, float],
) -> None:
    x, y, w, h = box
    rows = min(len(named), max(1, int(h * 0.4 / LEGEND_ROW_PX) - 1))
    legend_px = (rows + 1) * LEGEND_ROW_PX + 4
    ax = canvas.figure.add_axes(canvas.rect(x + 62, y + 4, w - 74, h - legend_px - 26))
    _style(ax, unit)
    top = 0.0
    for i, (_, series) in enumerate(named):
        colour = CLASSIC_PALETTE[i % len(CLASSIC_PALETTE)]
        times = [_day(t) for t in series.times]
        values = _finite(series.values)
        ax.plot(times, values, color=colour, linewidth=1)
        ax.fill_between(times, values, color=colour, alpha=0.1, linewidth=0)
        top = max([top, *(v for v in values if not math.isnan(v))])
    top = top * 1.08 if top > 0 else 1.0
    for step in steps[1:]:
        limit = step.get("value")
        if isinstance(limit, int | float) and limit <= top:
            ax.axhline(limit, color=threshold_colour(limit, steps), linestyle="--", linewidth=1)
    ax.set_ylim(0, top)
    if unit == "s" and top > 60:  # durations tick at whole minutes or hours, as Grafana's do
        ax.yaxis.set_major_locator(MultipleLocator(_time_step(top)))
    ax.set_xlim(_day(span[0]), _day(span[1]))
    _legend_table(canvas, named[:rows], (x + 8, y + h - legend_px, w - 16), unit, len(named))


def _time_step(top_s: float) -> float:
    """The smallest of 1, 2, 5, 10, 15, 30 minutes, 1, 2, 6 hours giving at most 5 ticks."""
    steps = (60, 120, 300, 600, 900, 1800, 3600, 7200, 21600)
    return next((s for s in steps if top_s / s <= 5), steps[-1])


def _day(unix_s: float) -> float:
    """Unix seconds as matplotlib's date number (days since its 1970 epoch)."""
    return unix_s / 86400


def _style(ax: Axes, unit: str) -> None:
    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(colors=WEAK, labelsize=7, length=0)
    ax.tick_params(axis="x", pad=7)  # clear of the y axis' lowest label
    ax.grid(color=GRID, linewidth=0.6)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10], min_n_ticks=2))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_value(v, unit)))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6))


def _legend_table(
    canvas: _Canvas,
    named: Sequence[tuple[str, Series]],
    at: tuple[float, float, float],
    unit: str,
    total: int,
) -> None:
    """Grafana's table legend: name, then the "Last *" and "Max" columns."""
    x, y, w = at
    small = {"fontsize": 7.5}
    more = f"  (+{total - len(named)} more)" if total > len(named) else ""
    canvas.text(x + 14, y + 11, f"Name{more}", color=WEAK, **small)
    canvas.text(x + w - 90, y + 11, "Last *", color=WEAK, ha="right", **small)
    canvas.text(x + w, y + 11, "Max", color=WEAK, ha="right", **small)
    for i, (name, series) in enumerate(named, start=1):
        row_y = y + 11 + i * LEGEND_ROW_PX
        colour = CLASSIC_PALETTE[(i - 1) % len(CLASSIC_PALETTE)]
        canvas.box(x, row_y - 5, 9, 2.5, colour, edge=colour)
        shown = name if len(name) <= int(w / 6.2) - 30 else name[: int(w / 6.2) - 31] + "…"
        canvas.text(x + 14, row_y, shown, color=TEXT, **small)
        peak = max((v for v in series.values if not math.isnan(v)), default=math.nan)
        canvas.text(
            x + w - 90, row_y, format_value(_last(series), unit), color=TEXT, ha="right", **small
        )
        canvas.text(x + w, row_y, format_value(peak, unit), color=TEXT, ha="right", **small)


def _stat(
    canvas: _Canvas,
    named: Sequence[tuple[str, Series]],
    box: tuple[float, float, float, float],
    unit: str,
    steps: Sequence[Mapping[str, Any]],
) -> None:
    """Each series' last value on its threshold colour, its sparkline behind (graph mode area)."""
    x, y, w, h = box
    cell = w / len(named)
    for i, (name, series) in enumerate(named):
        value = _last(series)
        colour = threshold_colour(value, steps)
        cx = x + i * cell
        canvas.box(cx + 2, y, cell - 4, h - 2, colour, edge=colour)
        spark = canvas.figure.add_axes(canvas.rect(cx + 2, y + h * 0.55, cell - 4, h * 0.45 - 2))
        spark.set_axis_off()
        values = _finite(series.values)
        spark.fill_between(series.times, values, color="white", alpha=0.18, linewidth=0)
        spark.plot(series.times, values, color="white", alpha=0.5, linewidth=1)
        finite = [v for v in values if not math.isnan(v)]
        spark.set_ylim(0, max([*finite, 0.0]) * 1.05 or 1.0)
        # a character is about 0.85 pt wide per pt of font size at this DPI: fit the cell
        size = min(28.0, h / 3.2, cell * 0.85 / max(4, len(format_value(value, unit))))
        centre_y = y + h * 0.46
        if len(named) > 1:
            canvas.text(cx + cell / 2, y + h * 0.2, name, color="white", fontsize=8, ha="center")
            centre_y = y + h * 0.56
        canvas.text(
            cx + cell / 2,
            centre_y,
            format_value(value, unit),
            color="white",
            fontsize=size,
            weight="bold",
            ha="center",
            va="center",
        )


def _bargauge(
    canvas: _Canvas,
    named: Sequence[tuple[str, Series]],
    box: tuple[float, float, float, float],
    unit: str,
    steps: Sequence[Mapping[str, Any]],
) -> None:
    """Horizontal gradient bars of the last values, scaled to the largest one."""
    x, y, w, h = box
    lasts = [_last(s) for _, s in named]
    top = max([v for v in lasts if math.isfinite(v)] + [0.0]) or 1.0
    row = min(40.0, (h - 8) / len(named))
    for i, ((name, _), value) in enumerate(zip(named, lasts, strict=True)):
        ry = y + 4 + i * row
        colour = threshold_colour(value, steps)
        canvas.text(x + 8, ry + row * 0.38, name, color=TEXT, fontsize=7.5)
        bar_w = w - 110
        canvas.box(x + 8, ry + row * 0.45, bar_w, row * 0.45, "#22252B", edge="#22252B")
        filled = bar_w * (value / top if math.isfinite(value) and value > 0 else 0)
        if filled > 0:
            canvas.box(x + 8, ry + row * 0.45, filled, row * 0.45, colour, edge=colour)
        canvas.text(
            x + w - 8,
            ry + row * 0.8,
            format_value(value, unit),
            color=colour,
            fontsize=9,
            ha="right",
            weight="bold",
        )
