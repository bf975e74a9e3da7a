"""The local Kafka harness's probe: one Metadata request in Kafka's wire protocol, stdlib only.

``app.local.kafka`` asks it whether a node it started answers Kafka requests (and sees every
broker of its cluster) and which node leads a partition, without an asyncio client or a JVM tool
in the loop. One request version is spoken, Metadata v8 (the newest before the "flexible"
encoding of v9+, and far above the v0-v3 that Kafka 4 removed), over one short connection.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

_METADATA = 3
_VERSION = 8
_CLIENT_ID = b"coupon-issuer-probe"


@dataclass(frozen=True)
class PartitionState:
    """One partition as a broker's metadata shows it (``leader`` -1: none right now)."""

    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


@dataclass(frozen=True)
class Metadata:
    """The live (unfenced) brokers and the partitions of the topics asked about."""

    brokers: frozenset[int]
    topics: dict[str, dict[int, PartitionState]]


def fetch_metadata(
    host: str, port: int, topics: Sequence[str] = (), timeout: float = 2.0
) -> Metadata:
    """Ask one broker for its metadata; raises ``OSError`` when it does not answer in time.

    Topics the broker does not know (or has no leader for yet) are left out of ``topics``.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(_metadata_request(topics))
        size = struct.unpack(">i", _read_exactly(sock, 4))[0]
        return _parse_metadata(_read_exactly(sock, size))


def _string(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack(">h", len(raw)) + raw


def _metadata_request(topics: Sequence[str]) -> bytes:
    header = struct.pack(">hhi", _METADATA, _VERSION, 1) + _string(_CLIENT_ID)
    body = struct.pack(">i", len(topics)) + b"".join(_string(t) for t in topics)
    # allow_auto_topic_creation, include_cluster_authorized_operations,
    # include_topic_authorized_operations: all off.
    body += b"\x00\x00\x00"
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionResetError("the broker closed the connection mid-response")
        chunks += chunk
    return bytes(chunks)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def _take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self._data, self._at)
        self._at += struct.calcsize(fmt)
        return int(value)

    def int8(self) -> int:
        return self._take(">b")

    def int16(self) -> int:
        return self._take(">h")

    def int32(self) -> int:
        return self._take(">i")

    def string(self) -> str | None:
        size = self.int16()
        if size < 0:
            return None
        value = self._data[self._at : self._at + size].decode()
        self._at += size
        return value

    def array(self, item: Callable[[], T]) -> list[T]:
        return [item() for _ in range(max(self.int32(), 0))]


def _parse_metadata(data: bytes) -> Metadata:
    r = _Reader(data)
    r.int32()  # correlation id
    r.int32()  # throttle time

    def broker() -> int:
        node_id = r.int32()
        r.string(), r.int32(), r.string()  # host, port, rack
        return node_id

    brokers = frozenset(r.array(broker))
    r.string(), r.int32()  # cluster id, controller id

    def partition() -> tuple[int, int, PartitionState]:
        error, index, leader = r.int16(), r.int32(), r.int32()
        r.int32()  # leader epoch
        replicas, isr = tuple(r.array(r.int32)), tuple(r.array(r.int32))
        r.array(r.int32)  # offline replicas
        return error, index, PartitionState(leader, replicas, isr)

    def topic() -> tuple[int, str | None, list[tuple[int, int, PartitionState]]]:
        error, name = r.int16(), r.string()
        r.int8()  # is internal
        partitions = r.array(partition)
        r.int32()  # authorized operations
        return error, name, partitions

    topics = {
        name: {index: state for _, index, state in partitions}
        for error, name, partitions in r.array(topic)
        if error == 0 and name is not None
    }
    return Metadata(brokers, topics)
