"""Schemathesis against the app's own OpenAPI schema, in process, with real Redis, PostgreSQL and broker.

Every generated request, valid (positive) and invalid (negative), must get a non-5xx answer that the
schema declares, with a body of the declared shape. Examples are bounded and derandomized so
``make test`` stays short and repeatable.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.api.app import create_app
from app.config import Settings
from app.local.stack import prepare
from tests.stack import isolated_settings

ADMIN_TOKEN = "schemathesis-admin-token"
MAX_EXAMPLES = 30
_SPEC = create_app(Settings()).openapi()  # building the app does no I/O


def _negatable(operation: dict[str, Any]) -> bool:
    """Negative data needs something besides headers to break (a path/query value or a body)."""
    params = operation.get("parameters", [])
    return "requestBody" in operation or any(p["in"] in ("path", "query") for p in params)


CASES = [
    (method.upper(), path, mode)
    for path, methods in _SPEC["paths"].items()
    for method, operation in methods.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or _negatable(operation)
]
# Rules the schema cannot express: a schema-valid coupon may still be refused (expiresAt in the past).
EXCLUDED_CHECKS = {("POST", "/api/coupons"): [positive_data_acceptance]}


@pytest.fixture(scope="module")
def api_schema(kafka_bootstrap: str) -> Iterator[Any]:
    """The app over a migrated schema of its own; schemathesis runs its lifespan on first call."""
    # Rate limits off: whether a 429 happens depends on timing, not on the generated data.
    app_settings = isolated_settings(
        kafka_bootstrap, admin_token=ADMIN_TOKEN, rate_limit_per_user=0, rate_limit_per_ip=0
    )
    prepare(app_settings)
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(app_settings))
    asgi.shutdown_lifespans()


@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {g}" for m, p, g in CASES]
)
def test_no_server_error_and_every_response_matches_the_schema(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    excluded = EXCLUDED_CHECKS.get((method, path), [])

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def exchange(case: Any) -> None:
        case.call_and_validate(
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, excluded_checks=excluded
        )

    exchange()
