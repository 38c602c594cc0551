"""What attack scenarios are made of: the :class:`Scenario` record, the :class:`Cast` that
picks attackers and victims from the population, and helpers to lay out calls in time."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

from .plan import Call
from .world import Person, World

GRACE = 2 * 3600.0  # findings this long after a scenario's last call still belong to it


@dataclass(frozen=True, slots=True)
class Scenario:
    id: str
    title: str
    expected: tuple[str, ...]  # detection ids; any of them detects the scenario
    techniques: tuple[str, ...]
    principals: tuple[str, ...]  # the attackers' principals (or the accounts they use)
    orgs: tuple[str, ...]
    calls: tuple[Call, ...]  # malicious ones carry the scenario id
    networks: tuple[str, ...] = ()  # the attackers' own source addresses

    @property
    def malicious(self) -> tuple[Call, ...]:
        return tuple(call for call in self.calls if call.scenario == self.id)

    @property
    def start(self) -> float:
        return min(call.at for call in self.malicious)

    @property
    def end(self) -> float:
        return max(call.at for call in self.malicious)


class Cast:
    """Picks victims and attackers from the population, never the same person twice and never
    one the benign story already uses (traveller, on-call)."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.taken = set(world.special.values())

    def pick(self, org: str, role: str = "") -> Person:
        pool = [
            p
            for p in self.world.members(org)
            if p.name not in self.taken and (not role or p.role == role) and p.kind == "user"
        ]
        person = self.rng.choice(sorted(pool, key=lambda p: p.name))
        self.taken.add(person.name)
        return person

    def home(self, person: Person) -> str:
        return person.remote[0] if person.remote else person.office


def inside(address: str, cidr: str) -> bool:
    return ipaddress.ip_address(address) in ipaddress.ip_network(cidr)


def spaced(rng: random.Random, start: float, count: int, low: float, high: float) -> list[float]:
    times, at = [], start
    for _ in range(count):
        times.append(at)
        at += rng.uniform(low, high)
    return times


def chat(
    person: str,
    at: float,
    session: str,
    source: str,
    agent: str,
    *,
    kind: str = "chat",
    model: str = "",
    tokens: int = 0,
    prompt: str = "",
    scenario: str = "",
) -> Call:
    return Call(at, person, session, source, agent, kind, model, tokens, prompt, scenario)
