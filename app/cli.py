"""The ``coupon-issuer`` command: one subcommand per process."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from app.config import Settings
from app.observability.logs import configure_logging
from app.processes.lifecycle import run as _run
from app.unreachable import diagnose


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:  # one line per bad setting, named as it is set
        for error in exc.errors():
            name = "COUPON_" + "_".join(str(p) for p in error["loc"]).upper()
            print(f"error: {name} {error['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    if args.one_shot:
        _quiet_client_libraries()
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    try:
        return handler(settings, args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # Any subcommand: a dependency that does not answer is one line and exit 2, not a trace.
        problem = diagnose(exc, settings)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        # clients the failed command left open complain when collected; that is noise by now
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        return 2


def _quiet_client_libraries() -> None:
    """A command that runs and exits reports its failures itself (one line); the client
    libraries' own error logs and unclosed-client complaints would only repeat them as noise."""
    for name in ("aiokafka", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coupon-issuer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Callable[..., int], help_text: str, *, one_shot: bool = False
    ) -> argparse.ArgumentParser:
        """``one_shot``: the command runs and exits (its library logs are quieted)."""
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler, one_shot=one_shot)
        return p

    add("api", _api, "Run the HTTP API (uvicorn, COUPON_API_WORKERS processes).")
    add("consumer", _consumer, "Run one issue worker (a consumer-group member).")
    add("migrate", _migrate, "Apply pending PostgreSQL migrations.", one_shot=True)
    add("topics", _topics, "Create or verify the request and dead-letter topics.", one_shot=True)
    dev = add("dev", _dev, "Run the whole stack locally (broker, API, consumers).")
    dev.add_argument("--no-autoscale", action="store_true", help="run a fixed number of consumers")
    dev.add_argument(
        "--state-dir",
        type=Path,
        help="keep the broker's, PostgreSQL's and Redis's data here between runs (make run:"
        " .local-stack); without it they are thrown away at exit",
    )
    dev.add_argument(
        "--fresh", action="store_true", help="empty --state-dir first: start from nothing"
    )
    dev.add_argument("--consumers", type=int, default=1, help="consumers to start with")
    dlq = add("dlq", _dlq, "Inspect or replay the dead-letter topic.", one_shot=True)
    dlq.add_argument("action", choices=["list", "replay"])
    add("lag-exporter", _lag_exporter, "Export consumer lag and coupon gauges to Prometheus.")
    add("operator", _operator, "Run the ConsumerAutoscaler operator (kopf).")
    reconcile = add(
        "reconcile", _reconcile, "Settle reservations that never reached the queue (one pass)."
    )
    reconcile.add_argument(
        "--every", type=float, metavar="SECONDS", help="keep running, a pass every SECONDS"
    )
    reconcile.add_argument(
        "--confirm-after",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="one pass: observe twice this far apart, settle what both saw (default 3)",
    )
    verify = add(
        "verify", _verify, "Check the invariants; exit non-zero on any violation.", one_shot=True
    )
    verify.add_argument("--coupon", help="only this coupon id")
    verify.add_argument("--json", action="store_true", help="machine-readable report")
    return parser


def _api(settings: Settings, _: argparse.Namespace) -> int:
    from app.processes.api import run_api

    run_api(settings)
    return 0


def _consumer(settings: Settings, _: argparse.Namespace) -> int:
    from app.processes.consumer import run_consumer

    _run(run_consumer(settings))
    return 0


def _migrate(settings: Settings, _: argparse.Namespace) -> int:
    from app.adapters.postgres_setup import apply_migrations

    applied = _run(apply_migrations(settings.database_url, settings.db_schema))
    print(f"migrations applied: {', '.join(applied) or 'none pending'}")
    return 0


def _topics(settings: Settings, _: argparse.Namespace) -> int:
    from app.adapters.kafka import TopicProblem, ensure_topics, wanted_topics

    try:
        reports = _run(ensure_topics(settings.kafka_bootstrap, wanted_topics(settings)))
    except TopicProblem as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for r in reports:
        print(f"topic {r.name}: {r.partitions} partitions ({'created' if r.created else 'ok'})")
    return 0


def _dev(settings: Settings, args: argparse.Namespace) -> int:
    try:
        from app.local.processes import absolute
        from app.local.stack import run_dev
    except ModuleNotFoundError:  # the images leave the local stack out (.dockerignore)
        print(
            "error: `dev` runs from a checkout (make run); this install has no app/local",
            file=sys.stderr,
        )
        return 2

    # Not from DEV_ENV_FILE: that describes a stack this command starts (or a stale one).
    fresh = Settings(_env_file=None)
    # Absolute from here on: the servers, the banner and --fresh all name the same place.
    state_dir = None if args.state_dir is None else absolute(args.state_dir)
    if args.fresh and state_dir is not None:
        # A PostgreSQL cluster kept outside it goes with it (claim_postgres_state_dir).
        shutil.rmtree(state_dir, ignore_errors=True)
        print(f"emptied {state_dir}: starting from nothing")
    return run_dev(
        fresh, autoscale=not args.no_autoscale, consumers=args.consumers, state_dir=state_dir
    )


def _dlq(settings: Settings, args: argparse.Namespace) -> int:
    from app.adapters.dead_letters import list_dead_letters, replay_dead_letters

    if args.action == "replay":
        n = _run(
            replay_dead_letters(
                settings.kafka_bootstrap, settings.dlq_topic, settings.consumer_group
            )
        )
        print(f"replayed {n} dead letter(s) to their source topic")
        return 0
    entries = _run(list_dead_letters(settings.kafka_bootstrap, settings.dlq_topic))
    for e in entries:
        letter = e.letter
        print(
            f"{e.partition}@{e.offset}\tattempts={letter.attempts}\t"
            f"source={letter.topic}[{letter.partition}]@{letter.offset}\t{letter.error}"
        )
    print(f"{len(entries)} dead letter(s)")
    return 0


def _lag_exporter(settings: Settings, _: argparse.Namespace) -> int:
    from app.processes.lag_exporter import run_lag_exporter

    _run(run_lag_exporter(settings, poll_interval_s=settings.lag_exporter_interval_s))
    return 0


def _operator(settings: Settings, _: argparse.Namespace) -> int:
    from app.processes.operator import run_operator

    run_operator(settings)
    return 0


def _reconcile(settings: Settings, args: argparse.Namespace) -> int:
    from app.processes.reconciler import run_reconciler
    from app.reconciler.reconcile import reconcile_once

    if args.every:
        _run(run_reconciler(settings, args.every))
        return 0
    report = _run(reconcile_once(settings, args.confirm_after))
    if report.skipped:
        print(f"reconcile: nothing settled, {report.skipped}", file=sys.stderr)
        return 2
    for r in report.released:
        print(f"released coupon={r.coupon_id} user={r.user_id} request={r.request_id} {r.reason}")
    print(
        f"reconcile: {report.coupons} coupon(s) checked, {report.suspects} suspect(s),"
        f" {len(report.released)} stranded reservation(s) released"
    )
    return 0


def _verify(settings: Settings, args: argparse.Namespace) -> int:
    from app.verify import run_verify

    return run_verify(settings, args.coupon, args.json)


if __name__ == "__main__":
    sys.exit(main())
