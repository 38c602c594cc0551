"""CAEP / RISC end to end: Bastion's SETs reach a real receiver on loopback and verify against
Bastion's published keys; the identity provider's SETs posted to ``/caep/events`` lock the
principal (next request refused), and bad ones are refused with the RFC 8935 error, changing
nothing. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

from bastion.identity.caep import ACCOUNT_DISABLED, CREDENTIAL_CHANGE, SESSION_REVOKED, verify_set
from bastion.identity.keys import SigningKey, generate_private_jwk, public_jwk, thumbprint
from bastion.store import events as event_rows
from bastion.testing import Harness, running
from tests.conftest import CONFIG
from tests.waiting import eventually

pytestmark = pytest.mark.anyio
IDP = "https://idp.example"
CHAT = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}


class Receiver:
    """A real HTTP SET receiver on 127.0.0.1 that verifies each SET with Bastion's JWKS."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {}
        self.received: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                try:
                    assert self.headers["content-type"] == "application/secevent+jwt"
                    _header, claims = verify_set(body.decode(), outer.jwks)
                except (AssertionError, ValueError):
                    self.send_response(400)
                    self.end_headers()
                    return
                outer.received.append(claims)
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/caep"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )  # shutdown() waits up to one poll_interval (0.5 s by default)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


@pytest.fixture
def idp_key(tmp_path: Path) -> SigningKey:
    key = SigningKey(generate_private_jwk("ES256"))
    jwks = {"keys": [{**public_jwk(key.public_jwk), "kid": key.kid}]}
    (tmp_path / "idp.jwks").write_text(json.dumps(jwks))
    return key


def caep_config(tmp: Path, receiver_url: str) -> str:
    return (
        CONFIG
        + f"""\
response:
  caep:
    receivers:
      - {{name: idp, endpoint: "{receiver_url}", audience: https://idp.example/caep}}
    transmitter:
      issuer: {IDP}
      audience: https://bastion.test/caep
      jwks_file: {tmp / "idp.jwks"}
      orgs: [lab]
      algorithms: [ES256]
"""
    )


@pytest.fixture
async def bastion(
    tmp_path: Path,
    receiver: Receiver,
    idp_key: SigningKey,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
) -> AsyncIterator[Harness]:
    async with running(
        caep_config(tmp_path, receiver.url),
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        database_url=database_url,
    ) as harness:
        yield harness


def idp_set(key: SigningKey, typ: str = "secevent+jwt", **claims: Any) -> str:
    body: dict[str, Any] = {
        "iss": IDP,
        "aud": "https://bastion.test/caep",
        "iat": int(time.time()),
        "jti": f"j-{time.monotonic_ns()}",
        "sub_id": {"format": "email", "email": "alice@lab.example"},
        "events": {ACCOUNT_DISABLED: {"reason_admin": {"en": "offboarded"}}},
    }
    body.update(claims)
    return key.sign({"typ": typ, "kid": key.kid}, body)


async def post_set(harness: Harness, token: str | bytes) -> tuple[int, Any]:
    async with harness.client() as client:
        response = await client.post(
            "/caep/events",
            content=token,
            headers={"content-type": "application/secevent+jwt"},
        )
    return response.status_code, response.json() if response.content else None


async def events(harness: Harness, prefix: str) -> list[dict[str, Any]]:
    await harness.services.recorder.flush()
    with harness.services.store.read() as conn:
        rows = event_rows.last(conn, 5000, prefix)
    return [orjson.loads(row.body) | {"name": row.name} for row in rows]


async def test_a_lock_pushes_a_session_revoked_set_that_verifies(
    bastion: Harness, receiver: Receiver
) -> None:
    async with bastion.client() as client:
        receiver.jwks = (await client.get("/.well-known/jwks.json")).json()
    bastion.services.locks.lock("principal", "alice", reason="laptop stolen", author="admin:bob")
    await eventually(lambda: receiver.received, what="the SET")
    [claims] = receiver.received
    assert claims["iss"] == "http://bastion.test"
    assert claims["aud"] == "https://idp.example/caep"
    assert claims["sub_id"] == {"format": "opaque", "id": "alice"}
    event = claims["events"][SESSION_REVOKED]
    assert (event["initiating_entity"], event["reason_admin"]) == ("admin", {"en": "laptop stolen"})
    # marked delivered once the emitter has read the receiver's 202 (after the receiver kept it)
    await eventually(lambda: bastion.services.caep.outbox()[0].status == "delivered")
    [entry] = bastion.services.caep.outbox()
    assert (entry.status, entry.attempts) == ("delivered", 1)


async def test_an_idp_account_disabled_set_locks_the_principal(
    bastion: Harness, idp_key: SigningKey
) -> None:
    async with bastion.client(await bastion.enroll("alice")) as client:
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert await post_set(bastion, idp_set(idp_key)) == (202, None)
        refused = await client.post("/v1/chat/completions", json=CHAT)
    assert refused.status_code == 403
    assert refused.json()["error"]["reasons"] == ["locked_principal"]
    [lock] = bastion.services.locks.active()
    assert (lock.target, lock.expires_at) == ("alice", None)
    assert lock.reason == f"RISC account-disabled from {IDP}"
    [received] = await events(bastion, "caep.received")
    assert received["target"] == "alice"
    assert received["detail"]["events"] == [ACCOUNT_DISABLED]
    assert bastion.services.caep.outbox() == []  # a lock the IdP caused is not echoed back


