"""The event fields a Sigma rule can name: Bastion's :class:`Observation`, plus two derived from
the config (the org's kind and the compartment's level).

Every field has a kind, which decides how values compare: ``text`` (case-insensitive unless
``|cased``), ``number`` (``gt``/``gte``/``lt``/``lte``), ``flag`` (true/false) or ``list`` (a
value matches if any element matches). Missing data is the empty value of its kind ("", 0, no
elements), which is what ``|exists: false`` and ``null`` match.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from operator import attrgetter

from bastion.config.problems import suggest

from ..detector import Context
from ..observation import Observation
from .errors import RuleProblem

Value = str | int | float | bool | tuple[str, ...]
Getter = Callable[[Observation, Context], Value]


class Kind(StrEnum):
    TEXT = "text"
    NUMBER = "number"
    FLAG = "flag"
    LIST = "list"


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: Kind
    get: Getter
    about: str
    observed: bool = True  # an Observation attribute of the same name (else derived)


def _attr(name: str) -> Getter:
    read = attrgetter(name)

    def get(obs: Observation, ctx: Context) -> Value:
        value: Value = read(obs)
        return value

    return get


def _org_kind(obs: Observation, ctx: Context) -> Value:
    declared = ctx.config.orgs.get(obs.org or ctx.org_of(obs.principal))
    return str(declared.kind) if declared is not None else ""


def _compartment_level(obs: Observation, ctx: Context) -> Value:
    level = ctx.level(obs.compartment)
    return str(level) if level is not None else ""


_OBSERVED: tuple[tuple[str, Kind, str], ...] = (
    ("name", Kind.TEXT, "event name: request.decided, token.issued, principal.created, ..."),
    ("action", Kind.TEXT, "admin and token events: what was done (the event name otherwise)"),
    ("principal", Kind.TEXT, "the principal the event is about (the caller for requests)"),
    ("org", Kind.TEXT, "the principal's org"),
    ("actor", Kind.TEXT, "who performed an admin action"),
    ("act", Kind.LIST, "delegation chain: who called on the principal's behalf"),
    ("model", Kind.TEXT, "the model requested"),
    ("compartment", Kind.TEXT, "the model's compartment"),
    ("allowed", Kind.FLAG, "whether the request was allowed"),
    ("reasons", Kind.LIST, "the decision's reasons (e.g. not_granted, outside_contract)"),
    ("status", Kind.NUMBER, "HTTP status returned to the caller"),
    ("outcome", Kind.TEXT, "completed | denied | error | cut | client_closed"),
    ("error", Kind.TEXT, "the error code the caller got, if any"),
    ("route", Kind.TEXT, "the API route, e.g. /v1/chat/completions"),
    ("tokens_in", Kind.NUMBER, "input tokens of the request"),
    ("tokens_out", Kind.NUMBER, "output tokens of the response"),
    ("source_ip", Kind.TEXT, "the caller's address (use |cidr for ranges)"),
    ("network", Kind.TEXT, "the caller's /24 (IPv4) or /48 (IPv6), e.g. 203.0.113.0/24"),
    ("asn", Kind.NUMBER, "the caller's autonomous system (0 when unknown)"),
    ("country", Kind.TEXT, "the caller's country code, when known"),
    ("origin", Kind.TEXT, "anonymizer | hosting | '' from the IP intelligence database"),
    ("jkt", Kind.TEXT, "the device key thumbprint the token is bound to"),
    ("family", Kind.TEXT, "the token family"),
    ("client", Kind.TEXT, "the caller's user agent (client tooling), at most 200 characters"),
    ("content_label", Kind.TEXT, "content category from the gateway's classifier"),
    ("content_score", Kind.NUMBER, "the classifier's score for that label (0..1)"),
    ("target_type", Kind.TEXT, "admin events: what kind of thing was acted on"),
    ("target", Kind.TEXT, "admin events: the thing acted on"),
)

FIELDS: dict[str, Field] = {
    name: Field(name, kind, _attr(name), about) for name, kind, about in _OBSERVED
}
FIELDS["org_kind"] = Field(
    "org_kind",
    Kind.TEXT,
    _org_kind,
    "internal | vendor | '' (the org's kind in bastion.yaml)",
    observed=False,
)
FIELDS["compartment_level"] = Field(
    "compartment_level",
    Kind.TEXT,
    _compartment_level,
    "open | internal | restricted | critical | '' (the compartment's level)",
    observed=False,
)


def field(name: str) -> Field:
    """The field called ``name``; an unknown one is a :class:`RuleProblem` naming the closest."""
    found = FIELDS.get(name)
    if found is None:
        close = suggest(name, FIELDS)
        hint = f"; did you mean {close!r}?" if close else f" (known: {', '.join(sorted(FIELDS))})"
        raise RuleProblem(f"unknown field {name[:60]!r}{hint}", key=name)
    return found


def is_empty(value: Value) -> bool:
    """Whether a field's value means "not there" (flags are always there)."""
    return value is not True and value is not False and not value


def as_text(value: Value) -> str:
    """A field value as the text used for group-by keys and distinct counts."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)
