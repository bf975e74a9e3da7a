"""The kind CI workflow cannot run here: lint it (YAML, referenced make targets, scripts, files)."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.k8s_helpers import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "kind.yml"
MAKE_FILES = [ROOT / "Makefile", *sorted((ROOT / "mk").glob("*.mk"))]
TARGET_LINE = re.compile(r"^([A-Za-z0-9_.%/-]+(?:[ \t]+[A-Za-z0-9_.%/-]+)*)[ \t]*::?(?![=])", re.M)


def make_targets() -> set[str]:
    targets: set[str] = set()
    for path in MAKE_FILES:
        if path.is_file():
            for match in TARGET_LINE.finditer(path.read_text()):
                targets.update(match.group(1).split())
    return targets


def k8s_mk_recipes() -> dict[str, str]:
    """Recipe text of each target in mk/k8s.mk."""
    recipes: dict[str, str] = {}
    current = None
    for line in (ROOT / "mk" / "k8s.mk").read_text().splitlines():
        match = TARGET_LINE.match(line)
        if match and not line.startswith("\t") and not line.startswith(".PHONY"):
            current = match.group(1).split()[0]
            recipes[current] = line + "\n"
        elif current and (line.startswith("\t") or not line.strip()):
            recipes[current] += line + "\n"
        else:
            current = None
    return recipes


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    return yaml.safe_load(WORKFLOW.read_text())  # type: ignore[no-any-return]


def run_steps(workflow: dict[Any, Any]) -> list[str]:
    return [
        step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step
    ]


def test_workflow_structure(workflow: dict[Any, Any]) -> None:
    triggers = workflow.get("on", workflow.get(True))  # PyYAML reads the bare key `on` as True
    assert triggers is not None
    assert {"push", "pull_request"} <= set(triggers)
    assert workflow["permissions"] == {"contents": "read"}
    (job,) = workflow["jobs"].values()
    assert job["timeout-minutes"] <= 60
    uses = [s["uses"] for s in job["steps"] if "uses" in s]
    assert any(u.startswith("helm/kind-action@") for u in uses)
    for u in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+(\.\d+)*", u), f"pin a release: {u}"
    names = [s.get("name", "") for s in job["steps"]]
    order = [
        "kind cluster",
        "Build images",
        "Load images",
        "Install dev dependencies",
        "Smoke sale",
    ]
    positions = [next(i for i, n in enumerate(names) if key.lower() in n.lower()) for key in order]
    assert positions == sorted(positions), names
    assert job["steps"][-1].get("if") == "failure()", "last step dumps diagnostics on failure"


def test_referenced_make_targets_exist(workflow: dict[Any, Any]) -> None:
    targets = make_targets()
    referenced = set()
    for script in run_steps(workflow) + list(k8s_mk_recipes().values()):
        referenced |= set(re.findall(r"\$\(MAKE\)\s+([a-z][\w-]*)", script))
        for line in script.splitlines():
            match = re.search(r"\bmake\s+(.*)", line)
            if match:
                referenced |= {w for w in match.group(1).split() if re.fullmatch(r"[a-z][\w-]*", w)}
    assert referenced >= {"tools", "images", "kind-load", "kind-deploy", "kind-smoke"}
    missing = referenced - targets
    assert not missing, f"make targets referenced but not defined: {sorted(missing)}"


def test_make_variable_overrides_are_defined(workflow: dict[Any, Any]) -> None:
    defined = set(
        re.findall(r"^([A-Z_0-9]+)\s*\?=", (ROOT / "mk" / "k8s.mk").read_text(), flags=re.M)
    )
    for script in run_steps(workflow):
        for line in script.splitlines():
            if re.search(r"\bmake\s", line):
                for var in re.findall(r"\b([A-Z][A-Z0-9_]+)=", line):
                    assert var in defined, (
                        f"`{line.strip()}` sets {var}, which mk/k8s.mk does not use"
                    )


def test_referenced_files_exist(workflow: dict[Any, Any]) -> None:
    text = "\n".join(run_steps(workflow)) + "\n".join(k8s_mk_recipes().values())
    paths = set(re.findall(r"\b(scripts/[\w./-]+)", text))
    paths |= set(re.findall(r"-[kf]\s+([\w./-]+)", text)) - {"-"}
    paths = {p.replace("$(CHART)", "charts/coupon-issuer") for p in paths}
    paths |= {
        p.replace("$(CHART)", "charts/coupon-issuer")
        for p in re.findall(r"(\$\(CHART\)/[\w./-]+)", text)
    }
    assert "scripts/kind_smoke.sh" in paths or "scripts/kind_smoke.sh" in text
    for p in sorted(paths):
        if "*" in p or "$" in p:
            continue
        path = ROOT / p
        assert path.exists(), f"{p} is referenced but missing"
        if p.startswith("scripts/"):
            assert os.access(path, os.X_OK), f"{p} is not executable"


def test_smoke_script_is_valid_bash() -> None:
    proc = subprocess.run(
        ["bash", "-n", str(ROOT / "scripts" / "kind_smoke.sh")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    script = (ROOT / "scripts" / "kind_smoke.sh").read_text()
    assert "set -euo pipefail" in script
    assert (
        "/api/coupons" in script and "/issue/queue" in script and "Authorization: Bearer" in script
    )
    assert "get deploy" in script, "the smoke test must check the consumer Deployment scaled"


def test_kind_values_use_locally_loaded_images() -> None:
    values = yaml.safe_load(
        (ROOT / "charts" / "coupon-issuer" / "ci" / "kind-values.yaml").read_text()
    )
    assert values["image"]["pullPolicy"] == "Never", "kind-loaded images must not be pulled"
    mk = (ROOT / "mk" / "k8s.mk").read_text()
    repo = re.search(r"^IMAGE_REPO \?= (\S+)", mk, flags=re.M)
    assert repo is not None
    assert values["image"]["repository"] == repo.group(1)
    assert values["api"]["image"]["repository"] == f"{repo.group(1)}-api"
    assert values["consumer"]["image"]["repository"] == f"{repo.group(1)}-consumer"


def test_makefile_includes_mk_fragments() -> None:
    makefile = ROOT / "Makefile"
    if not makefile.exists():
        pytest.fail("Makefile missing: it must `include mk/*.mk` so the k8s targets exist")
    assert re.search(r"^-?include\s+mk/\*\.mk", makefile.read_text(), flags=re.M), (
        "Makefile must include mk/*.mk"
    )


def test_kind_deploy_enforces_restricted_and_takes_the_images_as_given() -> None:
    """One recipe for kind (public dev images, coupon-issuer:ci) and a node (k8s/dev-node,
    localhost/coupon-issuer:check-...): everything that differs is a make variable."""
    recipe = k8s_mk_recipes()["kind-deploy"]
    assert "pod-security.kubernetes.io/enforce=restricted" in recipe
    assert "-k $(DEV_KUSTOMIZE)" in recipe and "-f $(KIND_VALUES)" in recipe
    repositories = {"image": "", "api.image": "-api", "consumer.image": "-consumer"}
    for key, suffix in repositories.items():
        assert f"{key}.repository=$(IMAGE_REPO){suffix}" in recipe, key
    assert "image.tag=$(IMAGE_TAG)" in recipe
