"""Structured logging: JSON lines in containers, readable text in a terminal, with the trace id
(``x-request-id``) of the HTTP exchange a line belongs to."""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import sys

import orjson

trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)
# Trace ids this process hands out: a random per-process prefix and a counter (unique without
# a uuid4 per request, which costs more than the rest of the id handling on the hot path).
_ID_PREFIX = os.urandom(6).hex()
_id_counter = itertools.count(1)


def new_trace_id() -> str:
    """A trace id: the ``x-request-id`` of one HTTP exchange and of its log lines (not the issue
    request's ``requestId``: app/domain/request_ids.py). Unique across processes (a random 48-bit
    prefix) and within one (a counter)."""
    return f"{_ID_PREFIX}{next(_id_counter):010x}"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        trace_id = trace_id_var.get()
        if trace_id:
            doc["traceId"] = trace_id
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = trace_id_var.get() or "-"
        return True


def configure_logging(fmt: str, level: str) -> None:
    """Configure the root logger once per process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s [%(trace_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings become log records, so they are JSON too
    logging.getLogger("aiokafka").setLevel(max(root.level, logging.WARNING))
