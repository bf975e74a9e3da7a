"""The three panel types our dashboards use, drawn as Grafana draws them (dark theme).

A time series gets its unit on the y axis, dashed threshold lines (``thresholdsStyle`` "line") and
the legend table the dashboards ask for (name from ``legendFormat``, Last * and Max); a stat shows
each series' last value on the colour of its threshold step with its sparkline; a bar gauge draws
each series' last value as a bar. Boxes are in pixels from the picture's top left (:class:`Canvas`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import matplotlib.dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator, MultipleLocator

from dashboards.pictures.grafana import (
    CLASSIC_PALETTE,
    Series,
    format_value,
    threshold_colour,
)

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
class Canvas:
    """The picture, addressed in pixels from its top left."""

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


def _last(series: Series) -> float:
    """Grafana's ``lastNotNull``: the newest value that is a number."""
    return next((v for v in reversed(series.values) if not math.isnan(v)), math.nan)


def _finite(values: Sequence[float]) -> list[float]:
    return [v if math.isfinite(v) else math.nan for v in values]


@dataclass(frozen=True)
class Drawn:
    """What a panel draws: its series by display name, its box (px), unit and threshold steps."""

    named: Sequence[tuple[str, Series]]
    box: tuple[float, float, float, float]
    unit: str
    steps: Sequence[Mapping[str, Any]]


def timeseries(canvas: Canvas, panel: Drawn, span: tuple[float, float], lines: bool) -> None:
    """Lines over ``span``; with ``lines``, the thresholds above the base step as dashed lines."""
    named, unit = panel.named, panel.unit
    steps = panel.steps if lines else []
    x, y, w, h = panel.box
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
    canvas: Canvas,
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


def stat(canvas: Canvas, panel: Drawn) -> None:
    """Each series' last value on its threshold colour, its sparkline behind (graph mode area)."""
    named, unit, steps = panel.named, panel.unit, panel.steps
    x, y, w, h = panel.box
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


def bargauge(canvas: Canvas, panel: Drawn) -> None:
    """Horizontal gradient bars of the last values, scaled to the largest one."""
    named, unit, steps = panel.named, panel.unit, panel.steps
    x, y, w, h = panel.box
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
