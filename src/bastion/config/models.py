"""The shape of ``bastion.yaml`` (version 1) as frozen pydantic models.

Every model forbids unknown keys and is frozen, so a typo is an error rather than a silently
ignored setting, and a loaded config cannot drift after validation. Scalars are strict (``"60"``
is not a number, ``"yes"`` is not a boolean, ``1`` is not a name): YAML already gives each value
its type, and guessing would hide mistakes in a security boundary.

Rules that span models (a model's upstream must be declared, a vendor may not hold a standing
grant to a critical compartment, ...) live in model validators, so they hold for a config built in
Python as much as for one read from a file. They raise :class:`ConfigProblems`, which carries one
``(key path, message)`` pair per problem; the loader turns each pair into ``file:line: path: what``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    model_validator,
)

from .detection import Detection
from .federation import Federation
from .problems import ConfigProblems, KeyPath, describe, suggest
from .response import Response
from .scalars import (
    Audience,
    BaseUrl,
    Description,
    EnvName,
    HeaderName,
    ModelName,
    Name,
    Seconds,
    UpstreamModel,
    Version,
    is_model_name,
)
from .vendor import Cidr, Contract, WorkingHours

KIB = 1024
MIB = 1024 * KIB


# -- enumerations --------------------------------------------------------------------------------


class Level(StrEnum):
    """How sensitive a compartment is, from least to most: declaration order is the order."""

    OPEN = "open"
    INTERNAL = "internal"
    RESTRICTED = "restricted"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for ``open`` up to 3 for ``critical``; compare ranks, never the strings."""
        return tuple(Level).index(self)


class ApiStyle(StrEnum):
    """The HTTP API an upstream speaks."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class TokenBinding(StrEnum):
    REQUIRED = "required"
    OPTIONAL = "optional"


class AuditMode(StrEnum):
    """``required``: refuse requests when the audit log cannot record them (fail closed)."""

    REQUIRED = "required"
    BEST_EFFORT = "best-effort"


class OrgKind(StrEnum):
    INTERNAL = "internal"
    VENDOR = "vendor"


class PrincipalKind(StrEnum):
    USER = "user"
    SERVICE = "service"


class Role(StrEnum):
    """Control-plane roles: ``auditor`` reads the audit log and its proofs; ``admin`` also."""

    ADMIN = "admin"
    AUDITOR = "auditor"


_STRICT_LEVELS = (Level.RESTRICTED, Level.CRITICAL)
MAX_MFA_AGE_MINUTES = 24 * 60  # a day: older than that is not "recent" authentication
DEFAULT_REVIEW_DAYS = 90


# -- models --------------------------------------------------------------------------------------


class _Frozen(BaseModel):
    # hide_input_in_errors: str(ValidationError) of a config built in Python never shows values.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class Upstream(_Frozen):
    """An inference endpoint the gateway forwards to."""

    base_url: BaseUrl
    api: ApiStyle
    api_key_env: EnvName | None = None
    timeout_seconds: Seconds = 60.0
    connect_timeout_seconds: Seconds = 5.0
    forward_headers: tuple[HeaderName, ...] = ()
    # The `aud` of Bastion's signed assertion to this upstream (docs/guard.md); default: base_url.
    assertion_audience: Audience | None = None
    # Send the assertion at all: it names the principal, so a third-party API that cannot
    # verify it (api.openai.com, ...) should be told `assertion: false`.
    assertion: StrictBool = True


class Model(_Frozen):
    """A model callers ask for by ``name``, served by an upstream, in exactly one compartment."""

    name: ModelName
    upstream: Name
    # The default is never seen: the validator below fills in `name`; it stays "" only when
    # `name` itself is invalid, so that one mistake is reported once.
    upstream_model: UpstreamModel = ""
    compartment: Name

    @model_validator(mode="before")
    @classmethod
    def _upstream_model_defaults_to_name(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "upstream_model" not in data:
            name = data.get("name")
            if isinstance(name, str) and is_model_name(name):
                return {**data, "upstream_model": name}
        return data


class Grants(_Frozen):
    """Standing grants: who may use a compartment without asking."""

    orgs: tuple[Name, ...] = ()
    principals: tuple[Name, ...] = ()

    @model_validator(mode="after")
    def _no_repeats(self) -> Grants:
        problems = [
            ((key, index), f"{describe(name)} is listed twice")
            for key, names in (("orgs", self.orgs), ("principals", self.principals))
            for index, name in enumerate(names)
            if name in names[:index]
        ]
        if problems:
            raise ConfigProblems(problems)
        return self


class Limits(_Frozen):
    """Token-bucket limits for one principal, or one org, within a compartment."""

    requests_per_minute: Annotated[StrictInt, Field(ge=1, le=1_000_000)] | None = None
    tokens_per_hour: Annotated[StrictInt, Field(ge=1, le=10**12)] | None = None


class Quotas(_Frozen):
    """Per-principal and per-org limits; an org's limit is shared by all its principals."""

    principal: Limits = Field(default_factory=Limits)
    org: Limits = Field(default_factory=Limits)


