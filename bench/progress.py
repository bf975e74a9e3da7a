"""A progress bar on stderr (rich), or nothing when disabled / not a terminal and asked so."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class Bar:
    """One bar per phase; ``update`` sets the absolute position and a short status text."""

    def __init__(self, enabled: bool) -> None:
        self._console = Console(stderr=True)
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description:<22}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[status]}"),
                console=self._console,
                transient=False,
                refresh_per_second=4,
            )
        self._task: TaskID | None = None

    def __enter__(self) -> Bar:
        if self._progress:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress:
            self._progress.stop()

    def phase(self, description: str, total: int) -> None:
        if self._progress is None:
            self._console.print(f"[bench] {description} ...", highlight=False)
            return
        self._task = self._progress.add_task(description, total=total, status="")

    def update(self, completed: int, status: str = "") -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed, status=status)

    def note(self, text: str) -> None:
        self._console.print(f"[bench] {text}", highlight=False)
