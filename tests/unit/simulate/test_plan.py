"""The simulation's world, benign population and scenarios: deterministic per seed, labelled
correctly, and shaped like the story says (traps included)."""

from __future__ import annotations

import ipaddress
import random
import re
from collections import defaultdict
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from bastion.simulate.plan import DAY, START, Call
from bastion.simulate.runner import Options, plan
from bastion.simulate.scenarios import CATALOGUE, build_scenarios, day_of
from bastion.simulate.world import (
    ACME,
    BATCH,
    GLOBEX,
    HONEYTOKEN,
    INITECH,
    LAB,
    World,
    build_world,
)

TECHNIQUE = re.compile(r"(T\d{4}(\.\d{3})?|AML\.T\d{4}(\.\d{3})?)")
DETECTION = re.compile(r"D([1-9]|1[0-5])")


def _net(world: World, address: str) -> str:
    ip = ipaddress.ip_address(address)
    return next(n.name for n in world.nets.values() if ip in ipaddress.ip_network(n.cidr))


def test_the_same_seed_gives_the_same_run_and_another_seed_another() -> None:
    first = plan(Options(seed=7, days=7))
    again = plan(Options(seed=7, days=7))
    other = plan(Options(seed=8, days=7))
    assert first[2] == again[2]
    assert [s.calls for s in first[1]] == [s.calls for s in again[1]]
    assert sorted(first[0].people) == sorted(again[0].people)
    assert first[2] != other[2]


def test_the_population_is_the_lab_three_vendors_a_batch_service_and_new_hires() -> None:
    world = build_world(random.Random(1), 7)
    by_org = defaultdict(list)
    for person in world.people.values():
        by_org[person.org].append(person)
    lab_users = [p for p in by_org[LAB] if p.kind == "user" and p.joins == 0]
    assert len(lab_users) == 30
    assert {len(world.members(org)) for org in (ACME, GLOBEX, INITECH)} == {5}
    assert world.people[BATCH].kind == "service"
    hires = [p for p in world.people.values() if p.joins]
    assert {p.org for p in hires} == {LAB, ACME}
    assert all(not p.declared for p in hires)
    assert {world.orgs[o].sponsor for o in (ACME, GLOBEX, INITECH)} <= {
        p.name for p in by_org[LAB] if p.declared
    }
    zones = {p.zone for p in lab_users}
    assert {"America/New_York", "America/Los_Angeles", "Europe/London"} <= zones


