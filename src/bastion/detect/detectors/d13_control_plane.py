"""D13: control-plane tampering — keys minted, principals created, access approved, locks
released or MFA removed by an unusual actor (T8 of the threat model: escalating through the
control plane instead of the data plane).

Watches the admin events the services record (``key.enrolled``, ``principal.created``,
``access.approved``, ``lock.released``, ``mfa.removed``, ``review.decided``, ...), per actor:

- any change by a principal of a **vendor** org: **critical**, at once (vendors have no
  control-plane role; the admin API refuses them, so one that got through is a bypass);
- a call the admin API **refused** (``admin.denied``: an authenticated principal without the
  role for it, a valid credential probing the control plane): **high** from a vendor principal,
  **medium** from anyone else, at once;
- a **first**: the actor has never made a change of that family (keys, principals, access,
  locks, MFA) within ``memory`` — **medium** for an actor never seen changing anything,
  **low** for a known actor's new family. Declared approvers and sponsors approving or
  reviewing are doing their job and are not "first" there;
- a **burst**: changes to ``burst`` (5) distinct targets within ``burst_span`` (10 min):
  **medium** (a routine new hire is two or three changes; a sweep is many);
- an **unusual hour** for the actor (fewer than ``usual`` (2) of its changes in that UTC hour
  and the hours either side, once it has ``hours_events`` (20) changes over ``hours_span``
  (7 days) in at least ``hours_active`` (4) distinct hours — a one-off setup burst is no habit;
  one night's work does not make the night usual at once): **low**.

Two or more of the last three at once: **high**. All but the vendor and refusal rules stay silent
for ``warmup`` (3 days of event time) while the actors' habits are learnt. An actor's org comes
from the config, else from the requests it made (principals added through the admin API are not
in the config, and admin events do not name the actor's org). The services' own actors
(``bastion:*``: grants created on approval, dormancy and review sweeps, automated responses,
config sync) are not actors to judge; a principal enrolling its own device key with an
enrollment code an admin issued to it is self-service, not a change by an unusual actor.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from ..detector import Context, StatefulDetector, Structure
from ..findings import Draft, Severity
from ..observation import Observation
from ..state import FirstSeen, Table, Windows

DAY = 86_400.0
HOURS = 24
FIRST, TOTAL = HOURS, HOURS + 1  # an hours record: 24 counts, then first change time, total
FAMILIES = {  # changes judged by every rule
    "key.enrolled": "keys",
    "key.revoked": "keys",
    "enrollment.code_issued": "keys",
    "principal.created": "principals",
    "principal.enabled": "principals",
    "access.approved": "access",
    "grant.revoked": "access",
    "review.decided": "access",
    "review.completed": "access",
    "lock.released": "locks",
    "mfa.enrolled": "mfa",
    "mfa.removed": "mfa",
}
DEFENSIVE = {"lock.created": "locks", "access.denied": "access"}  # judged only from vendors
TECHNIQUES = {
    "keys": ("T1098.001",),
    "mfa": ("T1098.001",),
    "principals": ("T1136.003",),
    "access": ("T1098.003",),
    "locks": ("T1562.008",),
}
SELF_SERVICE_CODE = "code"


class _Since:
    """The first event time the detector saw (the start of its warm-up)."""

    def __init__(self) -> None:
        self.at: float | None = None

    def dump(self) -> float | None:
        return self.at

    def load(self, data: Any) -> None:
        self.at = float(data) if isinstance(data, int | float) else None


class ControlPlane(StatefulDetector):
    id: ClassVar[str] = "D13"
    title: ClassVar[str] = "Control-plane change by an unusual actor"
    techniques: ClassVar[tuple[str, ...]] = ("T1098.001", "T1098.003", "T1136.003", "T1562.008")
    window: ClassVar[float] = 3600.0

    def __init__(
        self,
        *,
        warmup: float = 3 * DAY,
        memory: float = 180 * DAY,
        burst: int = 5,
        burst_span: float = 600.0,
        hours_events: int = 20,
        hours_span: float = 7 * DAY,
        usual: int = 2,
        hours_active: int = 4,
        code_window: float = 3600.0,
        system_prefixes: tuple[str, ...] = ("bastion:",),
        cap_actors: int = 10_000,
    ) -> None:
        self.warmup = warmup
        self.code_window = code_window
        self.burst = burst
        self.hours_events = hours_events
        self.hours_span = hours_span
        self.usual = usual
        self.hours_active = hours_active
        self.system_prefixes = system_prefixes
        self.since = _Since()
        self.families = FirstSeen(memory, cap_actors, cap_values=8)
        self.changes = Windows(burst_span, cap_actors, cap_items=4 * burst)
        self.hours: Table[list[float]] = Table(cap_actors)
        self.codes = FirstSeen(code_window, 2 * cap_actors, cap_values=1)
        # principal -> org, learnt from requests: admin events do not name the actor's org, and
        # principals added through the admin API are not in the config
        self.orgs: Table[str] = Table(2 * cap_actors)

    def structures(self) -> Mapping[str, Structure]:
        return {
            "since": self.since,
            "families": self.families,
            "changes": self.changes,
            "hours": self.hours,
            "codes": self.codes,
            "orgs": self.orgs,
        }

    def observe(self, obs: Observation, ctx: Context) -> list[Draft]:
        if self.since.at is None:
            self.since.at = obs.time
        if obs.name == "request.decided":
            if obs.org and obs.principal and obs.principal not in self.orgs:
                self.orgs.put(obs.principal, obs.org)
            return []
        if not obs.actor or obs.actor.startswith(self.system_prefixes):
            return []
        if obs.name == "admin.denied":
            return [self._refused(obs, ctx)]
        family = FAMILIES.get(obs.name) or DEFENSIVE.get(obs.name)
        if family is None:
            return []
        actor = obs.actor.removeprefix("principal:")
        if obs.name == "enrollment.code_issued" and obs.target:
            self.codes.seen(obs.target, SELF_SERVICE_CODE, obs.time)
        elif obs.name == "key.enrolled" and self._self_service(actor, obs.time):
            return []
        org = self._org_of(actor, ctx)
        if ctx.is_vendor(org):
            text = f"a principal of vendor org {org} made a control-plane change"
            return [self._draft(obs, actor, org, family, Severity.CRITICAL, 0.95, text)]
        if obs.name in DEFENSIVE:
            return []
        signals = self._signals(obs, actor, family, ctx)
        if obs.time - self.since.at < self.warmup or not signals:
            return []
        severity = max((s for s, _ in signals), key=lambda s: s.rank)
        if len(signals) >= 2:
            severity = Severity.HIGH
        text = "; ".join(t for _, t in signals)
        confidence = min(0.4 + 0.2 * len(signals), 0.9)
        return [self._draft(obs, actor, org, family, severity, confidence, text)]

    def _org_of(self, actor: str, ctx: Context) -> str:
        if ":" in actor:  # cli:<user> and the like: not a principal
            return ""
        return ctx.org_of(actor) or self.orgs.get(actor) or ""

    def _refused(self, obs: Observation, ctx: Context) -> Draft:
        """The admin API refused an authenticated principal: a valid credential probing the
        control plane. High from a vendor (it can hold no control-plane role), else medium."""
        actor = obs.actor.removeprefix("principal:")
        org = self._org_of(actor, ctx)
        call = obs.target or "a control-plane call"
        if ctx.is_vendor(org):
            severity, confidence = Severity.HIGH, 0.9
            why = f"a principal of vendor org {org} has no control-plane role"
        else:
            severity, confidence = Severity.MEDIUM, 0.6
            why = "it holds no role for that call"
        return Draft(
            detection=self.id,
            severity=severity,
            confidence=confidence,
            entity_type="principal" if ":" not in actor else "actor",
            entity=actor,
            explanation=f"{actor} was refused {call} by the admin API: {why}",
            evidence=(obs.id,),
            techniques=self.techniques,
            principal=actor if ":" not in actor else "",
            org=org,
        )

    def _self_service(self, actor: str, now: float) -> bool:
        """A principal enrolling a key with a code issued to it (within ``code_window``)."""
        issued = self.codes.values(actor, now - self.code_window)
        return ":" not in actor and SELF_SERVICE_CODE in issued

    def _signals(
        self, obs: Observation, actor: str, family: str, ctx: Context
    ) -> list[tuple[Severity, str]]:
        """Record the change in the actor's history; what is unusual about it."""
        signals: list[tuple[Severity, str]] = []
        now = obs.time
        known = self.families.known(actor)
        if not self.families.seen(actor, family, now) and not self._expected(actor, family, ctx):
            if known:
                signals.append((Severity.LOW, f"first {family} change by {actor}"))
            else:
                signals.append((Severity.MEDIUM, f"first control-plane change by {actor}"))
        window = self.changes.of(actor)
        window.expire(now)
        target = f"{obs.target_type}:{obs.target}"
        before = window.distinct()
        window.add(now, target)
        if target not in before and len(before) + 1 >= self.burst:
            minutes = self.changes.span / 60
            signals.append(
                (Severity.MEDIUM, f"{len(before) + 1} targets changed within {minutes:g} min")
            )
        hour = datetime.fromtimestamp(now, UTC).hour
        record = self.hours.get(actor)
        if record is None:
            record = [0.0] * HOURS + [now, 0.0]
            self.hours.put(actor, record)
        habit = (
            record[TOTAL] >= self.hours_events
            and now - record[FIRST] >= self.hours_span
            and sum(1 for count in record[:HOURS] if count) >= self.hours_active
        )
        if habit and sum(record[(hour + d) % HOURS] for d in (-1, 0, 1)) < self.usual:
            signals.append((Severity.LOW, f"at {hour:02d}:00 UTC, an unusual hour for {actor}"))
        record[hour] += 1
        record[TOTAL] += 1
        return signals

    def _expected(self, actor: str, family: str, ctx: Context) -> bool:
        """Declared approvers and sponsors approving and reviewing: their job, not a first."""
        if family != "access" or ":" in actor:
            return False
        config = ctx.config
        if any(org.sponsor == actor for org in config.orgs.values()):
            return True
        return any(
            c.access is not None and actor in c.access.approvers
            for c in config.compartments.values()
        )

    def _draft(
        self,
        obs: Observation,
        actor: str,
        org: str,
        family: str,
        severity: Severity,
        confidence: float,
        text: str,
    ) -> Draft:
        target = f"{obs.target_type} {obs.target}".strip() or "an unnamed target"
        return Draft(
            detection=self.id,
            severity=severity,
            confidence=confidence,
            entity_type="principal" if ":" not in actor else "actor",
            entity=actor,
            explanation=f"{actor} recorded {obs.name} on {target}: {text}",
            evidence=(obs.id,),
            techniques=TECHNIQUES[family],
            principal=actor if ":" not in actor else "",
            org=org,
        )
