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
# lag). The kubelet retries the pod, which then starts: the tests still require every pod Ready
# with no restart. Nothing in the chart can order it otherwise.
KUBELET_RACE = re.compile(
    r"failed to sync (secret|configmap) cache: timed out waiting for the condition"
)


def failures(events: Iterable[dict[str, Any]]) -> list[str]:
    """'object: reason: message' of every Event in BAD_EVENTS but the tolerated kubelet race."""
    return [
        f"{e['involvedObject']['name']}: {e['reason']}: {e.get('message', '')}"
        for e in events
        if e["reason"] in BAD_EVENTS
        and not (e["reason"] == "Failed" and KUBELET_RACE.search(e.get("message", "")))
    ]
