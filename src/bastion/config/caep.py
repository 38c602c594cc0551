"""``caep`` in bastion.yaml: where Bastion pushes its revocation signals (OpenID CAEP Security
Event Tokens, RFC 8417/8935) and which identity provider may send it CAEP / RISC events.

The transmitter is configured like a federation issuer (its ``iss``, the ``aud`` its SETs carry,
its keys by JWKS URI or file, allowed algorithms, the maximum SET age) and, like one, may only act
on principals of the orgs it lists.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

from .federation import ExternalIssuer, Url


class CaepReceiver(BaseModel):
    """A system that wants Bastion's SETs: pushed to ``endpoint`` with ``aud`` = ``audience``."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    name: Annotated[
        StrictStr, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    ]
    endpoint: Url  # https (http only on loopback)
    audience: Annotated[StrictStr, Field(min_length=1, max_length=200)]


class CaepTransmitter(ExternalIssuer):
    """The identity provider whose SETs ``POST /caep/events`` accepts (``principal_claim`` and
    ``mfa_amr`` are unused here; ``max_token_age_seconds`` bounds a SET's ``iat``)."""

    session_revoked_lock_seconds: Annotated[StrictInt, Field(ge=60, le=30 * 86_400)] = 3600

    @model_validator(mode="after")
    def _no_console(self) -> CaepTransmitter:
        if self.console is not None:
            raise ValueError("console: sign-in belongs to a federation issuer, not the transmitter")
        return self


class CaepOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    receivers: tuple[CaepReceiver, ...] = ()
    transmitter: CaepTransmitter | None = None
    retries: Annotated[StrictInt, Field(ge=0, le=10)] = 3
