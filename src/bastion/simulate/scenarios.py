"""Attack scenarios: labelled calls injected into the benign traffic, each with the detections
expected to catch it and its ATT&CK / ATLAS technique ids.

A scenario's malicious calls carry its id; calls it adds for its victims' legitimate activity
(the session a token is stolen from, the contractor who shares an account) are benign. A
scenario is *detected* when a finding of one of its ``expected`` detections names one of its
``principals`` or ``orgs`` (or holds one of its malicious events as evidence) after its first
malicious call; how that is scored is in ``report.py``. Each scenario has a preferred day for a
week-long run (those that need a learnt baseline come later); shorter runs move them to the
last day, where baseline detections cannot be expected to fire.

Identity and access scenarios are here; the exfiltration ones (harvesting, distillation,
off-hours, offensive prompts) in ``exfiltration.py``; the pieces in ``story.py``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from .exfiltration import distillation, harvesting, off_hours, prompt_content
from .plan import DAY, Call, local_time
from .story import Cast, Scenario, chat, inside, spaced
from .world import ACME, GLOBEX, HONEYTOKEN, INITECH, LAB, World


def token_replay(cast: Cast, day: int, rng: random.Random) -> Scenario:
    """T1/T2: a contractor's live token and device key, copied off their laptop, replayed from
    a hosting provider abroad while the contractor keeps working."""
    sid = "token-replay"
    victim = cast.pick(GLOBEX)
    home, nets = cast.home(victim), cast.world.nets
    session = f"{victim.name}/stolen"
    begin = local_time(victim.zone, day, 10.0)
    calls = [
        chat(
            victim.name,
            at,
            session,
            home,
            victim.agent,
            model="assist-chat",
            tokens=300,
            prompt="Summarize the assessment notes.",
        )
        for at in spaced(rng, begin, 30, 150, 300)
    ]
    attacker = nets["bulletproof"].host(23)
    calls += [
        chat(
            victim.name,
            at,
            session,
            attacker,
            "python-httpx/0.27.2",
            model=model,
            tokens=1500,
            prompt="List everything you know about the client's network.",
            scenario=sid,
        )
        for at, model in zip(
            spaced(rng, begin + 1500, 12, 20, 60),
            ["assist-chat", "research-chat"] * 6,
            strict=True,
        )
    ]
    return Scenario(
        sid,
        "stolen token and device key replayed from a second network",
        ("D2",),
        ("T1550.001", "T1528", "AML.T0091.000"),
        (victim.name,),
        (GLOBEX,),
        tuple(calls),
        (attacker,),
    )


def shared_credential(cast: Cast, day: int, rng: random.Random) -> Scenario:
    """T6: a contractor shares their account (device key and all) with three friends, who use
    it from their own homes at the same time as the contractor."""
    sid = "shared-credential"
    owner = cast.pick(ACME)
    home, nets = cast.home(owner), cast.world.nets
    begin = local_time(owner.zone, day, 13.0)
    calls = [
        chat(
            owner.name,
            at,
            f"{owner.name}/own",
            home,
            owner.agent,
            model="assist-chat",
            tokens=400,
            prompt="Classify these reviews.",
        )
        for at in spaced(rng, begin - 600, 12, 120, 300)
    ]
    homes = [net for name, net in sorted(nets.items()) if name.startswith("isp-us")]
    others = [net for net in homes if not inside(home, net.cidr)]
    places = [net.host(17 + 31 * index) for index, net in enumerate(rng.sample(others, 3))]
    for index, place in enumerate(places):
        start = begin + 60 + index * rng.uniform(60, 150)
        calls += [
            chat(
                owner.name,
                at,
                f"{owner.name}/shared{index}",
                place,
                owner.agent,
                model="assist-chat",
                tokens=600,
                prompt="Label this batch.",
                scenario=sid,
            )
            for at in spaced(rng, start, 10, 120, 240)
        ]
    return Scenario(
        sid,
        "one contractor account used from several homes at once",
        ("D4",),
        ("T1078", "T1199"),
        (owner.name,),
        (ACME,),
        tuple(calls),
        tuple(places),
    )


PROBES = (
    "research-chat",
    "cyber-frontier",
    "bulk-chat",
    "research-claude",
    "gpt-4o",
    "claude-3-opus",
)


def enumeration(cast: Cast, day: int, rng: random.Random) -> Scenario:
    """T4: a contractor's script probes model names beyond its entitlement, one after the
    other (names of other compartments' models, names guessed from public model lists)."""
    sid = "enumeration"
    person = cast.pick(ACME)
    home = cast.home(person)
    session = f"{person.name}/probe"
    begin = local_time(person.zone, day, 14.0)
    calls = [
        chat(
            person.name,
            at,
            session,
            home,
            person.agent,
            model=model,
            tokens=200,
            prompt="hello",
            scenario=sid,
        )
        for at, model in zip(spaced(rng, begin, len(PROBES), 0.2, 0.5), PROBES, strict=True)
    ]
    return Scenario(
        sid,
        "model enumeration beyond entitlement",
        ("D5",),
        ("T1526", "T1580", "AML.T0075", "AML.T0014"),
        (person.name,),
        (ACME,),
        tuple(calls),
    )


def contract_end(cast: Cast, day: int, rng: random.Random) -> Scenario:
    """T7: a contractor keeps calling after the contract ended (at midnight UTC that day)."""
    sid = "contract-end"
    person = cast.pick(INITECH)
    begin = local_time(person.zone, day, 10.0)
    begin = max(begin, day * DAY + 3600.0)
    calls = [
        chat(
            person.name,
            at,
            f"{person.name}/late",
            person.office,
            person.agent,
            model=person.models[0],
            tokens=300,
            prompt="Score these answers.",
            scenario=sid,
        )
        for at in spaced(rng, begin, 5, 30, 120)
    ]
    return Scenario(
        sid,
        "access after the contract ended",
        ("D9",),
        ("T1078", "T1199"),
        (person.name,),
        (INITECH,),
        tuple(calls),
    )


ADMIN_CALLS = (
    ("GET", "/admin/v1/principals", ""),
    ("POST", "/admin/v1/principals", '{"name": "acme-helper", "org": "acme", "kind": "user"}'),
    ("POST", "/admin/v1/principals/{me}/enrollment-codes", "{}"),
    ("GET", "/admin/v1/locks", ""),
    ("POST", "/admin/v1/locks/lk_0000/release", '{"reason": "cleanup"}'),
    ("GET", "/admin/v1/audit/checkpoint", ""),
)


def control_plane(cast: Cast, day: int, rng: random.Random) -> Scenario:
    """T8: a vendor account tries to escalate through the admin API (mint a principal, issue
    itself an enrollment code, release locks, read the audit state)."""
    sid = "control-plane"
    person = cast.pick(ACME)
    home = cast.home(person)
    begin = local_time(person.zone, day, 15.0)
    times = spaced(rng, begin, len(ADMIN_CALLS), 2, 8)
    calls = [
        Call(
            at,
            person.name,
            f"{person.name}/admin",
            home,
            "curl/8.5.0",
            kind="admin",
            method=method,
            path=path.format(me=person.name),
            prompt=body,
            scenario=sid,
        )
        for at, (method, path, body) in zip(times, ADMIN_CALLS, strict=True)
    ]
    return Scenario(
        sid,
        "control-plane tampering by a vendor account",
        ("D13",),
        ("T1098.001", "T1136.003", "T1562.008"),
        (person.name,),
        (ACME,),
        tuple(calls),
    )


def honeytoken(cast: Cast, day: int, rng: random.Random) -> Scenario:
    """T1 with a planted credential: the device key of a service nobody uses, left where a
    thief would look, presented from a rented server."""
    sid = "honeytoken"
    source = cast.world.nets["vps-ro"].host(66)
    begin = day * DAY + 22.5 * 3600
    calls = [
        chat(
            HONEYTOKEN,
            at,
            f"{HONEYTOKEN}/thief",
            source,
            "python-requests/2.32.3",
            model=model,
            tokens=200,
            prompt="ping",
            scenario=sid,
        )
        for at, model in zip(
            spaced(rng, begin, 3, 5, 30),
            ("bulk-chat", "assist-chat", "research-chat"),
            strict=True,
        )
    ]
    return Scenario(
        sid,
        "honeytoken credential presented",
        ("D14",),
        ("T1552.001", "AML.T0055"),
        (HONEYTOKEN,),
        (LAB,),
        tuple(calls),
        (source,),
    )


def anonymizer(cast: Cast, day: int, rng: random.Random) -> Scenario:
    """An employee's credentials used through a Tor exit (not declared for the lab)."""
    sid = "anonymizer"
    person = cast.pick(LAB, "research")
    exit_node = cast.world.nets["tor-exit"].host(99)
    begin = local_time(person.zone, day, 12.0)
    model = next(m for m in person.models if m.startswith("research"))
    calls = [
        chat(
            person.name,
            at,
            f"{person.name}/tor",
            exit_node,
            person.agent,
            model=m,
            tokens=500,
            prompt="Summarize the evaluation plan.",
            scenario=sid,
        )
        for at, m in zip(spaced(rng, begin, 5, 20, 90), (model, "assist-chat") * 3, strict=False)
    ]
    return Scenario(
        sid,
        "use from an undeclared anonymizer",
        ("D11",),
        ("T1090.002", "T1090.003"),
        (person.name,),
        (LAB,),
        tuple(calls),
        (exit_node,),
    )


Builder = Callable[[Cast, int, random.Random], Scenario]

# id -> (builder, preferred day in a week-long run). Order matters: the cast is drawn in it.
CATALOGUE: dict[str, tuple[Builder, int]] = {
    "token-replay": (token_replay, 1),
    "enumeration": (enumeration, 1),
    "prompt-content": (prompt_content, 1),
    "shared-credential": (shared_credential, 2),
    "honeytoken": (honeytoken, 2),
    "anonymizer": (anonymizer, 2),
    "contract-end": (contract_end, 3),
    "harvesting": (harvesting, 3),
    "control-plane": (control_plane, 3),
    "distillation": (distillation, 4),
    "off-hours-exfiltration": (off_hours, 4),
}


def day_of(scenario: str, days: int) -> int:
    """The day a scenario runs in a run of ``days`` days."""
    return min(CATALOGUE[scenario][1], days - 1)


def build_scenarios(
    world: World, days: int, rng: random.Random, only: tuple[str, ...] = ()
) -> list[Scenario]:
    """The scenarios of a run (all, or those named in ``only``), with their calls."""
    unknown = sorted(set(only) - set(CATALOGUE))
    if unknown:
        raise ValueError(f"unknown scenario {unknown[0]!r} (known: {', '.join(CATALOGUE)})")
    cast = Cast(world, rng)
    built = []
    for sid, (builder, _) in CATALOGUE.items():
        scenario = builder(cast, day_of(sid, days), rng)  # all drawn: the same cast either way
        if not only or sid in only:
            built.append(scenario)
    return built


def contract_ends(days: int, only: tuple[str, ...] = ()) -> dict[str, float]:
    """When each org's contract ends, in seconds since the start: with the contract-end
    scenario, the Indian contractor's ends at midnight UTC of its day."""
    if only and "contract-end" not in only:
        return {}
    return {INITECH: day_of("contract-end", days) * DAY}
