"""All configuration, from environment variables prefixed ``COUPON_``. Nothing else reads os.environ."""

from __future__ import annotations

import os
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Written by `coupon-issuer dev` (the local stack's URLs) into its working directory, removed when
# the stack stops. Every command reads it from its working directory or the nearest parent that
# has one (as git finds .git), so a command run in a subdirectory of the checkout finds the stack.
# The environment wins over it.
DEV_ENV_FILE = ".coupon-dev.env"
DEV_ENV_FILE_DEPTH = 10  # parents searched; deeper than any directory of the checkout


class Settings(BaseSettings):
    """Service settings; every field is ``COUPON_<NAME>`` in the environment (or DEV_ENV_FILE)."""

    model_config = SettingsConfigDict(
        env_prefix="COUPON_",
        extra="ignore",
        env_file=DEV_ENV_FILE,
        env_file_encoding="utf-8",
        env_file_depth=DEV_ENV_FILE_DEPTH,
    )

    # --- real systems -------------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated"
    )
    database_url: str = Field("postgresql://127.0.0.1:5432/test", description="PostgreSQL DSN")
    db_schema: str = Field("public", description="PostgreSQL schema holding the tables")
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis URL for the gate; with COUPON_REDIS_CLUSTER, any one node of the cluster",
    )
    redis_cluster: bool = Field(
        False,
        description="The Redis at COUPON_REDIS_URL is a Redis Cluster: the client learns every node"
        " from it and routes each coupon's keys to the node owning their slot",
    )
    redis_prefix: str = Field("coupon", description="Prefix of every Redis key")

    # --- kafka ----------------------------------------------------------------------------------
    topic: str = Field("coupon-issue-request", description="Topic of issue requests")
    dlq_topic: str = Field("coupon-issue-request.dlq", description="Dead-letter topic")
    partitions: int = Field(3, ge=1, le=1024, description="Partitions of the request topic")
    replication_factor: int = Field(1, ge=1, description="Replication factor for created topics")
    min_insync_replicas: int = Field(
        1,
        ge=1,
        description="min.insync.replicas of created topics: an ack (acks=all) means this many"
        " brokers hold the press; keep it below the replication factor so one broker may be down",
    )
    consumer_group: str = Field("coupon-issuer", description="Consumer group of the issue workers")
    publish_timeout_ms: int = Field(5000, ge=100, description="How long the API waits for the ack")
    delivery_timeout_ms: int = Field(
        20_000,
        ge=1000,
        description="Latest a press may reach the topic's log after it was sent: the broker refuses"
        " an older record (topic config message.timestamp.before.max.ms), so a press the"
        " reconciler may settle is never appended later; below COUPON_RECONCILE_MIN_AGE_S",
    )
    producer_linger_ms: int = Field(
        0,
        ge=0,
        description="Producer batching delay (0: presses gather while the broker answers the"
        " request before)",
    )
    producer_max_batch_bytes: int = Field(
        262_144,
        ge=1024,
        le=1_000_000,
        description="Largest producer batch per partition (a hot coupon's presses in flight share"
        " one; keep it under the broker's message.max.bytes)",
    )

    # --- consumer -------------------------------------------------------------------------------
    batch_max: int = Field(1000, ge=1, description="Most messages taken in one poll")
    # Below the consumers' capacity a batch (a transaction and its lookups, the outcomes' Redis
    # pipeline, the offset commit, a fetch) costs about the same for 8 presses as for 30, so fuller
    # batches cost the whole system less per coupon: 100 ms against 50 gave half the batches,
    # consumers 0.64x and PostgreSQL 0.69x CPU per coupon, end-to-end p50 +23 ms
    # (docs/performance.md). An idle consumer polls as before.
    batch_interval_ms: int = Field(
        100,
        ge=0,
        le=1000,
        description="A partition whose batch was not full waits until this long after that batch"
        " began, so the next one gathers more presses (fewer transactions per coupon, at most this"
        " much more latency); a full batch goes on at once",
    )
    max_attempts: int = Field(
        3, ge=1, le=10, description="Attempts before a message is dead-lettered"
    )
    retry_backoff_ms: int = Field(
        100,
        ge=0,
        le=5000,
        description="First retry delay; doubles each attempt, with jitter, up to 5 s",
    )
    db_pool_size: int = Field(4, ge=1, description="PostgreSQL pool size per process")
    db_statement_cache_size: int = Field(
        100,
        ge=0,
        description="Prepared statements cached per PostgreSQL connection; 0 behind PgBouncer in"
        " transaction pooling mode",
    )
    db_acquire_timeout_s: float = Field(
        5.0, gt=0, description="Longest wait for a pooled PostgreSQL connection (then 503)"
    )
    redis_max_connections: int = Field(
        64,
        ge=1,
        description="Redis connections per API process (per node on a cluster); more presses"
        " queue for one",
    )
    redis_pool_timeout_s: float = Field(
        5.0, gt=0, description="Longest wait for a pooled Redis connection (then 503)"
    )
    gate_rebuild_wait_s: float = Field(
        10.0, gt=0, description="Longest wait for another process rebuilding a coupon's gate"
    )

    # --- reconciler -----------------------------------------------------------------------------
    reconcile_interval_s: float = Field(
        10.0, gt=0, description="Seconds between reconciler passes (in the lag exporter)"
    )
    reconcile_min_age_s: float = Field(
        30.0,
        gt=0,
        description="A reservation younger than this is never settled (above the delivery timeout:"
        " by then the broker refuses the press)",
    )

    # --- processes ------------------------------------------------------------------------------
    api_host: str = Field("0.0.0.0", description="API listen address")
    api_port: int = Field(8080, description="API listen port (also serves /metrics)")
    api_workers: int = Field(1, ge=1, description="API worker processes")
    consumer_metrics_port: int = Field(9100, description="Consumer /metrics and /healthz port")
    lag_exporter_port: int = Field(9101, description="Lag exporter /metrics port")
    lag_exporter_interval_s: float = Field(
        5.0, gt=0, description="How often the exporter reads lag"
    )
    api_head_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Longest an API connection may take to send a request's head (request line"
        " and headers), from its opening or, kept alive, from the request's first byte: then 408"
        " and the connection is closed (silently if it sent nothing)",
    )
    api_body_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Longest a request's body may take to arrive after its head: then 408 and the"
        " connection is closed",
    )
    api_max_connections: int = Field(
        1024,
        ge=1,
        description="Connections one API process serves at once: a request read while it holds"
        " more is answered 503 BUSY (Retry-After: 1) and its connection closed",
    )
    max_body_bytes: int = Field(16384, ge=256, description="Largest accepted request body")
    default_timezone: str = Field(
        "UTC",
        description="IANA zone for timestamps sent without an offset, and of answers (Asia/Seoul)",
    )

    # --- operator -------------------------------------------------------------------------------
    pod_namespace: str | None = Field(
        None,
        validation_alias=AliasChoices("COUPON_POD_NAMESPACE", "POD_NAMESPACE"),
        description="Namespace the operator watches (the chart sets POD_NAMESPACE); unset: all",
    )

    # --- security -------------------------------------------------------------------------------
    admin_token: SecretStr | None = Field(None, description="Bearer token for admin endpoints")
    user_jwt_secret: SecretStr | None = Field(
        None, description="If set, issue requests need X-User-Token: a gateway-signed HS256 JWT"
    )
    rate_limit_per_user: int = Field(
        10, ge=0, description="Issue requests per user per second (0 = off)"
    )
    rate_limit_per_ip: int = Field(
        0, ge=0, description="Issue requests per client IP per second (0 = off)"
    )

    @field_validator("admin_token", "user_jwt_secret")
    @classmethod
    def _secret_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty secret would compare equal to an absent header: refuse it rather than open up.
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is set but empty: unset it or give it a real value")
        return value

    # --- logging --------------------------------------------------------------------------------
    log_format: Literal["json", "text"] = Field("text", description="json in containers")
    log_level: str = Field("INFO", description="Root log level")

    @field_validator("min_insync_replicas")
    @classmethod
    def _isr_fits_replicas(cls, isr: int, info: ValidationInfo) -> int:
        replicas = info.data.get("replication_factor", 1)
        if isr > replicas:
            raise ValueError(
                f"is {isr}, above COUPON_REPLICATION_FACTOR ({replicas}): no write could be acked"
            )
        return isr

    @field_validator("delivery_timeout_ms")
    @classmethod
    def _delivery_after_publish(cls, delivery_ms: int, info: ValidationInfo) -> int:
        publish_ms = info.data.get("publish_timeout_ms", 0)
        if delivery_ms < publish_ms:
            raise ValueError(
                f"is {delivery_ms}, below COUPON_PUBLISH_TIMEOUT_MS ({publish_ms}): an ack the API"
                " waits for could never come"
            )
        return delivery_ms

    @field_validator("reconcile_min_age_s")
    @classmethod
    def _settle_after_delivery(cls, min_age_s: float, info: ValidationInfo) -> float:
        # The reconciler reads "no decision and no lag" as "will never arrive": only true once
        # the broker would refuse the press (older than the delivery timeout).
        delivery_ms = info.data.get("delivery_timeout_ms")
        if delivery_ms is not None and min_age_s * 1000 <= delivery_ms:
            raise ValueError(
                f"is {min_age_s:g} s, not above COUPON_DELIVERY_TIMEOUT_MS ({delivery_ms} ms): a"
                " press still on its way could be settled as failed and then issued"
            )
        return min_age_s

    @field_validator("redis_cluster")
    @classmethod
    def _cluster_has_one_database(cls, cluster: bool, info: ValidationInfo) -> bool:
        # Redis Cluster has database 0 only: say so at start instead of at the first command.
        database = urlsplit(info.data.get("redis_url", "")).path.strip("/")
        if cluster and database not in ("", "0"):
            raise ValueError(
                "is set, and a Redis Cluster has database 0 only:"
                f" COUPON_REDIS_URL names database {database}"
            )
        return cluster

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {name!r} (an IANA name, e.g. Asia/Seoul)") from exc
        return name

    @property
    def zone(self) -> ZoneInfo:
        """``default_timezone`` as a tzinfo (ZoneInfo caches instances per name)."""
        return ZoneInfo(self.default_timezone)


def setting_origin(settings: Settings, field: str) -> str:
    """Where a setting's value came from, for messages: the default, the environment, or
    DEV_ENV_FILE (the environment wins over the file)."""
    if field not in settings.model_fields_set:
        return "the default"
    name = f"COUPON_{field.upper()}"
    if any(key.upper() == name for key in os.environ):
        return "from the environment"
    return f"from {DEV_ENV_FILE}"