class Access(_Frozen):
    """Just-in-time access: who approves requests for a compartment, how many, for how long."""

    approvals: Annotated[StrictInt, Field(ge=0, le=5)] = 1
    approvers: tuple[Name, ...] = ()
    max_duration_hours: Annotated[float, Field(gt=0, le=720)] = 8.0


class LockView(_Frozen):
    """How current a gateway's view of locks must be to serve a compartment. ``strict``: refuse
    calls (503 ``lock_view_stale``) when the gateway has not proved its view current for more
    than ``max_age_seconds``, e.g. because the database stopped answering its epoch reads."""

    strict: StrictBool = False
    max_age_seconds: Annotated[float, Field(strict=True, ge=0.5, le=3600)] = 2.0


class Compartment(_Frozen):
    """A set of models sharing a level and its controls."""

    level: Level
    allowed_networks: tuple[Cidr, ...] = ()
    description: Description = ""
    token_binding: TokenBinding = TokenBinding.REQUIRED
    audit: AuditMode = AuditMode.REQUIRED
    grants: Grants = Field(default_factory=Grants)
    quotas: Quotas = Field(default_factory=Quotas)
    access: Access | None = None  # None: no just-in-time requests for this compartment
    # Step-up (RFC 9470): calls need an MFA login at most this many minutes old (None: no MFA).
    max_mfa_age_minutes: Annotated[StrictInt, Field(ge=1, le=MAX_MFA_AGE_MINUTES)] | None = None
    # When anyone may call the compartment's models, in a time zone (None: at any time).
    allowed_hours: WorkingHours | None = None
    lock_view: LockView = Field(default_factory=LockView)

    @model_validator(mode="before")
    @classmethod
    def _audit_defaults_from_level(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "audit" not in data:
            level = data.get("level")
            if level in tuple(Level):
                strict = Level(level) in _STRICT_LEVELS
                return {**data, "audit": AuditMode.REQUIRED if strict else AuditMode.BEST_EFFORT}
        return data

    @model_validator(mode="after")
    def _strict_levels_bind_tokens(self) -> Compartment:
        if self.level in _STRICT_LEVELS and self.token_binding is not TokenBinding.REQUIRED:
            raise ConfigProblems(
                [
                    (
                        ("token_binding",),
                        f"must be 'required' for a {self.level} compartment: stolen tokens "
                        "must be useless without the device key",
                    )
                ]
            )
        return self


class Org(_Frozen):
    """The lab itself (``internal``) or a contractor (``vendor``) and its boundary."""

    kind: OrgKind
    description: Description = ""
    sponsor: Name | None = None
    contract: Contract | None = None
    allowed_networks: tuple[Cidr, ...] = ()
    seat_limit: Annotated[StrictInt, Field(ge=1, le=100_000)] | None = None
    ceiling: Level = Level.CRITICAL
    working_hours: WorkingHours | None = None
    # Access reviews (vendor orgs only): the sponsor recertifies every principal this often.
    review_every_days: Annotated[StrictInt, Field(ge=1, le=365)] | None = None
    # D11: origins the org's callers may come from (anonymizer services, hosting providers) for
    # restricted and critical compartments, when detection.ip_intel names the databases.
    allowed_origins: tuple[Literal["anonymizer", "hosting"], ...] = ()

    @model_validator(mode="after")
    def _reviews_are_for_vendors(self) -> Org:
        if self.kind is OrgKind.INTERNAL and self.review_every_days is not None:
            raise ConfigProblems(
                [
                    (
                        ("review_every_days",),
                        "applies to vendor orgs only: an internal org is not reviewed",
                    )
                ]
            )
        return self

    @property
    def review_interval_days(self) -> int | None:
        """Days between access reviews: the setting, 90 by default for a vendor, None inside."""
        if self.kind is not OrgKind.VENDOR:
            return None
        return self.review_every_days or DEFAULT_REVIEW_DAYS


class Principal(_Frozen):
    """A user or a service, member of exactly one org."""

    kind: PrincipalKind
    org: Name
    disabled: StrictBool = False
    roles: tuple[Role, ...] = ()


class Lifecycle(_Frozen):
    """Account lifecycle: principals idle this long (no token issued or refreshed) are disabled
    until an admin enables them again. None (the default) disables the check."""

    dormant_after_days: Annotated[StrictInt, Field(ge=1, le=3650)] | None = None


class GatewayOptions(_Frozen):
    """Request limits of the gateway's hot path."""

    max_body_bytes: Annotated[StrictInt, Field(ge=KIB, le=64 * MIB)] = 4 * MIB
    max_header_bytes: Annotated[StrictInt, Field(ge=KIB, le=MIB)] = 16 * KIB


class AuditOptions(_Frozen):
    """How the audit log commits to events."""

    hash_source_addresses: StrictBool = False


class BastionConfig(_Frozen):
    """The whole of ``bastion.yaml``."""

    version: Version
    upstreams: Mapping[Name, Upstream] = Field(default_factory=dict)
    models: tuple[Model, ...] = ()
    compartments: Mapping[Name, Compartment] = Field(default_factory=dict)
    orgs: Mapping[Name, Org] = Field(default_factory=dict)
    principals: Mapping[Name, Principal] = Field(default_factory=dict)
    gateway: GatewayOptions = Field(default_factory=GatewayOptions)
    audit: AuditOptions = Field(default_factory=AuditOptions)
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    federation: Federation = Field(default_factory=Federation)
    detection: Detection = Field(default_factory=Detection)
    response: Response = Field(default_factory=Response)

    @cached_property
    def _models_by_name(self) -> Mapping[str, Model]:
        return {model.name: model for model in self.models}

    def model(self, name: str) -> Model | None:
        """The model callers know as ``name``, or None."""
        return self._models_by_name.get(name)

    def compartment_of(self, model_name: str) -> Compartment | None:
        """The compartment holding the model ``model_name``, or None for an unknown model."""
        model = self.model(model_name)
        return None if model is None else self.compartments.get(model.compartment)

    @model_validator(mode="after")
    def _references_resolve(self) -> BastionConfig:
        problems = [
            *self._model_problems(),
            *self._principal_problems(),
            *self._grant_problems(),
            *self._sponsor_problems(),
            *self._access_problems(),
            *self._federation_problems(),
            *self._content_problems(),
        ]
        if not self.orgs:
            problems.append((("orgs",), "declare at least one org: every principal belongs to one"))
        if problems:
            raise ConfigProblems(problems)
        return self

    def _model_problems(self) -> Iterator[tuple[KeyPath, str]]:
        first: dict[str, int] = {}
        for index, model in enumerate(self.models):
            if model.name in first:
                yield (
                    ("models", index, "name"),
                    f"duplicate model name {describe(model.name)} "
                    f"(first declared at models[{first[model.name]}])",
                )
            first.setdefault(model.name, index)
            if model.upstream not in self.upstreams:
                message = _unknown("upstream", model.upstream, self.upstreams)
                yield ("models", index, "upstream"), message
            if model.compartment not in self.compartments:
                message = _unknown("compartment", model.compartment, self.compartments)
                yield ("models", index, "compartment"), message

    def _access_problems(self) -> Iterator[tuple[KeyPath, str]]:
        for name, compartment in self.compartments.items():
            access = compartment.access
            if access is None:
                continue
            path: KeyPath = ("compartments", name, "access")
            if compartment.level is Level.CRITICAL and access.approvals < 2:
                yield (*path, "approvals"), "a critical compartment needs at least 2 approvals"
            if len(access.approvers) < access.approvals:
                yield (
                    (*path, "approvers"),
                    (f"{access.approvals} approvals need at least as many approvers"),
                )
            for index, approver in enumerate(access.approvers):
                declared = self.principals.get(approver)
                org = self.orgs.get(declared.org) if declared is not None else None
                if org is None or org.kind is not OrgKind.INTERNAL:
                    yield (
                        (*path, "approvers", index),
                        (
                            f"approver {describe(approver)} must be a principal of an internal org "
                            "declared in this file"
                        ),
                    )

    def _federation_problems(self) -> Iterator[tuple[KeyPath, str]]:
        seen: dict[str, str] = {}
        for name, issuer in self.federation.issuers.items():
            path: KeyPath = ("federation", "issuers", name)
            if issuer.issuer in seen:
                yield (
                    (*path, "issuer"),
                    f"issuer URL already used by {describe(seen[issuer.issuer])}",
                )
            seen.setdefault(issuer.issuer, name)
            for index, org in enumerate(issuer.orgs):
                if org not in self.orgs:
                    yield (*path, "orgs", index), _unknown("org", org, self.orgs)
            if issuer.console is not None:
                yield from _console_issuer_problems(name, issuer.orgs, self.orgs, path)

    def _content_problems(self) -> Iterator[tuple[KeyPath, str]]:
        for index, name in enumerate(self.detection.content.compartments):
            if name not in self.compartments:
                yield (
                    ("detection", "content", "compartments", index),
                    _unknown("compartment", name, self.compartments),
                )

    def _sponsor_problems(self) -> Iterator[tuple[KeyPath, str]]:
        for name, org in self.orgs.items():
            if org.sponsor is None:
                continue
            sponsor = self.principals.get(org.sponsor)
            sponsor_org = self.orgs.get(sponsor.org) if sponsor is not None else None
            if sponsor is None:
                yield (
                    ("orgs", name, "sponsor"),
                    (f"sponsor {describe(org.sponsor)} must be a principal declared in this file"),
                )
            elif sponsor_org is None or sponsor_org.kind is not OrgKind.INTERNAL:
                yield (
                    ("orgs", name, "sponsor"),
                    (f"sponsor {describe(org.sponsor)} must belong to an internal org"),
                )

    def _principal_problems(self) -> Iterator[tuple[KeyPath, str]]:
        for name, principal in self.principals.items():
            org = self.orgs.get(principal.org)
            if org is None:
                yield ("principals", name, "org"), _unknown("org", principal.org, self.orgs)
            elif principal.roles and org.kind is OrgKind.VENDOR:
                yield (
                    ("principals", name, "roles"),
                    "vendor principals cannot hold control-plane roles",
                )

    def _grant_problems(self) -> Iterator[tuple[KeyPath, str]]:
        for name, compartment in self.compartments.items():
            critical = compartment.level is Level.CRITICAL
            for index, org_name in enumerate(compartment.grants.orgs):
                path: KeyPath = ("compartments", name, "grants", "orgs", index)
                org = self.orgs.get(org_name)
                if org is None:
                    yield path, _unknown("org", org_name, self.orgs)
                elif critical and org.kind is OrgKind.VENDOR:
                    yield (
                        path,
                        (
                            f"vendor org {describe(org_name)} may not hold a standing grant to a "
                            "critical compartment"
                        ),
                    )
            if not critical:
                continue
            for index, principal_name in enumerate(compartment.grants.principals):
                principal = self.principals.get(principal_name)
                org = self.orgs.get(principal.org) if principal is not None else None
                if principal is not None and org is not None and org.kind is OrgKind.VENDOR:
                    yield (
                        ("compartments", name, "grants", "principals", index),
                        (
                            f"{describe(principal_name)} belongs to vendor org "
                            f"{describe(principal.org)}, which may not hold a standing grant to a "
                            "critical compartment"
                        ),
                    )


def _unknown(kind: str, name: str, declared: Mapping[str, object]) -> str:
    """``unknown upstream 'foo' (declared: local)``, with a suggestion when one is close."""
    names = sorted(declared)
    listed = ", ".join(names[:10]) + (", …" if len(names) > 10 else "") if names else "none"
    message = f"unknown {kind} {describe(name)} (declared: {listed})"
    close = suggest(name, names)
    return f"{message}; did you mean {close!r}?" if close else message


def _console_issuer_problems(
    name: str, orgs: tuple[str, ...], declared: Mapping[str, Org], path: KeyPath
) -> Iterator[tuple[KeyPath, str]]:
    """An issuer with a ``console`` section signs people in to the web console: it must vouch
    for an internal org (vendor principals never get a console), and ``callback`` is the
    console's redirect path, so no such issuer may be named that."""
    if name == "callback":
        yield path, "an issuer with a console section cannot be named 'callback'"
    known = [declared[org] for org in orgs if org in declared]
    if known and not any(org.kind is OrgKind.INTERNAL for org in known):
        yield (
            (*path, "console"),
            "console sign-in is for internal users only: this issuer vouches for no internal org",
        )
