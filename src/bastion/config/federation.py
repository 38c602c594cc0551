"""Federation: the external OpenID Connect issuers whose id tokens Bastion exchanges for its own
tokens (RFC 8693), and how their users map to Bastion principals.

An issuer vouches only for principals of the orgs it lists: a vendor's identity provider can
never assert the lab's own staff. Its signing keys come from its JWKS, fetched over HTTPS (plain
HTTP only on loopback, for tests and local identity providers) or read from a file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    model_validator,
)

from .urls import endpoint_url

_CLAIM = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_MAX_URL = 2000
ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")


def _url(value: str) -> str:
    return endpoint_url(value)


def _claim(value: str) -> str:
    if not _CLAIM.fullmatch(value):
        raise ValueError(f"is not a claim name (got {value[:60]!r})")
    return value


def _algorithm(value: str) -> str:
    if value not in ALGORITHMS:
        raise ValueError(f"must be one of {', '.join(ALGORITHMS)} (got {value[:20]!r})")
    return value


def _org(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"is not an org name (got {value[:60]!r})")
    return value


Url = Annotated[StrictStr, AfterValidator(_url)]
Claim = Annotated[StrictStr, AfterValidator(_claim)]
# RFC 6749 §3.3 scope-token characters; ``openid`` is always asked for, so it is not listed.
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,64}")
_CLIENT_ID = re.compile(r"[\x21-\x7e]{1,200}")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")


def _scope(value: str) -> str:
    if not _SCOPE.fullmatch(value):
        raise ValueError(f"is not an OAuth scope token (got {value[:60]!r})")
    if value == "openid":
        raise ValueError("openid is always requested; list only the extra scopes")
    return value


def _client_id(value: str) -> str:
    if not _CLIENT_ID.fullmatch(value):
        raise ValueError("must be 1 to 200 printable ASCII characters without spaces")
    return value


def _env_name(value: str) -> str:
    # Never echo the value: the usual mistake here is pasting the secret itself.
    if not _ENV_NAME.fullmatch(value):
        raise ValueError(
            "must be the NAME of an environment variable (capital letters, digits and '_', "
            "e.g. CORP_CONSOLE_SECRET) that holds the client secret, never the secret itself"
        )
    return value


class ConsoleSignIn(BaseModel):
    """``console`` of an issuer: people sign in to the web console with this provider
    (authorization code flow with PKCE, docs/console.md). Without ``client_secret_env`` Bastion
    is a public client (PKCE alone); with it, the secret is sent by HTTP Basic auth."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    authorization_endpoint: Url
    token_endpoint: Url
    client_id: Annotated[StrictStr, AfterValidator(_client_id)]  # also the id token's ``aud``
    client_secret_env: Annotated[StrictStr, AfterValidator(_env_name)] | None = None
    scopes: Annotated[
        tuple[Annotated[StrictStr, AfterValidator(_scope)], ...], Field(max_length=10)
    ] = ()


class ExternalIssuer(BaseModel):
    """One OpenID Connect provider whose id tokens ``/oauth/token`` accepts in exchange."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    issuer: Url  # the id token's ``iss``, exactly
    audience: Annotated[StrictStr, Field(min_length=1, max_length=200)]  # the ``aud`` it must hold
    jwks_uri: Url | None = None
    jwks_file: Annotated[StrictStr, Field(min_length=1, max_length=1000)] | None = None
    orgs: tuple[Annotated[StrictStr, AfterValidator(_org)], ...]  # who it may vouch for
    principal_claim: Claim = "sub"  # the claim whose value is the Bastion principal's name
    # ``amr`` values that mean the user passed multi-factor authentication at the provider.
    mfa_amr: tuple[Claim, ...] = ("mfa", "otp", "hwk", "swk")
    algorithms: tuple[Annotated[StrictStr, AfterValidator(_algorithm)], ...] = ("RS256", "ES256")
    max_token_age_seconds: Annotated[StrictInt, Field(ge=30, le=86_400)] = 600
    console: ConsoleSignIn | None = None  # sign-in to the web console (internal orgs only)

    @model_validator(mode="after")
    def _one_key_source(self) -> ExternalIssuer:
        if (self.jwks_uri is None) == (self.jwks_file is None):
            raise ValueError("give exactly one of jwks_uri and jwks_file")
        if not self.orgs:
            raise ValueError("orgs: list the orgs whose principals this issuer may vouch for")
        if not self.algorithms:
            raise ValueError("algorithms: list at least one signing algorithm")
        return self


class Federation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    issuers: Mapping[Annotated[StrictStr, AfterValidator(_org)], ExternalIssuer] = Field(
        default_factory=dict
    )
