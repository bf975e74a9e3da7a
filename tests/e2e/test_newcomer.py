"""The newcomer: a fresh checkout, the README's `make run` as written, its quick start pasted
verbatim, Ctrl-C, `make run` again (the data kept), `make run FRESH=1` (the data gone).

Nothing here is pointed at the test session's servers: the checkout is a directory of its own,
`make run` creates its own .venv and fetches its own Kafka jars, and starts what a new machine
has nothing of, on the usual ports. Two places, as users have them: under parents everyone can
traverse (/srv/..., /home/me/src/...), and under a parent only its owner can (/root/...), where
PostgreSQL's user cannot reach the state directory and the stack keeps its cluster elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.config import DEV_ENV_FILE
from app.local.processes import port_free, port_open
from app.local.servers import postgres_state_dir
from harness import wait_until_blocking
from tests.unit.test_readme import quick_start

ROOT = Path(__file__).resolve().parents[2]
API = "http://localhost:8080"  # the quick start's address, which `make run` takes when free
# A first `make run` creates .venv (pip, from its cache on CI) and fetches Kafka's jars.
FIRST_START_S = 900
START_S = 180
STOP_S = 90
# What `make run` starts when nothing answers there: all of it must be gone after Ctrl-C.
USUAL_PORTS = (8080, 9092, 5432, 6379)
# Variables of the test run a newcomer's shell does not have (the outer make's job server, this
# session's venv and settings).
FOREIGN_ENV = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "VIRTUAL_ENV", "PYTHONPATH")


def newcomer_env() -> dict[str, str]:
    """A login shell's environment: no COUPON_* setting, no venv on PATH, no outer make."""
    venv_bin = str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COUPON_", "PYTEST_")) and k not in FOREIGN_ENV
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


