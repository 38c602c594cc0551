"""A Sigma detection rule's condition, compiled once into a predicate over observations.

pySigma parses the rule and resolves its condition (``1 of selection*``, ``all of them``,
``and``/``or``/``not``, parentheses) into a tree whose leaves are ``field = value`` tests, with
the modifiers already applied to the values (``contains`` becomes ``*x*``, ``gte`` a comparison,
``neq`` a negation). This module turns that tree into plain closures: no parsing, no dictionary
lookups and no Python ``re`` at match time. Wildcards become ``startswith``/``endswith``/``in``
where they can, and RE2 (linear time, no backtracking) otherwise; ``re`` patterns run on RE2 too.
"""

from __future__ import annotations

import ipaddress
import operator
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from operator import attrgetter
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.modifiers import reverse_modifier_mapping
from sigma.policy.profiles import SafePolicy
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaRule
from sigma.types import (
    CompareOperators,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaString,
    SigmaType,
    SpecialChars,
)

from ..detector import Context
from ..observation import Observation
from .errors import RuleProblem
from .fields import Field, Kind, Value, field, is_empty

Predicate = Callable[[Observation, Context], bool]
ValueTest = Callable[[Value], bool]
TextTest = Callable[[str], bool]

MODIFIERS = (
    "contains",
    "startswith",
    "endswith",
    "all",
    "re",
    "i",
    "ignorecase",
    "m",
    "multiline",
    "s",
    "dotall",
    "cased",
    "cidr",
    "gt",
    "gte",
    "lt",
    "lte",
    "exists",
    "neq",
)
MAX_PATTERN = 512  # characters of a regular expression or wildcard pattern
MAX_SUBJECT = 1024  # characters of a field value a pattern looks at
MAX_DEPTH = 64  # nesting of and/or/not in a condition
REMEMBER = 4096  # answers each RE2 pattern keeps per distinct value
_COMPARE = {
    CompareOperators.LT: operator.lt,
    CompareOperators.LTE: operator.le,
    CompareOperators.GT: operator.gt,
    CompareOperators.GTE: operator.ge,
    CompareOperators.NEQ: operator.ne,
}
_STAR = SpecialChars.WILDCARD_MULTI


def check_selections(rule: SigmaRule) -> None:
    """Every selection names known fields with supported modifiers (keywords are refused)."""
    for name, detection in rule.detection.detections.items():
        for item in _items(detection):
            if item.field is None:
                raise RuleProblem(
                    f"selection {name!r} has values without a field (keywords), which are not "
                    "supported: name the field, e.g. client|contains: curl",
                    key=name,
                )
            field(item.field)
            for modifier in item.modifiers:
                word = reverse_modifier_mapping.get(modifier.__name__, modifier.__name__)
                if word not in MODIFIERS:
                    raise RuleProblem(
                        f"modifier {word!r} (on {item.field!r}) is not supported; supported: "
                        + ", ".join(MODIFIERS),
                        key=item.field,
                    )


def _items(detection: SigmaDetection) -> Iterable[SigmaDetectionItem]:
    for item in detection.detection_items:
        if isinstance(item, SigmaDetection):
            yield from _items(item)
        else:
            yield item


def compile_rule(rule: SigmaRule) -> Predicate:
    """The rule's conditions (several are or-ed, as Sigma says) as one predicate."""
    check_selections(rule)
    predicates = []
    for condition in rule.detection.parsed_condition:
        try:
            predicates.append(_node(condition.parse(), 0))
        except RecursionError:
            raise RuleProblem("the condition is nested too deeply", key="condition") from None
    return _any(predicates)


def _node(node: Any, depth: int) -> Predicate:
    if depth > MAX_DEPTH:
        raise RuleProblem(f"the condition is nested deeper than {MAX_DEPTH} levels", "condition")
    if isinstance(node, ConditionAND):
        return _all([_node(arg, depth + 1) for arg in _flat(node, ConditionAND)])
    if isinstance(node, ConditionOR):
        return _any([_node(arg, depth + 1) for arg in _flat(node, ConditionOR)])
    if isinstance(node, ConditionNOT):
        inner = _node(node.args[0], depth + 1)
        return lambda obs, ctx: not inner(obs, ctx)
    if isinstance(node, ConditionFieldEqualsValueExpression):
        return leaf(field(node.field), node.value)
    if isinstance(node, ConditionValueExpression):
        raise RuleProblem("keyword values (without a field) are not supported", key="condition")
    raise RuleProblem("the condition selects nothing", key="condition")


