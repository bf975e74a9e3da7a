"""The Grafana dashboards: generated JSON up to date, well-formed, and naming only real metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dashboards.src.render import render
from tests.prometheus import (
    DASHBOARDS,
    dashboard_expressions,
    dashboard_files,
    exposed_names,
    metric_names,
)


def _boards() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, json.loads(p.read_text())) for p in dashboard_files()]


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def test_checked_in_json_is_what_the_generator_renders() -> None:
    rendered = render()
    on_disk = {p.name: p.read_text() for p in dashboard_files()}
    assert on_disk == rendered, "dashboards/*.json are stale: run `make dashboards`"


def test_the_two_dashboards_exist_with_unique_uids() -> None:
    titles = {b["title"]: b["uid"] for _, b in _boards()}
    assert set(titles) == {"Coupon issuance — overview", "Coupon issuance — consumer lag"}
    assert len(set(titles.values())) == len(titles)


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_variables_are_the_datasource_namespace_group_and_topic(path: Path) -> None:
    variables = {v["name"]: v for v in json.loads(path.read_text())["templating"]["list"]}
    assert set(variables) == {"DS_PROMETHEUS", "namespace", "group", "topic"}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    for name in ("namespace", "group", "topic"):
        # "All" must also match series without the label (plain Prometheus has no namespace).
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_every_panel_has_a_description_unit_thresholds_and_the_datasource_variable(
    path: Path,
) -> None:
    board = json.loads(path.read_text())
    for panel in _panels(board):
        where = f"{path.name}: {panel['title']!r}"
        defaults = panel["fieldConfig"]["defaults"]
        assert panel["description"].strip(), where
        assert defaults["unit"], where
        assert defaults["thresholds"]["steps"], where
        assert panel["targets"], where
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", where
            assert target["expr"].strip(), where


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_panels_do_not_overlap_and_fit_the_grid(path: Path) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in json.loads(path.read_text())["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        cells = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & taken, f"{panel['title']!r} overlaps another panel"
        taken |= cells


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_expressions_name_only_metrics_the_service_exposes(path: Path) -> None:
    known = exposed_names()
    for expression in dashboard_expressions(path):
        unknown = metric_names(expression) - known
        assert not unknown, f"{path.name}: {expression!r} names unknown metrics {unknown}"


def test_lag_and_overview_selectors_use_the_variables() -> None:
    for path in dashboard_files():
        for expression in dashboard_expressions(path):
            if "label_values" in expression and "namespace)" in expression:
                continue
            assert '$namespace"' in expression, f"{path.name}: {expression!r}"


def test_provisioning_file_points_grafana_at_this_folder() -> None:
    import yaml

    provider = yaml.safe_load((DASHBOARDS / "provisioning" / "dashboards.yaml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"]
