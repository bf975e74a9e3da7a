"""The generated references (settings, chart values) match their sources; the docs map is whole."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_what_settings_renders() -> None:
    doc = ROOT / "docs" / "configuration.md"
    assert _script("render_settings_doc").main(["--check"]) == 0, f"{doc} is stale: run `make docs`"


def test_configuration_reference_lists_every_setting_and_nothing_else() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    table = text.split("<!-- settings-table:start -->")[1].split("<!-- settings-table:end -->")[0]
    documented = re.findall(r"^\| `COUPON_([A-Z0-9_]+)`", table, flags=re.MULTILINE)
    assert documented == [name.upper() for name in Settings.model_fields]
    assert all(field.description for field in Settings.model_fields.values())


def test_a_changed_setting_makes_the_reference_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    render = _script("render_settings_doc")
    monkeypatch.setattr(Settings.model_fields["partitions"], "description", "changed")
    assert render.main(["--check"]) == 1


def test_chart_values_reference_is_what_values_yaml_renders() -> None:
    assert _script("render_chart_values_doc").main(["--check"]) == 0, (
        "charts/coupon-issuer/README.md is stale: run `make docs`"
    )


def test_every_chart_value_is_documented_and_a_changed_comment_is_drift() -> None:
    render = _script("render_chart_values_doc")
    values = (ROOT / "charts" / "coupon-issuer" / "values.yaml").read_text()
    rows = render.rows(values)
    assert {"kafka.partitions", "autoscaling.mode", "api.resources"} <= {r.key for r in rows}
    assert not [r.key for r in rows if not r.description], "values.yaml keys without # -- comment"
    readme = (ROOT / "charts" / "coupon-issuer" / "README.md").read_text()
    changed = values.replace("# -- Partitions of the request topic.", "# -- Partitions.")
    assert changed != values and render.render(readme, changed) != readme


def test_the_readme_maps_every_topic_file_in_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", readme))
    present = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert linked == present


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown page (code blocks skipped)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_relative_links_in_the_docs_point_at_files_and_headings_that_exist() -> None:
    pages = [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        ROOT / "charts/coupon-issuer/README.md",
    ]
    broken = []
    for page in pages:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            if "://" in target:
                continue
            linked = (page.parent / target) if target else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.relative_to(ROOT)} -> {target}#{anchor}")
    assert not broken, broken
