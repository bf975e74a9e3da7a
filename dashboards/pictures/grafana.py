"""Grafana's rules for turning a panel into Prometheus queries and its answers into text.

Each function follows the Grafana 10 code named in its docstring, so a picture shows what
Grafana would show for the same time range, panel width and datasource scrape interval.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Grafana's grid: 24 columns; a row unit is 30 px high with 8 px between units.
GRID_COLUMNS = 24
GRID_CELL_HEIGHT = 30
GRID_CELL_MARGIN = 8

# Grafana's named colours (packages/grafana-data/src/themes/palette + the classic palette).
NAMED_COLOURS = {
    "green": "#73BF69",
    "orange": "#FF9830",
    "red": "#F2495C",
    "yellow": "#FADE2A",
    "blue": "#5794F2",
    "purple": "#B877D9",
    "text": "#CCCCDC",
}
CLASSIC_PALETTE = (
    "#7EB26D",
    "#EAB839",
    "#6ED0E0",
    "#EF843C",
    "#E24D42",
    "#1F78C1",
    "#BA43A9",
    "#705DA0",
    "#508642",
    "#CCA300",
    "#447EBC",
    "#C15C17",
)

# rangeutil.roundInterval: (below this many ms, use this interval in ms), ascending.
_ROUNDED: tuple[tuple[float, int], ...] = (
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1500, 1000),
    (3500, 2000),
    (7500, 5000),
    (12500, 10000),
    (17500, 15000),
    (25000, 20000),
    (45000, 30000),
    (90000, 60000),
    (210000, 120000),
    (450000, 300000),
    (750000, 600000),
    (1050000, 900000),
    (1500000, 1200000),
    (2700000, 1800000),
    (5400000, 3600000),
    (9000000, 7200000),
    (16200000, 10800000),
    (32400000, 21600000),
    (86400000, 43200000),
)
_PROMETHEUS_MAX_POINTS = 11000  # Grafana's Prometheus datasource never asks for more per series
_LEGEND_TEMPLATE = re.compile(r"\{\{\s*(.+?)\s*\}\}")
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


@dataclass(frozen=True)
class Series:
    """One series of a query_range answer: its labels, timestamps (s) and values."""

    labels: dict[str, str]
    times: list[float]
    values: list[float]

    @property
    def has_data(self) -> bool:
        """At least one point that is a number (NaN is Prometheus' "no answer", e.g. 0/0)."""
        return any(not math.isnan(v) for v in self.values)


def round_interval(ms: float) -> int:
    """rangeutil.roundInterval: the "nice" interval at or just under ``ms``."""
    for below, rounded in _ROUNDED:
        if ms < below:
            return rounded
    return 86400000


def interval_ms(range_ms: float, max_data_points: int, min_interval_ms: int) -> int:
    """rangeutil.calculateInterval: ``$__interval`` for a range drawn on ``max_data_points`` px,
    never below the datasource's scrape interval (its "min interval")."""
    return max(round_interval(range_ms / max_data_points), min_interval_ms)


def rate_interval_ms(interval: int, scrape_interval_ms: int) -> int:
    """The Prometheus datasource's ``$__rate_interval``: max($__interval + scrape, 4 * scrape)."""
    return max(interval + scrape_interval_ms, 4 * scrape_interval_ms)


def step_seconds(range_s: float, interval: int) -> float:
    """The query_range step: ``$__interval``, or coarser if the range would exceed 11,000 points."""
    return max(interval / 1000, math.ceil(range_s / _PROMETHEUS_MAX_POINTS))


def duration(ms: int) -> str:
    """A duration as PromQL writes it: 1m, 4s, 500ms."""
    for unit, size in (("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def expand(expression: str, variables: Mapping[str, str]) -> str:
    """Template variables replaced (``$name`` and ``${name}``, longest names first); a query
    variable's ``label_values(selector, label)`` becomes ``count by (label) (selector)``, the
    query Grafana's Prometheus datasource sends for it."""
    text = expression.strip()
    for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(f"${{{name}}}", value).replace(f"${name}", value)
    match = _LABEL_VALUES.match(text)
    if match:
        return f"count by ({match['label']}) ({match['selector']})"
    return text


def legend(legend_format: str, labels: Mapping[str, str], expression: str) -> str:
    """A series' display name: ``{{label}}`` filled in; "__auto" (or empty) names the series by
    its labels, or by the expression when it has none."""
    if legend_format and legend_format != "__auto":
        return _LEGEND_TEMPLATE.sub(lambda m: labels.get(m.group(1), ""), legend_format)
    shown = {k: v for k, v in labels.items() if k != "__name__"}
    if not shown:
        return expression
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(shown.items()))
    return f"{labels.get('__name__', '')}{{{inner}}}"


def threshold_colour(value: float, steps: Sequence[Mapping[str, object]]) -> str:
    """The colour of the highest step at or below ``value`` (the base step has value null)."""
    colour = str(steps[0]["color"]) if steps else "green"
    for step in steps[1:]:
        limit = step.get("value")
        if isinstance(limit, int | float) and not math.isnan(value) and value >= limit:
            colour = str(step["color"])
    return NAMED_COLOURS.get(colour, colour)


def _scaled(value: float, steps: Sequence[tuple[float, str]], decimals: int | None) -> str:
    """``value`` in the largest of ``steps`` (factor, suffix) it reaches."""
    factor, suffix = steps[0]
    for f, s in steps:
        if abs(value) >= f:
            factor, suffix = f, s
    scaled = value / factor
    if decimals is None:
        decimals = (
            0
            if scaled == int(scaled) and (abs(scaled) >= 1 or scaled == 0)
            else (1 if abs(scaled) >= 10 else 2)
        )
        if abs(scaled) >= 100:
            decimals = 0
    return f"{scaled:.{decimals}f}{suffix}"


_SI = ((1.0, ""), (1e3, " K"), (1e6, " Mil"), (1e9, " Bil"))
_SECONDS = ((1e-3, " ms"), (1.0, " s"), (60.0, " min"), (3600.0, " hour"), (86400.0, " day"))


def format_value(value: float, unit: str, decimals: int | None = None) -> str:
    """A value as Grafana prints it for the units our dashboards use."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if unit == "percentunit":
        return _scaled(value * 100, ((1.0, "%"),), decimals)
    if unit == "s":
        if value == 0:
            return "0 s"
        if abs(value) < 1e-3:
            return _scaled(value * 1e6, ((1.0, " µs"),), decimals)
        return _scaled(value, _SECONDS, decimals)
    text = _scaled(value, _SI, decimals)
    if unit == "ops":
        return f"{text} ops/s"
    if unit == "reqps":
        return f"{text} req/s"
    return text
