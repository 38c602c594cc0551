"""The drill's side of the house: the running server it attacks, and the operator's local
access it uses to set up contractors and to watch what Bastion did.

The drill runs on Bastion's host, with the same bastion.yaml and state directory as the server
(it enrolls device keys as an admin would, reads findings and response actions from the store,
and for T9 edits the audit database directly, as an intruder with database access would).
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa

from bastion.audit.events import AuditTamperDetected
from bastion.audit.integrity import IntegrityWatch
from bastion.audit.log import AuditLog
from bastion.config.models import BastionConfig, OrgKind
from bastion.errors import BadRequest, BastionError, Conflict
from bastion.identity.keys import generate_private_jwk, public_jwk
from bastion.identity.principals import PrincipalService
from bastion.store import Store
from bastion.store import actions as action_rows
from bastion.store import findings as finding_rows
from bastion.store import integrity as tamper_rows
from bastion.store.tables import audit_events

from .device import Device
from .scorecard import StepResult

ACTOR = "drill"
OUTSIDE = "203.0.113.50"  # TEST-NET-3: outside any vendor's networks


@dataclass(frozen=True)
class Networks:
    """Addresses in three different /24s inside the vendor's allowed networks."""

    home: str  # where the contractor works
    second: str  # another site of the vendor (a thief's foothold, a friend's office)
    third: str

    @classmethod
    def inside(cls, cidrs: tuple[Any, ...]) -> Networks:
        for cidr in cidrs:
            network = ipaddress.ip_network(str(cidr))
            if network.version == 4 and network.prefixlen <= 22:
                subnets = list(network.subnets(new_prefix=24))
                picked = [subnets[i % len(subnets)] for i in (1, 9, 6)]
                return cls(*(str(next(iter(s.hosts())) + 9) for s in picked))
        raise BadRequest(
            "the drill's vendor org needs an IPv4 allowed network of /22 or wider "
            "(e.g. allowed_networks: [10.20.0.0/16]) to play several of its sites"
        )


@dataclass
class Lab:
    url: str
    http: httpx.Client
    store: Store
    audit: AuditLog
    config: BastionConfig
    principals: PrincipalService
    vendor: str
    former_vendor: str
    model: str
    probes: tuple[str, ...]
    escalate_to: str
    pace: float = 0.25
    run: str = field(default_factory=lambda: secrets.token_hex(3))
    networks: Networks = field(init=False)

    def __post_init__(self) -> None:
        org = self.config.orgs.get(self.vendor)
        if org is None or org.kind is not OrgKind.VENDOR:
            raise BadRequest(f"--vendor {self.vendor!r} is not a vendor org in bastion.yaml")
        former = self.config.orgs.get(self.former_vendor)
        if former is None or former.kind is not OrgKind.VENDOR:
            raise BadRequest(f"--former-vendor {self.former_vendor!r} is not a vendor org")
        if self.config.model(self.model) is None:
            raise BadRequest(f"--model {self.model!r} is not a model in bastion.yaml")
        self.networks = Networks.inside(org.allowed_networks)

    # -- people ------------------------------------------------------------------------------------

    def contractor(self, step: str, org: str | None = None) -> Device:
        """A new principal of the vendor org for this step, with an enrolled device key, logged
        in from the vendor's home network."""
        name = f"drill-{self.run}-{step.lower()}"
        self.principals.add(
            self.config, name, kind="user", org=org or self.vendor, author=ACTOR, source="drill"
        )
        key = generate_private_jwk()
        self.principals.enroll(name, public_jwk(key), author=ACTOR)
        device = Device(self.http, self.url, name, key, self.networks.home)
        return self.until_logged_in(device)

    def until_logged_in(self, device: Device, timeout: float = 5.0) -> Device:
        """The server applies new principals and keys within its poll interval: retry."""
        deadline = time.monotonic() + timeout
        while True:
            logged, attempt = device.login()
            if attempt.ok:
                return logged
            if time.monotonic() > deadline:
                raise BastionError(
                    f"{device.principal} could not log in ({attempt.describe()}); is the "
                    "server using the same bastion.yaml and state directory as the drill?"
                )
            time.sleep(0.1)

    def stranger(self, principal: str, source: str) -> Device:
        """A device key nobody enrolled, claiming to be ``principal``."""
        return Device(self.http, self.url, principal, generate_private_jwk(), source)

    # -- watching ----------------------------------------------------------------------------------

    def watch(
        self,
        result: StepResult,
        principal: str,
        *,
        timeout: float = 3.0,
        done: Callable[[StepResult], bool] | None = None,
    ) -> None:
        """Wait (bounded) for findings about ``principal`` since the step began, and note the
        response actions and incident they led to."""
        since = (result.first_malicious or time.time()) - 1.0
        deadline = time.monotonic() + timeout
        while True:
            self._observe(result, principal, since)
            if (done(result) if done else result.detections) or time.monotonic() > deadline:
                return
            time.sleep(0.05)

    def _observe(self, result: StepResult, principal: str, since: float) -> None:
        with self.store.read() as conn:
            found = [
                f
                for f in finding_rows.query(conn, since=since, principal=principal, limit=100)
                if f.first_seen >= since and f.status == "open"
            ]
            actions = [a for f in found for a in action_rows.query(conn, finding=f.id)]
        found.sort(key=lambda f: f.first_seen)
        result.detections = [f"{f.detection} {f.id}" for f in found]
        if found:
            result.detected_at = found[0].first_seen
        result.actions = sorted(
            {f"{a.action} {a.target_type}:{a.target} {a.status}" for a in actions}
        )
        result.incident = next((a.incident for a in actions if a.incident), "") or ""

    # -- the audit database (T9) --------------------------------------------------------------

    def tamper(self, principal: str) -> tuple[int, str, float] | None:
        """Rewrite ``principal``'s last served request in the audit log to look refused, the
        way an intruder with database access would; returns (index, original body, when)."""
        with self.store.begin() as conn:
            row = conn.execute(
                sa.select(audit_events.c.idx, audit_events.c.body)
                .where(
                    audit_events.c.name == "request.decided",
                    audit_events.c.body.contains(f'"principal":"{principal}"'),
                )
                .order_by(audit_events.c.idx.desc())
                .limit(1)
            ).first()
            if row is None:
                return None
            index, body = int(row.idx), str(row.body)
            forged = body.replace('"allowed":true', '"allowed":false', 1)
            conn.execute(
                audit_events.update().where(audit_events.c.idx == index).values(body=forged)
            )
        return index, body, time.time()

    def restore(self, index: int, body: str) -> None:
        """Put the row back and acknowledge the tamper mark, as an operator would after the
        investigation; every watch then verifies the whole log again."""
        with self.store.begin() as conn:
            conn.execute(audit_events.update().where(audit_events.c.idx == index).values(body=body))
        with contextlib.suppress(Conflict):  # not (or no longer) marked: nothing to acknowledge
            IntegrityWatch(self.store, self.audit).acknowledge(
                f"drill {self.run}: T9 edit of entry {index} restored", actor=ACTOR
            )

    def watch_tamper(self, result: StepResult, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.store.read() as conn:
                mark = tamper_rows.read(conn)
                found = conn.execute(
                    sa.select(audit_events.c.time)
                    .where(
                        audit_events.c.name == AuditTamperDetected.name,
                        audit_events.c.time >= (result.first_malicious or 0.0),
                    )
                    .limit(1)
                ).first()
            if mark.tampered and found is not None:
                result.detected_at = float(found.time)
                result.detections = [f"tamper #{mark.index}"]
                return
            time.sleep(0.05)