def test_every_scenario_is_labelled_with_its_detections_techniques_and_attackers() -> None:
    world, scenarios, calls, _ = plan(Options(seed=3, days=7))
    assert [s.id for s in scenarios] == list(CATALOGUE)
    known = {p for p in world.people} | {HONEYTOKEN}
    for scenario in scenarios:
        assert scenario.malicious, scenario.id
        assert all(DETECTION.fullmatch(d) for d in scenario.expected), scenario.id
        assert scenario.techniques
        assert all(TECHNIQUE.fullmatch(t) for t in scenario.techniques)
        assert set(scenario.principals) <= known
        assert all(c.principal in scenario.principals for c in scenario.malicious), scenario.id
        assert all(c.scenario in ("", scenario.id) for c in scenario.calls)
        assert 0 <= scenario.start <= scenario.end < 7 * DAY
        assert int(scenario.start // DAY) == day_of(scenario.id, 7)
    labelled = defaultdict(int)
    for call in calls:
        labelled[call.scenario] += 1
    for scenario in scenarios:
        assert labelled[scenario.id] == len(scenario.malicious)
    attackers = [p for s in scenarios for p in s.principals if p != HONEYTOKEN]
    assert len(attackers) == len(set(attackers))  # nobody is cast twice
    assert not set(attackers) & set(world.special.values())  # nor the story's trap people


def test_short_runs_move_scenarios_to_the_last_day_and_can_pick_some() -> None:
    _world, scenarios, calls, ends = plan(Options(seed=1, days=1, scenarios=("enumeration",)))
    assert [s.id for s in scenarios] == ["enumeration"]
    assert all(0 <= c.at < DAY for c in calls)
    assert ends == {}  # no contract-end scenario: the contract runs on
    _, every, calls, ends = plan(Options(seed=1, days=2))
    assert {int(s.start // DAY) for s in every} == {1}  # every preferred day is >= 1
    assert all(0 <= c.at < 2 * DAY for c in calls)
    assert ends == {INITECH: DAY}


def test_an_unknown_scenario_is_refused_by_name() -> None:
    world = build_world(random.Random(1), 7)
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        build_scenarios(world, 7, random.Random(1), ("enumeration", "nope"))


def _benign(calls: list[Call]) -> list[Call]:
    return [c for c in calls if not c.scenario]


def test_benign_calls_are_unlabelled_in_the_run_and_stop_at_the_contract_end() -> None:
    world, _, calls, ends = plan(Options(seed=2, days=7))
    benign = _benign(calls)
    assert all(0 <= c.at < 7 * DAY for c in benign)
    initech = [
        c
        for c in benign
        if world.people.get(c.principal, None)
        and c.principal in {p.name for p in world.members(INITECH)}
    ]
    assert initech
    assert max(c.at for c in initech) < ends[INITECH]
    assert calls == sorted(calls, key=lambda c: (c.at, c.principal, c.session))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_acme_works_only_inside_its_declared_working_hours(seed: int) -> None:
    world, _, calls, _ = plan(Options(seed=seed, days=7))
    acme = {p.name for p in world.people.values() if p.org == ACME}
    zone = ZoneInfo(world.orgs[ACME].zone)
    for call in _benign(calls):
        if call.principal in acme and call.kind not in ("hire", "rekey"):
            local = datetime.fromtimestamp(START.timestamp() + call.at, zone)
            assert local.weekday() < 5, call
            assert 7 <= local.hour < 20, call


def test_the_traveller_flies_london_to_new_york_in_a_plausible_time() -> None:
    world, _, calls, _ = plan(Options(seed=5, days=7))
    traveller = world.special["traveller"]
    mine = [c for c in _benign(calls) if c.principal == traveller]
    countries = [(c.at, world.nets[_net(world, c.source)].country) for c in mine]
    last_gb = max(at for at, country in countries if country == "GB" and at < 3 * DAY)
    first_us = min(at for at, country in countries if country == "US")
    assert last_gb < first_us
    assert first_us - last_gb >= 7 * 3600
    assert all(country == "US" for at, country in countries if at >= first_us)


def test_vpn_egress_moves_within_one_asn_and_the_batch_runs_day_and_night() -> None:
    world, _, calls, _ = plan(Options(seed=6, days=7))
    benign = _benign(calls)
    vpn_users = [p for p in world.people.values() if len(p.remote) > 1]
    assert vpn_users
    moved = 0
    for person in vpn_users:
        sessions = defaultdict(set)
        for call in benign:
            if call.principal == person.name:
                sessions[call.session].add(call.source)
        remote = [sources for sources in sessions.values() if sources <= set(person.remote)]
        assert {world.nets[_net(world, s)].asn for v in remote for s in v} <= {64601}
        moved += sum(len(sources) > 1 for sources in remote)
        assert all(len(v) == 1 for v in sessions.values() if not v <= set(person.remote))
    assert moved  # some sessions change egress (after a break)
    batch = [c for c in benign if c.principal == BATCH]
    hours = {int((c.at % DAY) // 3600) for c in batch}
    assert hours == set(range(24))
    assert len(batch) > 7 * 24 * 15
    assert {world.nets[_net(world, c.source)].kind for c in batch} == {"hosting"}


def test_the_story_traps_are_there() -> None:
    world, _, calls, _ = plan(Options(seed=1, days=7))
    benign = _benign(calls)
    oncall = world.special["oncall"]
    zone = ZoneInfo(world.people[oncall].zone)
    nights = {
        int(c.at // DAY)
        for c in benign
        if c.principal == oncall and datetime.fromtimestamp(START.timestamp() + c.at, zone).hour < 5
    }
    assert len(nights) >= 3
    assert any(c.model == "asist-chat" for c in benign)  # the typo
    (laptop,) = [c for c in benign if c.kind == "rekey"]
    assert laptop.principal == world.special["laptop"]
    assert any(c.principal == laptop.principal and 0 < c.at - laptop.at < DAY for c in benign)
    hires = [c for c in benign if c.kind == "hire"]
    assert len(hires) == 2
    for hire in hires:
        later = [c.at for c in benign if c.principal == hire.principal and c.kind != "hire"]
        assert later
        assert min(later) > hire.at
    agents = {c.agent for c in benign if c.kind not in ("hire", "rekey")}
    assert "OpenAI/Python 1.55.0" in agents  # an SDK upgrade mid-run
    assert {a.split("/")[0] for a in agents} <= {
        "OpenAI",
        "AsyncOpenAI",
        "Anthropic",
        "AsyncAnthropic",
    }


def test_working_days_have_realistic_volumes() -> None:
    _world, _, calls, _ = plan(Options(seed=9, days=7))
    per_day = defaultdict(int)
    tokens = []
    for call in _benign(calls):
        if call.principal != BATCH and call.kind == "chat":
            per_day[(call.principal, int(call.at // DAY))] += 1
            tokens.append(call.tokens)
    counts = sorted(per_day.values())
    assert 5 <= counts[len(counts) // 2] <= 30  # median requests per active principal-day
    assert 200 <= sorted(tokens)[len(tokens) // 2] <= 1000
    assert max(tokens) <= 4000


def test_choosing_scenarios_changes_neither_the_population_nor_the_cast() -> None:
    _, every, all_calls, _ = plan(Options(seed=11, days=7))
    _, some, some_calls, _ = plan(
        Options(seed=11, days=7, scenarios=("harvesting", "contract-end"))
    )
    assert [s.id for s in some] == ["contract-end", "harvesting"]
    assert {s.id: s for s in every}["harvesting"] == {s.id: s for s in some}["harvesting"]
    staged = {call for scenario in every for call in scenario.calls}  # victims' own calls
    population = [c for c in _benign(all_calls) if c not in staged]
    assert population == [c for c in _benign(some_calls) if c not in staged]
