"""An issuer's ``console`` section (sign-in to the web console with the provider): each mistake
is refused with a message that names it, never repeating a URL or a secret; only an issuer that
vouches for an internal org may sign people in to the console."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bastion.config.caep import CaepTransmitter
from bastion.config.federation import ExternalIssuer
from bastion.config.models import BastionConfig

CONSOLE: dict[str, Any] = {
    "authorization_endpoint": "https://login.example/authorize",
    "token_endpoint": "https://login.example/token",
    "client_id": "bastion-console",
}
ISSUER: dict[str, Any] = {
    "issuer": "https://login.example",
    "audience": "bastion",
    "jwks_uri": "https://login.example/jwks",
    "orgs": ["lab"],
    "console": CONSOLE,
}


def test_a_console_section_is_accepted() -> None:
    issuer = ExternalIssuer.model_validate(
        {**ISSUER, "console": {**CONSOLE, "client_secret_env": "CORP_SECRET", "scopes": ["email"]}}
    )
    assert issuer.console is not None
    assert issuer.console.client_secret_env == "CORP_SECRET"
    assert issuer.console.scopes == ("email",)
    assert ExternalIssuer.model_validate({**ISSUER, "console": None}).console is None


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"authorization_endpoint": "http://login.example/a"}, "must start with https://"),
        ({"token_endpoint": "https://u:secret@login.example/t"}, "must not contain credentials"),
        ({"token_endpoint": "https://login.example/t?x=1"}, "must not have a query"),
        ({"authorization_endpoint": "https:///a"}, "must name a host"),
        ({"client_id": ""}, "1 to 200 printable ASCII"),
        ({"client_id": "has space"}, "1 to 200 printable ASCII"),
        ({"client_id": 7}, "valid string"),
        ({"client_secret_env": "s3cr3t-value-pasted"}, "NAME of an environment variable"),
        ({"scopes": ["openid"]}, "openid is always requested"),
        ({"scopes": ['bad"scope']}, "is not an OAuth scope token"),
        ({"scopes": [f"s{n}" for n in range(11)]}, "at most 10"),
        ({"surprise": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_console_sections_are_refused(change: dict[str, Any], words: str) -> None:
    without = {k: v for k, v in CONSOLE.items() if k not in change}
    with pytest.raises(ValidationError) as refused:
        ExternalIssuer.model_validate({**ISSUER, "console": {**without, **change}})
    assert words in str(refused.value)
    assert "s3cr3t" not in str(refused.value)  # never the value
    assert "u:secret" not in str(refused.value)


@pytest.mark.parametrize("missing", ["authorization_endpoint", "token_endpoint", "client_id"])
def test_the_endpoints_and_client_id_are_required(missing: str) -> None:
    console = {k: v for k, v in CONSOLE.items() if k != missing}
    with pytest.raises(ValidationError) as refused:
        ExternalIssuer.model_validate({**ISSUER, "console": console})
    assert missing in str(refused.value)


def config(issuers: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "orgs": {
            "lab": {"kind": "internal"},
            "acme": {
                "kind": "vendor",
                "sponsor": "alice",
                "contract": {"start": "2026-01-01T00:00:00Z", "end": "2099-01-01T00:00:00Z"},
            },
        },
        "principals": {"alice": {"kind": "user", "org": "lab"}},
        "federation": {"issuers": issuers},
    }


def test_only_an_issuer_for_an_internal_org_signs_in_to_the_console() -> None:
    with pytest.raises(ValidationError) as refused:
        BastionConfig.model_validate(config({"acme-sso": {**ISSUER, "orgs": ["acme"]}}))
    assert "console sign-in is for internal users only" in str(refused.value)
    mixed = {**ISSUER, "orgs": ["lab", "acme"]}  # vendors of it still get no console (Cedar)
    assert BastionConfig.model_validate(config({"corp": mixed})).federation.issuers
    plain = {k: v for k, v in ISSUER.items() if k != "console"}
    vendor_only = {**plain, "orgs": ["acme"]}  # token exchange only: fine
    assert BastionConfig.model_validate(config({"acme-sso": vendor_only})).federation.issuers


def test_callback_is_not_a_console_issuer_name() -> None:
    with pytest.raises(ValidationError) as refused:
        BastionConfig.model_validate(config({"callback": ISSUER}))
    assert "cannot be named 'callback'" in str(refused.value)


def test_the_caep_transmitter_has_no_console() -> None:
    with pytest.raises(ValidationError) as refused:
        CaepTransmitter.model_validate(ISSUER)
    assert "sign-in belongs to a federation issuer" in str(refused.value)
