"""Token exchange (RFC 8693): an id token from a configured identity provider, plus a DPoP proof
by an enrolled device key, for a Bastion access token.

``subject_token`` is the id token of the user the calls are for. With an ``actor_token`` (the id
token of the person making the calls), the issued token's ``act`` claim names the actor and every
audit event carries it. Delegation is narrow: a vendor user may act only under their own org's
sponsor, and the gateway then requires *both* the sponsor's grant and the vendor's boundary
(network, contract, hours, ceiling, locks), so acting for someone never widens anyone's reach.
The device key that signs the DPoP proof must be enrolled for whoever makes the calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bastion.config.models import OrgKind
from bastion.errors import InvalidGrant, InvalidRequest
from bastion.policy.snapshot import Snapshot

from .federation import ExternalIdentity, FederationVerifier

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105 (a URN, not a secret)
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
MAX_NONCE = 512


@dataclass(frozen=True, slots=True)
class Exchange:
    """A verified exchange: the subject, the actor if any, and who holds the device key."""

    subject: ExternalIdentity
    actor: ExternalIdentity | None

    @property
    def holder(self) -> ExternalIdentity:
        """Who makes the calls (and so must hold the device key): the actor, else the subject."""
        return self.actor or self.subject

    @property
    def act(self) -> tuple[str, ...]:
        return (self.actor.principal,) if self.actor else ()


def _token_param(form: Mapping[str, str], name: str) -> str | None:
    token = form.get(f"{name}_token")
    kind = form.get(f"{name}_token_type")
    if token is None and kind is None:
        return None
    if not token:
        raise InvalidRequest(f"missing {name}_token")
    if kind != ID_TOKEN_TYPE:
        raise InvalidRequest(f"{name}_token_type must be {ID_TOKEN_TYPE}")
    return token


async def verify_exchange(
    form: Mapping[str, str], verifier: FederationVerifier, snapshot: Snapshot, now: float
) -> Exchange:
    """Check the form, both id tokens and the delegation rule; raise a specific OAuth error."""
    issuers = snapshot.config.federation.issuers
    if not issuers:
        raise InvalidRequest("token exchange is not enabled: no federation issuers are configured")
    requested = form.get("requested_token_type")
    if requested not in (None, ACCESS_TOKEN_TYPE):
        raise InvalidRequest(f"requested_token_type must be {ACCESS_TOKEN_TYPE}")
    nonce = form.get("nonce")
    if nonce is not None and not 0 < len(nonce) <= MAX_NONCE:
        raise InvalidRequest("nonce must be 1 to 512 characters")
    subject_token = _token_param(form, "subject")
    if subject_token is None:
        raise InvalidRequest("missing subject_token")
    actor_token = _token_param(form, "actor")
    subject = await verifier.verify(subject_token, issuers, nonce=nonce, now=now)
    _check_mapping(snapshot, subject, "subject")
    if actor_token is None:
        return Exchange(subject, None)
    actor = await verifier.verify(actor_token, issuers, nonce=nonce, now=now)
    _check_mapping(snapshot, actor, "actor")
    _check_delegation(snapshot, subject.principal, actor.principal)
    return Exchange(subject, actor)


def _check_mapping(snapshot: Snapshot, identity: ExternalIdentity, role: str) -> None:
    """The principal exists, is enabled, and belongs to an org its issuer may vouch for."""
    facts = snapshot.principals.get(identity.principal)
    issuer = snapshot.config.federation.issuers[identity.issuer]
    if facts is None or facts.disabled:
        raise InvalidGrant(f"the {role} token names no enabled Bastion principal")
    if facts.org not in issuer.orgs:
        raise InvalidGrant(
            f"issuer {identity.issuer!r} may not vouch for principals of org {facts.org!r}"
        )


def _check_delegation(snapshot: Snapshot, subject: str, actor: str) -> None:
    if subject == actor:
        raise InvalidGrant("the actor and the subject are the same principal")
    actor_org = snapshot.config.orgs.get(snapshot.principals[actor].org)
    if actor_org is None or actor_org.kind is not OrgKind.VENDOR or actor_org.sponsor != subject:
        raise InvalidGrant(
            f"{actor!r} may not act for {subject!r}: a vendor user may act only under their "
            "org's sponsor"
        )
