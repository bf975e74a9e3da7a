"""The ConsumerAutoscaler operator: kopf handlers that feed the lag reader into the policy.

One kopf daemon per ConsumerAutoscaler: a coroutine that runs for as long as the object exists and
waits ``spec.pollSeconds`` (read afresh each poll, so edits apply at once) between polls. Each poll
parses the spec (:class:`ConsumerAutoscalerSpec`), reads the lag, runs
:func:`app.autoscaling.observation.observe` and :func:`app.autoscaling.policy.decide`, patches the
Deployment's ``scale`` only when the count changes (with an Event), and writes the status. The
policy's history and the previous reading live in the daemon's :class:`Poller`, a local variable:
they are lost on restart, which only delays the next scale-down by one window.

The handlers are closures over one :class:`Shared` (the Kubernetes client and the lag readers),
made by :func:`operate` and passed to :func:`build_registry`; nothing goes through kopf's memo.

Broker errors keep the replica count and set ``BrokerReachable=False``; nothing is scaled on a
guess.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import BaseModel, model_validator

from app.adapters.kafka_lag import LagReadError, LagSnapshot, ReconnectingLagReader
from app.autoscaling.kube import GROUP, PLURAL, VERSION, KubeClient, KubeError
from app.autoscaling.observation import Reading, observe
from app.autoscaling.policy import (
    CAMEL_CASE,
    Direction,
    History,
    ScalingDecision,
    ScalingSpec,
    decide,
)

log = logging.getLogger(__name__)


@dataclass
class Shared:
    """Operator-wide resources, created once by :func:`operate` and captured by every handler."""

    connection: kopf.ConnectionInfo | None = None  # fixed credentials (tests); else login
    kube: KubeClient | None = None
    readers: dict[str, ReconnectingLagReader] = field(default_factory=dict)  # one per bootstrap

    def reader(self, bootstrap: str) -> ReconnectingLagReader:
        """The lag reader of ``bootstrap``, shared by every autoscaler that names it."""
        if bootstrap not in self.readers:
            self.readers[bootstrap] = ReconnectingLagReader(bootstrap)  # connects on first read
        return self.readers[bootstrap]

    async def close(self) -> None:
        for reader in list(self.readers.values()):
            await reader.close()
        self.readers.clear()
        if self.kube is not None:
            await self.kube.close()


class SecretKeyRef(BaseModel):
    """A key of a Secret in the autoscaler's namespace."""

    model_config = CAMEL_CASE

    name: str
    key: str


class KafkaSource(BaseModel):
    """``spec.kafka``: where the lag is measured."""

    model_config = CAMEL_CASE

    topic: str
    consumer_group: str
    bootstrap: str = ""
    bootstrap_secret_ref: SecretKeyRef | None = None  # overrides bootstrap

    @model_validator(mode="after")
    def _bootstrap_given(self) -> KafkaSource:
        if not self.bootstrap and self.bootstrap_secret_ref is None:
            raise ValueError("set kafka.bootstrap or kafka.bootstrapSecretRef")
        return self


class TargetRef(BaseModel):
    """``spec.targetRef``: the Deployment whose replicas are managed."""

    model_config = CAMEL_CASE

    name: str


class ConsumerAutoscalerSpec(ScalingSpec):
    """A ConsumerAutoscaler's whole ``spec``: the policy's knobs, the target and the topic."""

    target_ref: TargetRef
    kafka: KafkaSource


@dataclass
class Poller:
    """The per-object loop state: the policy's history and the previous measurement."""

    namespace: str
    name: str
    history: History = field(default_factory=History)
    previous: Reading | None = None  # the last poll's measurement, for rates
    conditions: dict[str, dict[str, str]] = field(default_factory=dict)

    def condition(self, kind: str, ok: bool, reason: str, message: str) -> None:
        """Set a condition, keeping lastTransitionTime unless its status flips."""
        status = "True" if ok else "False"
        old = self.conditions.get(kind)
        since = old["lastTransitionTime"] if old and old["status"] == status else _now()
        self.conditions[kind] = {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message[:1000],
            "lastTransitionTime": since,
        }


