"""``coupon-issuer reconcile --every N``: a pass every N seconds until SIGTERM/SIGINT.

The chart runs the reconciler beside the lag exporter (app/processes/lag_exporter.py); this is the
process of its own, for a CronJob or a person.
"""

from __future__ import annotations

from app.config import Settings
from app.processes.lifecycle import stop_event_on_signals
from app.reconciler.reconcile import reconcile_until


async def run_reconciler(settings: Settings, every_s: float) -> None:
    """A pass every ``every_s`` seconds until a signal stops it (within the reconciler's grace)."""
    await reconcile_until(settings, stop_event_on_signals(), every_s)
