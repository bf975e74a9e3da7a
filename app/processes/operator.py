"""``coupon-issuer operator``: the ConsumerAutoscaler operator (kopf) for the pod's namespace."""

from __future__ import annotations

import asyncio

from app.autoscaling.operator import operate
from app.config import Settings


def run_operator(settings: Settings) -> None:
    """Watch this namespace (all, without POD_NAMESPACE) until kopf stops; liveness on :8081."""
    namespace = settings.pod_namespace  # POD_NAMESPACE, set by the chart
    asyncio.run(
        operate(
            namespaces=[namespace] if namespace else (),
            liveness_endpoint="http://0.0.0.0:8081/healthz",
        )
    )
