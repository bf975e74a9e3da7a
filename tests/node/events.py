"""Which Events a healthy rollout on the node never has: one rule for every node test."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

BAD_EVENTS = ("FailedCreate", "BackOff", "Failed", "FailedScheduling", "FailedMount", "Evicted")
# The one kubelet failure tolerated, seen in about one session in four on a loaded machine: the
# Node authorizer lets a kubelet read a Secret or ConfigMap only once its graph links it to a pod
# bound to the node, and the kubelet's watch-based cache gave up waiting for that first (a hook
# pod created moments after its Secret; a consumer pod bound while the authorizer's informers
# lag). It is reported as "Failed" when a container's environment needed it, and as
# "FailedMount" when a volume did (every pod's kube-api-access volume projects the
# kube-root-ca.crt ConfigMap). The kubelet retries the pod, which then starts: the tests still
# require every pod Ready with no restart. Nothing in the chart can order it otherwise.
KUBELET_RACE = re.compile(
    r"failed to sync (secret|configmap) cache: timed out waiting for the condition"
)
_RACE_REASONS = ("Failed", "FailedMount")


def failures(events: Iterable[dict[str, Any]]) -> list[str]:
    """'object: reason: message' of every Event in BAD_EVENTS but the tolerated kubelet race."""
    return [
        f"{e['involvedObject']['name']}: {e['reason']}: {e.get('message', '')}"
        for e in events
        if e["reason"] in BAD_EVENTS
        and not (e["reason"] in _RACE_REASONS and KUBELET_RACE.search(e.get("message", "")))
    ]


def probe_failures_once_ready(
    events: Iterable[dict[str, Any]], ready_since: dict[str, str]
) -> list[str]:
    """Every liveness probe failure, and every probe failing after its pod became Ready
    (``ready_since``: pod name → its Ready condition's lastTransitionTime), until the kubelet
    began stopping it. A startup or readiness probe may fail while its pod starts, and a
    readiness probe while it stops (a consumer scaled in closes its port): that is their job."""
    events = list(events)
    stopping = {
        e["involvedObject"]["name"]: e.get("firstTimestamp") or e.get("lastTimestamp") or ""
        for e in events
        if e["reason"] == "Killing"
    }
    found = []
    for e in events:
        pod, at = e["involvedObject"]["name"], e.get("lastTimestamp") or ""
        if e["reason"] != "Unhealthy" or (pod in stopping and at >= stopping[pod]):
            continue
        if e.get("message", "").startswith("Liveness") or at > ready_since.get(pod, ""):
            found.append(f"{pod} {at}: {e.get('message', '')}")
    return found