async def test_a_session_revoked_set_locks_for_an_hour(
    bastion: Harness, idp_key: SigningKey
) -> None:
    token = idp_set(idp_key, events={SESSION_REVOKED: {"event_timestamp": int(time.time())}})
    assert await post_set(bastion, token) == (202, None)
    [lock] = bastion.services.locks.active()
    assert lock.expires_at is not None
    assert lock.expires_at - lock.created_at == 3600


def _forged_with_kid(key: SigningKey) -> str:
    """The IdP's header and claims with another key's signature."""
    head, payload, _sig = idp_set(key).split(".")
    other = SigningKey(generate_private_jwk("ES256"))
    return f"{head}.{payload}.{other.sign({}, {}).split('.')[2]}"


BAD: list[tuple[str, Any, str, str]] = [  # case, make the SET, err, words of description
    ("bad signature", _forged_with_kid, "authentication_failed", "signature"),
    ("wrong aud", lambda key: idp_set(key, aud="https://other.example"), "invalid_audience", "aud"),
    (
        "unknown subject",
        lambda key: idp_set(key, sub_id={"format": "opaque", "id": "zed"}),
        "invalid_request",
        "subject",
    ),
    (
        "vendor subject",
        lambda key: idp_set(key, sub_id={"format": "opaque", "id": "victor"}),
        "invalid_request",
        "subject",
    ),
    ("wrong typ", lambda key: idp_set(key, typ="JWT"), "invalid_request", "typ"),
    ("oversized", lambda key: idp_set(key, pad="x" * 70_000), "invalid_request", "64 KiB"),
    (
        "other issuer",
        lambda key: idp_set(key, iss="https://evil.example"),
        "invalid_issuer",
        "issuer",
    ),
]


@pytest.mark.parametrize(("case", "make", "err", "words"), BAD, ids=[b[0] for b in BAD])
async def test_bad_sets_are_refused_and_change_nothing(
    bastion: Harness, idp_key: SigningKey, case: str, make: Any, err: str, words: str
) -> None:
    epoch = bastion.services.holder.current.epoch
    status, body = await post_set(bastion, make(idp_key))
    assert (status, body["err"]) == (400, err)
    assert words in body["description"]
    assert bastion.services.locks.active() == []
    assert bastion.services.holder.current.epoch == epoch
    [refused] = await events(bastion, "caep.refused")
    assert refused["detail"]["err"] == err


async def test_a_replayed_set_is_refused(bastion: Harness, idp_key: SigningKey) -> None:
    token = idp_set(idp_key)
    assert await post_set(bastion, token) == (202, None)
    bastion.services.locks.unlock("principal", "alice", author="admin")
    status, body = await post_set(bastion, token)
    assert (status, body["err"]) == (400, "invalid_request")
    assert "already received" in body["description"]
    assert bastion.services.locks.active() == []


async def test_a_set_must_be_sent_as_secevent_jwt(bastion: Harness, idp_key: SigningKey) -> None:
    async with bastion.client() as client:
        response = await client.post("/caep/events", json={"set": idp_set(idp_key)})
    assert response.status_code == 400
    assert response.json()["err"] == "invalid_request"
    assert bastion.services.locks.active() == []


async def test_a_revoked_device_key_pushes_a_credential_change_set(
    bastion: Harness, receiver: Receiver
) -> None:
    async with bastion.client() as client:
        receiver.jwks = (await client.get("/.well-known/jwks.json")).json()
    profile = await bastion.enroll("alice")
    jkt = thumbprint(public_jwk(profile.private_jwk))
    bastion.services.principals.revoke_key(jkt, author="admin:bob", reason="lost laptop")
    await eventually(lambda: receiver.received, what="the SET")
    [claims] = receiver.received
    event = claims["events"][CREDENTIAL_CHANGE]
    assert (event["change_type"], event["credential_type"]) == ("revoke", "app")
    assert claims["sub_id"] == {"format": "opaque", "id": "alice"}


async def test_without_a_transmitter_every_set_is_refused(
    harness: Harness, idp_key: SigningKey
) -> None:
    status, body = await post_set(harness, idp_set(idp_key))
    assert (status, body["err"]) == (400, "invalid_issuer")
    assert harness.services.locks.active() == []
    [refused] = await events(harness, "caep.refused")
    assert refused["detail"]["err"] == "invalid_issuer"


async def test_unreadable_transmitter_keys_ask_for_a_retry(
    bastion: Harness, idp_key: SigningKey, tmp_path: Path
) -> None:
    (tmp_path / "idp.jwks").unlink()
    status, body = await post_set(bastion, idp_set(idp_key))
    assert (status, body) == (503, {"err": "temporarily_unavailable"})
    assert bastion.services.locks.active() == []


async def test_a_removal_in_an_access_review_pushes_a_session_revoked_set(
    bastion: Harness, receiver: Receiver
) -> None:
    """Review removals lock through the same lock service as everything else, so they signal too."""
    services = bastion.services
    config = services.holder.require().config
    await services.sweeper.once()  # opens acme's review
    async with bastion.client() as client:
        receiver.jwks = (await client.get("/.well-known/jwks.json")).json()
    (review,) = [r for r in services.reviews.reviews(config, "alice") if r.org == "acme"]
    services.reviews.decide(
        config, review.id, "victor", "alice", decision="remove", reason="left the engagement"
    )
    await eventually(lambda: receiver.received, what="the SET")
    [claims] = receiver.received
    assert claims["sub_id"] == {"format": "opaque", "id": "victor"}
    assert SESSION_REVOKED in claims["events"]
