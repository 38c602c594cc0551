"""The gateway hot path, in plain ASGI: identify → gather facts → decide → forward or deny.

No database call happens here. Everything a decision needs comes from the current snapshot (taken
once per request); the audit event goes to the recorder's queue. Each request ends in exactly one
``request.decided`` event, whatever happened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import anyio
import httpx2
import orjson
from starlette.types import Message, Receive, Scope, Send

from bastion.audit.recorder import AuditRecorder, AuditUnavailable
from bastion.config.models import Level
from bastion.detect.inline import FamilyTracker
from bastion.detect.risk import RiskBoard
from bastion.detect.signals import client_fingerprint
from bastion.errors import (
    AccessDenied,
    BadRequest,
    BastionError,
    BodyTooLarge,
    HeadersTooLarge,
    InvalidJSON,
    LockViewStale,
    MethodNotAllowed,
    NotFound,
    QuotaUnavailable,
    ReplayCacheUnavailable,
    Throttled,
    TooManyRequests,
    Unavailable,
    UnknownModel,
    UpstreamError,
)
from bastion.policy.authorize import check_locks, throttle_locks
from bastion.policy.decide import decide
from bastion.policy.decision import Decision, Reason
from bastion.policy.holder import SnapshotHolder
from bastion.policy.lockview import check_lock_view
from bastion.policy.snapshot import ModelRoute, Snapshot
from bastion.policy.stepup import decide_with_step_up, step_up_error

from .auth import Authenticator, caller_of, request_url, with_risk
from .exchange import Exchange, scan_headers
from .net import Network, source_ip
from .proxy import UpstreamProxy, response_headers
from .quotas import QuotaLedger, ThrottleHold
from .responses import JSON_HEADERS, error_body, send_error, send_json
from .streams import OpenStream, StreamRegistry
from .usage import UsageChunkFilter, UsageMeter

log = logging.getLogger("bastion.gateway")
# Redis down: DPoP proofs and quotas that cannot be checked in Redis refuse from this level up
# (and in compartments with lock_view.strict); lower ones fall back to this process's own.
STRICT_RANK = Level.RESTRICTED.rank

# (method, path) -> API style the route speaks; None for the model list.
ROUTES: dict[tuple[str, str], str | None] = {
    ("POST", "/v1/chat/completions"): "openai",
    ("POST", "/v1/completions"): "openai",
    ("POST", "/v1/embeddings"): "openai",
    ("POST", "/v1/messages"): "anthropic",
    ("GET", "/v1/models"): None,
}
PATHS = frozenset(path for _, path in ROUTES)


@dataclass(frozen=True, slots=True)
class GatewayLimits:
    max_body_bytes: int = 4 * 1024 * 1024
    max_header_bytes: int = 16 * 1024


class Gateway:
    def __init__(
        self,
        *,
        holder: SnapshotHolder,
        authenticator: Authenticator,
        proxy: UpstreamProxy,
        recorder: AuditRecorder,
        streams: StreamRegistry,
        quotas: QuotaLedger,
        limits: GatewayLimits,
        public_url: str = "",
        trusted_proxies: tuple[Network, ...] = (),
        risk: RiskBoard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._holder = holder
        self._risk = risk
        self._families = FamilyTracker()
        self._auth = authenticator
        self._proxy = proxy
        self._recorder = recorder
        self._streams = streams
        self._quotas = quotas
        self._limits = limits
        self._public_url = public_url
        self._proxies = trusted_proxies
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        peer = scope.get("client") or ("", 0)
        exchange = Exchange(
            route=f"{method} {path}",
            source_ip=peer[0],
            started=time.perf_counter(),
            at=self._clock(),
        )
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                exchange.status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-bastion-event", exchange.event_id.encode()),
                ]
            await send(message)

        try:
            await self._handle(scope, receive, tracked_send, exchange, method, path)
        except BastionError as error:
            exchange.outcome = "denied" if error.status in (401, 403, 404, 429) else "error"
            exchange.error = error.code
            if not started:
                await send_error(tracked_send, error)
        except Exception:
            log.exception("unexpected gateway error on %s", exchange.route)
            exchange.outcome = "error"
            exchange.error = "internal_error"
            if not started:
                await send_error(tracked_send, BastionError("internal error"))
        finally:
            if not exchange.recorded:
                self._recorder.record(exchange.event())

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, exchange: Exchange, method: str, path: str
    ) -> None:
        if (method, path) not in ROUTES:
            if path in PATHS:
                raise MethodNotAllowed(f"method {method} is not allowed on {path}")
            raise NotFound(f"no such endpoint: {path[:100]}")
        api = ROUTES[(method, path)]
        headers = scan_headers(scope["headers"])
        if headers.size > self._limits.max_header_bytes:
            raise HeadersTooLarge("request headers are too large")
        exchange.source_ip = source_ip(exchange.source_ip, headers.forwarded_for, self._proxies)
        exchange.client = client_fingerprint(headers.user_agent)
        if (current := self._holder.current) is not None:
            exchange.origin = current.origin(exchange.source_ip)
        now = self._clock()
        url = request_url(
            self._public_url, scope.get("scheme", "http"), headers.host, scope.get("server"), path
        )
        claims, proof = await self._auth.authenticate_proof(
            authorization=headers.authorization,
            dpop=headers.dpop,
            method=method,
            url=url,
            now=now,
            local_fallback=True,  # Redis down: strict compartments refuse below
        )
        snapshot = self._holder.current
        if snapshot is None:
            exchange.decision = Decision.deny(Reason.NO_SNAPSHOT, 0)
            raise Unavailable("the gateway has no policy snapshot yet; refusing all requests")
        caller = with_risk(caller_of(snapshot, claims, exchange.source_ip), self._risk, now)
        if self._families.moved(caller.family, exchange.source_ip, now):
            caller = replace(caller, family_moved=True)
        exchange.caller = caller
        if api is None:
            await self._list_models(snapshot, exchange, send, now)
            return
        body = await self._read_body(receive, headers.content_length)
        route, payload = self._route(snapshot, body, api, exchange)
        controls = snapshot.config.compartments[route.compartment]
        strict = controls.level.rank >= STRICT_RANK or controls.lock_view.strict
        if proof.replay_local and strict:
            raise ReplayCacheUnavailable(
                f"compartment {route.compartment!r} needs the shared DPoP replay cache, which "
                "is unavailable; retry shortly with a new proof"
            )
        try:  # strict compartments: no call on a lock view that may be missing a lock
            age = self._holder.lock_view_age(time.monotonic())
            check_lock_view(snapshot, route.compartment, age)
        except LockViewStale:
            exchange.decision = Decision.deny(Reason.LOCK_VIEW_STALE, snapshot.epoch)
            raise
        exchange.content = snapshot.signals.classify(route.compartment, payload)
        self._decide(snapshot, exchange, route, api, now)
        await self._take_quotas(snapshot, exchange, route, strict, now)
        exchange.stream = payload.get("stream") is True
        if route.audit_required:  # durable before a single byte goes upstream
            await self._recorder.commit(exchange.authorized())
        await self._forward(scope, receive, send, exchange, route, payload, body)

    async def _take_quotas(
        self, snapshot: Snapshot, exchange: Exchange, route: ModelRoute, strict: bool, now: float
    ) -> None:
        """Throttle locks, then quotas (in Redis in cluster mode); a refusal is the decision."""
        caller = exchange.caller
        assert caller is not None
        try:
            await self._quotas.take(
                route.quotas,
                route.compartment,
                caller.principal,
                caller.org,
                [  # throttle locks first
                    ThrottleHold(lock.target, lock.id, lock.rate or 0.0)
                    for lock in throttle_locks(snapshot, caller, now)
                ],
                strict,
                now,
            )
        except Throttled as error:
            lock_id = (f"lock:{error.lock}",)
            exchange.decision = Decision.deny(Reason.THROTTLED, snapshot.epoch, lock_id)
            raise
        except TooManyRequests:
            exchange.decision = Decision.deny(Reason.QUOTA_EXCEEDED, snapshot.epoch)
            raise
        except QuotaUnavailable:
            exchange.decision = Decision.deny(Reason.QUOTA_UNAVAILABLE, snapshot.epoch)
            raise

    async def _read_body(self, receive: Receive, declared: int | None) -> bytes:
        limit = self._limits.max_body_bytes
        if declared is not None and declared > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body exceeds {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _route(
        self, snapshot: Snapshot, body: bytes, api: str, exchange: Exchange
    ) -> tuple[ModelRoute, dict[str, object]]:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InvalidJSON("request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise InvalidJSON("request body must be a JSON object")
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("request body needs a 'model' string")
        route = snapshot.models.get(model)
        if route is None:
            raise UnknownModel(f"unknown model {model[:100]!r}")
        exchange.model, exchange.compartment = route.name, route.compartment
        if route.api != api:
            raise BadRequest(
                f"model {route.name!r} speaks the {route.api} API; "
                f"call {'/v1/messages' if route.api == 'anthropic' else '/v1/chat/completions'}"
            )
        return route, payload

    def _decide(
        self,
        snapshot: Snapshot,
        exchange: Exchange,
        route: ModelRoute,
        api: str,
        now: float,
    ) -> None:
        assert exchange.caller is not None
        decision, stale_mfa = decide_with_step_up(
            snapshot, exchange.caller, route.name, route.compartment, exchange.source_ip, api, now
        )
        exchange.decision = decision
        if stale_mfa:
            raise step_up_error(snapshot, exchange.caller, route.name, route.compartment, now)
        if not decision.allowed:
            shown = decision.shown()  # the audit event keeps every reason
            raise AccessDenied(
                f"access to model {route.name!r} denied ({', '.join(shown)})", tuple(shown)
            )

    async def _list_models(
        self, snapshot: Snapshot, exchange: Exchange, send: Send, now: float
    ) -> None:
        caller = exchange.caller
        assert caller is not None
        locked = check_locks(snapshot, caller, None, now)
        if locked is not None:
            exchange.decision = locked
            if locked.reasons == (Reason.INSUFFICIENT_USER_AUTHENTICATION,):  # a step-up lock
                raise step_up_error(snapshot, caller, None, None, now)
            raise AccessDenied("access denied (" + ", ".join(locked.reasons) + ")", locked.reasons)
        visible = []
        for name in sorted(snapshot.models):
            route = snapshot.models[name]
            decision = decide(
                snapshot, caller, name, route.compartment, exchange.source_ip, "list", now
            )
            if decision.allowed:
                visible.append(name)
        exchange.decision = Decision(True, (Reason.GRANTED,), ("list",), snapshot.epoch)
        exchange.outcome = "completed"
        data = [
            {
                "id": name,
                "object": "model",
                "type": "model",
                "display_name": name,
                "created": 0,
                "created_at": "1970-01-01T00:00:00Z",
                "owned_by": "bastion",
            }
            for name in visible
        ]
        body = orjson.dumps(
            {
                "object": "list",
                "data": data,
                "has_more": False,
                "first_id": visible[0] if visible else None,
                "last_id": visible[-1] if visible else None,
            }
        )
        await send_json(send, 200, body, JSON_HEADERS)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        exchange: Exchange,
        route: ModelRoute,
        payload: dict[str, object],
        body: bytes,
    ) -> None:
        assert exchange.caller is not None
        rewrite: dict[str, object] = {}
        if route.upstream_model != route.name:
            rewrite["model"] = route.upstream_model
        if exchange.stream and route.api == "openai" and scope["path"] != "/v1/embeddings":
            options = payload.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage") is True):
                # metering must not depend on the caller asking for usage
                rewrite["stream_options"] = {
                    **(options if isinstance(options, dict) else {}),
                    "include_usage": True,
                }
                exchange.hide_usage = UsageChunkFilter()
        if rewrite:
            body = orjson.dumps({**payload, **rewrite})
        response = await self._proxy.open(
            route,
            "POST",
            scope["path"],
            scope["headers"],
            body,
            subject=exchange.caller.principal,
            event_id=exchange.event_id,
        )
        try:
            if response.status_code in (401, 403):
                raise UpstreamError(
                    f"upstream {route.upstream!r} refused Bastion's credentials "
                    f"(status {response.status_code})"
                )
            if response.status_code >= 500:
                raise UpstreamError(
                    f"upstream {route.upstream!r} failed (status {response.status_code})"
                )
            content_type = response.headers.get("content-type", "")
            event_stream = content_type.startswith("text/event-stream")
            exchange.meter = UsageMeter(route.api, event_stream)
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": response_headers(response),
                }
            )
            await self._pump(receive, send, exchange, route, response, event_stream)
        finally:
            await response.aclose()

    async def _pump(
        self,
        receive: Receive,
        send: Send,
        exchange: Exchange,
        route: ModelRoute,
        response: httpx2.Response,
        sse: bool,
    ) -> None:
        """Copy the upstream body to the caller chunk by chunk. A lock covering the caller cuts
        it (with a final error event); a caller who hangs up stops the upstream read too."""
        assert exchange.caller is not None
        assert exchange.meter is not None
        meter = exchange.meter
        hide = exchange.hide_usage if sse else None
        scope = anyio.CancelScope()
        stream = OpenStream(exchange.caller, route.compartment, scope)
        key = self._streams.open(stream)
        exchange.outcome = "completed"
        tail = held = b""  # audit-required: the last bytes wait until the record is durable
        watcher = asyncio.ensure_future(_watch_disconnect(receive, stream))
        try:
            with scope:
                async for chunk in self._proxy.chunks(response, route):
                    meter.feed(chunk)
                    out = hide.feed(chunk) if hide else chunk
                    if route.audit_required and out:
                        out, held = held, out
                    if out:
                        await send({"type": "http.response.body", "body": out, "more_body": True})
        except UpstreamError as error:
            exchange.outcome = "error"
            tail = _stream_error(error, sse)
        finally:
            watcher.cancel()
            self._streams.close(key)
        meter.finish()
        await self._quotas.settle(
            route.quotas,
            route.compartment,
            exchange.caller.principal,
            exchange.caller.org,
            (meter.tokens_in or 0) + (meter.tokens_out or 0),
            self._clock(),
        )
        if hide is not None:
            tail = hide.finish() + tail
        if stream.client_gone:
            exchange.outcome = "client_closed"
            return
        if stream.cut_reason is not None:
            exchange.outcome = "cut"
            if exchange.decision is not None:  # keep the allow, add why it was cut
                exchange.decision = replace(
                    exchange.decision, reasons=(*exchange.decision.reasons, stream.cut_reason)
                )
            tail = _stream_error(
                AccessDenied(f"stream ended: {stream.cut_reason}", (stream.cut_reason,)), sse
            )
        if route.audit_required:
            tail = await self._durable_end(exchange, held, tail, sse)
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _durable_end(self, exchange: Exchange, held: bytes, tail: bytes, sse: bool) -> bytes:
        """The response is not complete until its record is durable: the held-back last bytes
        (the SSE terminator, or the end of the JSON) go out only after the commit. If the log
        cannot record, a stream ends with an error event instead, and a plain body is left
        incomplete (the connection is closed), so the caller never sees a clean success."""
        try:
            await self._recorder.commit(exchange.event())
        except AuditUnavailable as error:
            exchange.outcome, exchange.error = "error", error.code
            if not sse:
                raise
            return _stream_error(error, sse)
        exchange.recorded = True
        return held + tail


async def _watch_disconnect(receive: Receive, stream: OpenStream) -> None:
    """The request body is read; the next message can only be the caller hanging up."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            stream.client_gone = True
            stream.scope.cancel()
            return


def _stream_error(error: BastionError, sse: bool) -> bytes:
    """A final SSE ``error`` event (both SDKs raise on it); nothing for a plain body."""
    if not sse:
        return b""
    return b"event: error\ndata: " + error_body(error) + b"\n\n"
