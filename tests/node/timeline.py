"""When each step of a node test held, in seconds after it began: kept beside the release's logs
and printed, so a slow loop shows where it was slow."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from harness import wait_until


class Timeline:
    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        self.started = time.monotonic()

    def restart(self) -> None:
        self.started = time.monotonic()

    def mark(self, what: str) -> None:
        self.marks[what] = time.monotonic() - self.started

    async def at(self, what: str, condition: Any, timeout: float) -> Any:
        """Wait for ``condition`` and mark when it held."""
        found = await wait_until(condition, timeout, what, interval=0.2)
        self.mark(what)
        return found

    def write(self, path: Path, label: str) -> None:
        path.write_text(json.dumps(self.marks, indent=2))
        print(f"{label}, s:", {k: round(v, 1) for k, v in self.marks.items()})
