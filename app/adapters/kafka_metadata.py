"""Topic ids from the broker: one Metadata request (v12) that aiokafka does not speak itself.

A topic's id is fixed when the topic is created: the same name with another id is a topic deleted
and created again, whose messages were all lost. aiokafka 0.14 speaks Metadata up to v5, and ids
came in v10, so the request and its answer are declared here with aiokafka's own wire types and
sent over an admin client's connections (:class:`~app.adapters.kafka_lag.LagReader` uses it).
"""

from __future__ import annotations

from io import BytesIO
from uuid import UUID

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import IncompatibleBrokerVersion
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    AbstractType,
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

_NO_ID = UUID(int=0)  # what the protocol sends for "no id"


class _Uuid(AbstractType[UUID | None]):  # type: ignore[misc]  # aiokafka is untyped
    """Kafka's UUID: 16 bytes, all zero for none."""

    @classmethod
    def encode(cls, value: UUID | None) -> bytes:
        return (value or _NO_ID).bytes

    @classmethod
    def decode(cls, data: BytesIO) -> UUID | None:
        value = UUID(bytes=data.read(16))
        return None if value == _NO_ID else value


class _MetadataResponseV12(Response):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 12
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            CompactArray(
                ("node_id", Int32),
                ("host", CompactString("utf-8")),
                ("port", Int32),
                ("rack", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            CompactArray(
                ("error_code", Int16),
                ("name", CompactString("utf-8")),
                ("topic_id", _Uuid),
                ("is_internal", Boolean),
                (
                    "partitions",
                    CompactArray(
                        ("error_code", Int16),
                        ("partition_index", Int32),
                        ("leader_id", Int32),
                        ("leader_epoch", Int32),
                        ("replica_nodes", CompactArray(Int32)),
                        ("isr_nodes", CompactArray(Int32)),
                        ("offline_replicas", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("topic_authorized_operations", Int32),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _MetadataRequestV12(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 3
    API_VERSION = 12
    RESPONSE_TYPE = _MetadataResponseV12
    SCHEMA = Schema(
        (
            "topics",
            CompactArray(
                ("topic_id", _Uuid), ("name", CompactString("utf-8")), ("tags", TaggedFields)
            ),
        ),
        ("allow_auto_topic_creation", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


class _AllTopicIds(Request[_MetadataRequestV12]):  # type: ignore[misc]
    API_KEY = 3

    def build(self, request_struct_class: type[_MetadataRequestV12]) -> _MetadataRequestV12:
        # Every topic (null array), never auto-creating one: a name typed wrong creates nothing.
        return request_struct_class(None, False, False, {})


async def topic_ids(admin: AIOKafkaAdminClient) -> dict[str, UUID]:
    """Each topic's id; empty when the broker is older than topic ids (before Kafka 2.8)."""
    try:
        # The admin client's own sender: aiokafka has no public call for a request it lacks.
        response = await admin._send_request(_AllTopicIds())
    except IncompatibleBrokerVersion:
        return {}
    found: dict[str, UUID] = {}
    for error_code, name, topic_id, *_ in response.topics:
        if not error_code and name is not None and topic_id is not None:
            found[name] = topic_id
    return found
