"""Outcomes are values, not exceptions: the API and consumer map them in one place each."""

from __future__ import annotations

import enum


class GateOutcome(enum.StrEnum):
    """What the Redis gate says about one issue request."""

    ACCEPTED = "ACCEPTED"
    DUPLICATE = "DUPLICATE"
    SOLD_OUT = "SOLD_OUT"
    EXPIRED = "EXPIRED"
    NOT_FOUND = "NOT_FOUND"
    RATE_LIMITED = "RATE_LIMITED"


class IssueStatus(enum.StrEnum):
    """Final (or pending) status of one user's request for one coupon."""

    PENDING = "PENDING"
    ISSUED = "ISSUED"
    REJECTED = "REJECTED"


class RejectReason(enum.StrEnum):
    """Why the consumer refused a request the gate had accepted."""

    SOLD_OUT = "SOLD_OUT"
    EXPIRED = "EXPIRED"
    DUPLICATE = "DUPLICATE"
    UNKNOWN_COUPON = "UNKNOWN_COUPON"
