"""Session-scoped real servers. PostgreSQL and Redis run on the machine; tansu is started here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from app.devstack import TansuBroker
from tests.stack import Stack, isolated_settings


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """One memory-only Kafka-compatible broker for the whole session (tests use own topics)."""
    broker = TansuBroker().start()
    yield broker.bootstrap
    broker.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def shared_stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """An API and three consumers on their own topic/schema, shared by tests that use own coupons."""
    settings = isolated_settings(kafka_bootstrap)
    stack = await Stack(settings, Path(tmp_path_factory.mktemp("shared-stack"))).start(consumers=3)
    yield stack
    await stack.stop()
