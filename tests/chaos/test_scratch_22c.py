from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient

from app.reconciler.reconcile import reconcile_once
from harness import wait_until
from harness.partitions import partition_of
from tests.chaos.test_broker_replication import outcomes_by_request, replicated  # noqa: F401


async def test_scratch(replicated) -> None:
    stack, cluster = replicated
    s = stack.settings
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    coord = await admin.find_coordinator(s.consumer_group)
    await admin.close()
    for _ in range(60):
        coupon = await stack.create_coupon(1000)
        p = partition_of(coupon, s.partitions)
        if cluster.leader(s.topic, p).node_id == coord:
            break
    print("DEBUG coordinator", coord, "partition", p, "isr", cluster.isr(s.topic, p), flush=True)
    for i in range(5):
        r = await stack.request_issue(coupon, f"ok-{i}")
        assert r.json()["status"] == "QUEUED"
    for n in cluster.cluster.nodes:
        if n.node_id != coord:
            cluster.kill(n.node_id)
    t0 = time.monotonic()
    rs = await asyncio.gather(*(stack.request_issue(coupon, f"out-{i}") for i in range(5)))
    print("DEBUG during", [(r.status_code, r.json().get("status")) for r in rs], time.monotonic() - t0, flush=True)
    ids = [r.json()["requestId"] for r in rs if r.status_code == 202]
    await asyncio.sleep(s.reconcile_min_age_s + 1)
    for _ in range(2):
        t = time.monotonic()
        task = asyncio.ensure_future(reconcile_once(s, confirm_after_s=0.5))
        done, _ = await asyncio.wait([task], timeout=40)
        if not done:
            for tk in asyncio.all_tasks():
                if 'press' not in repr(tk):
                    print('DEBUG TASK', tk, flush=True)
                    tk.print_stack(limit=30)
            raise SystemExit(1)
        rep = task.result()
        print("DEBUG reconcile", rep, round(time.monotonic() - t, 1), flush=True)
    import uuid
    print("DEBUG outcomes during", await outcomes_by_request(stack, [uuid.UUID(i) for i in ids]), flush=True)
    for n in cluster.cluster.nodes:
        if not n.alive():
            n.launch()
    await cluster.heal()
    async def settled():
        await reconcile_once(s, confirm_after_s=0.5)
        o = await outcomes_by_request(stack, [uuid.UUID(i) for i in ids])
        return o if len(o) == len(ids) else None
    o = await wait_until(settled, 120, "outcomes", 1)
    await asyncio.sleep(5)
    print("DEBUG outcomes after", await outcomes_by_request(stack, [uuid.UUID(i) for i in ids]), flush=True)
