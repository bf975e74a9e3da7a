"""Every Prometheus metric of the service, defined once."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
    "coupon_consumer_retries", "Processing retries, by kind (transient, data).", ["kind"]
)
CONSUMER_REBALANCES = Counter("coupon_consumer_rebalances", "Partition assignments received.")
CONSUMER_ASSIGNED_PARTITIONS = Gauge(
    "coupon_consumer_assigned_partitions", "Partitions currently assigned to this consumer."
)
