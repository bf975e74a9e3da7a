"""The reconciler settles reservations that have no outcome (see app/domain/settlement.py)."""
