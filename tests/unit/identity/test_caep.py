"""CAEP Security Event Tokens: their shape and signature, subjects, delivery, and the receiver's
verification (each refusal with its RFC 8935 error code)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from bastion.config.caep import CaepOptions, CaepReceiver, CaepTransmitter
from bastion.errors import SetRefused
from bastion.identity import jws
from bastion.identity.caep import (
    ACCOUNT_DISABLED,
    CREDENTIAL_CHANGE,
    SESSION_REVOKED,
    CaepEmitter,
    build_set,
    event_payload,
    subject_id,
    verify_set,
)
from bastion.identity.caep_receiver import SetVerifier, subject_principal
from bastion.identity.federation import JWKSCache
from bastion.identity.keys import IssuerKey, SigningKey, generate_private_jwk, public_jwk
from bastion.identity.replay import MemoryReplayCache
from bastion.store.locks import LockRow

pytestmark = pytest.mark.anyio
BASTION = "https://bastion.example"
IDP = "https://idp.example"
NOW = 1_800_000_000.0


def _options(*receivers: tuple[str, str]) -> CaepOptions:
    return CaepOptions(
        receivers=tuple(
            CaepReceiver(name=name, endpoint=url, audience=f"aud-{name}") for name, url in receivers
        ),
        retries=2,
    )


def _claims(token: str, key: IssuerKey) -> tuple[dict[str, Any], dict[str, Any]]:
    return verify_set(token, key.jwks())


def test_a_set_has_the_rfc_8417_shape_and_verifies_with_the_published_key() -> None:
    key = IssuerKey.generate()
    payload = event_payload(now=NOW, initiating_entity="admin", reason="left the company")
    token = build_set(
        key,
        issuer=BASTION,
        audience="idp",
        event_type=SESSION_REVOKED,
        subject=subject_id("victor"),
        payload=payload,
        now=NOW,
        txn="t1",
    )
    header, claims = _claims(token, key)
    assert header == {"alg": "EdDSA", "kid": key.kid, "typ": "secevent+jwt"}
    assert set(claims) == {"iss", "aud", "jti", "iat", "txn", "sub_id", "events"}
    assert (claims["iss"], claims["aud"], claims["iat"], claims["txn"]) == (
        BASTION,
        "idp",
        int(NOW),
        "t1",
    )
    assert claims["sub_id"] == {"format": "opaque", "id": "victor"}
    assert claims["events"] == {
        SESSION_REVOKED: {
            "event_timestamp": int(NOW),
            "initiating_entity": "admin",
            "reason_admin": {"en": "left the company"},
        }
    }
    other = IssuerKey.generate()
    with pytest.raises(ValueError, match="kid"):
        verify_set(token, other.jwks())
    impostor = {"keys": [{**other.jwks()["keys"][0], "kid": key.kid}]}
    with pytest.raises(ValueError, match="signature"):
        verify_set(token, impostor)
    _head, body, sig = token.split(".")
    untyped = jws.b64url_encode(json.dumps({**header, "typ": "JWT"}).encode())
    with pytest.raises(ValueError, match="secevent"):
        verify_set(f"{untyped}.{body}.{sig}", key.jwks())


def test_subject_formats() -> None:
    assert subject_id("v", format="iss_sub", issuer=BASTION) == {
        "format": "iss_sub",
        "iss": BASTION,
        "sub": "v",
    }
    with pytest.raises(ValueError, match="issuer"):
        subject_id("v", format="iss_sub")
    with pytest.raises(ValueError, match="initiating_entity"):
        event_payload(now=NOW, initiating_entity="robot", reason="x")  # type: ignore[arg-type]
    assert subject_principal({"format": "opaque", "id": "victor"}, IDP) == "victor"
    assert subject_principal({"format": "email", "email": "victor@acme.example"}, IDP) == "victor"
    assert subject_principal({"format": "iss_sub", "iss": IDP, "sub": "victor"}, IDP) == "victor"
    assert (
        subject_principal({"format": "iss_sub", "iss": "https://x", "sub": "victor"}, IDP) is None
    )
    complex_subject = {"format": "complex", "user": {"format": "opaque", "id": "victor"}}
    assert subject_principal(complex_subject, IDP) == "victor"
    assert subject_principal({"format": "email", "email": "no-at-sign"}, IDP) is None
    assert subject_principal({"format": "phone_number", "phone_number": "+1"}, IDP) is None
    assert subject_principal("victor", IDP) is None


def _lock(target_type: str, target: str, author: str = "admin") -> LockRow:
    return LockRow(
        id="lk_1",
        target_type=target_type,
        target=target,
        reason="stolen laptop",
        author=author,
        created_at=NOW,
        expires_at=None,
        released_at=None,
        released_by=None,
    )


async def test_a_principal_lock_emits_one_set_per_receiver_and_delivers_it() -> None:
    key = IssuerKey.generate()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202)

    opts = _options(("a", "https://a.example/set"), ("b", "https://b.example/set"))
    emitter = CaepEmitter(key, BASTION, lambda: opts, transport=httpx.MockTransport(handler))
    emitter.on_lock(_lock("principal", "victor"))
    emitter.on_lock(_lock("org", "acme"))  # not a principal: no SET
    emitter.on_lock(_lock("principal", "victor", author="caep:https://idp"))  # no echo
    assert [(e.receiver, e.status) for e in emitter.outbox()] == [
        ("a", "pending"),
        ("b", "pending"),
    ]
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        await emitter.deliver_due(client)
    assert [e.status for e in emitter.outbox()] == ["delivered", "delivered"]
    assert [r.headers["content-type"] for r in seen] == ["application/secevent+jwt"] * 2
    _, claims = _claims(seen[1].content.decode(), key)
    assert claims["aud"] == "aud-b"
    assert SESSION_REVOKED in claims["events"]
    assert claims["events"][SESSION_REVOKED]["reason_admin"] == {"en": "stolen laptop"}


async def test_a_revoked_device_key_is_a_credential_change() -> None:
    key = IssuerKey.generate()
    opts = _options(("a", "https://a.example/set"))
    emitter = CaepEmitter(key, BASTION, lambda: opts)
    emitter.on_key_revoked("victor", "jkt-abcdef", "lost")
    _, claims = _claims(emitter.outbox()[0].token, key)
    event = claims["events"][CREDENTIAL_CHANGE]
    assert (event["credential_type"], event["change_type"]) == ("app", "revoke")
    assert event["initiating_entity"] == "admin"


async def test_failed_deliveries_are_retried_then_given_up_and_a_400_is_final() -> None:
    clock = [NOW]
    statuses = iter([503, 500, 503, 400])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(statuses)
        return httpx.Response(status, json={"err": "invalid_audience"} if status == 400 else {})

    key = IssuerKey.generate()
    opts = _options(("a", "https://a.example/set"))
    emitter = CaepEmitter(key, BASTION, lambda: opts, clock=lambda: clock[0], backoff=1.0)
    emitter.session_revoked("victor", reason="x", initiator="system")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        for _ in range(3):
            await emitter.deliver_due(client)
            await emitter.deliver_due(client)  # not due yet: no extra attempt
            clock[0] += 10
        entry = emitter.outbox()[0]
        assert (entry.status, entry.attempts, entry.last_error) == ("failed", 3, "HTTP 503")
        emitter.session_revoked("victor", reason="y", initiator="system")
        await emitter.deliver_due(client)
    last = emitter.outbox()[1]
    assert (last.status, last.attempts, last.last_error) == (
        "failed",
        1,
        "refused: invalid_audience",
    )


async def test_no_receivers_means_no_sets() -> None:
    emitter = CaepEmitter(IssuerKey.generate(), BASTION, CaepOptions)
    assert emitter.session_revoked("victor", reason="x", initiator="admin") == 0
    assert emitter.outbox() == []


# --- the receiver's verification -------------------------------------------------------------


class IdP:
    def __init__(self, tmp: Path) -> None:
        self.key = SigningKey(generate_private_jwk("ES256"))
        jwk = {**public_jwk(self.key.public_jwk), "kid": self.key.kid}
        (tmp / "idp.jwks").write_text(json.dumps({"keys": [jwk]}))
        self.transmitter = CaepTransmitter(
            issuer=IDP,
            audience="bastion",
            jwks_file=str(tmp / "idp.jwks"),
            orgs=("acme",),
            algorithms=("ES256",),
        )

    def set(self, header: dict[str, Any] | None = None, **claims: Any) -> str:
        body: dict[str, Any] = {
            "iss": IDP,
            "aud": "bastion",
            "iat": int(NOW),
            "jti": "j-" + str(time.monotonic_ns()),
            "sub_id": {"format": "email", "email": "victor@acme.example"},
            "events": {ACCOUNT_DISABLED: {"reason_admin": {"en": "offboarded"}}},
        }
        body.update(claims)
        return self.key.sign({"typ": "secevent+jwt", "kid": self.key.kid, **(header or {})}, body)


SNAPSHOT: Any = SimpleNamespace(
    principals={
        "victor": SimpleNamespace(name="victor", org="acme"),
        "alice": SimpleNamespace(name="alice", org="lab"),
    }
)


@pytest.fixture
def idp(tmp_path: Path) -> IdP:
    return IdP(tmp_path)


@pytest.fixture
def verifier() -> SetVerifier:
    return SetVerifier(JWKSCache(), MemoryReplayCache(100))


async def test_a_valid_set_names_the_principal_and_its_events(
    idp: IdP, verifier: SetVerifier
) -> None:
    verified = await verifier.verify(idp.set(), idp.transmitter, SNAPSHOT, NOW)
    assert (verified.principal, verified.events) == ("victor", (ACCOUNT_DISABLED,))
    legacy = idp.set(
        sub_id=None,
        events={SESSION_REVOKED: {"subject": {"format": "opaque", "id": "victor"}}},
    )
    assert (await verifier.verify(legacy, idp.transmitter, SNAPSHOT, NOW)).events == (
        SESSION_REVOKED,
    )


def _hs256(idp: IdP) -> str:
    _head, body, sig = idp.set().split(".")
    header = jws.b64url_encode(b'{"alg":"HS256","typ":"secevent+jwt"}')
    return f"{header}.{body}.{sig}"


def _forged(idp: IdP) -> str:
    other = SigningKey(generate_private_jwk("ES256"))
    return other.sign({"typ": "secevent+jwt", "kid": idp.key.kid}, {"iss": IDP, "aud": "bastion"})


REFUSALS: list[tuple[str, Any, str, str]] = [
    ("wrong typ", lambda i: i.set({"typ": "JWT"}), "invalid_request", "typ"),
    ("no typ", lambda i: i.set({"typ": None}), "invalid_request", "typ"),
    ("not a jwt", lambda i: "hello", "invalid_request", "not a signed JWT"),
    ("other issuer", lambda i: i.set(iss="https://evil.example"), "invalid_issuer", "issuer"),
    ("unknown key", lambda i: i.set({"kid": "nope"}), "invalid_key", "unknown key"),
    ("alg not allowed", lambda i: _hs256(i), "invalid_key", "algorithm"),
    ("bad signature", _forged, "authentication_failed", "signature"),
    ("wrong aud", lambda i: i.set(aud="someone-else"), "invalid_audience", "aud"),
    ("old", lambda i: i.set(iat=int(NOW) - 3600), "invalid_request", "too old"),
    ("future", lambda i: i.set(iat=int(NOW) + 3600), "invalid_request", "future"),
    ("no jti", lambda i: i.set(jti=None), "invalid_request", "jti"),
    ("has exp", lambda i: i.set(exp=int(NOW) + 60), "invalid_request", "exp"),
    ("no events", lambda i: i.set(events={}), "invalid_request", "events"),
    ("unhandled event", lambda i: i.set(events={"urn:x": {}}), "invalid_request", "no event"),
    (
        "unknown subject",
        lambda i: i.set(sub_id={"format": "opaque", "id": "mallory"}),
        "invalid_request",
        "subject",
    ),
    (
        "subject of another org",
        lambda i: i.set(sub_id={"format": "opaque", "id": "alice"}),
        "invalid_request",
        "subject",
    ),
]


@pytest.mark.parametrize(("case", "make", "err", "words"), REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_bad_sets_are_refused_with_the_specific_error(
    idp: IdP, verifier: SetVerifier, case: str, make: Any, err: str, words: str
) -> None:
    with pytest.raises(SetRefused, match=words) as refused:
        await verifier.verify(make(idp), idp.transmitter, SNAPSHOT, NOW)
    assert refused.value.code == err


async def test_a_replayed_jti_is_refused(idp: IdP, verifier: SetVerifier) -> None:
    token = idp.set(jti="once")
    await verifier.verify(token, idp.transmitter, SNAPSHOT, NOW)
    with pytest.raises(SetRefused, match="already received") as refused:
        await verifier.verify(token, idp.transmitter, SNAPSHOT, NOW + 1)
    assert refused.value.code == "invalid_request"


def test_a_set_is_a_jws_without_exp() -> None:
    token = build_set(
        IssuerKey.generate(),
        issuer=BASTION,
        audience="a",
        event_type=SESSION_REVOKED,
        subject=subject_id("v"),
        payload={},
        now=NOW,
        txn="t",
    )
    assert "exp" not in jws.json_object(jws.parse(token).payload)
