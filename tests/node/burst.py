"""A burst of presses on a release, one coupon per partition, and the timeline of what scaled.

The two autoscaling tests (the operator's and KEDA's) run the same burst and differ only in
who scales the consumers and which signs they read: this holds the burst, the timeline and the
final check that every press was issued once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from tests.node.release import Release, assert_issued
from tests.node.timeline import Timeline
from tests.stack import coupons_on_every_partition, holding_coupon_rows

PER_COUPON = 100  # presses on each coupon (its stock): one partition's lag
IN_FLIGHT = 20  # presses in flight at once


class Burst:
    """``await Burst.on(release)``; then ``run`` it, mark each step with ``at``, ``verify`` it."""

    def __init__(self, release: Release, coupons: list[str]) -> None:
        self.release = release
        self.coupons = coupons
        self.timeline = Timeline()

    @classmethod
    async def on(cls, release: Release) -> Burst:
        """One coupon per partition: the lag of one hot coupon is one consumer's work, whatever
        its size, so the burst spreads over every partition."""
        return cls(release, await coupons_on_every_partition(release.stack, PER_COUPON))

    async def at(self, what: str, condition: Any, timeout: float) -> Any:
        """Wait for ``condition`` and note when it held, in seconds after the burst began."""
        return await self.timeline.at(what, condition, timeout)

    async def run(self, scale_out: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Send every press (each must be accepted) while ``scale_out`` watches the scaling.

        The coupons' rows are held until ``scale_out`` returns: a consumer woken by the first
        signs could otherwise drain the burst before the scaler's next look, and the loop would
        rightly stay at one consumer. The lag is real: accepted presses wait in the broker.
        """
        limit = asyncio.Semaphore(IN_FLIGHT)

        async def press(coupon_id: str, user: str) -> int:
            async with limit:
                return (await self.release.stack.request_issue(coupon_id, user)).status_code

        self.timeline.restart()
        async with holding_coupon_rows(self.release.stack, self.coupons):
            watching = asyncio.create_task(scale_out())
            codes = await asyncio.gather(
                *(press(c, f"u{i}") for c in self.coupons for i in range(PER_COUPON))
            )
            assert codes.count(202) == len(codes), sorted(set(codes))
            self.timeline.mark("burst accepted")
            await watching

    async def drained(self) -> bool:
        done = [await self.release.stack.processed(c) for c in self.coupons]
        return sum(done) >= PER_COUPON * len(self.coupons)

    def write(self, label: str) -> None:
        """Keep the timeline beside the release's logs and print it."""
        self.timeline.write(self.release.home / "timeline.json", f"{label}, after the burst began")

    async def verify(self) -> None:
        """Every press of every coupon issued once (``coupon-issuer verify`` in the cluster)."""
        for coupon_id in self.coupons:
            await assert_issued(self.release, coupon_id, PER_COUPON)
