"""The ``response`` section of bastion.yaml: where Bastion sends signals out.

``response.webhooks`` lists the receivers of notifications (findings, ...). Each has a URL
(https, or http only on loopback), the NAME of the environment variable that holds its HMAC
secret (never the secret itself), a body format (``json``, or ``slack`` for a Slack incoming
webhook), the lowest severity it wants and the kinds of events it receives. A webhook URL is
treated as a secret (Slack's carry one in their path): errors never echo it.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr, model_validator

from .caep import CaepOptions
from .playbooks import Automatic
from .urls import endpoint_url

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
_MAX_URL = 2000
EVENT_KINDS = ("finding", "response")


def _url(value: str) -> str:
    return endpoint_url(value, allow_query=True)  # webhook URLs may carry their token there


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"is not a name (lowercase letters, digits, '.', '_', '-'), got {value[:40]!r}"
        )
    return value


def _env_name(value: str) -> str:
    # Never echo the value: the usual mistake here is pasting the secret itself.
    if not _ENV_NAME.fullmatch(value):
        raise ValueError(
            "must be the NAME of an environment variable (capital letters, digits and '_', "
            "e.g. BASTION_WEBHOOK_SECRET) that holds the secret, never the secret itself"
        )
    return value


def _kind(value: str) -> str:
    if value not in EVENT_KINDS:
        raise ValueError(
            f"is not an event kind (one of {', '.join(EVENT_KINDS)}), got {value[:40]!r}"
        )
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class Webhook(_Frozen):
    """One receiver of notifications; the body is signed with the secret in ``secret_env``."""

    name: Annotated[StrictStr, AfterValidator(_name)]
    url: Annotated[StrictStr, AfterValidator(_url)]
    secret_env: Annotated[StrictStr, AfterValidator(_env_name)]
    format: Literal["json", "slack"] = "json"
    min_severity: Literal["low", "medium", "high", "critical"] = "medium"
    events: tuple[Annotated[StrictStr, AfterValidator(_kind)], ...] = ("finding", "response")

    @model_validator(mode="after")
    def _some_events(self) -> Webhook:
        if not self.events:
            raise ValueError(f"webhook {self.name!r}: events must list at least one kind")
        return self


class Response(_Frozen):
    """Signals out (webhooks, CAEP) and automatic response (playbooks, their limits)."""

    webhooks: tuple[Webhook, ...] = ()
    # A playbooks file, relative to bastion.yaml; None: the built-in playbooks (docs/response.md).
    playbooks: StrictStr | None = Field(default=None, max_length=500)
    automatic: Automatic = Field(default_factory=Automatic)
    caep: CaepOptions = Field(default_factory=CaepOptions)  # CAEP / RISC SETs (config/caep.py)

    @model_validator(mode="after")
    def _unique_names(self) -> Response:
        names = [webhook.name for webhook in self.webhooks]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"webhook names must be unique; repeated: {', '.join(twice)}")
        return self
