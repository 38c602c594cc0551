"""The assertion Bastion signs onto each forwarded request, and the config key that names its
audience: what the claims say, that they cover the bytes actually sent, and bad config input."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import httpx2
import pytest

from bastion.config import parse_config
from bastion.errors import ConfigError
from bastion.gateway.assertion import TYP, UpstreamAssertions
from bastion.gateway.proxy import UpstreamProxy
from bastion.identity import jws
from bastion.identity.keys import IssuerKey
from bastion.policy.snapshot import ModelRoute

pytestmark = pytest.mark.anyio
ROUTE = ModelRoute(
    name="demo-chat",
    compartment="general",
    upstream="example-openai",
    upstream_model="example-gpt",
    api="openai",
    base_url="http://model.test/base/v1",
    connect_timeout=5,
    read_timeout=60,
)


def decode(token: str, key: IssuerKey) -> tuple[dict[str, object], dict[str, object]]:
    parts = jws.parse(token)
    assert jws.verify(key.verify_key, "EdDSA", parts.signing_input, parts.signature)
    return parts.header, jws.json_object(parts.payload)


def test_the_claims_bind_issuer_audience_time_request_and_body() -> None:
    key = IssuerKey.generate()
    signer = UpstreamAssertions(key, "https://bastion.test", clock=lambda: 1000.7)
    token = signer.sign(ROUTE, "POST", "/base/v1/x", b"body", subject="alice", event_id="ev")
    header, claims = decode(token, key)
    assert header == {"alg": "EdDSA", "typ": TYP, "kid": key.kid}
    digest = jws.b64url_encode(hashlib.sha256(b"body").digest())
    jti = claims.pop("jti")
    assert isinstance(jti, str)
    assert len(jti) >= 20
    assert claims == {
        "iss": "https://bastion.test",
        "aud": "http://model.test/base/v1",
        "iat": 1000,
        "exp": 1060,
        "htm": "POST",
        "htu": "/base/v1/x",
        "bsh": digest,
        "sub": "alice",
        "txn": "ev",
    }
    again = signer.sign(ROUTE, "POST", "/base/v1/x", b"body")
    assert decode(again, key)[1]["jti"] != jti  # each request its own, single-use assertion


def test_a_configured_audience_wins_over_the_base_url() -> None:
    key = IssuerKey.generate()
    route = ModelRoute(**{**{f: getattr(ROUTE, f) for f in ROUTE.__slots__}, "audience": "urn:m"})
    token = UpstreamAssertions(key, "https://bastion.test").sign(route, "POST", "/x", b"")
    assert decode(token, key)[1]["aud"] == "urn:m"


async def test_the_proxy_signs_the_path_and_bytes_it_sends() -> None:
    key = IssuerKey.generate()
    sent: list[httpx2.Request] = []

    def upstream(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(200, json={})

    proxy = UpstreamProxy(
        httpx2.MockTransport(upstream), UpstreamAssertions(key, "https://bastion.test")
    )
    caller_headers = [(b"bastion-assertion", b"caller.forged.one"), (b"content-type", b"x/y")]
    body = b'{"model":"example-gpt"}'
    response = await proxy.open(ROUTE, "POST", "/v1/chat/completions", caller_headers, body)
    await response.aclose()
    await proxy.aclose()
    [request] = sent
    assert len(request.headers.get_list("bastion-assertion")) == 1  # the caller's never passes
    _, claims = decode(request.headers["bastion-assertion"], key)
    assert claims["htu"] == request.url.raw_path.decode() == "/base/v1/chat/completions"
    assert claims["bsh"] == jws.b64url_encode(hashlib.sha256(request.content).digest())


async def test_an_upstream_told_assertion_false_gets_none_and_no_principal_name() -> None:
    key = IssuerKey.generate()
    sent: list[httpx2.Request] = []

    def upstream(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(200, json={})

    proxy = UpstreamProxy(
        httpx2.MockTransport(upstream), UpstreamAssertions(key, "https://bastion.test")
    )
    third_party = replace(ROUTE, assertion=False)
    forged = [(b"bastion-assertion", b"caller.forged.one")]
    response = await proxy.open(
        third_party, "POST", "/v1/chat/completions", forged, b"{}", subject="alice"
    )
    await response.aclose()
    await proxy.aclose()
    [request] = sent
    assert "bastion-assertion" not in request.headers  # neither Bastion's nor the caller's
    assert b"alice" not in request.content


CONFIG = """\
version: 1
upstreams:
  local:
    base_url: http://127.0.0.1:8081/v1
    api: openai
{extra}
compartments:
  general: {{level: internal}}
orgs:
  lab: {{kind: internal}}
models:
  - {{name: demo, upstream: local, compartment: general}}
"""


def test_assertion_audience_is_read_from_the_upstream() -> None:
    config = parse_config(CONFIG.format(extra="    assertion_audience: urn:model:demo"))
    assert config.upstreams["local"].assertion_audience == "urn:model:demo"
    assert parse_config(CONFIG.format(extra="")).upstreams["local"].assertion_audience is None


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ('    assertion_audience: ""', "printable characters without spaces"),
        ("    assertion_audience: a b", "printable characters without spaces"),
        ('    assertion_audience: "a\\tb"', "printable characters without spaces"),
        ("    assertion_audience: 12", "string"),
        ("    forward_headers: [Bastion-Assertion]", "never forwarded"),
    ],
)
def test_bad_assertion_settings_are_named_errors(extra: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(CONFIG.format(extra=extra))
    assert len(caught.value.problems) == 1
    assert problem in caught.value.problems[0]
    assert "bastion.yaml:6: upstreams.local." in caught.value.problems[0]
