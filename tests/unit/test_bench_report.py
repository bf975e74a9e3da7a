"""What the bench's table says about the wrk phases' rows and the servers it started."""

from __future__ import annotations

from bench.report import _flushed, _rows_note


def test_rows_still_missing_at_the_drain_deadline_are_not_called_in_flight() -> None:
    short = {"accepted": 1000, "rows": 900, "in_flight_at_deadline": -100, "drain_timeout_s": 60.0}
    note = _rows_note(short)
    assert "100 not issued within 60 s" in note and "--drain-timeout" in note
    assert "in flight" not in note


def test_rows_past_the_202s_are_the_presses_in_flight_at_wrks_deadline() -> None:
    over = {"accepted": 1000, "rows": 1012, "in_flight_at_deadline": 12, "drain_timeout_s": 60.0}
    assert _rows_note(over) == "1,000 202s, 1,012 rows (12 in flight at wrk's deadline)"


def test_the_title_names_the_servers_started_with_fsync_on_and_none_it_did_not_start() -> None:
    assert _flushed(["postgres", "redis"]) == "; postgres and redis started with fsync on"
    assert _flushed([]) == "" and _flushed(None) == ""
