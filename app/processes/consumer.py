"""``coupon-issuer consumer``: one issue worker wired to PostgreSQL, Redis and Kafka, with its
health and metrics server; SIGTERM finishes the batch, commits and leaves the group."""

from __future__ import annotations

import logging

from app.adapters import kafka, postgres_setup, redis_client
from app.adapters.redis_gate import RedisGate
from app.config import Settings
from app.consumer.worker import IssueWorker
from app.observability.http import health_app, serve_in_background
from app.processes.lifecycle import stop_on_signals

log = logging.getLogger(__name__)


async def run_consumer(settings: Settings) -> None:
    """Run one issue worker until SIGTERM/SIGINT; then finish the batch, commit, leave the group."""
    pool = await postgres_setup.create_pool(
        settings.database_url,
        settings.db_schema,
        settings.db_pool_size,
        application_name=postgres_setup.consumer_connection_name(settings.consumer_group),
        statement_cache_size=settings.db_statement_cache_size,
        # The issue path's statements set nothing in the session: no reset per batch.
        reset_sessions=False,
    )
    redis = redis_client.connect(settings)
    producer = kafka.make_producer(
        settings.kafka_bootstrap, settings.producer_linger_ms, settings.publish_timeout_ms
    )
    consumer = kafka.make_consumer(
        settings.kafka_bootstrap, settings.consumer_group, settings.batch_max
    )
    worker = IssueWorker(
        consumer,
        producer,
        pool,
        RedisGate(redis, settings.redis_prefix),
        topic=settings.topic,
        dlq_topic=settings.dlq_topic,
        batch_max=settings.batch_max,
        max_attempts=settings.max_attempts,
        retry_backoff_s=settings.retry_backoff_ms / 1000,
        batch_interval_s=settings.batch_interval_ms / 1000,
    )

    async def ready() -> bool:
        # Not ready while a partition waits out a database or broker fault: it shows in kubectl.
        return worker.joined.is_set() and not worker.stalled

    server, server_task = serve_in_background(
        health_app(ready), settings.api_host, settings.consumer_metrics_port
    )
    stop_on_signals(worker.stop)
    await producer.start()
    await consumer.start()
    log.info("consumer started: group=%s topic=%s", settings.consumer_group, settings.topic)
    try:
        await worker.run()
    finally:
        await consumer.stop()  # commits nothing more (manual commits); leaves the group
        await producer.stop()
        await pool.close()
        await redis.aclose()
        server.should_exit = True
        await server_task
        log.info("consumer stopped cleanly")
