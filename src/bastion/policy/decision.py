"""Decisions are values: allow or deny, the reasons (a closed enum), the determining policies and
the snapshot epoch they were made against."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """Why a request was allowed or denied. Policies name theirs with a ``@reason`` annotation."""

    GRANTED = "granted"
    NOT_GRANTED = "not_granted"
    TOKEN_BINDING_REQUIRED = "token_binding_required"  # noqa: S105 (a reason, not a secret)
    PRINCIPAL_DISABLED = "principal_disabled"
    VENDOR_CONTROL_PLANE = "vendor_control_plane"
    UNKNOWN_PRINCIPAL = "unknown_principal"
    FORBIDDEN_BY_POLICY = "forbidden_by_policy"
    POLICY_ERROR = "policy_error"
    QUOTA_EXCEEDED = "quota_exceeded"
    THROTTLED = "throttled"  # a throttle lock's rate is spent (429, after Cedar)
    QUOTA_UNAVAILABLE = "quota_unavailable"  # cluster: Redis down, strict compartment (503)
    NETWORK_NOT_ALLOWED = "network_not_allowed"
    OUTSIDE_CONTRACT = "outside_contract"
    OUTSIDE_WORKING_HOURS = "outside_working_hours"
    OUTSIDE_COMPARTMENT_HOURS = "outside_compartment_hours"
    OVER_SEAT_LIMIT = "over_seat_limit"
    SPONSOR_INACTIVE = "sponsor_inactive"
    ABOVE_VENDOR_CEILING = "above_vendor_ceiling"
    REVIEW_OVERDUE = "review_overdue"
    DORMANT_PRINCIPAL = "dormant_principal"
    INSUFFICIENT_USER_AUTHENTICATION = "insufficient_user_authentication"  # step-up (RFC 9470)
    RISK_TOO_HIGH = "risk_too_high"
    TOKEN_FAMILY_MOVED = "token_family_moved"  # noqa: S105 (a reason, not a secret)
    HONEYTOKEN = "honeytoken"  # D14; shown to the caller as not_granted (see Decision.shown)
    UNDECLARED_ORIGIN = "undeclared_origin"  # D11
    NO_SNAPSHOT = "no_snapshot"
    LOCK_VIEW_STALE = "lock_view_stale"  # a strict compartment, lock view too old (503)
    LOCKED_ALL = "locked_all"
    LOCKED_PRINCIPAL = "locked_principal"
    LOCKED_ORG = "locked_org"
    LOCKED_KEY = "locked_key"
    LOCKED_FAMILY = "locked_family"
    LOCKED_COMPARTMENT = "locked_compartment"
    LOCKED_NETWORK = "locked_network"

    @classmethod
    def parse(cls, value: str | None) -> Reason:
        """The reason a policy annotation names; operator policies without one get a generic one."""
        try:
            return cls(value) if value else cls.FORBIDDEN_BY_POLICY
        except ValueError:
            return cls.FORBIDDEN_BY_POLICY


# Reasons recorded in the audit log but never shown to the caller.
CONCEALED = frozenset({Reason.HONEYTOKEN})


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reasons: tuple[Reason, ...]
    policies: tuple[str, ...]
    epoch: int

    @classmethod
    def deny(cls, reason: Reason, epoch: int, policies: tuple[str, ...] = ()) -> Decision:
        return cls(False, (reason,), policies, epoch)

    def shown(self) -> tuple[Reason, ...]:
        """The reasons the caller is told. A decision involving a honeytoken shows only the
        generic ``not_granted``, so whoever holds the decoy cannot tell it tripped a wire; the
        audit event keeps the real reasons."""
        if any(reason in CONCEALED for reason in self.reasons):
            return (Reason.NOT_GRANTED,)
        return self.reasons

    def describe(self) -> str:
        """A human sentence for an error message (reasons only, never request content)."""
        verb = "allowed" if self.allowed else "denied"
        return f"{verb}: " + ", ".join(self.reasons)
