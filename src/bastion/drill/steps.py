"""The contractor-breach drill, step by step (../shared/BRIEF.md, threat model T1-T10).

Each step gets a new contractor of the vendor org (so one step's containment does not decide
the next), plays the contractor's normal use, then the attacker's moves, recording every
attacker request on the step's :class:`StepResult`. Attackers are paced like a person or a
script driving a model (``Lab.pace``, 4 requests a second by default) and every loop is bounded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import httpx

from .device import Attempt, attempt_of
from .lab import OUTSIDE, Lab
from .scorecard import StepResult

MAX_ROUNDS = 12  # attacker requests per loop, at most (3 s at the default pace)


def _until_contained(
    lab: Lab, result: StepResult, attack: Callable[[], Attempt], rounds: int = MAX_ROUNDS
) -> None:
    """Attack at the lab's pace until refused by containment (then once more, to see the
    refusal hold), or for ``rounds`` requests."""
    after = 0
    for _ in range(rounds):
        attempt = result.record(attack())
        if result.contained:
            after += 1
            if after > 1 or not attempt.contained:
                return
        time.sleep(lab.pace)


def t1_stolen_token(lab: Lab) -> StepResult:
    result = StepResult("T1", "stolen token, without the device key")
    victim = lab.contractor("t1")
    victim.chat(lab.model)  # the contractor at work
    thief = lab.stranger(victim.principal, "198.51.100.7").holding(victim.token)
    result.record(thief.chat(lab.model))  # the token with a proof from the thief's own key
    result.record(thief.chat(lab.model, bearer=True))  # the token as a plain bearer token
    result.record(thief.admin("GET", "/admin/v1/locks")[0])
    lab.watch(result, victim.principal, timeout=0.5)
    result.note = "tokens are DPoP-bound: without the device key a stolen token is refused"
    return result


def t2_token_replay(lab: Lab) -> StepResult:
    result = StepResult("T2", "token and key replayed from elsewhere")
    victim = lab.contractor("t2")
    for _ in range(2):
        victim.chat(lab.model)
        time.sleep(lab.pace)
    thief = victim.at(lab.networks.second)  # malware copied the key and the token
    _until_contained(lab, result, lambda: thief.chat(lab.model))
    _, login = thief.login()  # the thief logs in again with the copied key
    result.record(login)
    lab.watch(result, victim.principal)
    result.note = "D2 revokes the token family and locks the device key seen in two places"
    return result


def t3_key_outside(lab: Lab) -> StepResult:
    result = StepResult("T3", "device key used outside the vendor")
    victim = lab.contractor("t3")
    victim.chat(lab.model)
    thief = victim.at(OUTSIDE)
    thief, login = thief.login()
    result.record(login)
    for _ in range(3):
        result.record(thief.chat(lab.model))
        time.sleep(lab.pace)
    lab.watch(result, victim.principal, timeout=1.0)
    result.note = "the vendor's allowed networks are enforced on every request"
    return result


def t4_probing(lab: Lab) -> StepResult:
    result = StepResult("T4", "probing other models")
    insider = lab.contractor("t4")
    insider.chat(lab.model)
    for model in lab.probes:
        result.record(insider.chat(model))
        time.sleep(lab.pace)
    _until_contained(lab, result, lambda: insider.chat(lab.model), rounds=8)
    lab.watch(result, insider.principal)
    result.note = "every probe is denied; D5 throttles, then suspends the prober"
    return result


def t5_harvesting(lab: Lab) -> StepResult:
    result = StepResult("T5", "harvesting output")
    insider = lab.contractor("t5")
    insider.chat(lab.model)
    _until_contained(lab, result, lambda: insider.chat(lab.model, words=10_000))
    lab.watch(result, insider.principal, timeout=1.0)
    result.note = "per-principal LLM-token quotas stop the harvest; D6 watches volume"
    return result


def t6_shared_account(lab: Lab) -> StepResult:
    result = StepResult("T6", "a second person on the account")
    owner = lab.contractor("t6")
    friend = lab.until_logged_in(owner.at(lab.networks.third))  # a copy of the key, own login
    after = 0
    for _ in range(MAX_ROUNDS):
        owner.chat(lab.model)
        attempt = result.record(friend.chat(lab.model))
        after += result.contained
        if after > 1 or (result.contained and not attempt.contained):
            break
        time.sleep(lab.pace)
    lab.watch(result, owner.principal)
    result.note = "D4: one vendor seat used from two networks at once; the account is suspended"
    return result


def t7_after_contract(lab: Lab) -> StepResult:
    result = StepResult("T7", "access after the contract")
    former = lab.contractor("t7", org=lab.former_vendor)
    for _ in range(3):
        result.record(former.chat(lab.model))
        time.sleep(lab.pace)
    lab.watch(result, former.principal)
    result.note = "the contract window is enforced inline; D9 opens an incident"
    return result


def t8_self_approval(lab: Lab) -> StepResult:
    result = StepResult("T8", "self-approval, escalation")
    insider = lab.contractor("t8")
    asked, filed = insider.admin(
        "POST",
        "/admin/v1/access/requests",
        {"target": lab.escalate_to, "reason": "drill", "duration_seconds": 3600},
    )
    request_id = str(filed.get("id", "ar_unknown"))
    approve = f"/admin/v1/access/requests/{request_id}/approve"
    result.record(insider.admin("POST", approve, {"reason": "looks fine to me"})[0])
    lock = {"target_type": "principal", "target": "alice", "reason": "drill"}
    result.record(insider.admin("POST", "/admin/v1/locks", lock)[0])
    result.record(insider.admin("GET", "/admin/v1/principals")[0])
    result.record(insider.chat(_model_of(lab, lab.escalate_to) or lab.escalate_to))
    lab.watch(result, insider.principal, timeout=1.0)
    result.note = (
        f"request {'filed' if asked.ok else 'refused: ' + asked.describe()}; requester ≠ "
        "approver and vendors have no control-plane rights"
    )
    return result


def _model_of(lab: Lab, compartment: str) -> str | None:
    return next((m.name for m in lab.config.models if m.compartment == compartment), None)


def t10_direct_upstream(lab: Lab) -> StepResult:
    result = StepResult("T10", "model server called directly")
    route = lab.config.model(lab.model)
    assert route is not None
    base = lab.config.upstreams[route.upstream].base_url.rstrip("/")
    path = "/chat/completions" if base.endswith("/v1") else "/v1/chat/completions"
    upstream = lab.config.upstreams[route.upstream]
    body = {
        "model": route.upstream_model or route.name,
        "messages": [{"role": "user", "content": "x"}],
    }
    # The worst case: the attacker also stole the upstream's API key (from an environment the
    # drill shares with the server); without Bastion's assertion it must still be refused.
    key = os.environ.get(upstream.api_key_env or "", "")
    stolen = {"Authorization": f"Bearer {key}", "x-api-key": key} if key else {}
    forged = {**stolen, "Bastion-Assertion": "eyJhbGciOiJub25lIn0.e30."}
    for what, headers in (("direct call", stolen), ("direct call, forged assertion", forged)):
        at = time.time()
        try:
            response = lab.http.post(base + path, json=body, headers=headers)
        except httpx.HTTPError:  # nothing listens there from this host: also blocked
            result.record(Attempt(at, what, 0, "unreachable"))
            continue
        result.record(attempt_of(at, what, response))
    result.note = f"{base} requires Bastion's signed assertion" + (
        " (refused even with the upstream's API key)" if key else ""
    )
    return result


def t9_audit_edit(lab: Lab) -> StepResult:
    """An intruder with database access rewrites a request of theirs in the audit log (a
    served request made to look refused), then goes on using the model."""
    result = StepResult("T9", "audit database edited")
    insider = lab.contractor("t9")
    insider.chat(lab.model)
    time.sleep(0.3)  # recorded, and verified by the watch
    edited = lab.tamper(insider.principal)
    if edited is None:
        result.error = "no request event of the step's contractor to edit"
        return result
    index, original, at = edited
    result.record(Attempt(at, f"edit audit event #{index}", 200))
    try:
        _until_contained(lab, result, lambda: insider.chat(lab.model))
        lab.watch_tamper(result)
    finally:
        lab.restore(index, original)
    result.note = (
        f"event #{index} rewritten; the server's integrity watch found it, refused "
        "audit-required compartments and signed no checkpoint until an operator acknowledged "
        "(the drill restores the row and acknowledges)"
    )
    return result


STEPS: tuple[Callable[[Lab], StepResult], ...] = (
    t1_stolen_token,
    t2_token_replay,
    t3_key_outside,
    t4_probing,
    t5_harvesting,
    t6_shared_account,
    t7_after_contract,
    t8_self_approval,
    t10_direct_upstream,
    t9_audit_edit,  # last: it holds audit-required compartments closed until acknowledged
)