async def poll_once(
    poller: Poller, spec: Mapping[str, Any], body: Any, shared: Shared, kube: KubeClient
) -> float:
    """One reconciliation: measure, decide, scale if needed, write status. Returns the period."""
    policy = ConsumerAutoscalerSpec.model_validate(spec)  # a ValueError when invalid
    kafka, target = policy.kafka, policy.target_ref.name
    status: dict[str, Any] = {}
    try:
        scale = await kube.get_scale(poller.namespace, target)
    except KubeError as exc:
        poller.condition("TargetFound", False, "ScaleReadFailed", str(exc))
        await _write_status(kube, poller, status)
        return policy.poll_seconds
    poller.condition("TargetFound", True, "Found", f"deployment {target}")
    status["currentReplicas"] = scale.replicas

    bootstrap = ""
    try:
        bootstrap = await _bootstrap(kafka, poller.namespace, kube)
        snap = await shared.reader(bootstrap).read(kafka.topic, kafka.consumer_group)
    except (LagReadError, KubeError) as exc:
        # Keep the replicas as they are: scaling on a guess is worse than not scaling. A failed
        # read has already closed the reader's connections: the next poll connects afresh.
        poller.condition("BrokerReachable", False, type(exc).__name__, str(exc))
        poller.previous = None  # the next rates must not span the outage
        status.update(lastDecision="hold", reason=f"lag unknown, replicas kept: {exc}")
        await _write_status(kube, poller, status)
        return policy.poll_seconds
    poller.condition("BrokerReachable", True, "LagRead", f"{bootstrap} answered")

    reading = Reading(time.monotonic(), snap, scale.replicas)
    observation, poller.previous = observe(reading, poller.previous)
    decision = decide(observation, policy, poller.history)
    poller.history = decision.history
    if decision.replicas != scale.replicas:
        await kube.set_replicas(poller.namespace, target, decision.replicas)
        _announce(body, scale.replicas, decision)
        status["lastScaleTime"] = _now()
        status["currentReplicas"] = decision.replicas
    status.update(_decision_status(snap, decision))
    await _write_status(kube, poller, status)
    return policy.poll_seconds


def _decision_status(snap: LagSnapshot, decision: ScalingDecision) -> dict[str, Any]:
    return {
        "lag": snap.total_lag,
        "lagSeconds": round(decision.drain_seconds, 1)
        if decision.drain_seconds is not None
        else None,
        "partitions": snap.partition_count,
        "desiredReplicas": decision.replicas,
        "lastDecision": decision.direction.value,
        "reason": decision.reason,
    }


def _announce(body: Any, before: int, decision: ScalingDecision) -> None:
    """A Kubernetes Event on the ConsumerAutoscaler for every change of the replica count."""
    reason = "ScaledUp" if decision.direction is Direction.UP else "ScaledDown"
    message = f"{before} -> {decision.replicas}: {decision.reason}"
    kopf.event(body, type="Normal", reason=reason, message=message[:1000])
    log.info("%s %s", reason, message)


async def _write_status(kube: KubeClient, poller: Poller, status: dict[str, Any]) -> None:
    status["conditions"] = list(poller.conditions.values())
    try:
        await kube.patch_status(poller.namespace, poller.name, status)
    except KubeError as exc:  # status is informative; the next poll writes it again
        log.warning("status of %s/%s not written: %s", poller.namespace, poller.name, exc)


async def _bootstrap(kafka: KafkaSource, namespace: str, kube: KubeClient) -> str:
    ref = kafka.bootstrap_secret_ref
    if ref is not None:
        return await kube.read_secret_key(namespace, ref.name, ref.key)
    return kafka.bootstrap


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- kopf wiring ---------------------------------------------------------------------------------


def build_registry(shared: Shared) -> kopf.OperatorRegistry:
    """All handlers on a registry of their own (no global state; tests build their own)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # The CRD's status schema is strict: kopf keeps its bookkeeping in annotations.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage()
        settings.posting.level = logging.WARNING  # Events: ours, and kopf's warnings only
        settings.scanning.disabled = True  # only our CRD, known in advance: no cluster scans

    @kopf.on.login(registry=registry)
    async def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
        # kopf calls this again when its credentials stop working: our client follows.
        info = shared.connection or (
            kopf.login_with_service_account(settings=settings)
            or kopf.login_with_kubeconfig(settings=settings)
        )
        if info is not None and (shared.kube is None or shared.kube.info != info):
            old, shared.kube = shared.kube, KubeClient(info)
            if old is not None:
                await old.close()
        return info

    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=5.0)
    async def autoscale(
        *,
        name: str,
        namespace: str | None,
        spec: kopf.Spec,
        body: kopf.Body,
        stopped: kopf.DaemonStopped,
        **_: Any,
    ) -> None:
        """Poll for as long as the object exists; ``spec`` is live, so edits apply next poll."""
        poller = Poller(namespace or "default", name)  # the CRD is namespaced
        while not stopped:
            period = 5.0
            if shared.kube is not None:
                try:
                    period = await poll_once(poller, spec, body, shared, shared.kube)
                except (KubeError, ValueError) as exc:  # an invalid spec or a refused patch
                    log.warning("%s/%s: %s", namespace, name, exc)
            await stopped.wait(period)

    @kopf.on.cleanup(registry=registry)
    async def close(**_: Any) -> None:
        await shared.close()

    return registry


async def operate(
    namespaces: Collection[str] = (),
    connection: kopf.ConnectionInfo | None = None,
    stop_flag: asyncio.Event | threading.Event | None = None,
    liveness_endpoint: str | None = None,
) -> None:
    """Run the operator until ``stop_flag`` is set (or forever); all namespaces when none given."""
    shared = Shared(connection=connection)
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    await kopf.operator(
        registry=build_registry(shared),
        settings=settings,
        namespaces=list(namespaces),
        clusterwide=not namespaces,
        standalone=True,  # one replica (Recreate strategy), no peering objects to manage
        stop_flag=stop_flag,
        liveness_endpoint=liveness_endpoint,
    )
