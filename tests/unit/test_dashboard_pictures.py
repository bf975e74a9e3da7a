"""The dashboard pictures follow Grafana's rules, and a panel without data fails the render."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dashboards.pictures.draw import EmptyPanelsError, render_dashboard, variable_values
from dashboards.pictures.grafana import (
    Series,
    expand,
    format_value,
    interval_ms,
    legend,
    rate_interval_ms,
    round_interval,
    threshold_colour,
)
from tests.prometheus import dashboard_files


def test_intervals_are_grafanas() -> None:
    # a 90 s sale on a 780 px panel, scraped every second: $__interval 1s, $__rate_interval 4s
    assert round_interval(90_000 / 780) == 100
    assert interval_ms(90_000, 780, 1000) == 1000
    assert rate_interval_ms(1000, 1000) == 4000
    # the dashboards' default hour on a datasource scraped every 15 s: 15s and 1m
    assert interval_ms(3_600_000, 800, 15_000) == 15_000
    assert rate_interval_ms(15_000, 15_000) == 60_000
    # a day: 2m, and the rate interval is $__interval + one scrape
    assert interval_ms(86_400_000, 800, 15_000) == 120_000
    assert rate_interval_ms(120_000, 15_000) == 135_000


def test_variables_and_label_values_are_expanded_as_grafana_sends_them() -> None:
    variables = {"namespace": ".*", "__rate_interval": "4s", "__interval": "1s"}
    assert (
        expand('sum(rate(x{namespace=~"$namespace"}[$__rate_interval]))', variables)
        == 'sum(rate(x{namespace=~".*"}[4s]))'
    )
    assert expand('label_values(x{a=~"${namespace}"}, group)', variables) == (
        'count by (group) (x{a=~".*"})'
    )
    board = json.loads(dashboard_files()[0].read_text())
    values, shown = variable_values(board)
    assert values["namespace"] == ".*" and shown["Namespace"] == "All"


def test_legends_units_and_threshold_colours() -> None:
    assert legend("{{topic}}/{{partition}}", {"topic": "t", "partition": "2"}, "e") == "t/2"
    assert legend("__auto", {}, "sum(x)") == "sum(x)"
    assert legend("__auto", {"__name__": "x", "a": "1"}, "x") == 'x{a="1"}'
    assert format_value(0.25, "percentunit") == "25%"
    assert format_value(0.004, "s") == "4 ms"
    assert format_value(90, "s") == "1.50 min"
    assert format_value(1500, "short") == "1.50 K"
    assert format_value(12, "ops") == "12 ops/s"
    assert format_value(math.inf, "s") == "∞"
    steps: list[dict[str, object]] = [
        {"color": "green", "value": None},
        {"color": "red", "value": 10},
    ]
    assert threshold_colour(3, steps) == "#73BF69"
    assert threshold_colour(10, steps) == "#F2495C"


def _series(value: float) -> list[Series]:
    return [Series({"topic": "t", "partition": "0"}, [0.0, 1.0, 2.0], [value, value, value])]


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_every_panel_is_drawn_and_a_panel_without_data_fails_by_title(
    path: Path, tmp_path: Path
) -> None:
    board = json.loads(path.read_text())
    out = tmp_path / "board.png"
    results = render_dashboard(board, lambda *_: _series(1.0), 0, 90, out, scrape_interval_ms=1000)
    assert out.stat().st_size > 10_000
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert [r.title for r in results] == [p["title"] for p in panels]
    assert all(r.series for r in results)

    victim = panels[-1]  # its queries use no interval variable: known before the render
    silent = {expand(t["expr"], variable_values(board)[0]) for t in victim["targets"]}

    def fetch(expression: str, *_: float) -> list[Series]:
        # a series whose every point is NaN has no data
        return _series(math.nan if expression in silent else 1.0)

    with pytest.raises(EmptyPanelsError) as failed:
        render_dashboard(board, fetch, 0, 90, out, scrape_interval_ms=1000)
    assert victim["title"] in str(failed.value)
    assert out.exists()
