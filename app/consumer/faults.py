"""Which faults are the infrastructure's (wait them out) and which are a message's own."""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaError

from app.adapters.redis_client import REDIS_UNAVAILABLE

# SQLSTATE classes that never say anything about one message.
_INFRASTRUCTURE_CLASSES = {
    "08",  # connection exception
    "28",  # invalid authorization (a rotated password)
    "3D",  # invalid catalog name (database gone)
    "3F",  # invalid schema name
    "40",  # transaction rollback (serialization failure, deadlock)
    "53",  # insufficient resources
    "57",  # operator intervention (shutdown, cancel, statement timeout)
    "58",  # system error (I/O)
}
# Single codes of otherwise mixed classes.
_INFRASTRUCTURE_CODES = {
    "25006",  # read-only SQL transaction: a failover left us on a standby
    "25P03",  # idle-in-transaction session timeout
    "55P03",  # lock not available (lock_timeout)
    "55006",  # object in use
    "42P01",  # undefined table (migrations not applied, or a wrong schema)
    "42501",  # insufficient privilege
    "42703",  # undefined column (a deploy between schema versions)
    "42883",  # undefined function
}


def is_infrastructure(exc: BaseException) -> bool:
    """A fault of the systems around us: retry it with backoff, never dead-letter for it."""
    if isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.InterfaceError
        | asyncpg.exceptions.ConnectionFailureError
        | KafkaError,
    ) or isinstance(exc, REDIS_UNAVAILABLE):
        return True
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return sqlstate[:2] in _INFRASTRUCTURE_CLASSES or sqlstate in _INFRASTRUCTURE_CODES
