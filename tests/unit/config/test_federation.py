"""The federation section: each mistake is refused with a message that names it (and never
repeats the URL), and an issuer may only vouch for declared orgs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bastion.config.federation import ExternalIssuer
from bastion.config.models import BastionConfig
from bastion.config.urls import endpoint_url

GOOD: dict[str, Any] = {
    "issuer": "https://login.example",
    "audience": "bastion",
    "jwks_uri": "https://login.example/jwks",
    "orgs": ["lab"],
}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"issuer": "http://login.example"}, "must start with https://"),
        ({"issuer": "https://u:secret@login.example"}, "must not contain credentials"),
        ({"jwks_uri": "https://login.example/jwks?k=1"}, "must not have a query"),
        ({"jwks_uri": "https://login.example/jwks#x"}, "must not have a fragment"),
        ({"jwks_uri": "https:///jwks"}, "must name a host"),
        ({"jwks_file": "/etc/jwks.json"}, "exactly one of jwks_uri and jwks_file"),
        ({"jwks_uri": None}, "exactly one of jwks_uri and jwks_file"),
        ({"orgs": []}, "orgs"),
        ({"algorithms": ["HS256"]}, "must be one of"),
        ({"algorithms": []}, "at least one signing algorithm"),
        ({"principal_claim": "not a claim"}, "is not a claim name"),
        ({"max_token_age_seconds": 5}, "greater than or equal to 30"),
        ({"surprise": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_issuers_are_refused(change: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ExternalIssuer.model_validate({**GOOD, **change})
    assert words in str(refused.value)
    assert "secret" not in str(refused.value)


def test_http_is_accepted_on_loopback_only() -> None:
    assert endpoint_url("http://127.0.0.1:8080/jwks") == "http://127.0.0.1:8080/jwks"
    assert endpoint_url("http://[::1]/jwks") == "http://[::1]/jwks"
    assert endpoint_url("http://localhost/jwks") == "http://localhost/jwks"
    with pytest.raises(ValueError, match="https://"):
        endpoint_url("http://10.0.0.1/jwks")
    assert endpoint_url("https://hooks.example/x?token=1", allow_query=True)


def config(**federation: Any) -> dict[str, Any]:
    return {"version": 1, "orgs": {"lab": {"kind": "internal"}}, "federation": federation}


def test_an_issuer_may_only_vouch_for_declared_orgs_and_issuers_are_unique() -> None:
    with pytest.raises(ValidationError) as refused:
        BastionConfig.model_validate(config(issuers={"corp": {**GOOD, "orgs": ["ghost"]}}))
    assert "unknown org 'ghost'" in str(refused.value)
    with pytest.raises(ValidationError) as refused:
        BastionConfig.model_validate(config(issuers={"a": GOOD, "b": GOOD}))
    assert "issuer URL already used by 'a'" in str(refused.value)
    assert BastionConfig.model_validate(config(issuers={"corp": GOOD})).federation.issuers
