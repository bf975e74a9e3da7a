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
    """Status of one user's request for one coupon; every status but PENDING is final."""

    PENDING = "PENDING"
    ISSUED = "ISSUED"
    REJECTED = "REJECTED"
    FAILED = "FAILED"


class RejectReason(enum.StrEnum):
    """Why the consumer refused a request the gate had accepted."""

    SOLD_OUT = "SOLD_OUT"
    EXPIRED = "EXPIRED"
    DUPLICATE = "DUPLICATE"
    UNKNOWN_COUPON = "UNKNOWN_COUPON"


class FailReason(enum.StrEnum):
    """Why an accepted request ended with no decision; its reservation was given back."""

    # The consumer could not process it (a data fault, after every attempt): it is on the
    # dead-letter topic, and a replay can still issue it.
    DEAD_LETTERED = "DEAD_LETTERED"
    # It never reached the queue (the API died or the broker never took it): the reconciler
    # released it. The user may press again.
    NOT_QUEUED = "NOT_QUEUED"
