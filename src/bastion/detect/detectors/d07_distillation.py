"""D7: distillation or harvesting spread across several accounts of one vendor org (T5 at org
scale: each account stays under its own limits, together they pull the model out).

Only allowed calls to ``restricted`` and ``critical`` models by principals of vendor orgs count
(the models worth distilling, the accounts a contractor controls). Per org, over a sliding
hour, three patterns — each needs at least ``accounts`` (3) principals and something unusual
*for that org*, so an org's normal daily peak, all from its office network, stays quiet:

- **volume spread**: the org's output tokens are at least ``z`` (4) deviations above its
  baseline of active hours and at least ``min_org_tokens`` (100,000), and ``accounts``
  principals each took at least ``min_share`` (10 %) of it: **high**.
- **shared infrastructure**: ``accounts`` principals each took at least ``account_tokens``
  (20,000) and were all seen on one source network (/24 or /48) in the hour, and that network
  is new to the org (first seen within ``novelty``, a day, for an org older than that) or a
  hosting / anonymizer origin, or the org's volume is above baseline: **medium**, **high** when
  two of those hold.
- **prompt sweep**: ``accounts`` principals each sent at least ``sweep_requests`` (100) short
  prompts (at most ``short_prompt`` input tokens) to the same model in the hour, and that is
  unusual for the org (``z`` above the org's baseline of short prompts to that model, or a
  model new to the org): **medium**, **high** on a ``critical`` model.

Costlier checks (over the org's recent principals) run at most every ``recheck`` seconds per
org, network or model, and only when the cheap running totals make a match possible. The
finding's entity is the org (its risk score, not one principal's, goes up). No judgement during
an org's first ``min_history`` (a day) or before its baseline has ``warmup_hours`` samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from bastion.config.models import Level

from ..detector import Context, StatefulDetector, Structure
from ..findings import Draft, Severity
from ..observation import Observation
from ..state import Table
from .volume import HOUR, NEVER, HourlyVolume, Recent, Volumes

DAY = 86_400.0
SENSITIVE = frozenset({Level.RESTRICTED, Level.CRITICAL})
UNUSUAL_ORIGINS = frozenset({"hosting", "anonymizer"})
_LISTED = 5

Found = tuple[Severity, float, str, tuple[str, ...]]  # severity, confidence, text, principals


class Distillation(StatefulDetector):
    id: ClassVar[str] = "D7"
    title: ClassVar[str] = "Distillation or harvesting across accounts of one vendor org"
    techniques: ClassVar[tuple[str, ...]] = ("AML.T0024.002", "AML.T0065", "AML.T0008.005")
    window: ClassVar[float] = HOUR

    def __init__(
        self,
        *,
        z: float = 4.0,
        accounts: int = 3,
        min_org_tokens: int = 100_000,
        min_share: float = 0.1,
        account_tokens: int = 20_000,
        sweep_requests: int = 100,
        short_prompt: int = 300,
        novelty: float = DAY,
        half_life: float = 7 * DAY,
        warmup_hours: int = 6,
        min_history: float = DAY,
        recheck: float = 15.0,
        cap_orgs: int = 2_000,
        cap_principals: int = 20_000,
        cap_keys: int = 20_000,
    ) -> None:
        self.z = z
        self.accounts = accounts
        self.min_org_tokens = min_org_tokens
        self.min_share = min_share
        self.account_tokens = account_tokens
        self.sweep_requests = sweep_requests
        self.short_prompt = short_prompt
        self.novelty = novelty
        self.min_history = min_history
        self.recheck = recheck
        self.orgs = Volumes(cap_orgs, half_life, warmup_hours)  # org: sensitive output tokens
        self.principals = Volumes(cap_principals, half_life, warmup_hours)  # principal: same
        self.members = Recent(cap_orgs, 64)  # org: its recently active principals
        self.networks: Table[list[float]] = Table(cap_keys)  # "org network": [first, checked]
        self.on_network = Recent(cap_keys, 32)  # "org network": principals
        self.models = Volumes(cap_keys, half_life, warmup_hours)  # "org model": short prompts
        self.on_model = Recent(cap_keys, 32)  # "org model": principals
        self.sweeps = Volumes(cap_keys, half_life, warmup_hours)  # "principal model": same
        self._scoped: tuple[object, frozenset[str], frozenset[str]] = (
            None,
            frozenset(),
            frozenset(),
        )

    def structures(self) -> Mapping[str, Structure]:
        return {
            "orgs": self.orgs,
            "principals": self.principals,
            "members": self.members,
            "networks": self.networks,
            "on_network": self.on_network,
            "models": self.models,
            "on_model": self.on_model,
            "sweeps": self.sweeps,
        }

    def observe(self, obs: Observation, ctx: Context) -> list[Draft]:
        if obs.name != "request.decided" or not obs.allowed or not obs.principal:
            return []
        sensitive, vendors = self._scope(ctx)
        if obs.compartment not in sensitive:
            return []
        org = obs.org or ctx.org_of(obs.principal)
        if org not in vendors:
            return []
        now, principal, tokens = obs.time, obs.principal, obs.tokens_out
        volume = self.orgs.of(org, now)
        volume.add(now, tokens, self.z)
        account = self.principals.of(principal, now)
        account.add(now, tokens, self.z)
        self.members.touch(org, principal, now)
        found = self._spread(org, volume, now)
        if obs.network:  # every pattern's state is updated, whatever the others found
            heavy = account.total(now) >= self.account_tokens
            found = _worse(found, self._shared_network(obs, org, volume, heavy))
        if obs.model and 0 < obs.tokens_in <= self.short_prompt:  # 0: usage not reported
            found = _worse(found, self._sweep(obs, org, volume, ctx))
        if found is None or not volume.alert(found[0].rank, now, self.window):
            return []
        severity, confidence, text, principals = found
        return [
            Draft(
                detection=self.id,
                severity=severity,
                confidence=confidence,
                entity_type="org",
                entity=org,
                explanation=f"vendor org {org}: {text}; principals {_names(principals)}",
                evidence=(obs.id,),
                techniques=self.techniques,
                org=org,
            )
        ]

    def _scope(self, ctx: Context) -> tuple[frozenset[str], frozenset[str]]:
        """The restricted and critical compartments and the vendor orgs, cached per config."""
        config, sensitive, vendors = self._scoped
        if config is not ctx.config:
            sensitive = frozenset(
                name for name, c in ctx.config.compartments.items() if c.level in SENSITIVE
            )
            vendors = frozenset(name for name in ctx.config.orgs if ctx.is_vendor(name))
            self._scoped = (ctx.config, sensitive, vendors)
        return sensitive, vendors

    def _org_z(self, volume: HourlyVolume, now: float) -> float:
        total = volume.total(now)
        if total < self.min_org_tokens:
            return 0.0
        return volume.score(total, now, self.min_history) or 0.0

    def _heavy(self, principals: list[str], floor: float, now: float) -> list[str]:
        """Those of ``principals`` with at least ``floor`` sensitive output tokens in the hour."""
        heavy = []
        for name in principals:
            volume = self.principals.get(name)
            if volume is not None and volume.total(now) >= floor:
                heavy.append(name)
        return heavy

    def _spread(self, org: str, volume: HourlyVolume, now: float) -> Found | None:
        z = self._org_z(volume, now)
        if z < self.z or now - volume.checked < self.recheck:
            return None
        volume.checked = now
        total = volume.total(now)
        recent = self.members.since(org, now - HOUR)
        heavy = self._heavy(recent, max(self.min_share * total, 1.0), now)
        if len(heavy) < self.accounts:
            return None
        text = (
            f"{total:,.0f} output tokens from restricted/critical models in the last hour "
            f"against a baseline of {volume.baseline.mean:,.0f} per active hour "
            f"({z:.1f} deviations above), spread over {len(heavy)} accounts"
        )
        return Severity.HIGH, min(0.6 + z / 40, 0.9), text, tuple(heavy)

    def _shared_network(
        self, obs: Observation, org: str, volume: HourlyVolume, heavy: bool
    ) -> Found | None:
        now, key = obs.time, f"{org} {obs.network}"
        self.on_network.touch(key, obs.principal, now)
        record = self.networks.get(key)
        if record is None:
            record = [now, NEVER]
            self.networks.put(key, record)
        if not heavy:  # only a heavy account's call can make the count of heavy accounts grow
            return None
        first, checked = record
        reasons = []
        if now - first < self.novelty and now - volume.first >= self.novelty:
            reasons.append(f"first seen for the org {(now - first) / 60:.0f} min ago")
        if obs.origin in UNUSUAL_ORIGINS:
            reasons.append(f"a {obs.origin} network")
        if self._org_z(volume, now) >= self.z:
            reasons.append("org volume far above its baseline")
        if not reasons or now - checked < self.recheck:
            return None  # the org's usual network at a usual volume: its office at its peak
        record[1] = now
        principals = self.on_network.since(key, now - HOUR)
        accounts = self._heavy(principals, self.account_tokens, now)
        if len(accounts) < self.accounts:
            return None
        text = (
            f"{len(accounts)} accounts each took at least {self.account_tokens:,} output tokens "
            f"from restricted/critical models in the last hour from one network {obs.network} "
            f"({'; '.join(reasons)})"
        )
        severity = Severity.HIGH if len(reasons) >= 2 else Severity.MEDIUM
        return severity, 0.6 + 0.1 * len(reasons), text, tuple(accounts)

    def _sweep(
        self, obs: Observation, org: str, volume: HourlyVolume, ctx: Context
    ) -> Found | None:
        now, key = obs.time, f"{org} {obs.model}"
        model = self.models.of(key, now)
        model.add(now, 1.0, self.z)
        sweep = self.sweeps.of(f"{obs.principal} {obs.model}", now)
        sweep.add(now, 1.0, self.z)
        self.on_model.touch(key, obs.principal, now)
        if sweep.total(now) < self.sweep_requests:
            return None
        count = model.total(now)
        z = model.score(count, now, self.min_history)
        novel = now - model.first < self.novelty and now - volume.first >= self.novelty
        if not novel and (z is None or z < self.z):
            return None  # the org's usual short-prompt workload on this model
        if now - model.checked < self.recheck:
            return None
        model.checked = now
        sweepers = []
        for name in self.on_model.since(key, now - HOUR):
            other = self.sweeps.get(f"{name} {obs.model}")
            if other is not None and other.total(now) >= self.sweep_requests:
                sweepers.append(name)
        if len(sweepers) < self.accounts:
            return None
        why = "a model new to the org" if novel else f"{z:.1f} deviations above its baseline"
        text = (
            f"{len(sweepers)} accounts each sent at least {self.sweep_requests} short prompts "
            f"(at most {self.short_prompt} input tokens) to {obs.model} in the last hour, "
            f"{count:,.0f} in all ({why})"
        )
        critical = ctx.level(obs.compartment) is Level.CRITICAL
        return (Severity.HIGH if critical else Severity.MEDIUM), 0.7, text, tuple(sweepers)


def _worse(found: Found | None, other: Found | None) -> Found | None:
    if other is None or (found is not None and found[0].rank >= other[0].rank):
        return found
    return other


def _names(principals: tuple[str, ...]) -> str:
    shown = ", ".join(sorted(principals)[:_LISTED])
    more = len(principals) - _LISTED
    return shown + (f" and {more} more" if more > 0 else "")
