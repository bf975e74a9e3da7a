"""The dashboards drawn from a real sale: a burst, a consumer stall and a recovery, scraped by a
real Prometheus; every panel of every dashboard must draw at least one series with data.

The sale, on its own topic, schema and coupons (three consumers, the lag exporter polling every
second, a trigger that refuses users named ``poison...`` so that failures and dead letters
show):

1. warm-up: a trickle of presses on a coupon of every partition, until issues show in Prometheus;
2. burst: 1,000 users and 50 repeat presses at once on one coupon of 800 (the hot partition;
   accepted, sold out, duplicate), until all accepted are issued;
3. stall: every consumer stopped (SIGSTOP) while presses keep coming on a second hot coupon,
   until the group has lost its members and the lag passed ``STALL_LAG``;
4. recovery: the consumers continue (SIGCONT), rejoin and drain, until Prometheus has seen the
   lag at zero for a few scrapes.

``make dashboards-render`` runs this module with ``COUPON_DASHBOARD_PICTURES=docs/img``: the
pictures in docs/ are the ones this test drew. Otherwise they go to a temporary directory.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from dashboards.pictures.draw import EmptyPanelsError, render_dashboard
from harness import wait_until
from tests.prometheus import (
    PrometheusServer,
    dashboard_files,
    first_value,
    running_lag_exporter,
    stack_jobs,
    wait_scraping,
)
from tests.stack import Stack, coupons_on_every_partition, isolated_settings, refuse_poison_users

PICTURES_ENV = "COUPON_DASHBOARD_PICTURES"
NAMESPACE = "coupon-sale"
SCRAPE_MS = 1000  # tests/prometheus.py scrapes every second: the datasource's "scrape interval"
HOT_STOCK, BURST_USERS, REPEATS = 800, 1000, 50
STALL_LAG = 300
TICK_S = 0.25  # a load tick: the presses of one tick are sent together


@dataclass
class Sale:
    stack: Stack
    prometheus: PrometheusServer
    start: float = 0.0
    end: float = 0.0

    def value(self, expression: str) -> float:
        return first_value(self.prometheus.query(expression))


@pytest.fixture(scope="module")
def pictures_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get(PICTURES_ENV)
    path = Path(wanted) if wanted else tmp_path_factory.mktemp("pictures")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sale(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Sale]:
    log_dir = Path(tmp_path_factory.mktemp("pictures-stack"))
    stack = await Stack(isolated_settings(kafka_bootstrap), log_dir).start(consumers=3)
    await refuse_poison_users(stack.pool, stack.settings.db_schema)
    try:
        with running_lag_exporter(stack, {"COUPON_LAG_EXPORTER_INTERVAL_S": "1"}) as port:
            server = PrometheusServer(
                jobs=stack_jobs(stack, port),
                labels={"namespace": NAMESPACE},
                workdir=log_dir / "prometheus",
            )
            server.workdir.mkdir()
            try:
                server.start()
                await wait_scraping(server)
                observed = Sale(stack, server)
                await _run_sale(observed)
                yield observed
            finally:
                server.stop()
    finally:
        await stack.stop()


def _users(prefix: str) -> Iterator[str]:
    return (f"{prefix}-{i}" for i in itertools.count())


async def _while_pressing(
    sale: Sale, presses: Callable[[], list[tuple[str, str]]], done: Callable[[], bool], what: str
) -> None:
    """Send one tick's presses, then ask ``done`` (Prometheus), until it holds."""

    async def tick() -> bool:
        await asyncio.gather(*(sale.stack.request_issue(c, u) for c, u in presses()))
        return await asyncio.to_thread(done)

    await wait_until(tick, 120, what, interval=TICK_S)


async def _run_sale(sale: Sale) -> None:
    stack = sale.stack
    spread = await coupons_on_every_partition(stack, 10_000)
    hot, hot_again = await stack.create_coupon(HOT_STOCK), await stack.create_coupon(10_000)
    trickle, poison, pressing = _users("trickle"), _users("poison"), _users("stalled")
    ticks = itertools.count()
    ns = f'namespace="{NAMESPACE}"'

    def background() -> list[tuple[str, str]]:
        tick = next(ticks)
        found = [(spread[tick % len(spread)], next(trickle)) for _ in range(3)]
        return found + ([(spread[0], next(poison))] if tick % 8 == 0 else [])

    sale.start = time.time()
    await _while_pressing(
        sale,
        background,
        lambda: sale.value(f'sum(coupon_consumer_messages_total{{{ns}, outcome="issued"}})') >= 20,
        "the warm-up's issues in Prometheus",
    )
    burst = [f"burst-{i}" for i in range(BURST_USERS)] + [f"burst-{i}" for i in range(REPEATS)]
    answers = await asyncio.gather(*(stack.request_issue(hot, u) for u in burst))
    assert sorted({a.status_code for a in answers}) == [202, 409, 410]
    await stack.wait_processed(hot, HOT_STOCK, timeout=120)

    for consumer in stack.consumers:
        consumer.popen.send_signal(signal.SIGSTOP)
    try:
        await _while_pressing(
            sale,
            lambda: [*background(), *((hot_again, next(pressing)) for _ in range(6))],
            lambda: (
                sale.value(f"sum(coupon_consumer_group_members{{{ns}}})") == 0
                and sale.value(f"sum(coupon_consumer_lag_messages{{{ns}}})") >= STALL_LAG
            ),
            "the stalled group to lose its members while the lag grows",
        )
    finally:
        for consumer in stack.consumers:
            consumer.popen.send_signal(signal.SIGCONT)
    await _while_pressing(
        sale,
        background,
        lambda: sale.value(f"max_over_time(sum(coupon_consumer_lag_messages{{{ns}}})[5s:1s])") == 0,
        "the lag drained, for five scrapes",
    )
    sale.end = time.time()


@pytest.mark.parametrize("board", dashboard_files(), ids=lambda p: p.stem)
def test_every_panel_draws_series_with_data(sale: Sale, board: Path, pictures_dir: Path) -> None:
    out = pictures_dir / f"{board.stem}.png"
    try:
        results = render_dashboard(
            json.loads(board.read_text()),
            sale.prometheus.query_range,
            sale.start - 2,
            sale.end + 1,
            out,
            scrape_interval_ms=SCRAPE_MS,
        )
    except EmptyPanelsError as empty:
        raise AssertionError(f"{out}: {empty}") from None
    assert results and all(r.series for r in results)
    assert out.stat().st_size > 50_000
