"""The README's quick start, run as written (bash, curl, the CLI) against a real stack."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

from app.local.stack import child_env
from tests.stack import Stack
from tests.unit.test_readme import quick_start

ROOT = Path(__file__).resolve().parents[2]


async def test_the_quick_start_runs_as_written(shared_stack: Stack) -> None:
    # The same commands, pointed at this test's stack instead of make run's usual port; the CLI
    # gets the stack's settings the way make run's .coupon-dev.env would give them.
    script = "set -euo pipefail\n" + quick_start().replace(
        "localhost:8080", f"127.0.0.1:{shared_stack.settings.api_port}"
    )
    done = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", script],
        cwd=ROOT,
        env=child_env(shared_stack.settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    lines = out.splitlines()
    assert lines[0].startswith('{"success":true,')  # each answer on a line of its own
    assert '"discountValue":20.00' in out and '"expiresAt":"2030-01-01T00:00:00Z"' in out
    assert '"success":true' in out and '"queueSize":' in out
    assert '"status":"PENDING"' in out or '"status":"ISSUED"' in out
    assert '"reason":"DUPLICATE"' in out and "이미 발급 요청한 쿠폰입니다." in out
    assert re.search(r"^\d+ dead letter\(s\)$", out, flags=re.MULTILINE)  # other tests' too
    assert "\nOK: " in out
