"""The chaos stack: one API and three consumers shared by the consumer and database scenarios."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.stack import Stack, isolated_settings


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chaos_stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """Own topic, schema, Redis prefix and group; scenarios kill and replace its consumers."""
    settings = isolated_settings(kafka_bootstrap)
    stack = await Stack(settings, Path(tmp_path_factory.mktemp("chaos-stack"))).start(consumers=3)
    yield stack
    await stack.stop()
