"""D8: use at an unusual hour for this principal (T1078). An amplifier: always LOW.

Use outside a vendor org's ``working_hours`` or a compartment's ``allowed_hours`` is already
denied by policy. This is about hours that are unusual *for this principal*: per holder of the
device key, a histogram of uses (allowed requests and tokens issued, refreshed or exchanged) by
hour of day, in the org's ``working_hours`` time zone when it has one, else UTC. Once the
histogram holds ``baseline_events`` uses over at least ``baseline_span`` seconds, uses in an hour
where neither it nor the hours either side of it ever saw activity open an *episode*; the
``min_uses``-th use of the episode within ``episode_span`` seconds is a LOW finding of low
confidence (set ``min_uses: 1`` to flag the first request). It raises the principal's risk a
little, so that it adds to stronger signals, and is never a reason to suspend anyone on its own.

By default D8 is an *amplifier only* (``standalone=False``): an unusual-hour episode raises no
finding by itself; when another detection raises a finding about the same principal during the
episode (``on_finding``), D8 adds its LOW finding next to it ("... and at an unusual hour"). An
on-call engineer's first night is then not a finding at all, while off-hours exfiltration (D6
during an unusual-hour episode) carries both.

The episode's uses are learned when it ends: someone on call who has worked at 3 am before is
not flagged again at 3 am, and a one-off page answered with a request or two is not flagged at
all. The histogram halves once it holds ``decay_at`` uses, so hours abandoned long ago are slowly
forgotten.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from ..detector import Context, StatefulDetector, Structure
from ..findings import Draft, Finding, Severity
from ..observation import Observation
from ..state import Table

DAY = 86_400.0
HOURS = 24
# A record: 24 hourly counts, the first use's time, the total, then the open unusual episode
# (start time, uses, local hour): uses in an unusual hour wait there until the episode ends.
FIRST, TOTAL, EPISODE, EPISODE_USES, EPISODE_HOUR = range(HOURS, HOURS + 5)
RECORD = HOURS + 5


def _is_record(record: Any) -> bool:
    return (
        isinstance(record, list)
        and len(record) == RECORD
        and all(isinstance(x, int | float) for x in record)
    )


class OffHours(StatefulDetector):
    id: ClassVar[str] = "D8"
    title: ClassVar[str] = "Use at an unusual hour for the principal"
    techniques: ClassVar[tuple[str, ...]] = ("T1078",)
    window: ClassVar[float] = 12 * 3600.0

    def __init__(
        self,
        *,
        baseline_events: int = 50,
        baseline_span: float = 2 * DAY,
        min_uses: int = 3,
        episode_span: float = 3600.0,
        neighbours: int = 1,
        decay_at: int = 5000,
        cap_principals: int = 20_000,
        standalone: bool = False,
    ) -> None:
        self.standalone = standalone
        self.baseline_events = baseline_events
        self.baseline_span = baseline_span
        self.min_uses = min_uses
        self.episode_span = episode_span
        self.neighbours = neighbours
        self.decay_at = decay_at
        self.hours: Table[list[float]] = Table(cap_principals, shape=_is_record)
        self._offsets: dict[str, tuple[int, float]] = {}  # zone → (epoch hour, UTC offset)

    def structures(self) -> Mapping[str, Structure]:
        return {"hours": self.hours}

    def observe(self, obs: Observation, ctx: Context) -> list[Draft]:
        holder = obs.holder
        if not holder or not obs.is_use:
            return []
        org = obs.org or ctx.org_of(holder)
        zone = self._zone(org, ctx)
        hour = self._local_hour(obs.time, zone)
        record = self.hours.get(holder)
        if record is None:
            record = [0.0] * HOURS + [obs.time] + [0.0] * (RECORD - FIRST - 1)
            self.hours.put(holder, record)
        if record[EPISODE_USES] and obs.time - record[EPISODE] > self.episode_span:
            self._learn(record, int(record[EPISODE_HOUR]), record[EPISODE_USES])
            record[EPISODE_USES] = 0.0
        if not self._unusual(record, hour, obs.time):
            self._learn(record, hour, 1.0)
            return []
        if not record[EPISODE_USES]:
            record[EPISODE], record[EPISODE_HOUR] = obs.time, float(hour)
        record[EPISODE_USES] += 1
        if record[EPISODE_USES] < self.min_uses or not self.standalone:
            return []
        return [self._draft(obs, holder, org, (zone, int(record[EPISODE_HOUR])), record)]

    def on_finding(self, finding: Finding, ctx: Context) -> list[Draft]:
        """Another detection fired about a principal in an unusual-hour episode: amplify it."""
        if finding.detection in ("D8", "D12") or not finding.principal:
            return []
        record = self.hours.get(finding.principal)
        if record is None or not record[EPISODE_USES]:
            return []
        if not 0 <= finding.last_seen - record[EPISODE] <= self.episode_span:
            return []
        zone = self._zone(finding.org, ctx)
        hour = int(record[EPISODE_HOUR])
        return [
            Draft(
                detection=self.id,
                severity=Severity.LOW,
                confidence=0.4,
                entity_type="principal",
                entity=finding.principal,
                explanation=(
                    f"{finding.detection} for {finding.principal} came during use at "
                    f"{hour:02d}:00 {zone}, an hour with no activity in "
                    f"{int(record[TOTAL])} earlier uses"
                ),
                evidence=finding.evidence[-3:],
                techniques=self.techniques,
                principal=finding.principal,
                org=finding.org,
            )
        ]

    def _unusual(self, record: list[float], hour: int, time: float) -> bool:
        """Whether ``hour`` and the hours either side of it never saw this principal, once it
        has a baseline."""
        return (
            record[TOTAL] >= self.baseline_events
            and time - record[FIRST] >= self.baseline_span
            and not any(
                record[(hour + d) % HOURS] for d in range(-self.neighbours, self.neighbours + 1)
            )
        )

    def _learn(self, record: list[float], hour: int, uses: float) -> None:
        record[hour] += uses
        record[TOTAL] += uses
        if record[TOTAL] >= self.decay_at:
            record[:HOURS] = [float(int(count) // 2) for count in record[:HOURS]]
            record[TOTAL] = sum(record[:HOURS])

    def _draft(
        self, obs: Observation, holder: str, org: str, when: tuple[str, int], record: list[float]
    ) -> Draft:
        zone, hour = when
        busiest = sorted((h for h in range(HOURS) if h != hour), key=lambda h: -record[h])[:3]
        usual = ", ".join(f"{h:02d}:00" for h in sorted(busiest) if record[h])
        minutes = (obs.time - record[EPISODE]) / 60
        uses = int(record[EPISODE_USES])
        return Draft(
            detection=self.id,
            severity=Severity.LOW,
            confidence=0.3,
            entity_type="principal",
            entity=holder,
            explanation=(
                f"{holder} made {uses} use{'s' if uses > 1 else ''} within {minutes:.0f} min from "
                f"{hour:02d}:00 {zone}, an hour with no activity in {int(record[TOTAL])} "
                f"earlier uses (busiest hours: {usual})"
            ),
            evidence=(obs.id,),
            techniques=self.techniques,
            principal=holder,
            org=org,
        )

    @staticmethod
    def _zone(org: str, ctx: Context) -> str:
        declared = ctx.config.orgs.get(org) if org else None
        hours = declared.working_hours if declared is not None else None
        return hours.timezone if hours is not None else "UTC"

    def _local_hour(self, time: float, zone: str) -> int:
        """The hour of day at ``time`` in ``zone``; the zone's UTC offset is computed once per
        hour of event time (DST changes on the hour)."""
        if zone == "UTC":
            return int(time // 3600) % HOURS
        epoch_hour = int(time // 3600)
        cached = self._offsets.get(zone)
        if cached is None or cached[0] != epoch_hour:
            moment = datetime.fromtimestamp(epoch_hour * 3600, UTC).astimezone(ZoneInfo(zone))
            offset = moment.utcoffset()
            cached = (epoch_hour, offset.total_seconds() if offset is not None else 0.0)
            self._offsets[zone] = cached
        return int((time + cached[1]) // 3600) % HOURS
