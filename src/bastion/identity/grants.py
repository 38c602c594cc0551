"""What the token endpoint answers: a grant, and the refusals that carry what their audit
event names (the principal, the token family, the device key)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from bastion.errors import InvalidGrant
from bastion.store import tokens as token_rows

from . import exchange


def refresh_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenGrant:
    access_token: str
    expires_in: int
    refresh_token: str | None  # None for exchanged tokens: exchange a fresh id token instead
    family: str

    def response(self) -> dict[str, object]:
        body: dict[str, object] = {
            "access_token": self.access_token,
            "token_type": "DPoP",
            "expires_in": self.expires_in,
        }
        if self.refresh_token is None:
            body["issued_token_type"] = exchange.ACCESS_TOKEN_TYPE
        else:
            body["refresh_token"] = self.refresh_token
        return body


class RefreshRefused(InvalidGrant):
    """A refused refresh, carrying the family it named (for the audit event)."""

    def __init__(self, family: token_rows.FamilyRow | None, message: str) -> None:
        super().__init__(message)
        self.principal = family.principal if family else None
        self.family = family.id if family else None


class HoneytokenPresented(InvalidGrant):
    """A honeytoken principal or device key (``detection.honeytokens``) at the token endpoint.
    The caller gets the answer a disabled principal gets; the audit event says ``honeytoken``."""

    audit_reason = "honeytoken"

    def __init__(self, principal: str, jkt: str) -> None:
        super().__init__(f"principal {principal!r} is disabled or does not exist")
        self.principal = principal
        self.jkt = jkt


class PrincipalRefused(InvalidGrant):
    """A grant refused because of who the principal is (disabled, dormant, locked, key gone):
    the ``token.refused`` event names the principal, so detection (D9) sees the attempt."""

    def __init__(self, principal: str, message: str) -> None:
        super().__init__(message)
        self.principal = principal
