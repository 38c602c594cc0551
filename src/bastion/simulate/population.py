"""The benign population's behaviour: who calls which model, when, from where, how much.

Every person works on weekdays in their own time zone (a rare weekend hour), in one to three
sessions a day (one login each: one token family, refreshed as its tokens expire), with a
request count and output sizes of their own (log-normal around their median). Office days come
from the office egress; remote days through the lab VPN, whose egress moves between the /24s of
one ASN (also mid-session, after a lunch break), or from home. The story adds the traps a
detector must not fall into:

- a **traveller** flies London → New York on day 2 (a plausible flight time between the last
  use in GB and the first in the US), then works from the New York office;
- an **on-call** engineer is paged at night, several nights of the run;
- the **batch service** calls steadily, day and night, at high volume within its quotas, from
  a cloud (hosting) network its org declares;
- **new hires** appear mid-run (onboarded by the admin, then working from day one);
- a **new laptop**: the admin enrolls a second device key for someone on day 3, used at once;
- an SDK **upgrade** mid-run (same tool, new version);
- benign **denials**: a model name typo'd once, a vendor trying a model it does not hold once;
- the Indian contractor's people stop when its contract ends.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import replace

from .plan import DAY, Call, local_time, weekday
from .world import ACME, ADMIN, BATCH, UPGRADES, Person, World

PROMPTS = {
    "general": (
        "Summarize these meeting notes in five bullet points.",
        "Draft a short, polite reply declining the invitation for Thursday.",
        "Write a SQL query that counts orders per customer per month.",
        "Explain the difference between a list and a tuple in Python.",
        "Turn this paragraph into a friendlier announcement for the team.",
        "Suggest three names for the new internal metrics dashboard.",
        "Translate this paragraph into German, keeping the technical terms.",
    ),
    "research": (
        "Compare these two evaluation runs and explain the regression in accuracy.",
        "Propose three ablations for the tokenizer experiment and what each would show.",
        "Rewrite the related-work paragraph to be more concise.",
        "Derive the gradient of the loss with respect to the attention temperature.",
        "Summarize the main findings of the attached paper for a reading group.",
    ),
    "security": (
        "Summarize the advisory for CVE-2024-3094 and list the affected versions.",
        "Write a Sigma rule that flags PowerShell download cradles on workstations.",
        "Explain how to patch the buffer overflow we found in the config parser.",
        "Draft the incident report timeline from these log excerpts.",
        "Which of these firewall rules are redundant?",
    ),
    "vendor": (
        "Classify the sentiment of these five product reviews.",
        "Normalize these postal addresses to one format.",
        "Summarize the findings of yesterday's assessment for the client report.",
        "Check this answer key for mistakes and explain each one.",
        "Rewrite this finding in plain language for executives.",
    ),
    "batch": ("Extract the invoice number, date and total from this document.",),
}


class Planner:
    """Benign calls for one run. ``ends`` maps an org to the time its contract ends."""

    def __init__(self, world: World, days: int, ends: Mapping[str, float]) -> None:
        self.world = world
        self.days = days
        self.ends = ends

    def calls(self, rng: random.Random) -> list[Call]:
        calls: list[Call] = []
        for name in sorted(self.world.people):
            person = self.world.people[name]
            local = random.Random(rng.getrandbits(64))  # noqa: S311 (a seeded simulation)
            calls += self._person(person, local)
        end = self.ends
        horizon = self.days * DAY
        kept = [
            c
            for c in calls
            if 0 <= c.at < horizon and c.at < end.get(self.world.people[c.principal].org, horizon)
        ]
        return sorted(kept, key=lambda c: (c.at, c.principal))

    def _person(self, person: Person, rng: random.Random) -> list[Call]:
        if person.name == BATCH:
            return list(self._batch(person, rng))
        calls: list[Call] = []
        for day in range(self.days):
            if day < person.joins:
                continue
            if day == person.joins and person.joins:
                calls.append(self._hire(person, day))
            calls += self._day(person, day, rng)
        special = self.world.special
        if person.name == special.get("oncall"):
            calls += self._oncall(person, rng)
        if person.name == special.get("typo") and self.days > 1:
            calls.append(self._typo(person, rng))
        if person.name == special.get("beyond"):
            calls.append(self._beyond(person, rng))
        if person.name == special.get("laptop") and self.days > 3:
            at = local_time(person.zone, 3, person.start_hour - 1.0)
            calls.append(Call(at, person.name, "", "", "", kind="rekey", method=ADMIN))
        return calls

    # -- a working day -------------------------------------------------------------------------

    def _day(self, person: Person, day: int, rng: random.Random) -> list[Call]:
        if person.name == self.world.special.get("traveller") and day == 2:
            return self._travel(person, rng)
        weekend = weekday(day) >= 5
        if weekend and (person.org == ACME or rng.random() > 0.06):
            return []  # acme's declared working hours are weekdays
        if rng.random() < 0.06:
            return []  # a day off
        zone, office, remote = self._where(person, day)
        in_office = bool(office) and (not remote or rng.random() < 0.6) and not weekend
        mean = person.requests * (0.25 if weekend else 1.0)
        count = _poisson(rng, mean)
        sessions = 1 + (rng.random() < 0.5) + (rng.random() < 0.2)
        calls: list[Call] = []
        for index in range(sessions):
            start = person.start_hour + rng.uniform(0.0, max(person.hours - 1.5, 0.5))
            share = count // sessions + (index < count % sessions)
            places = (office,) if in_office else remote
            calls += self._session(person, day, index, zone, start, share, places, rng)
        return calls

    def _where(self, person: Person, day: int) -> tuple[str, str, tuple[str, ...]]:
        if person.name == self.world.special.get("traveller") and day >= 3:
            nets = self.world.nets
            hotel = nets["hotel-us"].host(40)
            return "America/New_York", nets["lab-office-us"].host(77), (hotel,)
        return person.zone, person.office, person.remote

    def _session(
        self,
        person: Person,
        day: int,
        index: int,
        zone: str,
        start: float,
        count: int,
        places: tuple[str, ...],
        rng: random.Random,
    ) -> list[Call]:
        if count <= 0 or not places:
            return []
        session = f"{person.name}/{day}/{index}"
        source = rng.choice(places)
        agent = self._agent(person, day)
        at = local_time(zone, day, start)
        # People stop by an hour after their working day (or after a session that started
        # later: a page at night, an evening at a hotel), whatever requests they had left.
        end = local_time(zone, day, max(start, person.start_hour + person.hours) + 1.0)
        calls: list[Call] = []
        if rng.random() < 0.08:  # the SDK lists the models first
            calls.append(Call(at, person.name, session, source, agent, kind="models"))
        for _ in range(count):
            gap = rng.expovariate(1 / 240.0)
            if rng.random() < 0.08:
                gap += rng.uniform(1800, 3600)  # a meeting, lunch: the laptop may change VPN
                if len(places) > 1 and rng.random() < 0.5:
                    source = rng.choice([p for p in places if p != source])
            at += gap
            if at > end:
                break
            calls.append(self._chat(person, session, source, agent, at, rng))
        return calls

    def _chat(
        self, person: Person, session: str, source: str, agent: str, at: float, rng: random.Random
    ) -> Call:
        weights = [1.0 / (rank + 1) for rank in range(len(person.models))]
        model = rng.choices(person.models, weights)[0]
        tokens = int(rng.lognormvariate(math.log(person.tokens), 0.6))
        prompt = rng.choice(PROMPTS[person.role])
        return Call(
            at,
            person.name,
            session,
            source,
            agent,
            model=model,
            tokens=min(max(tokens, 16), 4000),
            prompt=prompt,
        )

    def _agent(self, person: Person, day: int) -> str:
        upgraded = UPGRADES.get(person.agent)
        return upgraded if upgraded and day >= 3 else person.agent

    # -- the story's traps ---------------------------------------------------------------------

    def _batch(self, person: Person, rng: random.Random) -> Iterator[Call]:
        at = rng.uniform(0, 120)
        while at < self.days * DAY:
            day = int(at // DAY)
            tokens = int(rng.gauss(person.tokens, person.tokens / 5))
            prompt = PROMPTS["batch"][0]
            yield Call(
                at,
                person.name,
                f"{person.name}/{day}",
                person.remote[0],
                person.agent,
                model=person.models[0],
                tokens=max(tokens, 100),
                prompt=prompt,
            )
            at += rng.uniform(120, 180)

    def _hire(self, person: Person, day: int) -> Call:
        at = local_time(person.zone, day, person.start_hour - 0.5)
        return Call(at, person.name, "", "", "", kind="hire", method=ADMIN)

    def _travel(self, person: Person, rng: random.Random) -> list[Call]:
        """Day 2: a morning at the London office, a flight, an evening at a New York hotel."""
        nets = self.world.nets
        morning = self._session(
            person, 2, 0, "Europe/London", 8.0, 4, (person.office or person.remote[0],), rng
        )
        evening = self._session(
            person, 2, 1, "America/New_York", 16.5, 4, (nets["hotel-us"].host(40),), rng
        )
        return morning + evening

    def _oncall(self, person: Person, rng: random.Random) -> list[Call]:
        calls: list[Call] = []
        for night in (0, 1, 3, 5):
            if night >= self.days:
                break
            start = rng.uniform(1.5, 3.5)
            count = rng.randint(3, 8)
            source = person.remote[0] if person.remote else person.office
            calls += self._session(person, night, 9, person.zone, start, count, (source,), rng)
        return calls

    def _typo(self, person: Person, rng: random.Random) -> Call:
        at = local_time(person.zone, 1, person.start_hour + 2.0)
        source = person.remote[0] if person.remote else person.office
        call = self._chat(person, f"{person.name}/typo", source, person.agent, at, rng)
        return replace(call, model="asist-chat")

    def _beyond(self, person: Person, rng: random.Random) -> Call:
        """A vendor trying, once, a model its org does not hold (it read about it somewhere)."""
        day = min(2, self.days - 1)
        at = local_time(person.zone, day, person.start_hour + 3.0)
        source = person.remote[0] if person.remote else person.office
        call = self._chat(person, f"{person.name}/beyond", source, person.agent, at, rng)
        return replace(call, model="research-chat")


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method; means here are small)."""
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
