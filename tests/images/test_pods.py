"""The rendered chart's pods under `podman kube play`: a flash sale, then a consumer stopped mid-sale."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, cast

import httpx
import pytest

from harness import scrape, wait_until
from tests.images import pods
from tests.images.conftest import Release, wait_exited
from tests.images.podman import podman

pytestmark = [pytest.mark.images, pytest.mark.asyncio(loop_scope="session")]

ISSUED = 'coupon_consumer_messages_total{outcome="issued"}'
ACCEPTED = 'coupon_api_issue_requests_total{outcome="accepted"}'
DUPLICATES = 'coupon_consumer_messages_total{outcome="duplicate_delivery"}'


async def get(url: str) -> int:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(url)).status_code
    except httpx.TransportError:
        return 0


async def all_probes_pass(release: Release) -> dict[str, str]:
    """Wait until every probe of every played container answers 200 from the host."""
    urls = {
        f"{d['metadata']['name']} {what}": url
        for d in release.played
        if d["kind"] == "Deployment"
        for what, url in pods.probe_urls(d).items()
    }

    async def passing() -> bool:
        codes = await asyncio.gather(*(get(u) for u in urls.values()))
        return all(code == 200 for code in codes)

    await wait_until(passing, 120, f"every probe to answer 200: {sorted(urls)}", interval=0.5)
    return urls


async def press(release: Release, coupon_id: str, users: list[str], parallel: int) -> list[int]:
    """Every user presses once, ``parallel`` at a time; the status codes in order."""
    limit = asyncio.Semaphore(parallel)

    async def one(user: str) -> int:
        async with limit:
            return (await release.stack.request_issue(coupon_id, user)).status_code

    return list(await asyncio.gather(*(one(u) for u in users)))


def verify(release: Release, coupon_id: str) -> tuple[int, dict[str, Any]]:
    """`coupon-issuer verify` inside the API container (its env: the ConfigMap and the Secret)."""
    proc = podman(
        "exec",
        release.container("-api"),
        "coupon-issuer",
        "verify",
        "--json",
        "--coupon",
        coupon_id,
        check=False,
    )
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


async def assert_clean(release: Release, coupon_id: str, stock: int) -> None:
    code, report = verify(release, coupon_id)
    assert code == 0 and report["ok"] is True and report["violations"] == [], report
    (figures,) = report["coupons"]
    assert figures["issued_quantity"] == figures["issued_rows"] == stock, figures
    assert figures["double_issued"] == 0, figures
    users = await release.stack.pool.fetchval(
        "SELECT count(DISTINCT user_id) FROM issue_requests WHERE coupon_id = $1"
        " AND status = 'ISSUED'",
        uuid.UUID(coupon_id),
    )
    assert users == stock, "a user was issued the coupon twice"


async def test_hook_job_migrated_and_created_the_topics(release: Release) -> None:
    tables = await release.stack.pool.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
        release.settings.db_schema,
    )
    assert {"coupons", "issue_requests", "schema_migrations"} <= {r[0] for r in tables}
    topics = podman("logs", pods.container_name(release.job, "topics")).stdout
    partitions = release.settings.partitions
    for topic in (release.settings.topic, release.settings.dlq_topic):
        assert f"topic {topic}: {partitions} partitions (created)" in topics, topics


async def test_pods_run_locked_down_and_probes_answer(release: Release) -> None:
    await all_probes_pass(release)
    names = [release.container("-api"), release.container("-lag-exporter")]
    for name in [*names, *release.consumer_containers()]:
        state = json.loads(podman("inspect", name).stdout)[0]
        assert state["State"]["Status"] == "running", name
        assert state["Config"]["User"] == "10001:10001", name
        assert state["HostConfig"]["ReadonlyRootfs"] is True, name
        assert not state["EffectiveCaps"], f"{name} keeps capabilities {state['EffectiveCaps']}"
        writes = podman(
            "exec", name, "sh", "-c", "touch /tmp/ok && ! touch /root-is-read-only", check=False
        )
        assert writes.returncode == 0, f"{name}: /tmp must be writable, / read-only"


async def test_pre_stop_hooks_run_in_the_image(release: Release) -> None:
    """podman does not run preStop hooks: run each one in its container as Kubernetes would."""
    hooks = {
        release.container(d["metadata"]["name"]): c["lifecycle"]
        for d in release.played
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
        if "lifecycle" in c
    }
    assert hooks, "the API has a preStop sleep (api.preStopSleepSeconds)"
    for name, lifecycle in hooks.items():
        command = lifecycle["preStop"]["exec"]["command"]
        proc = podman("exec", name, *command, check=False, timeout=60)
        assert proc.returncode == 0, f"{name}: preStop {command} failed: {proc.stderr}"


async def test_lag_exporter_reports_the_release_topic(release: Release) -> None:
    port = release.deployment("-lag-exporter")["spec"]["template"]["spec"]["containers"][0]
    url = f"http://127.0.0.1:{port['livenessProbe']['httpGet']['port']}/metrics"

    async def reports() -> bool:
        async with httpx.AsyncClient(timeout=2) as client:
            text = (await client.get(url)).text
        return release.settings.topic in text

    await wait_until(reports, 60, "the lag exporter to report the release's topic", interval=0.5)


async def test_admin_endpoints_need_the_secret_token(release: Release) -> None:
    await all_probes_pass(release)
    assert release.stack.http is not None
    body = {"name": "x", "discountType": "FIXED", "discountValue": 1, "totalQuantity": 1}
    body |= {"minOrderAmount": 0, "expiresAt": "2099-01-01T00:00:00Z"}
    refused = await release.stack.http.post("/api/coupons", json=body)
    assert refused.status_code == 401, refused.text
    wrong = await release.stack.http.post(
        "/api/coupons", json=body, headers={"Authorization": "Bearer wrong"}
    )
    assert wrong.status_code == 401, wrong.text
    await release.stack.create_coupon(1)  # with the token the chart's Secret carried


async def test_flash_sale_through_the_containers(release: Release) -> None:
    await all_probes_pass(release)
    stock = 40
    coupon_id = await release.stack.create_coupon(stock)
    users = [f"user-{i}" for i in range(150)]
    codes = await press(release, coupon_id, users, parallel=20)
    assert codes.count(202) == stock, codes
    assert set(codes) == {202, 410}, codes
    again = await press(release, coupon_id, users[:20], parallel=10)
    assert set(again) <= {409, 410} and 202 not in again, again
    await release.stack.wait_processed(coupon_id, stock, timeout=60)
    assert await release.stack.outcomes(coupon_id) == {"ISSUED": stock}
    await assert_clean(release, coupon_id, stock)
    # Two uvicorn workers share their samples through a directory under the read-only root's /tmp.
    assert release.stack.http is not None
    metrics = scrape((await release.stack.http.get("/metrics")).text)
    assert metrics[ACCEPTED] >= stock, {k: v for k, v in metrics.items() if "issue_requests" in k}


async def test_sigterm_mid_sale_finishes_the_batch_and_redelivers_nothing(
    release: Release,
) -> None:
    await all_probes_pass(release)
    consumers = range(len(release.consumer_ports))
    scraped = [await release.stack.consumer_metrics(i) for i in consumers]
    assert all(m and m["coupon_consumer_assigned_partitions"] >= 1 for m in scraped), scraped
    before = cast(list[dict[str, float]], scraped)  # none is None: asserted just above
    stock = 3000
    coupon_id = await release.stack.create_coupon(stock)
    users = [f"buyer-{i}" for i in range(stock)]
    sale = asyncio.create_task(press(release, coupon_id, users, parallel=8))

    async def issuing() -> list[int]:
        """The consumers issuing this sale's coupons (the owner of its partition)."""
        now = [await release.stack.consumer_metrics(i) for i in consumers]
        # zip, not now[i]: mypy narrows a name, not an indexed element
        return [
            i for i, m in zip(consumers, now, strict=True) if m and m[ISSUED] > before[i][ISSUED]
        ]

    (victim,) = await wait_until(issuing, 60, "a consumer to issue the sale's coupons", 0.05)
    (survivor,) = set(consumers) - {victim}
    name = release.consumer_containers()[victim]
    assert not sale.done(), "the sale ended before the consumer was stopped: not mid-sale"
    grace = release.deployment(f"-consumer-{victim}")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    started = time.monotonic()
    podman("stop", "--time", str(grace), name, timeout=grace + 30)
    stopped_in = time.monotonic() - started
    assert await wait_exited(name, 10) == 0, podman("logs", name).stderr[-3000:]
    assert stopped_in < grace, f"SIGTERM ignored: killed after {stopped_in:.0f}s"
    logs = podman("logs", name)
    assert "consumer stopped cleanly" in logs.stdout + logs.stderr
    assert "will be redelivered" not in logs.stdout + logs.stderr, "its last commit was lost"
    assert not sale.done() or (await release.stack.processed(coupon_id)) < stock, "not mid-sale"

    codes = await sale
    assert codes.count(202) == stock, sorted(set(codes))
    await release.stack.wait_processed(coupon_id, stock, timeout=120)
    assert await release.stack.outcomes(coupon_id) == {"ISSUED": stock}
    after = await release.stack.consumer_metrics(survivor)
    assert after is not None
    assert after[DUPLICATES] == 0, "the survivor was redelivered what the stopped consumer issued"
    assert after["coupon_consumer_assigned_partitions"] == release.settings.partitions
    await assert_clean(release, coupon_id, stock)
    state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
    assert state == "exited", f"{name} was restarted: {state}"
