"""Every Prometheus metric of the service, defined once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from app.domain.outcomes import GateOutcome, RejectReason

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_E2E_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

# --- API ----------------------------------------------------------------------------------------
API_REQUEST_DURATION = Histogram(
    "coupon_api_request_duration_seconds",
    "HTTP request latency by route template, method and status class.",
    ["route", "method", "status_class"],
    buckets=_LATENCY_BUCKETS,
)
API_ISSUE_REQUESTS = Counter(
    "coupon_api_issue_requests",
    "Issue requests answered, by outcome.",
    ["outcome"],
)
API_PUBLISH_DURATION = Histogram(
    "coupon_api_publish_duration_seconds",
    "Time from publishing an accepted request to the broker's ack.",
    buckets=_LATENCY_BUCKETS,
)
API_IN_FLIGHT = Gauge(
    "coupon_api_requests_in_flight", "HTTP requests being served.", multiprocess_mode="livesum"
)
API_LONG_POLLS_WAITING = Gauge(
    "coupon_api_long_polls_waiting",
    "Status reads (waitSeconds > 0) waiting for an outcome: in coupon_api_requests_in_flight, but"
    " holding no CPU; the API's KEDA trigger scales on in-flight less these.",
    multiprocess_mode="livesum",
)
API_REFUSED_REQUESTS = Counter(
    "coupon_api_refused_requests",
    "Requests refused by the HTTP connection (api/connections.py), by reason: head_timeout"
    " (incl. connections that sent nothing), body_timeout, connection_limit.",
    ["reason"],
)
_request_durations: dict[tuple[str, str, int], Histogram] = {}


def count_issue_request(outcome: str) -> None:
    """One answered press by outcome; the labelled child is looked up once per outcome (a
    ``labels()`` call takes a lock and builds its key on every press)."""
    child = _issue_requests.get(outcome)
    if child is None:
        child = _issue_requests[outcome] = API_ISSUE_REQUESTS.labels(outcome)
    child.inc()


_issue_requests: dict[str, Counter] = {}


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """One request's latency; the labelled child is looked up once per (route, method, class)."""
    key = (route, method, status // 100)
    child = _request_durations.get(key)
    if child is None:
        child = API_REQUEST_DURATION.labels(route, method, f"{status // 100}xx")
        _request_durations[key] = child
    child.observe(seconds)


# --- consumer -----------------------------------------------------------------------------------
CONSUMER_MESSAGES = Counter(
    "coupon_consumer_messages",
    "Messages processed, by outcome (issued, rejected_<reason>, duplicate_delivery, failed,"
    " dead_lettered).",
    ["outcome"],
)
CONSUMER_BATCH_SIZE = Histogram(
    "coupon_consumer_batch_size",
    "Messages per partition batch.",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
CONSUMER_BATCH_DURATION = Histogram(
    "coupon_consumer_batch_duration_seconds",
    "Time to issue one partition batch in PostgreSQL (transaction included).",
    buckets=_LATENCY_BUCKETS,
)
CONSUMER_END_TO_END = Histogram(
    "coupon_consumer_end_to_end_seconds",
    "Time from the user's request (requestedAt) to its final outcome in PostgreSQL.",
    buckets=_E2E_BUCKETS,
)
CONSUMER_RETRIES = Counter(
    "coupon_consumer_retries",
    "Processing retries, by kind (transient: an infrastructure fault waited out; data: a message"
    " that failed alone tried again).",
    ["kind"],
)
CONSUMER_STALLED_PARTITIONS = Gauge(
    "coupon_consumer_stalled_partitions",
    "Partitions paused on an infrastructure fault (database or broker), waiting it out.",
)
CONSUMER_COMMIT_FAILURES = Counter(
    "coupon_consumer_commit_failures",
    "Offset commits that failed (a rebalance or the broker); those messages are redelivered.",
)
CONSUMER_RELEASED = Counter(
    "coupon_consumer_reservations_released",
    "Gate reservations given back for dead-lettered requests.",
)
CONSUMER_REBALANCES = Counter("coupon_consumer_rebalances", "Partition assignments received.")
CONSUMER_ASSIGNED_PARTITIONS = Gauge(
    "coupon_consumer_assigned_partitions", "Partitions currently assigned to this consumer."
)


# Known label values are created up front so every series exists (at 0) from the first scrape:
# a rate or ratio over them is then 0, not empty, before the first failure or dead letter.
def _initialise_known_labels() -> None:
    for gate_outcome in GateOutcome:
        API_ISSUE_REQUESTS.labels(gate_outcome.value.lower())
    for refusal in ("broker_unavailable", "unconfirmed", "rate_limited", "unauthorized"):
        API_ISSUE_REQUESTS.labels(refusal)
    for outcome in ("issued", "duplicate_delivery", "failed", "dead_lettered"):
        CONSUMER_MESSAGES.labels(outcome)
    for reason in RejectReason:
        CONSUMER_MESSAGES.labels(f"rejected_{reason.value.lower()}")
    for kind in ("transient", "data"):
        CONSUMER_RETRIES.labels(kind)
    for cut_off in ("head_timeout", "body_timeout", "connection_limit"):
        API_REFUSED_REQUESTS.labels(cut_off)


_initialise_known_labels()


# --- API: the gate's own work -------------------------------------------------------------------
GATE_REBUILDS = Counter(
    "coupon_gate_rebuilds",
    "Coupon gates rebuilt from PostgreSQL by this process (after Redis lost them).",
)
GATE_DB_READS = Counter(
    "coupon_gate_db_reads",
    "PostgreSQL reads made by the gate's cold path, by purpose (gate: one coupon's gate and"
    " outcomes, registry: every coupon id, status: a status read Redis could not answer).",
    ["purpose"],
)
for _purpose in ("gate", "registry", "status"):
    GATE_DB_READS.labels(_purpose)

# --- reconciler ---------------------------------------------------------------------------------
RECONCILER_RUNS = Counter(
    "coupon_reconciler_runs",
    "Reconciler passes, by result (ok, skipped: a system could not be read, stopped: cut short by"
    " a shutdown, the rest left for the next pass, error).",
    ["result"],
)
RECONCILER_RELEASED = Counter(
    "coupon_reconciler_released",
    "Stranded reservations the reconciler released (accepted, no decision, nothing left queued;"
    " FAILED with NOT_QUEUED, TOPIC_RECREATED or LOG_TRUNCATED, see docs/api.md).",
)
RECONCILER_SUSPECTS = Gauge(
    "coupon_reconciler_suspects",
    "Reservations with no outcome and no lag seen in the last pass, waiting for confirmation.",
)
for _result in ("ok", "skipped", "stopped", "error"):
    RECONCILER_RUNS.labels(_result)


# --- lag exporter -------------------------------------------------------------------------------
# The exporter builds these families on every scrape from its latest poll (a custom collector in
# its own registry), so their names, help and labels are declared here as specs, not objects.
@dataclass(frozen=True, slots=True)
class FamilySpec:
    """Name, help text, label names and type of a metric family the lag exporter emits."""

    name: str
    documentation: str
    labels: tuple[str, ...] = ()
    kind: Literal["gauge", "counter"] = "gauge"

    @property
    def sample_name(self) -> str:
        """The name in the exposition (counters gain ``_total``)."""
        return f"{self.name}_total" if self.kind == "counter" else self.name

    def family(self) -> GaugeMetricFamily | CounterMetricFamily:
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labels)


_PARTITION_LABELS = ("topic", "partition", "group")
_COUPON_LABELS = ("coupon_id", "coupon_name")

LAG_MESSAGES = FamilySpec(
    "coupon_consumer_lag_messages",
    "Messages not yet consumed: log-end offset (high watermark) minus the group's committed"
    " offset, or minus the log start when the group has committed nothing.",
    _PARTITION_LABELS,
)
LAG_SECONDS = FamilySpec(
    "coupon_consumer_lag_seconds",
    "Estimated time to drain the partition's lag at its recent consume rate (committed-offset"
    " progress over the rate window); 0 without lag, +Inf with lag and no progress.",
    _PARTITION_LABELS,
)
LAG_OLDEST_AGE = FamilySpec(
    "coupon_consumer_lag_oldest_message_age_seconds",
    "Age of the oldest unconsumed message (now minus the timestamp of the record at the"
    " committed offset); 0 without lag. Absent when the record cannot be read.",
    _PARTITION_LABELS,
)
COMMITTED_OFFSET = FamilySpec(
    "coupon_consumer_committed_offset",
    "Offset the consumer group has committed (absent while it has committed nothing).",
    _PARTITION_LABELS,
)
LOG_END_OFFSET = FamilySpec(
    "coupon_topic_log_end_offset",
    "High watermark of the partition (ListOffsets latest).",
    ("topic", "partition"),
)
# Counters over the same offsets: both only grow (a reset, e.g. a recreated topic, is a counter
# reset to Prometheus), so rate() gives messages/s per partition without the exporter choosing a
# window; an exporter restart continues where the offsets are, not at 0.
ARRIVED_MESSAGES = FamilySpec(
    "coupon_topic_arrived_messages",
    "Messages appended to the partition: its log-end offset as a counter, so rate() is the"
    " partition's arrival rate.",
    ("topic", "partition"),
    kind="counter",
)
PROCESSED_MESSAGES = FamilySpec(
    "coupon_consumer_processed_messages",
    "Messages the group has processed on the partition: its committed offset as a counter, so"
    " rate() is the partition's processing rate (absent while the group has committed nothing).",
    _PARTITION_LABELS,
    kind="counter",
)
PARTITION_SKEW = FamilySpec(
    "coupon_topic_partition_skew_ratio",
    "Share of the messages produced over the exporter's rate window (60 s) that went to the"
    " busiest partition: 1/partitions is an even spread, 1 is one hot coupon; 0 when nothing"
    " arrived in the window.",
    ("topic",),
)
TOPIC_PARTITIONS = FamilySpec("coupon_topic_partitions", "Partitions of the topic.", ("topic",))
GROUP_MEMBERS = FamilySpec(
    "coupon_consumer_group_members",
    "Members of the consumer group according to its coordinator (0 when scaled to zero).",
    ("group",),
)
COUPON_ISSUED = FamilySpec(
    "coupon_issued_quantity", "Coupons issued so far (active coupons only).", _COUPON_LABELS
)
COUPON_REMAINING = FamilySpec(
    "coupon_remaining_quantity", "Coupons left to issue (active coupons only).", _COUPON_LABELS
)
COUPON_TOTAL = FamilySpec(
    "coupon_total_quantity", "Coupons on offer in the sale (active coupons only).", _COUPON_LABELS
)
COUPON_LABELS_TRUNCATED = FamilySpec(
    "coupon_lag_exporter_coupons_truncated",
    "1 when more active coupons exist than the exporter reports per-coupon gauges for.",
)
EXPORTER_POLLS = FamilySpec(
    "coupon_lag_exporter_polls",
    "Polls of the broker (and of PostgreSQL), by source and result (ok, error).",
    ("source", "result"),
    kind="counter",
)
EXPORTER_LAST_SUCCESS = FamilySpec(
    "coupon_lag_exporter_last_success_timestamp_seconds",
    "Unix time of the last successful poll, by source (kafka, postgres).",
    ("source",),
)
EXPORTER_POLL_DURATION = FamilySpec(
    "coupon_lag_exporter_poll_duration_seconds",
    "Duration of the last poll, by source (kafka, postgres).",
    ("source",),
)
