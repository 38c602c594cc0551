"""The facts a decision needs beyond who and what: computed per request from the snapshot, the
source address and the clock (no I/O), then handed to Cedar as the context.

For a vendor principal: inside the contract window, inside working hours, from an allowed
network, holding a seat, with an active sponsor. For everyone: from a network the compartment
allows, inside the compartment's allowed hours if it has them. A vendor org without a contract
window or sponsor fails closed (the facts are false). For
everyone: whether a time-bound grant covers the compartment at this second, and whether the
caller is dormant (idle past the lifecycle limit). For a vendor principal also: whether its org's
access review is overdue (the Cedar policy limits that to restricted compartments and above).
Detection's inline checks: whether the caller's principal or device key is a honeytoken (D14),
and whether the source is an anonymizer or hosting origin its org has not declared (D11).
"""

from __future__ import annotations

from bastion.config.models import OrgKind
from bastion.config.vendor import network_allows
from bastion.detect.ipintel import undeclared

from .authorize import Caller, RequestFacts
from .mfa import mfa_fresh
from .snapshot import Snapshot


def request_facts(
    snapshot: Snapshot,
    caller: Caller,
    compartment: str | None,
    source_ip: str,
    api: str,
    now: float,
) -> RequestFacts:
    config = snapshot.config
    networks = config.compartments[compartment].allowed_networks if compartment else ()
    allowed = network_allows(networks, source_ip)
    granted = (
        compartment is not None and snapshot.grants.get((caller.principal, compartment), 0.0) > now
    )
    hours = config.compartments[compartment].allowed_hours if compartment else None
    hours_ok = hours is None or hours.covers(now)
    org = config.orgs.get(caller.org)
    dormant = snapshot.dormant(caller.principal, now)
    risk_high = caller.risk >= config.detection.risk.forbid_critical_at
    honeytoken = config.detection.honeytokens.covers(caller.principal, caller.jkt)
    origin = undeclared(snapshot.origin(source_ip).origin, org.allowed_origins if org else ())
    if org is None or org.kind is not OrgKind.VENDOR:
        return RequestFacts(
            token_bound=True,
            source_ip=source_ip,
            api=api,
            network_allowed=allowed,
            compartment_hours_ok=hours_ok,
            jit_granted=granted,
            mfa_fresh=mfa_fresh(snapshot, caller, compartment, api, now),
            dormant=dormant,
            risk=caller.risk,
            risk_high=risk_high,
            family_moved=caller.family_moved,
            honeytoken=honeytoken,
            undeclared_origin=origin,
        )
    sponsor = snapshot.principals.get(org.sponsor) if org.sponsor else None
    return RequestFacts(
        token_bound=True,
        source_ip=source_ip,
        api=api,
        network_allowed=allowed and network_allows(org.allowed_networks, source_ip),
        in_contract=org.contract is not None and org.contract.covers(now),
        within_hours=org.working_hours is None or org.working_hours.covers(now),
        compartment_hours_ok=hours_ok,
        seat_ok=caller.principal not in snapshot.over_seats,
        sponsor_active=sponsor is not None
        and not sponsor.disabled
        and snapshot.lock_on([("principal", sponsor.name)], now) is None,
        jit_granted=granted,
        mfa_fresh=mfa_fresh(snapshot, caller, compartment, api, now),
        review_overdue=snapshot.review_overdue(caller.org, now),
        dormant=dormant,
        risk=caller.risk,
        risk_high=risk_high,
        family_moved=caller.family_moved,
        honeytoken=honeytoken,
        undeclared_origin=origin,
    )
