"""The invariants of a sale and the pure checks behind ``coupon-issuer verify``.

Figures are read elsewhere (app/verify.py); here they are only compared, so every check can be
tested without a database.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any
from uuid import UUID


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant; ``coupon_id`` is None for a fault of the whole check."""

    check: str
    detail: str
    coupon_id: UUID | None = None


@dataclass(slots=True)
class CouponFigures:
    """What verify found for one coupon."""

    coupon_id: UUID
    total_quantity: int
    issued_quantity: int
    issued_rows: int
    double_issued: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    gate_loaded: bool = False
    gate_total: int | None = None
    gate_members: int = 0
    partition: int | None = None
    partition_lag: int | None = None
    accepted_without_outcome: int = 0
    in_flight: int = 0
    dead_lettered: int = 0
    stranded: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass(slots=True)
class VerifyReport:
    """Per-coupon figures and every violation found; clean when ``violations`` is empty."""

    coupons: list[CouponFigures] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    partition_lag: dict[int, int] = field(default_factory=dict)
    dead_letters: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        coupons = []
        for c in self.coupons:
            doc = asdict(c)
            doc["coupon_id"] = str(c.coupon_id)
            doc["rejected_total"] = c.rejected_total
            coupons.append(doc)
        return {
            "ok": self.ok,
            "coupons": coupons,
            "violations": [
                {"check": v.check, "detail": v.detail, "coupon_id": _str_or_none(v.coupon_id)}
                for v in self.violations
            ],
            "partition_lag": {str(p): n for p, n in sorted(self.partition_lag.items())},
            "dead_letters": self.dead_letters,
            "notes": self.notes,
        }


@dataclass(slots=True)
class GateState:
    loaded: bool
    total: int | None
    members: set[str]
    young: set[str] = field(default_factory=set)  # holders whose request may still be publishing


def check_database(c: CouponFigures) -> list[Violation]:
    """Stock and uniqueness as PostgreSQL records them."""
    found = []
    if c.issued_quantity > c.total_quantity:
        found.append(
            Violation(
                "over_issue",
                f"issued_quantity {c.issued_quantity} > total_quantity {c.total_quantity}",
                c.coupon_id,
            )
        )
    if c.issued_quantity != c.issued_rows:
        found.append(
            Violation(
                "count_mismatch",
                f"issued_quantity {c.issued_quantity} != {c.issued_rows} ISSUED rows",
                c.coupon_id,
            )
        )
    if c.double_issued:
        found.append(
            Violation(
                "double_issue",
                f"{c.double_issued} ISSUED row(s) repeat a (coupon, user) pair",
                c.coupon_id,
            )
        )
    return found


def check_gate(c: CouponFigures, gate: GateState, holders: set[str]) -> list[Violation]:
    """A loaded gate must know every holder and the coupon's real total."""
    if not gate.loaded:
        return []  # rebuilt from PostgreSQL on the next press; nothing to compare
    found = []
    missing = holders - gate.members
    if missing:
        found.append(
            Violation(
                "gate_missing_holder",
                f"{len(missing)} holder(s) not in the gate, e.g. {sorted(missing)[:3]}",
                c.coupon_id,
            )
        )
    if len(gate.members) < c.issued_rows:
        found.append(
            Violation(
                "gate_too_small",
                f"gate holds {len(gate.members)} user(s), {c.issued_rows} issued",
                c.coupon_id,
            )
        )
    if gate.total != c.total_quantity:
        found.append(
            Violation(
                "gate_total_mismatch",
                f"gate total {gate.total} != database total {c.total_quantity}",
                c.coupon_id,
            )
        )
    return found


@dataclass(frozen=True, slots=True)
class AcceptedCheck:
    """Where the accepted requests without an outcome are, and what is wrong with them."""

    accepted_without_outcome: int
    in_flight: int = 0
    stranded: int = 0
    violations: list[Violation] = field(default_factory=list)


def check_accepted(
    coupon_id: UUID,
    waiting: set[str],
    young: set[str],
    dead_letter_users: set[str] | None,
    partition: int | None,
    partition_lag: int | None,
) -> AcceptedCheck:
    """Accepted users with no row: fine while young (still publishing), dead-lettered, or while
    their partition has lag; otherwise their reservation is stranded.

    ``dead_letter_users`` is None when the broker could not be read (then nothing can be told).
    """
    if dead_letter_users is None:
        if not waiting - young:
            return AcceptedCheck(len(waiting))
        unverifiable = Violation(
            "unverifiable",
            f"{len(waiting)} accepted request(s) without outcome; the broker could not"
            " be read to tell in-flight from stranded",
            coupon_id,
        )
        return AcceptedCheck(len(waiting), violations=[unverifiable])
    rest = waiting - dead_letter_users
    if (partition_lag or 0) > 0:
        return AcceptedCheck(len(waiting), in_flight=len(rest))
    stranded = rest - young
    found = []
    if stranded:
        found.append(
            Violation(
                "stranded_reservation",
                f"{len(stranded)} reservation(s) with no outcome, no lag on partition {partition},"
                f" no dead letter and older than the publish deadline, e.g. {sorted(stranded)[:3]}"
                " (coupon-issuer reconcile settles them)",
                coupon_id,
            )
        )
    return AcceptedCheck(len(waiting), len(rest & young), len(stranded), found)


def _str_or_none(value: UUID | None) -> str | None:
    return None if value is None else str(value)
