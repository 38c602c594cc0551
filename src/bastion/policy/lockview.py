"""Strict compartments: refuse calls when this gateway cannot show its lock view is current.

In a cluster a lock placed through one gateway reaches the others through Redis and their epoch
poll. If a gateway's epoch reads fail (database unreachable, a partition), it keeps serving from
its last snapshot, which is right for most compartments and wrong for the most sensitive: there a
lock placed meanwhile must not be missed. A compartment with ``lock_view: {strict: true}`` is
refused once the view is older than its bound. The age is a float the sync keeps: no I/O here.
"""

from __future__ import annotations

import math

from bastion.errors import LockViewStale

from .snapshot import Snapshot


def check_lock_view(snapshot: Snapshot, compartment: str, age: float) -> None:
    """Raise ``LockViewStale`` if ``compartment`` is strict and ``age`` (seconds since the lock
    view was proved current) is over its bound."""
    declared = snapshot.config.compartments.get(compartment)
    if declared is None or not declared.lock_view.strict:
        return
    bound = declared.lock_view.max_age_seconds
    if age <= bound:
        return
    seen = "never" if math.isinf(age) else f"{age:.1f}s ago"
    raise LockViewStale(
        f"compartment {compartment!r} needs a lock view confirmed within {bound:g}s; this "
        f"gateway last confirmed its view {seen}. Try again shortly"
    )