def _flat(node: Any, kind: type) -> list[Any]:
    """``a and (b and c)`` as ``a and b and c``: one call fewer per level at match time."""
    args: list[Any] = []
    for arg in node.args:
        args.extend(_flat(arg, kind) if isinstance(arg, kind) else [arg])
    return args


def _all(predicates: list[Predicate]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        first, second = predicates
        return lambda obs, ctx: first(obs, ctx) and second(obs, ctx)

    def every(obs: Observation, ctx: Context) -> bool:
        for predicate in predicates:  # noqa: SIM110  # a loop is faster than all(generator)
            if not predicate(obs, ctx):
                return False
        return True

    return every


def _any(predicates: list[Predicate]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        first, second = predicates
        return lambda obs, ctx: first(obs, ctx) or second(obs, ctx)

    def some(obs: Observation, ctx: Context) -> bool:
        for predicate in predicates:  # noqa: SIM110  # a loop is faster than any(generator)
            if predicate(obs, ctx):
                return True
        return False

    return some


# -- leaves: one field, one value ----------------------------------------------------------------


def leaf(target: Field, value: SigmaType) -> Predicate:
    """A predicate testing ``target`` against one (modified) Sigma value."""
    return _equality(target, value) or _bind(target, _test(target, value))


def _equality(target: Field, value: SigmaType) -> Predicate | None:
    """Plain equality on an observation attribute, the most common test, in a single call."""
    if not target.observed:
        return None
    read = attrgetter(target.name)
    if isinstance(value, SigmaBool) and target.kind is Kind.FLAG:
        flag = value.boolean
        return lambda obs, ctx: read(obs) is flag
    if isinstance(value, SigmaNumber) and target.kind is Kind.NUMBER:
        number = value.number
        return lambda obs, ctx: read(obs) == number
    plain = type(value) is SigmaString and len(value.s) == 1 and isinstance(value.s[0], str)
    if plain and target.kind is Kind.TEXT and isinstance(value, SigmaString):
        text = str(value.s[0]).lower()
        return lambda obs, ctx: read(obs).lower() == text
    return None


def _bind(target: Field, test: ValueTest) -> Predicate:
    """Read the field (straight off the observation when it is an attribute) and test it."""
    if target.observed:
        read = attrgetter(target.name)
        return lambda obs, ctx: test(read(obs))
    get = target.get
    return lambda obs, ctx: test(get(obs, ctx))


def _test(target: Field, value: SigmaType) -> ValueTest:
    if isinstance(value, SigmaExists):
        wanted = value.exists
        return lambda found: (not is_empty(found)) is wanted
    if isinstance(value, SigmaNull):
        if target.kind is Kind.FLAG:
            raise RuleProblem(f"{target.name} always has a value; null never matches", target.name)
        return is_empty
    if isinstance(value, SigmaCompareExpression):
        return _compare(target, value)
    if isinstance(value, SigmaCIDRExpression):
        return _cidr(target, value)
    if isinstance(value, SigmaRegularExpression):
        return _on_text(target, _regex(value, target.name))
    if isinstance(value, SigmaString):
        return _string(target, value)
    if isinstance(value, SigmaBool):
        if target.kind is not Kind.FLAG:
            raise RuleProblem(
                f"{target.name} is {target.kind}, not true/false; quote the value if it is text",
                target.name,
            )
        wanted_flag = value.boolean
        return lambda found: found is wanted_flag
    if isinstance(value, SigmaNumber):
        return _number(target, value.number)
    raise RuleProblem(
        f"values of type {type(value).__name__} are not supported (on {target.name!r})",
        target.name,
    )


def _compare(target: Field, value: SigmaCompareExpression) -> ValueTest:
    if target.kind is not Kind.NUMBER:
        raise RuleProblem(
            f"gt/gte/lt/lte need a number field; {target.name} is {target.kind}", target.name
        )
    compare = _COMPARE[value.op]
    limit = value.number.number
    return lambda found: bool(compare(found, limit))


def _number(target: Field, number: int | float) -> ValueTest:
    if target.kind is Kind.NUMBER:
        return lambda found: found == number
    if target.kind is Kind.FLAG:
        raise RuleProblem(f"{target.name} is true or false, not a number", target.name)
    text = str(number)
    return _on_text(target, lambda found: found == text)


def _string(target: Field, value: SigmaString) -> ValueTest:
    parts = list(value.s)
    plain = all(isinstance(part, str) for part in parts)
    text = "".join(part for part in parts if isinstance(part, str))
    if plain and target.kind is Kind.NUMBER:
        try:
            number = float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:
            raise RuleProblem(
                f"{target.name} is a number; {text[:40]!r} is not", target.name
            ) from None
        return lambda found: found == number
    if target.kind is Kind.FLAG:
        if not plain or text.lower() not in ("true", "false"):
            raise RuleProblem(f"{target.name} is true or false, got {text[:40]!r}", target.name)
        flag = text.lower() == "true"
        return lambda found: found is flag
    return _on_text(target, wildcard(value, target.name))


def _on_text(target: Field, test: TextTest) -> ValueTest:
    """A text test applied to a field: as is to text, to each element of a list, to the
    decimal form of a number."""
    if target.kind is Kind.TEXT:
        return test  # type: ignore[return-value]  # text fields hold str
    if target.kind is Kind.LIST:
        return lambda found: any(test(item) for item in _elements(found))
    if target.kind is Kind.NUMBER:
        return lambda found: test(str(found))
    raise RuleProblem(f"{target.name} is true or false; text patterns do not apply", target.name)


def _elements(value: object) -> tuple[str, ...]:
    return value if isinstance(value, tuple) else ()


def wildcard(value: SigmaString, where: str) -> TextTest:
    """A text test for a Sigma string: ``*`` any run, ``?`` one character, case-insensitive
    unless ``|cased``. A lone ``*`` means "any non-empty value"."""
    parts = list(value.s)
    cased = isinstance(value, SigmaCasedString)
    if any(not isinstance(part, str | SpecialChars) for part in parts):
        raise RuleProblem("placeholders (%name%) are not supported", where)
    if len(value.original) > MAX_PATTERN:
        raise RuleProblem(f"a value is longer than {MAX_PATTERN} characters", where)
    if parts == [_STAR]:
        return bool
    shape = tuple(part if isinstance(part, SpecialChars) else "" for part in parts)
    texts = [part if cased else part.lower() for part in parts if isinstance(part, str)]
    fold: Callable[[str], str] = str if cased else str.lower
    if shape in ((), ("",)):
        exact = texts[0] if texts else ""
        return lambda subject: fold(subject) == exact
    if shape == ("", _STAR):
        prefix = texts[0]
        return lambda subject: fold(subject).startswith(prefix)
    if shape == (_STAR, ""):
        suffix = texts[0]
        return lambda subject: fold(subject).endswith(suffix)
    if shape == (_STAR, "", _STAR):
        middle = texts[0]
        return lambda subject: middle in fold(subject)
    pattern = "".join(
        re.escape(part) if isinstance(part, str) else (".*" if part is _STAR else ".")
        for part in parts
    )
    compiled = _re2(pattern, re.DOTALL | (0 if cased else re.IGNORECASE), where)
    return _remembered(lambda subject: compiled.fullmatch(subject[:MAX_SUBJECT]) is not None)


def _regex(value: SigmaRegularExpression, where: str) -> TextTest:
    """``|re``: RE2 (linear time), searching anywhere in the value unless anchored."""
    pattern = str(value.regexp)
    if len(pattern) > MAX_PATTERN:
        raise RuleProblem(f"a regular expression is longer than {MAX_PATTERN} characters", where)
    flags = 0
    for flag in value.flags:
        flags |= SigmaRegularExpression.sigma_to_python_flags[flag]
    compiled = _re2(pattern, flags, where)
    return _remembered(lambda subject: compiled.search(subject[:MAX_SUBJECT]) is not None)


def _remembered(test: TextTest) -> TextTest:
    """RE2 is linear but each call crosses into C++ (several microseconds); field values repeat
    (models, user agents, principals), so each pattern remembers its latest answers."""
    return lru_cache(maxsize=REMEMBER)(test)


def _re2(pattern: str, flags: int, where: str) -> Any:
    engine = SafePolicy.regex_engine
    try:
        return engine.compile(pattern, flags)
    except engine.error as exc:
        detail = exc.args[0] if exc.args else ""
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise RuleProblem(
            f"regular expression not supported by RE2 ({str(detail)[:120]})", where
        ) from None


def _cidr(target: Field, value: SigmaCIDRExpression) -> ValueTest:
    network = value.network
    if target.name == "source_ip":
        return lambda found: _address_in(str(found), network)
    if target.name == "network":
        return lambda found: _network_in(str(found), network)
    raise RuleProblem(f"cidr applies to source_ip or network, not {target.name}", target.name)


@lru_cache(maxsize=65536)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@lru_cache(maxsize=16384)
def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _address_in(text: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    address = _address(text) if text else None
    return address is not None and address.version == network.version and address in network


def _network_in(text: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    inner = _network(text) if text else None
    if inner is None or inner.version != network.version:
        return False
    return inner.subnet_of(network)  # type: ignore[arg-type]  # same version checked above


__all__ = ["Predicate", "compile_rule", "leaf", "wildcard"]
