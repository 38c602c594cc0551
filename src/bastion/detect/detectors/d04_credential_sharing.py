"""D4: credential sharing (T1078, T1199).

Two patterns, over uses (allowed requests and tokens issued, refreshed or exchanged), per holder
of the device key (the actor of a delegated token, else the principal):

- **Concurrency**: more than ``max_keys`` distinct device keys, or more than ``max_networks``
  distinct networks (/24 or /48), active for one principal within ``span`` seconds (10 min). A
  person does not work from four laptops or four networks at once; a group sharing one account
  does. Keys over the limit are HIGH, networks MEDIUM, both HIGH with more confidence. Services
  run as fleets, so a principal declared ``kind: service`` gets ``service_scale`` times the
  limits. A VPN egress change is two networks in a row, well under the limit.
- **One device key, several principals**: a device key (``jkt``) is enrolled to one principal,
  so the gateway should never see it used by two. If it is, that is HIGH (entity: the key).
- **One device key in two places** (vendor principals: a vendor seat is one person): two
  logins (token families) on the same device key, used turn about from two networks within
  ``flip_span`` (2 min): family 1 at A, family 2 at B, family 1 at A again. One device is on
  one network at a time, so its sessions move together; a copy of the key on a second machine
  is not. HIGH. A laptop roaming between networks, or two processes on it, stays quiet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from bastion.config.models import PrincipalKind

from ..detector import Context, StatefulDetector, Structure
from ..findings import Draft, Severity
from ..observation import Observation
from ..state import FirstSeen, Table

MAX_SESSIONS = 8  # token families remembered per device key


def _sessions_shape(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], dict)
    )


def _listed(values: list[str], limit: int = 6) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


class CredentialSharing(StatefulDetector):
    id: ClassVar[str] = "D4"
    title: ClassVar[str] = "Credential sharing"
    techniques: ClassVar[tuple[str, ...]] = ("T1078", "T1199")
    window: ClassVar[float] = 3600.0

    def __init__(
        self,
        *,
        max_keys: int = 3,
        max_networks: int = 3,
        span: float = 600.0,
        flip_span: float = 120.0,
        service_scale: int = 4,
        cap_principals: int = 20_000,
        cap_keys: int = 50_000,
        values_per_principal: int = 32,
    ) -> None:
        self.max_keys = max_keys
        self.max_networks = max_networks
        self.span = span
        self.flip_span = flip_span
        self.service_scale = service_scale
        self.keys = FirstSeen(span, cap_principals, values_per_principal)
        self.networks = FirstSeen(span, cap_principals, values_per_principal)
        # device key → the first principal seen with it
        self.owners: Table[str] = Table(cap_keys, shape=lambda owner: isinstance(owner, str))
        # device key → [last family, {family: [network, time]}] (for "two places at once")
        self.sessions: Table[list[Any]] = Table(cap_keys, shape=_sessions_shape)

    def structures(self) -> Mapping[str, Structure]:
        return {
            "keys": self.keys,
            "networks": self.networks,
            "owners": self.owners,
            "sessions": self.sessions,
        }

    def observe(self, obs: Observation, ctx: Context) -> list[Draft]:
        holder = obs.holder
        if not holder or not obs.is_use:
            return []
        drafts: list[Draft] = []
        if obs.jkt:
            owner = self.owners.get(obs.jkt)
            if owner is None:
                self.owners.put(obs.jkt, holder)
            elif owner != holder:
                drafts.append(self._shared_key(obs, owner, holder, ctx))
        copied = obs.jkt and obs.family and obs.network and self._two_places(obs)
        if copied and ctx.is_vendor(obs.org or ctx.org_of(holder)):
            drafts.append(self._copied_key(obs, holder, ctx))
        keys = self._concurrent(self.keys, holder, obs.jkt, obs.time)
        networks = self._concurrent(self.networks, holder, obs.network, obs.time)
        if len(keys) <= self.max_keys and len(networks) <= self.max_networks:
            return drafts  # under the lowest limits: the common case, decided cheaply
        scale = self._scale(holder, ctx)
        over_keys = len(keys) > self.max_keys * scale
        over_networks = len(networks) > self.max_networks * scale
        if over_keys or over_networks:
            drafts.append(self._concurrency(obs, holder, ctx, keys, networks, scale))
        return drafts

    def _two_places(self, obs: Observation) -> bool:
        """Whether this use returns to a session of the key on its network right after another
        session of the key was used from another network (then records this use)."""
        last, sessions = self.sessions.get(obs.jkt) or ["", {}]
        before = sessions.get(obs.family)
        other = sessions.get(last) if last and last != obs.family else None
        flip = (
            before is not None
            and other is not None
            and before[0] == obs.network
            and other[0] != obs.network
            and obs.time - before[1] <= self.flip_span
            and obs.time - other[1] <= self.flip_span
        )
        sessions[obs.family] = [obs.network, obs.time]
        if len(sessions) > MAX_SESSIONS:
            del sessions[min(sessions, key=lambda family: sessions[family][1])]
        self.sessions.put(obs.jkt, [obs.family, sessions])
        return flip

    def _copied_key(self, obs: Observation, holder: str, ctx: Context) -> Draft:
        return Draft(
            detection=self.id,
            severity=Severity.HIGH,
            confidence=0.8,
            entity_type="principal",
            entity=holder,
            explanation=(
                f"device key {obs.jkt[:12]}… of {holder} (a vendor seat: one person) was used "
                f"by two logins from two networks in turn within {self.flip_span:.0f} s, back at "
                f"{obs.network}: the key is on two machines, the account shared"
            ),
            evidence=(obs.id,),
            techniques=self.techniques,
            principal=holder,
            org=obs.org or ctx.org_of(holder),
        )

    def _scale(self, holder: str, ctx: Context) -> int:
        declared = ctx.config.principals.get(holder)
        service = declared is not None and declared.kind is PrincipalKind.SERVICE
        return self.service_scale if service else 1

    def _concurrent(self, seen: FirstSeen, holder: str, value: str, time: float) -> list[str]:
        """The values active for ``holder`` within the span, when ``value`` just joined them
        (empty when it was already active: the count cannot have grown)."""
        if not value or seen.seen(holder, value, time):
            return []
        active = seen.values(holder, time - self.span)
        return sorted(active, key=active.__getitem__)

    def _concurrency(
        self,
        obs: Observation,
        holder: str,
        ctx: Context,
        keys: list[str],
        networks: list[str],
        scale: int,
    ) -> Draft:
        limit_keys, limit_networks = self.max_keys * scale, self.max_networks * scale
        over_keys, over_networks = len(keys) > limit_keys, len(networks) > limit_networks
        parts = []
        if over_keys:
            shown = [key[:12] + "…" for key in keys]
            parts.append(f"{len(keys)} device keys ({_listed(shown)}; limit {limit_keys})")
        if over_networks:
            parts.append(f"{len(networks)} networks ({_listed(networks)}; limit {limit_networks})")
        severity = Severity.HIGH if over_keys else Severity.MEDIUM
        confidence = 0.85 if over_keys and over_networks else 0.7 if over_keys else 0.6
        return Draft(
            detection=self.id,
            severity=severity,
            confidence=confidence,
            entity_type="principal",
            entity=holder,
            explanation=(
                f"{holder} was active from {' and '.join(parts)} within "
                f"{self.span / 60:.0f} min: one credential, several users"
            ),
            evidence=(obs.id,),
            techniques=self.techniques,
            principal=holder,
            org=obs.org or ctx.org_of(holder),
        )

    def _shared_key(self, obs: Observation, owner: str, holder: str, ctx: Context) -> Draft:
        return Draft(
            detection=self.id,
            severity=Severity.HIGH,
            confidence=0.9,
            entity_type="key",
            entity=obs.jkt,
            explanation=(
                f"device key {obs.jkt[:12]}… of {owner} was used by {holder} "
                f"({obs.name} from {obs.network or obs.source_ip or 'an unknown address'}): "
                "one device key, two principals"
            ),
            evidence=(obs.id,),
            techniques=self.techniques,
            principal=holder,
            org=obs.org or ctx.org_of(holder),
        )
