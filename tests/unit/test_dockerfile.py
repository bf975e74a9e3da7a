"""The Dockerfile, read as text (no Docker engine here): multi-stage, non-root, pinned, one target per process."""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.k8s_helpers import ROOT

DOCKERFILE = ROOT / "Dockerfile"
PROCESS_TARGETS = {
    "api": "api",
    "consumer": "consumer",
    "operator": "operator",
    "lag-exporter": "lag-exporter",
}
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|make|clang|libpq-dev|python3-dev)\b")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def chain(self, name: str) -> list[Stage]:
        """The stage and every stage it is built FROM, nearest first."""
        out = [self.stage(name)]
        while out[-1].base in {s.name for s in self.stages}:
            out.append(self.stage(out[-1].base))
        return out

    def effective(self, name: str, keyword: str) -> str | None:
        """The last value of an inherited instruction (USER, ENTRYPOINT, CMD) for a target."""
        for stage in self.chain(name):
            values = stage.all(keyword)
            if values:
                return values[-1]
        return None


def parse(text: str) -> Dockerfile:
    """Instructions per stage; continuation lines joined, comments and the parser directive dropped."""
    logical: list[str] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # comment inside a continued instruction
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=words[0]))
        elif keyword == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key] = default
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
        else:
            raise AssertionError(f"instruction before the first FROM: {line}")
    return Dockerfile(args, stages)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse(DOCKERFILE.read_text())


def resolve(df: Dockerfile, image: str) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: df.args[m.group(1) or m.group(2)], image)


def exec_form(value: str | None) -> list[str]:
    assert value is not None and value.startswith("["), f"use the exec form (JSON array): {value}"
    parsed = json.loads(value)
    assert isinstance(parsed, list)
    return [str(v) for v in parsed]


def cli_subcommands() -> set[str]:
    """Subcommands the real CLI accepts (app/cli.py), falling back to the contract's table."""
    cli = ROOT / "app" / "cli.py"
    if cli.is_file():
        from app import cli as cli_module

        parser = cli_module._parser()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return set(action.choices)
        raise AssertionError("app/cli.py defines no subcommands")
    contract = (ROOT / "docs" / "CONTRACT.md").read_text()
    return set(re.findall(r"^\| `([a-z-]+)`", contract, flags=re.M))


def test_is_multi_stage_with_a_build_stage(dockerfile: Dockerfile) -> None:
    names = [s.name for s in dockerfile.stages]
    assert len(names) >= 3 and "build" in names, names
    build = dockerfile.stage("build")
    assert any("pip wheel" in run for run in build.all("RUN")), "the build stage must build wheels"


def test_base_images_are_pinned(dockerfile: Dockerfile) -> None:
    for stage in dockerfile.stages:
        if stage.base in {s.name for s in dockerfile.stages}:
            continue
        image = resolve(dockerfile, stage.base)
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name and tag and tag != "latest", image
        assert re.match(r"^\d+\.\d+\.\d+", tag), f"pin an exact patch release: {image}"


def test_runtime_targets_have_no_build_tools(dockerfile: Dockerfile) -> None:
    for target in [*PROCESS_TARGETS, dockerfile.stages[-1].name]:
        for stage in dockerfile.chain(target):
            assert stage.name != "build", f"{target} must not be built FROM the build stage"
            for run in stage.all("RUN"):
                assert not BUILD_TOOLS.search(run), (
                    f"{target}: build tool installed in {stage.name}: {run}"
                )
                if "pip install" in run:
                    assert "--no-index" in run, (
                        "the runtime installs only the wheels built in `build`"
                    )


@pytest.mark.parametrize("target", list(PROCESS_TARGETS))
def test_every_target_runs_as_a_numeric_non_root_user(dockerfile: Dockerfile, target: str) -> None:
    user = dockerfile.effective(target, "USER")
    assert user is not None, f"{target} runs as root"
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, (
        f"USER must be a numeric non-root uid (runAsNonRoot): {user}"
    )
    assert not gid or (gid.isdigit() and int(gid) > 0), user


def test_last_stage_is_a_runtime_image_too(dockerfile: Dockerfile) -> None:
    """`docker build .` (no --target) yields a non-root runtime image, not the build stage."""
    last = dockerfile.stages[-1].name
    assert last != "build"
    assert dockerfile.effective(last, "USER") not in {None, "0", "root"}


def test_environment_and_no_healthcheck(dockerfile: Dockerfile) -> None:
    runtime_env = " ".join(
        e for s in dockerfile.chain(dockerfile.stages[-1].name) for e in s.all("ENV")
    )
    assert re.search(r"PYTHONDONTWRITEBYTECODE=1", runtime_env)
    assert re.search(r"PYTHONUNBUFFERED=1", runtime_env)
    assert not any(s.all("HEALTHCHECK") for s in dockerfile.stages), (
        "Kubernetes probes replace HEALTHCHECK"
    )
    assert not re.search(r":latest\b", DOCKERFILE.read_text())


@pytest.mark.parametrize(("target", "subcommand"), list(PROCESS_TARGETS.items()))
def test_each_target_runs_an_existing_cli_subcommand(
    dockerfile: Dockerfile, target: str, subcommand: str
) -> None:
    assert exec_form(dockerfile.effective(target, "ENTRYPOINT")) == ["coupon-issuer"]
    cmd = exec_form(dockerfile.effective(target, "CMD"))
    assert cmd == [subcommand]
    available = cli_subcommands()
    assert subcommand in available, (
        f"`coupon-issuer {subcommand}` is not a CLI subcommand ({sorted(available)})"
    )


def test_chart_only_runs_cli_subcommands() -> None:
    """The chart passes the subcommand as args; every one it uses must exist."""
    used = set()
    for template in (ROOT / "charts" / "coupon-issuer" / "templates").glob("*.yaml"):
        used |= set(re.findall(r'args: \["([a-z-]+)"\]', template.read_text()))
    assert used == {"api", "consumer", "operator", "lag-exporter", "migrate", "topics"}
    missing = used - cli_subcommands()
    assert not missing, f"chart runs subcommands the CLI lacks: {sorted(missing)}"


def _ignored(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last matching pattern wins; "!" re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        if (
            fnmatch.fnmatch(path, pat)
            or fnmatch.fnmatch(path, pat.replace("**/", ""))
            or path.startswith(pat + "/")
        ):
            ignored = not negate
    return ignored


def test_dockerignore_sends_only_what_the_build_needs(dockerfile: Dockerfile) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for copy in dockerfile.stage("build").all("COPY"):
        for source in shlex.split(copy)[:-1]:
            if not source.startswith("--"):
                assert not _ignored(patterns, source.rstrip("/")), (
                    f"COPY {source} is excluded by .dockerignore"
                )
    for path in (
        ".git",
        ".venv",
        ".tools",
        "tests",
        "charts",
        "k8s",
        "dashboards",
        "app/__pycache__",
    ):
        assert _ignored(patterns, path), f"{path} would be sent to the Docker daemon"


def test_parser_sees_a_broken_user(tmp_path: Path) -> None:
    """Guard: the checks above would notice a root USER."""
    broken = parse(DOCKERFILE.read_text().replace("USER 10001:10001", "USER root"))
    user = broken.effective("api", "USER")
    assert user == "root"
