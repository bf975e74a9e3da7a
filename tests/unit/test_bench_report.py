"""What the bench's table says about the wrk phases' rows and the servers it started."""

from __future__ import annotations

from bench.report import _expected, _flushed, _rows_note, _unconfirmed_note, whole_system_rows


def test_rows_still_missing_when_the_rows_stopped_coming_are_not_called_in_flight() -> None:
    short = {"accepted": 1000, "rows": 900, "in_flight_at_deadline": -100, "drain_timeout_s": 60.0}
    note = _rows_note(short)
    assert "100 not issued (no new row for 60 s)" in note
    assert "in flight" not in note


def test_a_backlog_wrk_left_is_reported_with_the_time_it_took_to_drain() -> None:
    drained = {
        "accepted": 1000,
        "rows": 1003,
        "in_flight_at_deadline": 3,
        "backlog_at_end": 700,
        "drain_s": 12.0,
        "drain_timeout_s": 60.0,
    }
    assert _rows_note(drained) == (
        "1,000 202s, 1,003 rows (3 in flight at wrk's deadline);"
        " 700 not yet issued when wrk stopped, drained in 12 s"
    )


def test_rows_past_the_202s_are_the_presses_in_flight_at_wrks_deadline() -> None:
    over = {"accepted": 1000, "rows": 1012, "in_flight_at_deadline": 12, "drain_timeout_s": 60.0}
    assert _rows_note(over) == "1,000 202s, 1,012 rows (12 in flight at wrk's deadline)"


def test_the_sale_says_how_many_202s_were_unconfirmed_and_how_many_never_landed() -> None:
    assert _unconfirmed_note({"ok": True, "unconfirmed": 0}) == ""
    assert _unconfirmed_note({"ok": True}) == ""
    note = _unconfirmed_note({"ok": True, "unconfirmed": 1200, "unconfirmed_failed": 8})
    assert note == "; 1,200 202s unconfirmed (publish not acked in time), 8 settled FAILED"


def test_the_expected_count_is_a_range_only_when_unconfirmed_presses_held_units() -> None:
    assert _expected({"expected_issued": 100}) == "100"
    assert _expected({"expected_issued": 100, "expected_issued_least": 100}) == "100"
    assert _expected({"expected_issued": 100, "expected_issued_least": 92}) == "92-100"


def test_the_title_names_the_servers_started_with_fsync_on_and_none_it_did_not_start() -> None:
    assert _flushed(["postgres", "redis"]) == "; postgres and redis started with fsync on"
    assert _flushed([]) == "" and _flushed(None) == ""


def test_the_sale_table_shows_the_brokers_jit_share_and_each_warm_up_sale() -> None:
    def variant(jit: float | None) -> dict[str, object]:
        per = {k: 0.01 for k in ("api", "consumers", "broker", "postgres", "redis")}
        return {
            "cpu_ms_per_issued_coupon": {**per, "sum": 0.05},
            "outside_api_ms": 0.04,
            "issued_per_s": 3000.0,
            "broker_jit_ms": jit,
            "sum_jit_aside_ms": None if jit is None else 0.05 - jit,
            "per_run": [],
        }

    report = {
        "whole_system": {
            "current": variant(0.002),
            "baseline": variant(0.004),
            "baseline_ref": "abc",
            "after_vs_before": {"sum_jit_aside": 1.05},
            "warmup_broker_jit_ms": [0.031, 0.0042],
        }
    }
    rows = {name: (value, note) for name, value, note in whole_system_rows(report)}
    assert rows["  of which the broker's JIT compiler"] == ("0.0020", "before 0.0040")
    assert rows["  sum, the broker's JIT aside"] == ("0.0480", "before 0.0460, now/before 1.05x")
    value, note = rows["warm-up sales (unrecorded)"]
    assert value == "2" and "0.0310, 0.0042" in note
    external = {"whole_system": {**report["whole_system"], "current": variant(None)}}
    names = [name for name, _, _ in whole_system_rows(external)]
    assert "  of which the broker's JIT compiler" not in names
    assert "  sum, the broker's JIT aside" not in names
