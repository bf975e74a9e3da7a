"""What a stranded reservation is told: a loss of its partition seen after its press, else no more
than NOT_QUEUED (app/domain/settlement.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from app.domain.outcomes import FailReason
from app.domain.settlement import PartitionWatch, failure_reason, next_watch
from harness.stranded import request_id_made_at

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
TOPIC = uuid.uuid4()


def _watch_after(*looks: tuple[uuid.UUID | None, int, datetime]) -> PartitionWatch:
    watch = None
    for topic_id, log_end, at in looks:
        watch = next_watch(watch, 0, topic_id, log_end, at)
    assert watch is not None
    return watch


def test_without_a_loss_seen_a_stranded_press_is_told_not_queued() -> None:
    watch = _watch_after((TOPIC, 10, T0), (TOPIC, 15, T0 + timedelta(seconds=5)))
    assert watch.lost_at is None
    assert failure_reason(request_id_made_at(T0), watch) is FailReason.NOT_QUEUED
    assert failure_reason(request_id_made_at(T0), None) is FailReason.NOT_QUEUED


def test_a_log_end_gone_backwards_is_told_to_presses_made_before_it_was_seen() -> None:
    seen = T0 + timedelta(seconds=5)
    watch = _watch_after((TOPIC, 10, T0), (TOPIC, 4, seen), (TOPIC, 9, seen + timedelta(60)))
    assert (watch.lost_at, watch.lost_reason) == (seen, FailReason.LOG_TRUNCATED)
    assert failure_reason(request_id_made_at(T0), watch) is FailReason.LOG_TRUNCATED
    # Pressed after the loss was seen: that loss cannot have taken it.
    later = seen + timedelta(seconds=30)
    assert failure_reason(request_id_made_at(later), watch) is FailReason.NOT_QUEUED


def test_a_new_topic_id_is_told_topic_recreated_even_when_the_log_end_grew() -> None:
    seen = T0 + timedelta(seconds=5)
    watch = _watch_after((TOPIC, 10, T0), (uuid.uuid4(), 20, seen))
    assert (watch.lost_at, watch.lost_reason) == (seen, FailReason.TOPIC_RECREATED)
    assert failure_reason(request_id_made_at(T0), watch) is FailReason.TOPIC_RECREATED


def test_the_first_look_and_an_unknown_topic_id_claim_no_loss() -> None:
    assert _watch_after((TOPIC, 10, T0)).lost_at is None
    assert _watch_after((None, 10, T0), (TOPIC, 10, T0 + timedelta(5))).lost_at is None
    assert _watch_after((TOPIC, 10, T0), (None, 10, T0 + timedelta(5))).lost_at is None
