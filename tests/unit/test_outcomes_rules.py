"""Pure rules of issue 'every press ends in one true outcome': status, settlement, fault kinds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from pydantic import ValidationError

from app.config import Settings
from app.consumer.faults import is_infrastructure
from app.domain.outcomes import IssueStatus
from app.domain.request_ids import created_at, new_request_id
from app.domain.settlement import Reservation, confirmed, stranded_suspects
from app.domain.status import RecordedOutcome, user_status

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
COUPON = uuid.uuid4()


def _id_made_at(moment: datetime) -> uuid.UUID:
    """A UUIDv7 whose time is ``moment``."""
    ms = int(moment.timestamp() * 1000)
    rest = new_request_id().int & ((1 << 80) - 1)
    return uuid.UUID(int=(ms << 80) | rest)


def test_request_ids_are_uuid7_and_carry_their_time() -> None:
    before = datetime.now(UTC)
    rid = new_request_id()
    made = created_at(rid)
    assert rid.version == 7 and made is not None
    assert before - timedelta(milliseconds=1) <= made <= datetime.now(UTC)
    assert created_at(uuid.uuid4()) is None
    assert new_request_id() != new_request_id()


def test_a_sale_rate_of_ids_keeps_the_clock_s_time_and_never_repeats() -> None:
    """50,000 ids in a burst (a sale's presses): each carries the time it was made, not a time
    pushed ahead to stay monotonic (an id 50 s in the future would look 50 s too young)."""
    before = datetime.now(UTC)
    ids = [new_request_id() for _ in range(50_000)]
    after = datetime.now(UTC)
    assert len(set(ids)) == len(ids)
    times = [created_at(i) for i in ids]
    assert all(t is not None and before - timedelta(milliseconds=1) <= t <= after for t in times)
    assert all(i.variant == uuid.RFC_4122 and i.version == 7 for i in ids)


def _row(status: IssueStatus, minutes: int, reason: str | None = None) -> RecordedOutcome:
    return RecordedOutcome(uuid.uuid4(), status, reason, NOW + timedelta(minutes=minutes))


def test_status_issued_wins_then_pending_reservation_then_latest() -> None:
    rejected = _row(IssueStatus.REJECTED, 1, "SOLD_OUT")
    issued = _row(IssueStatus.ISSUED, 0)
    assert user_status([rejected, issued], None).status is IssueStatus.ISSUED  # type: ignore[union-attr]
    failed = _row(IssueStatus.FAILED, 0, "NOT_QUEUED")
    again = uuid.uuid4()  # pressed again after the failure: a new reservation
    found = user_status([failed], again)
    assert found is not None and found.status is IssueStatus.PENDING and found.request_id == again
    found = user_status(
        [failed], failed.request_id
    )  # the failed request still holds (release lost)
    assert found is not None and (found.status, found.reason) == (IssueStatus.FAILED, "NOT_QUEUED")
    replayed = _row(IssueStatus.REJECTED, 5, "SOLD_OUT")
    assert user_status([failed, replayed], None).status is IssueStatus.REJECTED  # type: ignore[union-attr]
    assert user_status([], None) is None
    assert user_status([], again).status is IssueStatus.PENDING  # type: ignore[union-attr]


def test_stranded_needs_no_decision_no_lag_and_age() -> None:
    old = _id_made_at(NOW - timedelta(minutes=5))
    young = _id_made_at(NOW - timedelta(seconds=2))
    decided = _id_made_at(NOW - timedelta(minutes=5))
    legacy = uuid.uuid4()  # no time inside: counts as old
    holders = {"old": str(old), "young": str(young), "decided": str(decided), "legacy": str(legacy)}
    undecided = {old, young, legacy}
    age = timedelta(seconds=30)
    found = stranded_suspects(COUPON, holders, undecided, 0, NOW, age)
    assert {r.user_id for r in found} == {"old", "legacy"}
    assert stranded_suspects(COUPON, holders, undecided, 3, NOW, age) == []  # still queued
    assert stranded_suspects(COUPON, holders, undecided, None, NOW, age) == []  # broker unread
    assert stranded_suspects(COUPON, {"x": "not-a-uuid"}, undecided, 0, NOW, age) == []


def test_only_suspects_seen_twice_are_stranded() -> None:
    a = Reservation(COUPON, "a", uuid.uuid4())
    b = Reservation(COUPON, "b", uuid.uuid4())
    assert confirmed([], [a, b]) == []
    assert confirmed([a], [a, b]) == [a]
    assert confirmed([a, b], [b]) == [b]


# asyncpg ships no type hints, so its exceptions are Any to mypy.
class _PgError(asyncpg.PostgresError):  # type: ignore[misc]
    def __init__(self, sqlstate: str) -> None:
        super().__init__("x")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    "sqlstate",
    ["25006", "55P03", "25P03", "28P01", "42P01", "42501", "08006", "57P01", "53300", "40001"],
)
def test_infrastructure_faults_are_waited_out(sqlstate: str) -> None:
    assert is_infrastructure(_PgError(sqlstate))


@pytest.mark.parametrize("sqlstate", ["P0001", "23514", "23505", "22P02"])
def test_a_message_own_faults_are_not_infrastructure(sqlstate: str) -> None:
    assert not is_infrastructure(_PgError(sqlstate))


def test_connection_level_faults_are_infrastructure() -> None:
    assert is_infrastructure(ConnectionRefusedError())
    assert is_infrastructure(TimeoutError())
    assert not is_infrastructure(ValueError("bad data"))


@pytest.mark.parametrize("name", ["admin_token", "user_jwt_secret"])
@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_secret_is_refused_at_start(name: str, value: str) -> None:
    # Any: the field is chosen by name, which Settings' typed keyword arguments cannot check
    empty: dict[str, Any] = {name: value}
    secret: dict[str, Any] = {name: "s3cret"}
    with pytest.raises(ValidationError, match="set but empty"):
        Settings(**empty)
    assert getattr(Settings(**secret), name).get_secret_value() == "s3cret"


def test_a_redis_cluster_url_naming_another_database_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    assert Settings(redis_url="redis://h:7000/0", redis_cluster=True).redis_cluster
    assert Settings(redis_url="redis://h:7000", redis_cluster=True).redis_cluster
    monkeypatch.setenv("COUPON_REDIS_URL", "redis://h:7000/2")
    monkeypatch.setenv("COUPON_REDIS_CLUSTER", "true")
    assert main(["verify"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: COUPON_REDIS_CLUSTER is set, and a Redis Cluster has database 0 only:"
        " COUPON_REDIS_URL names database 2"
    )


def test_the_cli_names_an_empty_secret_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    monkeypatch.setenv("COUPON_ADMIN_TOKEN", "")
    assert main(["verify"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "error: COUPON_ADMIN_TOKEN is set but empty: unset it or give it a real value"
    )
