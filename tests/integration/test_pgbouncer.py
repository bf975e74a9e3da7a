"""The API and the consumers behind PgBouncer in transaction pooling mode (Debian's pgbouncer).

A named prepared statement lives on one server connection while the next transaction may get
another; with ``COUPON_DB_STATEMENT_CACHE_SIZE=0`` a whole sale goes through such a pooler.
PgBouncer drops the ``search_path`` startup parameter, so the schema comes from the role's
``search_path`` (and a pool refuses to start on the wrong schema). Migrations and ``verify`` talk
to PostgreSQL directly (migrations hold a session-level lock).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from app.local.processes import ManagedProcess, detach_and_die_with_parent, free_port, wait_for_port
from app.local.stack import prepare
from app.verify import verify
from tests.servers import database_address, database_url, database_url_as
from tests.stack import Stack, isolated_settings

PGBOUNCER = "/usr/sbin/pgbouncer"


@pytest.fixture
def pgbouncer_for() -> Iterator[object]:
    """Start a pgbouncer (transaction pooling) whose server connections use ``schema``."""
    started: list[tuple[ManagedProcess, str]] = []

    def start(schema: str, role: str) -> str:
        assert os.path.exists(PGBOUNCER), "pgbouncer is not installed: run `make system-deps`"
        folder = tempfile.mkdtemp(prefix="pgbouncer-")
        os.chmod(folder, 0o755)  # it drops root for the postgres user
        port = free_port()
        host, db_port, dbname = database_address()
        ini = Path(folder) / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"{dbname} = host={host}{f' port={db_port}' if db_port else ''} dbname={dbname}"
            f" user={role}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            "auth_type = any\npool_mode = transaction\ndefault_pool_size = 6\n"
            "ignore_startup_parameters = extra_float_digits,search_path\n"
        )
        os.chmod(ini, 0o644)
        popen = subprocess.Popen(
            [PGBOUNCER, "-u", "postgres", str(ini)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=detach_and_die_with_parent,
        )
        started.append((ManagedProcess("pgbouncer", popen), folder))
        wait_for_port("127.0.0.1", port, 30, "pgbouncer")
        return database_url_as(role, port=port)

    yield start
    for process, folder in started:
        process.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest_asyncio.fixture(loop_scope="session")
async def pooled_stack(
    kafka_bootstrap: str, tmp_path: Path, pgbouncer_for: object
) -> AsyncIterator[Stack]:
    settings = isolated_settings(kafka_bootstrap)
    schema, role = settings.db_schema, f"pooled_{uuid.uuid4().hex[:10]}"
    stack = Stack(settings, tmp_path)
    await asyncio.to_thread(prepare, settings)  # migrations directly, not through the pooler
    admin = await asyncpg.connect(database_url())
    await admin.execute(
        f'CREATE ROLE "{role}" LOGIN; ALTER ROLE "{role}" SET search_path = "{schema}";'
        f' GRANT USAGE ON SCHEMA "{schema}" TO "{role}";'
        f' GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"'
    )
    url = pgbouncer_for(schema, role)  # type: ignore[operator]
    stack.process_env = {"COUPON_DATABASE_URL": url, "COUPON_DB_STATEMENT_CACHE_SIZE": "0"}
    await stack.start(consumers=2)
    yield stack
    await stack.stop()
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
    )
    await admin.execute(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')
    await admin.close()


async def test_a_sale_through_pgbouncer_transaction_pooling(pooled_stack: Stack) -> None:
    stack = pooled_stack
    coupon = await stack.create_coupon(100)
    answers = await asyncio.gather(
        *(stack.request_issue(coupon, f"pooled-{i}") for i in range(250))
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [202] * 100 + [410] * 150
    await stack.wait_processed(coupon, 100)
    assert await stack.outcomes(coupon) == {"ISSUED": 100}
    assert stack.http is not None
    read = await stack.http.get(f"/api/coupons/{coupon}")
    assert read.json()["remainingQuantity"] == 0
    report = await verify(stack.settings, uuid.UUID(coupon))
    assert report.ok, report.violations
    for proc in (stack.api, *stack.consumers):
        assert proc is not None and proc.popen.poll() is None, f"{proc} exited"
        log = (stack.log_dir / f"{proc.name}.log").read_text()
        assert "prepared statement" not in log, log[-2000:]
