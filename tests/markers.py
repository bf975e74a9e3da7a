"""Test directories that run only when asked for by their marker (``make image-check``,
``make node-test``): they build images or change the machine, which ``make test`` does not."""

from __future__ import annotations

from pathlib import Path

import pytest


def run_only_when_asked(
    config: pytest.Config, items: list[pytest.Item], marker: str, directory: Path
) -> None:
    """Deselect the tests under ``directory`` unless the run asks for ``-m <marker>``."""
    if marker in (config.option.markexpr or ""):
        return
    ours = [i for i in items if directory in Path(str(i.path)).parents]
    if ours:
        config.hook.pytest_deselected(items=ours)
        items[:] = [i for i in items if i not in ours]
