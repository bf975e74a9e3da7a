"""A real Prometheus scrapes a real stack through a small sale; every dashboard and alert
expression must then parse and return data, and every exposition must pass promtool."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from harness import wait_until
from tests.prometheus import (
    PrometheusServer,
    all_expressions,
    as_bool_comparisons,
    check_metrics,
    first_value,
    for_prometheus,
    new_workdir,
    running_lag_exporter,
    stack_jobs,
    wait_scraping,
)
from tests.stack import Stack

NAMESPACE = "coupon-e2e"  # what the Prometheus Operator adds; a static label here
STOCK = 20
USERS = 40


@dataclass
class Observed:
    stack: Stack
    prometheus: PrometheusServer
    exporter_port: int

    @property
    def variables(self) -> dict[str, str]:
        s = self.stack.settings
        return {
            "namespace": NAMESPACE,
            "group": s.consumer_group,
            "topic": s.topic,
            "__rate_interval": "1m",
            "DS_PROMETHEUS": "prometheus",
        }


@pytest.fixture(scope="module")
def prometheus_dir() -> Iterator[Path]:
    path = new_workdir("coupon-prometheus-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def observed(shared_stack: Stack, prometheus_dir: Path) -> AsyncIterator[Observed]:
    stack = shared_stack
    with running_lag_exporter(stack) as port:
        server = PrometheusServer(
            jobs=stack_jobs(stack, port), labels={"namespace": NAMESPACE}, workdir=prometheus_dir
        )
        try:
            server.start()
            await wait_scraping(server)
            yield Observed(stack, server, port)
        finally:
            server.stop()


async def _small_sale(stack: Stack) -> str:
    """STOCK coupons, USERS users, a few repeat presses: accepted, sold_out and duplicate."""
    coupon_id = await stack.create_coupon(STOCK)
    presses = [f"prom-user-{i}" for i in range(USERS)] + ["prom-user-0", "prom-user-1"]
    answers = await asyncio.gather(*(stack.request_issue(coupon_id, u) for u in presses))
    assert sorted({a.status_code for a in answers}) == [202, 409, 410]
    await stack.wait_processed(coupon_id, STOCK)
    return coupon_id


async def _expositions(observed: Observed) -> dict[str, str]:
    stack = observed.stack
    urls = {
        "api": f"{stack.base_url}/metrics",
        "lag-exporter": f"http://127.0.0.1:{observed.exporter_port}/metrics",
    }
    urls |= {
        f"consumer-{i}": f"http://127.0.0.1:{p}/metrics" for i, p in enumerate(stack.consumer_ports)
    }
    async with httpx.AsyncClient(timeout=10) as client:
        return {name: (await client.get(url)).text for name, url in urls.items()}


async def test_every_dashboard_and_alert_expression_returns_data(observed: Observed) -> None:
    coupon_id = await _small_sale(observed.stack)
    prometheus = observed.prometheus

    # The sale is visible end to end: the exporter read PostgreSQL and Prometheus scraped it.
    issued = f'coupon_issued_quantity{{namespace="{NAMESPACE}", coupon_id="{coupon_id}"}}'

    async def sale_scraped() -> bool:
        return first_value(await asyncio.to_thread(prometheus.query, issued)) == STOCK

    await wait_until(sale_scraped, 60, "the sale's issued gauge in Prometheus", interval=0.5)

    queries = [
        (where, for_prometheus(as_bool_comparisons(expr), observed.variables))
        for where, expr in all_expressions()
    ]
    assert len(queries) > 30, "the extraction found too few expressions"
    pending = queries

    async def all_answer() -> bool:
        nonlocal pending
        pending = [
            (where, query)
            for where, query in pending
            if not await asyncio.to_thread(prometheus.query, query)
        ]
        return not pending

    # rates need two scrapes after the sale; what still has no data is named below
    with contextlib.suppress(TimeoutError):
        await wait_until(all_answer, 60, "every expression to return data", interval=0.5)
    assert not pending, "expressions without data:\n" + "\n".join(f"{w}: {q}" for w, q in pending)


async def test_every_exposition_passes_promtool_check_metrics(observed: Observed) -> None:
    expositions = await _expositions(observed)
    assert set(expositions) >= {"api", "lag-exporter", "consumer-0"}
    for name, text in expositions.items():
        assert "coupon_" in text, name
        try:
            check_metrics(text)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc
