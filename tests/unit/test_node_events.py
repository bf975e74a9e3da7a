"""The node tests' rule for Events: failures fail a test, but for the kubelet's cache race."""

from __future__ import annotations

from tests.node.events import failures

_RACE = (
    'MountVolume.SetUp failed for volume "kube-api-access-n6kh8" : failed to sync configmap'
    " cache: timed out waiting for the condition"
)


def _event(reason: str, message: str) -> dict[str, object]:
    return {"involvedObject": {"name": "kafka-0"}, "reason": reason, "message": message}


def test_the_kubelets_cache_race_is_tolerated_for_a_container_and_for_a_volume() -> None:
    env = "Error: failed to sync secret cache: timed out waiting for the condition"
    assert failures([_event("Failed", env), _event("FailedMount", _RACE)]) == []


def test_every_other_failure_is_reported() -> None:
    mount = 'MountVolume.SetUp failed for volume "data" : hostPath type check failed'
    found = failures(
        [
            _event("FailedMount", mount),
            _event("BackOff", "Back-off restarting failed container"),
            _event("FailedScheduling", _RACE),  # the race's words, under another reason
            _event("Started", "Started container kafka"),
        ]
    )
    assert found == [
        f"kafka-0: FailedMount: {mount}",
        "kafka-0: BackOff: Back-off restarting failed container",
        f"kafka-0: FailedScheduling: {_RACE}",
    ]