def checkout(into: Path) -> Path:
    """What `git clone` of this working tree lays out: tracked and new files, nothing ignored
    (no .venv, .tools, .local-stack): on CI the working tree is the commit under test."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree, not yet committed
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return into


@dataclass
class MakeRun:
    """One `make run` in a checkout, as a terminal runs it (its own process group: Ctrl-C)."""

    directory: Path
    log: Path
    popen: subprocess.Popen[bytes]

    @classmethod
    def start(cls, directory: Path, *args: str, timeout: float = START_S) -> MakeRun:
        log = directory / f"make-run-{len(list(directory.glob('make-run-*.log')))}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                ["make", "run", *args],
                cwd=directory,
                env=newcomer_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        run = cls(directory, log, popen)
        try:
            wait_until_blocking(run.up, timeout, f"`make run {' '.join(args)}` to be up", 0.5)
        except BaseException:
            run.interrupt()
            raise
        return run

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def up(self) -> bool:
        if self.popen.poll() is not None:
            raise AssertionError(
                f"make run exited with {self.popen.returncode}:\n{self.output()[-4000:]}"
            )
        return "coupon-issuer is up" in self.output() and api_ready()

    def interrupt(self) -> str:
        """Ctrl-C: SIGINT to the terminal's foreground process group; everything stops."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGINT)
        try:
            self.popen.wait(STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
            raise AssertionError(f"make run ignored Ctrl-C:\n{self.output()[-4000:]}") from None
        return self.output()


def api_ready() -> bool:
    try:
        return httpx.get(f"{API}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def stopped_everything(ports: tuple[int, ...]) -> bool:
    return all(port_free(p) for p in ports)


def paste_quick_start(directory: Path) -> str:
    """The README's quick start, verbatim, in a second terminal in the checkout."""
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + quick_start()],
        cwd=directory,
        env=newcomer_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def ours() -> Iterator[tuple[int, ...]]:
    """The usual ports `make run` will start servers on (a server already answering on one of
    them is used instead, as the README says); 8080 must be free: the quick start names it."""
    assert port_free(8080), "127.0.0.1:8080 is taken: the quick start's API address"
    yield tuple(p for p in USUAL_PORTS if not port_open("127.0.0.1", p))


def traversable(path: Path) -> bool:
    """Whether every user can reach into ``path`` (it and each parent has o+x)."""
    return all(os.stat(p).st_mode & 0o001 for p in (path, *path.parents))


def the_newcomers_day(clone: Path, ports: tuple[int, ...]) -> None:
    first = MakeRun.start(clone, timeout=FIRST_START_S)
    try:
        out = paste_quick_start(clone)
    finally:
        banner = first.interrupt()
    assert (clone / ".venv" / "bin" / "coupon-issuer").exists()
    state = clone / ".local-stack"
    assert f"keep their data in {state}" in banner, banner[-3000:]
    lines = out.splitlines()
    assert lines[0].startswith('{"success":true,'), out
    assert '"reason":"DUPLICATE"' in out and "이미 발급 요청한 쿠폰입니다." in out
    assert "0 dead letter(s)" in out and "\nOK: " in out
    coupon = re.search(r'"id":"?([0-9A-Za-z-]+)', out)
    assert coupon is not None, out
    wait_until_blocking(lambda: stopped_everything(ports), 30, "every port freed after Ctrl-C")
    assert not (clone / DEV_ENV_FILE).exists(), "Ctrl-C leaves no stale settings behind"

    # The next day: the same command, the same data.
    second = MakeRun.start(clone)
    try:
        shown = httpx.get(f"{API}/api/coupons/{coupon.group(1)}", timeout=10)
        alice = httpx.get(
            f"{API}/api/coupons/{coupon.group(1)}/issues/alice",
            params={"waitSeconds": 10},
            timeout=20,
        )
    finally:
        second.interrupt()
    assert shown.status_code == 200, shown.text
    assert shown.json()["issuedQuantity"] == 1, shown.text
    assert alice.json()["status"] == "ISSUED", alice.text
    wait_until_blocking(lambda: stopped_everything(ports), 30, "every port freed after Ctrl-C")

    # FRESH=1: from nothing.
    fresh = MakeRun.start(clone, "FRESH=1")
    try:
        gone = httpx.get(f"{API}/api/coupons/{coupon.group(1)}", timeout=10)
    finally:
        fresh_out = fresh.interrupt()
    assert f"emptied {state}" in fresh_out, fresh_out[-3000:]
    if 5432 in ports:  # the PostgreSQL was make run's own (not one already on 5432)
        assert gone.status_code == 404, gone.text


def test_make_run_in_a_checkout_everyone_can_read(ours: tuple[int, ...]) -> None:
    """/srv/coupon-issuer, /home/me/src/coupon-issuer: PostgreSQL's user reaches the state dir."""
    parent = Path(tempfile.mkdtemp(prefix="coupon-newcomer-", dir="/tmp"))
    parent.chmod(0o755)
    clone = checkout(parent / "coupon-issuer")
    try:
        assert traversable(clone)
        the_newcomers_day(clone, ours)
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_make_run_in_a_checkout_under_a_private_parent(ours: tuple[int, ...]) -> None:
    """/root/coupon-issuer: PostgreSQL (run as its own user when we are root) cannot reach the
    state directory, so its cluster is kept elsewhere; make run behaves the same."""
    parent = Path(tempfile.mkdtemp(prefix="coupon-newcomer-private-", dir="/tmp"))
    parent.chmod(0o700)
    clone = checkout(parent / "coupon-issuer")
    assert not traversable(clone)
    kept = postgres_state_dir(clone / ".local-stack" / "postgresql")
    try:
        the_newcomers_day(clone, ours)
        if os.geteuid() == 0:
            moved = (clone / ".local-stack" / "postgresql" / "MOVED").read_text()
            assert moved.splitlines()[0] == str(kept)
    finally:
        shutil.rmtree(parent, ignore_errors=True)
        shutil.rmtree(kept, ignore_errors=True)
