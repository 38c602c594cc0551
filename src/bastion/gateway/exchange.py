"""What one gateway request did, gathered as it goes (``Exchange``), and the request headers the
hot path reads (``scan_headers``): the raw material of the request's audit events."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bastion.audit.events import RequestAuthorized, RequestDecided, new_event_id
from bastion.detect.ipintel import NO_ORIGIN, Origin
from bastion.errors import BadRequest
from bastion.policy.authorize import Caller
from bastion.policy.decision import Decision

from .usage import UsageChunkFilter, UsageMeter


@dataclass(slots=True)
class Exchange:
    """What one request did, gathered as it goes, for its audit event."""

    route: str
    source_ip: str
    started: float
    at: float = field(default_factory=time.time)  # the gateway clock when the request came in
    event_id: str = field(default_factory=new_event_id)
    caller: Caller | None = None
    model: str | None = None
    compartment: str | None = None
    decision: Decision | None = None
    status: int = 0
    outcome: str = "denied"
    stream: bool = False
    meter: UsageMeter | None = None
    error: str | None = None
    recorded: bool = False
    hide_usage: UsageChunkFilter | None = None  # set when Bastion asked for usage, not the caller
    client: str = ""  # detection signals: user agent, content label, source origin
    content: tuple[str, float] | None = None
    origin: Origin = NO_ORIGIN

    def authorized(self) -> RequestAuthorized:
        assert self.caller is not None
        assert self.decision is not None
        assert self.model is not None
        assert self.compartment is not None
        return RequestAuthorized(
            time=self.at,
            principal=self.caller.principal,
            org=self.caller.org,
            model=self.model,
            compartment=self.compartment,
            route=self.route,
            policies=self.decision.policies,
            epoch=self.decision.epoch,
            source_ip=self.source_ip,
            family=self.caller.family,
            jkt=self.caller.jkt,
            act=(self.caller.actor,) if self.caller.actor else (),
        )

    def event(self) -> RequestDecided:
        decision = self.decision
        return RequestDecided(
            id=self.event_id,
            time=self.at,
            principal=self.caller.principal if self.caller else None,
            org=self.caller.org if self.caller else None,
            model=self.model,
            compartment=self.compartment,
            route=self.route,
            allowed=bool(decision and decision.allowed),
            reasons=tuple(decision.reasons) if decision else (),
            policies=decision.policies if decision else (),
            epoch=decision.epoch if decision else None,
            source_ip=self.source_ip,
            family=self.caller.family if self.caller else None,
            jkt=self.caller.jkt if self.caller else None,
            act=(self.caller.actor,) if self.caller and self.caller.actor else (),
            status=self.status,
            outcome=self.outcome,
            error=self.error,
            stream=self.stream,
            tokens_in=self.meter.tokens_in if self.meter else None,
            tokens_out=self.meter.tokens_out if self.meter else None,
            latency_ms=round((time.perf_counter() - self.started) * 1000, 3),
            client=self.client,
            content_label=self.content[0] if self.content else "",
            content_score=self.content[1] if self.content else 0.0,
            refused=bool(self.meter and self.meter.refused),
            asn=self.origin.asn,
            country=self.origin.country,
            origin=self.origin.origin,
        )


@dataclass(slots=True)
class Headers:
    authorization: list[bytes] = field(default_factory=list)
    dpop: list[bytes] = field(default_factory=list)
    host: str | None = None
    forwarded_for: str | None = None
    content_length: int | None = None
    user_agent: bytes | None = None
    size: int = 0


def scan_headers(raw: list[tuple[bytes, bytes]]) -> Headers:
    found = Headers()
    for name, value in raw:
        found.size += len(name) + len(value)
        if name == b"authorization":
            found.authorization.append(value)
        elif name == b"dpop":
            found.dpop.append(value)
        elif name == b"host":
            found.host = value.decode("latin-1")
        elif name == b"x-forwarded-for":  # repeated headers are one comma-joined list
            hops = value.decode("latin-1")
            found.forwarded_for = f"{found.forwarded_for}, {hops}" if found.forwarded_for else hops
        elif name == b"user-agent":
            found.user_agent = value
        elif name == b"content-length":
            try:
                found.content_length = int(value)
            except ValueError:
                raise BadRequest("invalid Content-Length header") from None
    return found
