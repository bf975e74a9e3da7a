"""Where a wrk request waits: inside the API (its own latency histogram, read from ``/metrics``
before and after a run) or outside it (the kernel's socket queues, the event loop's turn to read
a connection, wrk itself).

The API observes each request from the moment its ASGI call starts until the answer is handed to
the server (app/api/middleware.py); wrk measures from writing a request to reading its answer.
The two distributions side by side say which side a run's tail is on. The histogram's buckets
are coarse, so a percentile is reported as the bucket bound it falls under.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

_REQUESTS = "coupon_api_request_duration_seconds"
_PUBLISH = "coupon_api_publish_duration_seconds"
Buckets = dict[str, dict[float, float]]  # histogram -> {upper bound: cumulative count}


def scrape(base_url: str, timeout_s: float = 10) -> Buckets:
    """The API's press-latency and publish-latency buckets (cumulative), summed over labels."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=timeout_s) as answer:
        text = answer.read().decode()
    out: Buckets = {_REQUESTS: {}, _PUBLISH: {}}
    for family in text_string_to_metric_families(text):
        if family.name not in out:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_bucket"):
                continue
            # presses only: the route template ends with /issue/queue (status reads differ)
            if family.name == _REQUESTS and not sample.labels.get("route", "").endswith("queue"):
                continue
            bound = float(sample.labels["le"])
            out[family.name][bound] = out[family.name].get(bound, 0.0) + sample.value
    return out


def percentile_bound(
    before: Mapping[float, float], after: Mapping[float, float], q: float
) -> float | None:
    """The smallest bucket bound under which a share ``q`` of the run's observations fall."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    for bound, count in zip(bounds, counts, strict=True):
        if count >= q * counts[-1]:
            return bound
    return None


def summary(before: Buckets, after: Buckets) -> dict[str, float | None]:
    """In-app press latency and publish latency of one run: p50 / p99 as bucket bounds, in ms."""

    def ms(name: str, q: float) -> float | None:
        bound = percentile_bound(before.get(name, {}), after.get(name, {}), q)
        return None if bound is None else 1000 * bound

    return {
        "in_app_p50_ms_le": ms(_REQUESTS, 0.5),
        "in_app_p99_ms_le": ms(_REQUESTS, 0.99),
        "publish_p50_ms_le": ms(_PUBLISH, 0.5),
        "publish_p99_ms_le": ms(_PUBLISH, 0.99),
    }
