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
    # The reconciler's (app/domain/settlement.py): no decision and nothing left queued for it on
    # its partition; the reservation was released and the user may press again. What each says
    # is all the reconciler knows:
    # No outcome and nothing left queued for it. It may never have reached the queue (the API
    # died, the broker never took it) or been lost there unseen: nothing cheap tells those apart.
    NOT_QUEUED = "NOT_QUEUED"
    # The request topic was deleted and created again (its topic id changed) after this press was
    # accepted: whatever was queued then was lost, acknowledged (202 QUEUED) or not.
    TOPIC_RECREATED = "TOPIC_RECREATED"
    # The broker lost acknowledged messages of its partition after this press was accepted (the
    # partition's log end went backwards: an unflushed tail lost in a crash, an unclean leader
    # election): if it was acknowledged, it may have been one of them.
    LOG_TRUNCATED = "LOG_TRUNCATED"
