"""wrk (Debian's C load generator) driven from the bench: presses with unique users, status reads
of users that pressed, or one constant request; every answer counted by status code.

wrk costs the box several times less CPU per request than a Python client, which on a 2-core
machine decides what is measured. Its Lua hooks count the answers per status (``response``) and
print one JSON line at the end (``done``), so the bench can hold the counts against the database.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_MARK = "WRK_JSON "

# One script for the three modes (args: mode, path, user prefix, users to read in "status" mode).
# Presses come from users "<prefix>-<thread>-<n>", unique per run and thread; the status mode reads
# "<prefix>-0-<k>" for k in 1..readable round-robin (thread 0's users of a press run).
_SCRIPT = r"""
local threads = {}
local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end
function init(args)
  mode, path, readable = args[1], args[2], tonumber(args[4])
  users = args[3] .. "-" .. (mode == "status" and 0 or tid) .. "-"
  n, codes = 0, {}
  headers = {["Content-Type"] = "application/json"}
end
function request()
  n = n + 1
  if mode == "press" then
    return wrk.format("POST", path, headers, '{"userId":"' .. users .. n .. '"}')
  elseif mode == "status" then
    return wrk.format("GET", path .. "/issues/" .. users .. ((n % readable) + 1))
  end
  return wrk.format("POST", path, headers, '{"userId":"constant"}')
end
function response(status, hdrs, body)
  codes[status] = (codes[status] or 0) + 1
end
function done(summary, latency, requests)
  local out = {}
  for _, t in ipairs(threads) do
    local c = t:get("codes")
    local per = {}
    for k, v in pairs(c) do per[#per + 1] = '"' .. k .. '":' .. v end
    out[#out + 1] = '{' .. table.concat(per, ",") .. '}'
  end
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,"threads":[%s]}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50),
    latency:percentile(99), latency.max, table.concat(out, ",")))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run saw: answers by status, per thread and in all; latency; errors."""

    requests: int
    seconds: float
    codes: dict[int, int]
    thread_codes: list[dict[int, int]]
    p50_ms: float
    p99_ms: float
    max_ms: float
    socket_errors: int

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def count(self, status: int) -> int:
        return self.codes.get(status, 0)

    def count_5xx(self) -> int:
        return sum(v for k, v in self.codes.items() if k >= 500)

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "seconds": self.seconds,
            "per_s": self.per_second,
            "codes": {str(k): v for k, v in sorted(self.codes.items())},
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "socket_errors": self.socket_errors,
        }


def script_file(folder: Path) -> Path:
    path = folder / "bench.lua"
    if not path.exists():
        path.write_text(_SCRIPT)
    return path


def command(
    url: str,
    mode: str,
    *,
    connections: int,
    seconds: float,
    script_dir: Path,
    user_prefix: str = "u",
    readable: int = 1,
    threads: int = 1,
) -> list[str]:
    """The wrk command for ``url`` (base + path) in ``mode`` ("press", "status" or "constant").

    In "status" mode ``url`` is the coupon's URL and ``user_prefix`` / ``readable`` name the users
    of an earlier press run to read. wrk stops early on SIGINT and still reports."""
    script = script_file(script_dir)
    scheme_host, _, rest = url.partition("//")
    host, _, path = rest.partition("/")
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"{scheme_host}//{host}",
        "--",
        mode,
        f"/{path}",
        user_prefix,
        str(max(1, readable)),
    ]


def run(url: str, mode: str, **options: Any) -> WrkResult:
    """Run wrk (``command``'s arguments) to its end."""
    done = subprocess.run(
        command(url, mode, **options), capture_output=True, text=True, check=False
    )
    return result(done.returncode, done.stdout, done.stderr)


def result(returncode: int, stdout: str, stderr: str) -> WrkResult:
    """What a finished wrk printed; RuntimeError when it failed or printed no report."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith(_MARK)), None)
    if returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({returncode}): {stderr.strip() or stdout}")
    doc = json.loads(line[len(_MARK) :])
    per_thread = [{int(k): int(v) for k, v in t.items()} for t in doc["threads"]]
    codes: dict[int, int] = {}
    for t in per_thread:
        for k, v in t.items():
            codes[k] = codes.get(k, 0) + v
    return WrkResult(
        requests=int(doc["requests"]),
        seconds=doc["duration_us"] / 1e6,
        codes=codes,
        thread_codes=per_thread,
        p50_ms=doc["p50_us"] / 1000,
        p99_ms=doc["p99_us"] / 1000,
        max_ms=doc["max_us"] / 1000,
        socket_errors=sum(
            int(doc[k]) for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
        ),
    )
