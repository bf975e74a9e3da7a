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
    # The reconciler's three, from what it could tell (app/domain/settlement.py). Each: no
    # decision, nothing left queued for it on its partition; its reservation was released and the
    # user may press again.
    # It never reached the queue (the API died, or the broker never took it): the reconciler
    # watched its partition from before the press, and the broker lost nothing there since.
    NOT_QUEUED = "NOT_QUEUED"
    # The broker lost queued messages of its partition after it was accepted (the topic was
    # re-created, or records were deleted or truncated before they were consumed): if it was
    # acknowledged (202 QUEUED), it was lost there.
    QUEUE_LOST = "QUEUE_LOST"
    # No outcome and nothing left queued for it; whether it ever reached the queue is not known
    # (the reconciler was not watching its partition when it was pressed).
    NO_OUTCOME = "NO_OUTCOME"
