"""The house: every module of app/ lives in a room on a floor, and imports only rooms on floors
below its own (or its own room). A newcomer finds where a press is admitted, issued and settled
in one hop, and nothing the service runs reaches up into what wires it."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"

# floor -> rooms; a room is a package of app/ or a module at its root
FLOORS: dict[int, tuple[str, ...]] = {
    0: ("config", "domain", "waits"),  # settings, pure rules, cancellation-safe waits: no I/O
    1: ("adapters",),  # one module per real system
    2: ("observability", "unreachable"),  # metrics, logs, the exporter's poll; fault messages
    3: ("settle", "verify"),  # what the consumer and the reconciler share; the invariant checks
    4: ("api", "consumer", "reconciler", "autoscaling"),  # admit, issue, settle, scale
    5: ("processes",),  # one wiring module per process
    6: ("local",),  # the embedded local stack (make run, the tests)
    7: ("cli",),  # the entry point
}
FLOOR = {room: floor for floor, rooms in FLOORS.items() for room in rooms}


def room_of(module: str) -> str:
    """``app.api.routes`` -> ``api``; ``app.cli`` -> ``cli``."""
    return module.split(".")[1]


def imports() -> dict[str, set[str]]:
    """Each module of app/ -> the app modules it imports (lazy imports inside functions too)."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in APP.rglob("*.py"):
        module = ".".join(("app", *path.relative_to(APP).with_suffix("").parts))
        module = module.removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            found[module].update(n for n in names if n.startswith("app."))
    return found


def test_every_room_has_a_floor() -> None:
    rooms = {room_of(m) for m in imports()} | {room_of(t) for ts in imports().values() for t in ts}
    assert rooms - {"__init__"} <= set(FLOOR), sorted(rooms - set(FLOOR))


def test_no_room_imports_a_room_above_it_or_beside_it() -> None:
    arrows = sorted(
        f"{module} -> {target}"
        for module, targets in imports().items()
        for target in targets
        if room_of(module) != room_of(target) and FLOOR[room_of(target)] >= FLOOR[room_of(module)]
    )
    assert arrows == []


def test_no_module_of_the_service_imports_the_local_stack() -> None:
    # Only the entry point's `dev` subcommand starts it (lazily); the images leave it out.
    users = sorted(
        module
        for module, targets in imports().items()
        if any(room_of(t) == "local" for t in targets) and room_of(module) not in ("local", "cli")
    )
    assert users == []
    assert "app/local/" in (APP.parent / ".dockerignore").read_text()


def test_the_three_verbs_are_one_hop_away() -> None:
    assert "app.api.admission" in imports()["app.api.fast_path"]  # admit
    assert "app.consumer.issue" in imports()["app.consumer.batch"]  # issue
    assert "app.settle" in imports()["app.reconciler.reconcile"]  # settle
    assert "app.settle" in imports()["app.consumer.batch"]
