"""``create_app``: the only place that wires Bastion together.

The returned ASGI app routes ``/v1/*`` straight to the gateway's plain-ASGI hot path and
everything else (token endpoint, enrollment, metadata, health) to a small Starlette app. The
lifespan loads the first snapshot, starts the state poller and the audit writer, and on shutdown
flushes the audit queue before the process exits.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Literal

import httpx2
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from bastion.access.dormancy import DormancyService
from bastion.access.reviews import ReviewService
from bastion.access.service import AccessService
from bastion.access.sweep import LifecycleSweeper
from bastion.api.access import AccessRoutes
from bastion.api.app import create_admin_api
from bastion.api.audit import AuditRoutes
from bastion.api.detection import DetectionRoutes
from bastion.api.directory import DirectoryRoutes
from bastion.api.incidents import IncidentRoutes
from bastion.api.locks import LockRoutes
from bastion.api.principals import PrincipalRoutes
from bastion.api.response import ResponseRoutes
from bastion.api.reviews import ReviewRoutes
from bastion.audit import keys as audit_keys
from bastion.audit.checkpointer import Checkpointer
from bastion.audit.commitment import Committer
from bastion.audit.integrity import IntegrityWatch
from bastion.audit.log import AuditLog
from bastion.audit.recorder import AuditRecorder
from bastion.config import BastionConfig, load_config
from bastion.config.caep import CaepOptions
from bastion.console.app import create_console
from bastion.console.attempts import SignInLimits
from bastion.detect.detectors import default_detectors
from bastion.detect.risk import RiskBoard
from bastion.detect.service import DetectionService
from bastion.detect.sigma import load_rules
from bastion.detect.signals import SignalsLoader
from bastion.gateway.asgi import Gateway, GatewayLimits
from bastion.gateway.assertion import UpstreamAssertions
from bastion.gateway.auth import Authenticator
from bastion.gateway.net import Network, parse_networks, source_ip
from bastion.gateway.proxy import UpstreamProxy
from bastion.gateway.quotas import QuotaBuckets, QuotaLedger
from bastion.gateway.quotas_redis import RedisQuotaBuckets
from bastion.gateway.streams import StreamRegistry
from bastion.identity.access_tokens import AccessTokenCodec
from bastion.identity.caep import CaepEmitter
from bastion.identity.caep_receiver import CaepReceiverEndpoint, SetVerifier
from bastion.identity.dpop import DPoPVerifier
from bastion.identity.endpoints import IdentityEndpoints
from bastion.identity.federation import FederationVerifier, JWKSCache
from bastion.identity.keys import IssuerKey
from bastion.identity.mfa import KEY_FILE as MFA_KEY_FILE
from bastion.identity.mfa import MfaService
from bastion.identity.principals import PrincipalService
from bastion.identity.replay import MemoryReplayCache
from bastion.identity.replay_redis import RedisReplayCache
from bastion.identity.service import TokenService
from bastion.lifespan import lifespan
from bastion.policy.holder import SnapshotHolder
from bastion.respond.incidents import IncidentService
from bastion.respond.locks import LockService
from bastion.respond.notify import Notifier, targets
from bastion.respond.playbooks import PlaybookSource
from bastion.respond.service import ResponseService
from bastion.settings import Settings
from bastion.store import Store
from bastion.store import redis as shared_state
from bastion.store.fanout import EpochPublisher, EpochSubscriber
from bastion.store.risk_feed import RiskPublisher, RiskSubscriber
from bastion.sync import StateSync, sync_config_principals

log = logging.getLogger("bastion")

# What a process runs. "embedded": everything, in one process (the default). In cluster mode the
# work is split: each "gateway" serves requests (hot path, token endpoint, admin API) and keeps
# its snapshot fresh; the one "worker" runs what must happen once per deployment, not once per
# process: the detection engine (and the playbooks it answers with), the checkpointer and the
# lifecycle sweeper.
Role = Literal["embedded", "gateway", "worker"]
ROLES: tuple[Role, ...] = ("embedded", "gateway", "worker")


@dataclass(frozen=True, slots=True)
class Services:
    """What the entry points share; tests reach in through ``app.state.services``."""

    settings: Settings
    store: Store
    holder: SnapshotHolder
    sync: StateSync
    recorder: AuditRecorder
    streams: StreamRegistry
    principals: PrincipalService
    tokens: TokenService
    issuer: IssuerKey
    audit: AuditLog
    locks: LockService
    access: AccessService
    reviews: ReviewService
    dormancy: DormancyService
    sweeper: LifecycleSweeper
    dpop: DPoPVerifier
    mfa: MfaService
    detection: DetectionService
    notifier: Notifier | None = None
    caep: CaepEmitter | None = None
    response: ResponseService | None = None
    incidents: IncidentService | None = None
    integrity: IntegrityWatch | None = None


class BastionApp:
    """``/v1/*`` goes to the gateway (no routing layer on the hot path), the rest to Starlette."""

    def __init__(self, gateway: Gateway, control: Starlette, services: Services) -> None:
        self.gateway = gateway
        self.control = control
        self.services = services
        self.state = control.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            await self.gateway(scope, receive, send)
        else:
            await self.control(scope, receive, send)


@dataclass(frozen=True, slots=True)
class Parts:
    """Built once in ``create_app``; what the gateway, the control app and the lifespan use."""

    services: Services
    issuer_url: str
    authenticator: Authenticator
    proxy: UpstreamProxy
    checkpointer: Checkpointer
    proxies: tuple[Network, ...]
    shared_redis: aioredis.Redis | None = None  # cluster: replay cache, quotas
    role: Role = "embedded"
    risk_feed: RiskSubscriber | None = None  # cluster gateways: the worker's risk scores
    env: Mapping[str, str] | None = None  # secrets by name (default: the process environment)


def _build(
    settings: Settings,
    upstream_transport: httpx2.AsyncBaseTransport | None,
    env: Mapping[str, str] | None,
    clock: Callable[[], float] = time.time,
    role: Role = "embedded",
) -> tuple[Parts, BastionConfig]:
    issuer_url = settings.public_url or "http://127.0.0.1:8080"
    config = load_config(settings.config_file)
    rules_dir = settings.config_file.parent  # detection.rules paths are relative to bastion.yaml
    if config.detection.enabled and config.detection.rules:
        load_rules(config.detection.rules, rules_dir)  # a bad rule stops startup, as config does
    signals = SignalsLoader(settings.config_file)
    signals.load(config)  # a missing or corrupt MMDB file or a bad classifier stops startup too
    store = Store(settings.resolved_database_url)
    store.migrate()
    if settings.cluster:  # announce every committed state change on Redis (store/fanout.py)
        store.on_epoch = EpochPublisher(settings.redis_url, settings.redis_prefix)
    sync_config_principals(store, config, now=time.time())
    issuer = IssuerKey.load_or_create(settings.issuer_key_file)
    holder = SnapshotHolder()
    caep = CaepEmitter(issuer, issuer_url, lambda: _caep_options(holder, config), clock=clock)
    streams = StreamRegistry()
    holder.on_swap(streams.on_swap)
    sync = StateSync(
        store,
        holder,
        settings.config_file,
        env=env,
        poll_interval=settings.state_poll_interval,
        kind="worker" if role == "worker" else "gateway",  # the heartbeat says which
        signals=signals,
        fanout=EpochSubscriber(settings.redis_url, settings.redis_prefix)
        if settings.cluster
        else None,
    )
    keys = audit_keys.load_or_create(settings.state_dir)
    audit = AuditLog(
        Committer(keys.salt, hash_addresses=config.audit.hash_source_addresses),
        keys.signer,
        keys.origin,
    )
    integrity = IntegrityWatch(
        store,
        audit,
        clock,
        interval=settings.integrity_interval,
        verify=not (settings.cluster and role == "gateway"),  # the worker verifies for them
    )
    recorder = AuditRecorder(store, audit, linger=settings.audit_linger, integrity=integrity)
    codec = AccessTokenCodec(issuer, issuer=issuer_url, audience=issuer_url)
    # Cluster mode: one DPoP replay cache and one set of quota buckets for every gateway.
    shared_redis = shared_state.async_client(settings.redis_url) if settings.cluster else None
    dpop = DPoPVerifier(
        MemoryReplayCache(),
        max_age=settings.dpop_max_age,
        clock_skew=settings.dpop_clock_skew,
        shared=RedisReplayCache(shared_redis, settings.redis_prefix) if shared_redis else None,
    )
    mfa = MfaService(store, audit, settings.state_dir / MFA_KEY_FILE)
    tokens = TokenService(
        store=store,
        holder=holder,
        codec=codec,
        dpop=dpop,
        assertion_replay=MemoryReplayCache(),
        recorder=recorder,
        audit=audit,
        audiences={issuer_url, issuer_url + "/oauth/token"},
        access_ttl=settings.access_token_ttl,
        refresh_ttl=settings.refresh_token_ttl,
        on_change=sync.reload,
        federation=FederationVerifier(JWKSCache()),
        mfa=mfa,
        clock=clock,
        on_family_revoked=caep.on_family_revoked,
    )
    risk = RiskBoard(half_life=config.detection.risk.half_life_minutes * 60.0)
    webhook_env = os.environ if env is None else env  # a missing secret stops startup
    hooks = targets(config.response.webhooks, webhook_env, str(settings.config_file))
    notifier = Notifier(hooks, store)
    locks = LockService(store, audit, clock, on_lock=caep.on_lock)  # one, so every lock signals
    playbooks = PlaybookSource(rules_dir)  # playbook paths are relative to bastion.yaml too
    playbooks.current(config)  # a missing or invalid playbooks file stops startup
    incidents = IncidentService(
        store,
        audit,
        clock,
        config=lambda: snapshot.config if (snapshot := holder.current) is not None else config,
        access_ttl=settings.access_token_ttl,
    )
    response = ResponseService(
        store,
        audit,
        locks,
        holder,
        playbooks,
        incidents=incidents,
        notifier=notifier,
        clock=clock,
        access_ttl=settings.access_token_ttl,
        on_family_revoked=caep.on_family_revoked,
    )
    detection = DetectionService(
        store,
        audit,
        recorder,
        holder,
        risk,
        clock=clock,
        detectors=partial(default_detectors, base_dir=rules_dir),
        notifier=notifier,
        responder=response.respond,
        on_response=sync.nudge,  # from the engine's thread: reload now, without blocking it
        on_risk=RiskPublisher(settings.redis_url, settings.redis_prefix)
        if settings.cluster and role == "worker"
        else None,
    )
    reviews = ReviewService(store, audit, locks, clock)
    dormancy = DormancyService(store, audit, clock)
    services = Services(
        settings=settings,
        store=store,
        holder=holder,
        sync=sync,
        recorder=recorder,
        streams=streams,
        principals=PrincipalService(store, audit, clock, on_key_revoked=caep.on_key_revoked),
        tokens=tokens,
        issuer=issuer,
        audit=audit,
        locks=locks,
        access=AccessService(store, audit, clock),
        reviews=reviews,
        dormancy=dormancy,
        sweeper=LifecycleSweeper(reviews, dormancy, holder, sync.reload),
        dpop=dpop,
        mfa=mfa,
        detection=detection,
        notifier=notifier,
        caep=caep,
        response=response,
        incidents=incidents,
        integrity=integrity,
    )
    parts = Parts(
        services=services,
        issuer_url=issuer_url,
        authenticator=Authenticator(codec, dpop),
        proxy=UpstreamProxy(upstream_transport, UpstreamAssertions(issuer, issuer_url, clock)),
        checkpointer=Checkpointer(
            store, audit, interval=settings.checkpoint_interval, integrity=integrity
        ),
        proxies=parse_networks(settings.trusted_proxies),
        shared_redis=shared_redis,
        role=role,
        risk_feed=RiskSubscriber(settings.redis_url, settings.redis_prefix)
        if settings.cluster and role == "gateway"
        else None,
        env=env,
    )
    return parts, config


def _caep_options(holder: SnapshotHolder, startup: BastionConfig) -> CaepOptions:
    """The CAEP section of the current snapshot's config (the startup config before one)."""
    snapshot = holder.current
    return (startup if snapshot is None else snapshot.config).response.caep


def _control(parts: Parts, clock: Callable[[], float] = time.time) -> Starlette:
    """Everything but the hot path: token and enrollment endpoints, the admin API, health."""
    services, proxies = parts.services, parts.proxies

    def request_source(request: Request) -> str:
        peer = request.client.host if request.client else ""
        hops = ", ".join(request.headers.getlist("x-forwarded-for")) or None
        return source_ip(peer, hops, proxies)

    identity = IdentityEndpoints(
        tokens=services.tokens,
        principals=services.principals,
        dpop=services.dpop,
        issuer=services.issuer,
        issuer_url=lambda _request: parts.issuer_url,
        on_change=services.sync.reload,
        source_ip=request_source,
    )
    caep_receiver = CaepReceiverEndpoint(
        verifier=SetVerifier(JWKSCache(), MemoryReplayCache(max_entries=100_000)),
        locks=services.locks,
        holder=services.holder,
        store=services.store,
        audit=services.audit,
        on_change=services.sync.reload,
        clock=clock,
    )
    admin_api = create_admin_api(
        holder=services.holder,
        authenticator=parts.authenticator,
        public_url=parts.issuer_url,
        audit=AuditRoutes(services.store, services.audit, services.integrity),
        access=AccessRoutes(services.access, services.holder, services.sync.reload),
        directory=DirectoryRoutes(services.access, services.holder),
        principals=PrincipalRoutes(
            services.principals,
            services.locks,
            services.dormancy,
            services.holder,
            services.sync.reload,
        ),
        locks=LockRoutes(services.locks, services.holder, services.sync.reload),
        detection=DetectionRoutes(services.detection),
        recorder=services.recorder,
        clock=clock,
        reviews=ReviewRoutes(services.reviews, services.holder, services.sync.reload),
        response=(
            ResponseRoutes(services.response, services.sync.reload)
            if services.response is not None
            else None
        ),
        source_ip=request_source,  # network locks apply to the admin API too
        incidents=IncidentRoutes(services.incidents) if services.incidents is not None else None,
    )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        snapshot = services.holder.current
        if snapshot is None:
            return JSONResponse({"status": "no snapshot", "error": services.holder.last_error}, 503)
        age = services.sync.freshness(time.monotonic())  # seconds since the lock view was proved
        return JSONResponse(
            {
                "status": "ready",
                "epoch": snapshot.epoch,
                "last_error": services.holder.last_error,
                "lock_view_age": round(age, 3) if age != float("inf") else None,
            }
        )

    control = Starlette(
        routes=[
            *identity.routes(),
            *caep_receiver.routes(),
            Mount("/admin", app=admin_api),
            Mount(
                "/console",
                app=create_console(
                    services,
                    authenticator=parts.authenticator,
                    public_url=services.settings.public_url,
                    source_ip=request_source,
                    clock=clock,
                    env=parts.env,  # identity providers' client secrets
                    attempts=SignInLimits(  # shared by every gateway in cluster mode
                        client=parts.shared_redis, prefix=services.settings.redis_prefix
                    ),
                ),
            ),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        lifespan=lifespan(parts),
    )
    control.state.services = services
    return control


def _quotas(parts: Parts) -> QuotaLedger:
    """Token buckets in Redis in cluster mode (quotas hold across gateways), else in memory."""
    if parts.shared_redis is None:
        return QuotaBuckets()
    return RedisQuotaBuckets(parts.shared_redis, parts.services.settings.redis_prefix)


def create_app(
    settings: Settings,
    *,
    upstream_transport: httpx2.AsyncBaseTransport | None = None,
    env: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
    role: Role = "embedded",
) -> BastionApp:
    """Build every service once and wire them; ``env`` (default: the process environment) is
    where upstream API keys are read from; ``clock`` is the token service's and the gateway's
    time (tests move it forward); ``role`` picks the background loops (see ``Role``)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    parts, config = _build(settings, upstream_transport, env, clock, role)
    services = parts.services
    gateway = Gateway(
        holder=services.holder,
        authenticator=parts.authenticator,
        proxy=parts.proxy,
        recorder=services.recorder,
        streams=services.streams,
        quotas=_quotas(parts),
        limits=GatewayLimits(
            max_body_bytes=config.gateway.max_body_bytes,
            max_header_bytes=config.gateway.max_header_bytes,
        ),
        public_url=parts.issuer_url,
        trusted_proxies=parts.proxies,
        risk=services.detection.risk,
        clock=clock,
    )
    return BastionApp(gateway, _control(parts, clock), services)
