"""Every Dockerfile target, built for real: non-root, no compiler, within budget, the locked versions."""

from __future__ import annotations

import json
import re

import pytest

from tests.images.conftest import Built
from tests.images.podman import TARGETS, ensure_base, inspect_image, run_in
from tests.k8s_helpers import ROOT

pytestmark = pytest.mark.images

MB = 1_000_000
# What the image adds on top of its Python base (the same whichever base: docs/deploy.md).
ADDED_BUDGET_MB = 160
# The whole image on the stand-in base (Debian's python3, ~245 MB; the official slim base is smaller).
TOTAL_BUDGET_MB = 420
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "make", "ld", "as")
# Installed by the base's venv, not by the project.
BASE_DISTRIBUTIONS = {"pip", "setuptools", "wheel"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep:
            pins[normalise(name)] = version.strip()
    return pins


@pytest.mark.parametrize("target", TARGETS)
def test_runs_as_a_numeric_non_root_user(built: Built, target: str) -> None:
    image = built.images[target]
    assert inspect_image(image)["Config"]["User"] == "10001:10001"
    # Without --user: the image's own USER, which /etc/passwd names coupon.
    proc = run_in(image, "-c", "id -u; id -g; id -un", entrypoint="/bin/sh", user=None)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["10001", "10001", "coupon"]


@pytest.mark.parametrize("target", TARGETS)
def test_default_command_and_stop_signal(built: Built, target: str) -> None:
    config = inspect_image(built.images[target])["Config"]
    assert config["Entrypoint"] == ["coupon-issuer"]
    assert config["Cmd"] == ["api" if target == "runtime" else target]
    assert config.get("StopSignal", "SIGTERM") in {"SIGTERM", "15"}


@pytest.mark.parametrize("target", TARGETS)
def test_help_works_read_only_without_capabilities(built: Built, target: str) -> None:
    proc = run_in(built.images[target], "--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("api", "consumer", "migrate", "topics", "operator", "lag-exporter", "verify"):
        assert re.search(rf"\b{command}\b", proc.stdout), f"--help lacks {command}"


def test_no_compiler_in_the_runtime(built: Built) -> None:
    script = "for c in " + " ".join(COMPILERS) + '; do command -v "$c"; done; true'
    for target in TARGETS:
        proc = run_in(built.images[target], "-c", script, entrypoint="/bin/sh")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "", f"{target} carries build tools: {proc.stdout.split()}"
        dpkg = run_in(built.images[target], "-W", "build-essential", "gcc", entrypoint="dpkg-query")
        assert dpkg.returncode != 0, f"{target}: {dpkg.stdout}"


def test_size_budget(built: Built) -> None:
    base = inspect_image(ensure_base())["Size"]
    for target in TARGETS:
        size = inspect_image(built.images[target])["Size"]
        added = size - base
        assert added <= ADDED_BUDGET_MB * MB, f"{target} adds {added / MB:.0f} MB over its base"
        assert size <= TOTAL_BUDGET_MB * MB, f"{target} is {size / MB:.0f} MB"


def test_pip_check_is_clean(built: Built) -> None:
    proc = run_in(built.images["runtime"], "check", entrypoint="pip")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No broken requirements found" in proc.stdout


def test_installs_exactly_the_locked_versions(built: Built) -> None:
    proc = run_in(built.images["runtime"], "list", "--format", "json", entrypoint="pip")
    assert proc.returncode == 0, proc.stderr
    installed = {normalise(d["name"]): d["version"] for d in json.loads(proc.stdout)}
    assert installed.pop("coupon-issuer") == "0.1.0"
    pins = locked()
    differ = {
        name: (version, pins.get(name))
        for name, version in installed.items()
        if name not in BASE_DISTRIBUTIONS and pins.get(name) != version
    }
    assert not differ, f"installed vs requirements.lock: {differ}"
    assert {"fastapi", "aiokafka", "asyncpg", "kopf"} <= set(installed)
    assert not {"pytest", "ruff", "mypy", "matplotlib"} & set(installed), "dev tools in the image"
