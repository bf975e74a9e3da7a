"""Process primitives of the local stack, the tests and the bench: ports on loopback, children
that die with their parent, stopping them in order, and the paths handed to them."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def absolute(path: str | os.PathLike[str]) -> Path:
    """``path`` as an absolute, normalised path (``~`` expanded, symlinks kept).

    Every path handed to a server (data, socket, log, config) goes through this: a server may
    change its working directory (PostgreSQL moves into its data directory at start), and a
    relative path would then name another place.
    """
    return Path(os.path.abspath(os.path.expanduser(path)))


# Every port free_port() handed out in this process. A port is only reserved once its server
# binds it, which takes a child process a second or more: meanwhile the kernel may offer the same
# port again, and two servers would be told to listen on it (the API's port given to a consumer's
# metrics server: the API exits with "address already in use", and the consumer's /readyz answers
# the readiness check in its place).
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port no one listens on now, never handed out before by this process."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` on loopback right now.

    Probed the way servers bind (uvicorn, redis-server, PostgreSQL and the JVM all set
    SO_REUSEADDR): a port whose last connections sit in TIME_WAIT is free to them, and a plain
    ``bind()`` would call it taken.
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def preferred_port(port: int) -> int:
    """``port`` if it is free, otherwise any free one."""
    return port if port_free(port) else free_port()


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def wait_for_port(host: str, port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not open {host}:{port} within {timeout}s")


def detach_and_die_with_parent() -> None:
    """In the child: own session (Ctrl-C reaches only the parent, which stops children in order),
    and SIGTERM when the parent dies, so nothing outlives the stack."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ManagedProcess:
    """A child process we started and must stop."""

    name: str
    popen: subprocess.Popen[bytes]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode
