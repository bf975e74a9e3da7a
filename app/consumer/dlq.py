"""Moved: the dead-letter topic's I/O is app/adapters/dead_letters.py, its envelope
app/domain/dead_letter.py. These names stay importable from here for older callers' scripts."""

from __future__ import annotations

from app.adapters.dead_letters import list_dead_letters, replay_dead_letters
from app.domain.dead_letter import Entry

__all__ = ["Entry", "list_dead_letters", "replay_dead_letters"]
