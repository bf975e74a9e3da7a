"""One dashboard to one PNG: Grafana's grid, each panel's queries as Grafana sends them.

Rows and panels sit where their ``gridPos`` puts them (24 columns, 30 px row units, 1600 px wide);
``panels.py`` draws each panel. A panel none of whose queries returned a series with data is drawn
as "No data" and named in :class:`EmptyPanelsError` once the picture is written.
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
import matplotlib.pyplot as plt

from dashboards.pictures.grafana import (
    GRID_CELL_HEIGHT,
    GRID_CELL_MARGIN,
    GRID_COLUMNS,
    Series,
    duration,
    expand,
    interval_ms,
    legend,
    rate_interval_ms,
    step_seconds,
)
from dashboards.pictures.panels import (
    BACKGROUND,
    DPI,
    HEADER_PX,
    PAD_PX,
    PANEL,
    TEXT,
    TITLE_PX,
    WEAK,
    WIDTH_PX,
    Canvas,
    Drawn,
    bargauge,
    stat,
    timeseries,
)

# expression, start, end, step (Unix seconds) -> the series Prometheus' query_range answered
Fetch = Callable[[str, float, float, float], list[Series]]


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
    canvas = Canvas(figure, height_px)
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


def _header(canvas: Canvas, title: str, shown: Mapping[str, str], start: float, end: float) -> None:
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
    canvas: Canvas,
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
    drawn = Drawn(queried.named, inner, unit, steps)
    if not queried.named:
        ix, iy, iw, ih = inner
        canvas.text(ix + iw / 2, iy + ih / 2, "No data", color=WEAK, fontsize=12, ha="center")
    elif panel["type"] == "stat":
        stat(canvas, drawn)
    elif panel["type"] == "bargauge":
        bargauge(canvas, drawn)
    else:
        style = defaults.get("custom", {}).get("thresholdsStyle", {})
        timeseries(canvas, drawn, (start, end), lines=style.get("mode") == "line")
