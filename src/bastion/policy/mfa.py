"""MFA freshness (step-up, RFC 9470): how recent the caller's MFA must be for a compartment.

A compartment with ``max_mfa_age_minutes`` needs an access token whose family passed MFA at most
that long ago (``Caller.mfa_at``, from the token's ``auth_time``); the ``forbid-stale-mfa``
policy denies otherwise. Listing models does not ask for fresh MFA: the list shows what the
caller is entitled to, and a call to such a model asks for the step-up.
"""

from __future__ import annotations

from .authorize import Caller
from .snapshot import Snapshot


def max_mfa_age(snapshot: Snapshot, compartment: str | None) -> int | None:
    """The compartment's MFA freshness limit in seconds, or None when it asks for no MFA."""
    if compartment is None:
        return None
    settings = snapshot.config.compartments.get(compartment)
    minutes = settings.max_mfa_age_minutes if settings is not None else None
    return None if minutes is None else minutes * 60


def mfa_fresh(
    snapshot: Snapshot, caller: Caller, compartment: str | None, api: str, now: float
) -> bool:
    """False only when the compartment asks for MFA and the caller's is missing or too old."""
    limit = max_mfa_age(snapshot, compartment)
    if limit is None or api == "list":
        return True
    return caller.mfa_at is not None and now - caller.mfa_at <= limit
