"""Reading ``bastion.yaml``: from bytes to a validated :class:`BastionConfig`, or a precise error.

Every problem is reported as ``file:line: key.path: what is wrong``. To know lines, the text is
*composed* (YAML's node graph, which keeps marks) before it is *constructed* into Python values;
an index maps each key path to the line it is written on, and a pydantic error's ``loc`` (or a
cross-reference problem's path) is looked up there, falling back to the nearest parent that exists.

The walk that builds the index is also where YAML's permissive corners are closed: duplicate keys
(YAML keeps the last silently), non-scalar keys, values no constructor accepts, recursive aliases,
and alias "bombs" that expand a small file into millions of values. Nesting depth is limited while
composing, because PyYAML's composer recurses once per level.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bastion.errors import ConfigError

from .models import BastionConfig
from .problems import ConfigProblems, KeyPath, describe, format_path, suggest

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_VALUES = 200_000
MAX_PROBLEMS = 50
DEFAULT_FILE = "bastion.yaml"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_BAD = object()  # a scalar that could not be constructed (already reported)
M = TypeVar("M", bound=BaseModel)


def load_config(path: Path) -> BastionConfig:
    """Read and validate a config file; every failure is a :class:`ConfigError`."""
    text = read_text(path, missing=" (`bastion init` writes an example)")
    return parse_config(text, str(path))


def parse_config(text: str, file: str = DEFAULT_FILE) -> BastionConfig:
    """Validate config text; ``file`` names it in error messages."""
    return parse_document(text, file, BastionConfig)


def parse_document(text: str, file: str, root: type[M]) -> M:
    """Validate YAML text against ``root`` (bastion.yaml, playbooks.yaml), with the same
    ``file:line: key.path: problem`` errors and the same limits for every file Bastion reads."""
    _check_size(len(text.encode("utf-8", "surrogatepass")), file)
    document = _Document.read(text, file)
    try:
        return root.model_validate(document.data)
    except ValidationError as exc:
        located = [
            (document.line_of(path), path, message)
            for error in exc.errors(include_url=False)
            for path, message in _explain(error, root)
        ]
        raise ConfigError(file, _render(file, located)) from None


def read_text(path: Path, missing: str = "") -> str:
    """A config file's text: bounded, UTF-8, every failure a :class:`ConfigError`."""
    file = str(path)
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)  # bounded: the path may be a pipe or a device
    except FileNotFoundError:
        raise ConfigError(file, [f"{file}: no such file{missing}"]) from None
    except IsADirectoryError:
        raise ConfigError(file, [f"{file}: is a directory, not a config file"]) from None
    except OSError as exc:
        raise ConfigError(file, [f"{file}: cannot read: {exc.strerror or exc}"]) from None
    _check_size(len(raw), file)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        problem = (
            f"{file}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        )
        raise ConfigError(file, [problem]) from None


def _check_size(size: int, file: str) -> None:
    if size > MAX_FILE_BYTES:
        raise ConfigError(file, [f"{file}: too large (over {MAX_FILE_BYTES} bytes, the limit)"])


def _render(file: str, located: list[tuple[int, KeyPath, str]]) -> list[str]:
    """Sorted by line, duplicates dropped, at most ``MAX_PROBLEMS``."""
    lines: list[str] = []
    for line, path, message in sorted(set(located), key=lambda p: (p[0], format_path(p[1]))):
        where = f" {format_path(path)}:" if path else ""
        lines.append(f"{file}:{line}:{where} {message}")
    if len(lines) > MAX_PROBLEMS:
        lines = [*lines[:MAX_PROBLEMS], f"{file}: … and {len(lines) - MAX_PROBLEMS} more problems"]
    return lines


# -- YAML -> data plus an index of lines ---------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """A SafeLoader whose composer refuses nesting deeper than ``MAX_DEPTH``."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in types-PyYAML
                raise _TooDeep(event.start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _TooDeep(Exception):
    """Raised from inside the composer; carries the line where nesting went too deep."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _Stop(Exception):
    """Ends the walk early: the document is too large or too strange to look at further."""

    def __init__(self, line: int, path: KeyPath, message: str) -> None:
        super().__init__(message)
        self.located = (line, path, message)


@dataclass(slots=True)
class _Document:
    """Constructed data plus the line of every key path in it."""

    data: object
    lines: dict[KeyPath, int]

    @classmethod
    def read(cls, text: str, file: str) -> _Document:
        loader = _open(text, file)
        try:
            node = _compose(loader, file)
            index = _Index(loader)
            try:
                index.visit(node, (), 0)
            except _Stop as stop:
                index.problems.append(stop.located)
            if index.problems:
                raise ConfigError(file, _render(file, index.problems))
            data = _construct(loader, node, file)
        finally:
            loader.dispose()
        return cls(data, index.lines)

    def line_of(self, path: KeyPath) -> int:
        """The line of ``path``, or of its nearest parent written in the file."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return 1


def _open(text: str, file: str) -> _Loader:
    try:
        return _Loader(text)  # the reader rejects characters YAML does not allow, up front
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        char = exc.character
        code = ord(char) if isinstance(char, str) else int(char)
        raise ConfigError(
            file, [f"{file}:{line}: character #x{code:04x} is not allowed in YAML"]
        ) from None


def _compose(loader: _Loader, file: str) -> MappingNode:
    try:
        node = loader.get_single_node()
    except _TooDeep as exc:
        raise ConfigError(
            file, [f"{file}:{exc.line}: nested deeper than {MAX_DEPTH} levels"]
        ) from None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(file, [f"{file}:{_line(exc)}: YAML syntax error: {_what(exc)}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, [f"{file}:1: YAML error: {type(exc).__name__}"]) from None
    if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL_TAG and not node.value):
        raise ConfigError(file, [f"{file}:1: the file is empty (`bastion init` writes an example)"])
    if not isinstance(node, MappingNode):
        line = node.start_mark.line + 1
        got = "a list" if isinstance(node, SequenceNode) else "a single value"
        raise ConfigError(
            file,
            [
                f"{file}:{line}: the top level must be a mapping (version: 1, upstreams: ...), "
                f"got {got}"
            ],
        )
    return node


def _construct(loader: _Loader, node: Node, file: str) -> object:
    try:
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(file, [f"{file}:{_line(exc)}: YAML error: {_what(exc)}"]) from None
    except Exception as exc:  # PyYAML's constructors raise whatever odd input provokes
        # Scalars were constructed one by one during the walk, so this is a rare leftover.
        raise ConfigError(file, [f"{file}:1: YAML error: {type(exc).__name__}"]) from None


def _line(exc: yaml.MarkedYAMLError) -> int:
    mark = exc.problem_mark or exc.context_mark
    return mark.line + 1 if mark is not None else 1


def _what(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML splits its messages in two ("while parsing a block mapping", "expected ...")."""
    parts = [part for part in (exc.context, exc.problem) if part]
    return ", ".join(parts) or "invalid YAML"


@dataclass(slots=True)
class _Index:
    """Walks the node graph once: lines of key paths, and problems YAML itself lets through."""

    loader: _Loader
    lines: dict[KeyPath, int] = field(default_factory=dict)
    problems: list[tuple[int, KeyPath, str]] = field(default_factory=list)
    visited: int = 0
    ancestors: set[int] = field(default_factory=set)

    def visit(self, node: Node, path: KeyPath, depth: int) -> None:
        line = node.start_mark.line + 1
        self.lines.setdefault(path, line)
        self.visited += 1
        if self.visited > MAX_VALUES:
            raise _Stop(line, path, f"more than {MAX_VALUES} values (after expanding aliases)")
        if depth > MAX_DEPTH:
            raise _Stop(line, path, f"nested deeper than {MAX_DEPTH} levels (through aliases)")
        if id(node) in self.ancestors:
            raise _Stop(line, path, "an alias refers to a value that contains it")
        if isinstance(node, ScalarNode):
            self._scalar(node, path)
            return
        if node.tag not in self.loader.yaml_constructors:
            problem = f"could not determine a constructor for the tag {node.tag!r}"
            self.problems.append((line, path, problem))
            return
        self.ancestors.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                for position, item in enumerate(node.value):
                    self.visit(item, (*path, position), depth + 1)
            elif isinstance(node, MappingNode):
                self._mapping(node, path, depth)
        finally:
            self.ancestors.discard(id(node))

    def _mapping(self, node: MappingNode, path: KeyPath, depth: int) -> None:
        first: dict[object, int] = {}
        merged: list[Node] = []
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                merged.append(value_node)
            elif not isinstance(key_node, ScalarNode):
                self.problems.append((line, path, "a key must be a plain name, not a collection"))
            else:
                key = self._scalar(key_node, path)
                if key is _BAD:
                    continue
                child = (*path, _loc_key(key))
                if key in first:
                    message = f"duplicate key {describe(key)} (first on line {first[key]})"
                    self.problems.append((line, path, message))
                    continue
                first[key] = line
                self.lines.setdefault(child, line)  # a value's errors go on its key's line
                self.visit(value_node, child, depth + 1)
        # `<<: *defaults` after the explicit keys: with setdefault above, explicit keys keep
        # their lines and merged ones only fill the gaps, as in the constructed mapping.
        for source in merged:
            items = source.value if isinstance(source, SequenceNode) else [source]
            for item in items:
                if isinstance(item, MappingNode):
                    self.visit(item, path, depth + 1)

    def _scalar(self, node: ScalarNode, path: KeyPath) -> object:
        """Construct one scalar now, so a bad one is reported at its own line."""
        try:
            value = self.loader.construct_object(node, deep=True)
            hash(value)  # keys must be hashable; scalars always are unless tagged as collections
        except yaml.MarkedYAMLError as exc:
            problem = _what(exc)
        except Exception as exc:  # PyYAML's constructors raise whatever odd input provokes
            problem = _unreadable(node, exc)
        else:
            return value
        self.problems.append((node.start_mark.line + 1, path, problem))
        return _BAD


def _unreadable(node: ScalarNode, exc: Exception) -> str:
    """Why a scalar could not be constructed, without repeating the scalar itself."""
    if node.tag == _TIMESTAMP_TAG and isinstance(exc, ValueError):
        # datetime's messages ("month must be in 1..12") never include the input.
        return f"not a valid date ({exc}); quote it if it is meant as text"
    return f"cannot be read as {node.tag.rpartition(':')[2]}"


def _loc_key(key: object) -> str | int:
    """The key as it appears in a pydantic ``loc`` (which turns other keys into strings)."""
    if isinstance(key, bool):
        return int(key)
    if isinstance(key, str | int):
        return key
    return str(key)


# -- pydantic errors -> (path, message) ---------------------------------------------------------


def _explain(error: ErrorDetails, root: type[BaseModel]) -> list[tuple[KeyPath, str]]:
    """One pydantic error as problems at key paths, in the words of this file format."""
    loc: KeyPath = tuple(error["loc"])
    kind = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    got = f" (got {describe(error.get('input'))})"
    if loc and loc[-1] == "[key]":
        return [(loc[:-1], "name " + _message(kind, ctx, loc[:-1], error["msg"], got, root))]
    if kind == "value_error" and isinstance(ctx.get("error"), ConfigProblems):
        return [((*loc, *path), message) for path, message in ctx["error"].problems]
    return [(loc, _message(kind, ctx, loc, error["msg"], got, root))]


def _message(
    kind: str, ctx: Mapping[str, Any], loc: KeyPath, fallback: str, got: str, root: type[BaseModel]
) -> str:
    expected = _type_at(loc, root)
    simple = {
        "missing": "missing required key",
        "string_type": "must be a string" + got,
        "int_type": "must be a whole number" + got,
        "float_type": "must be a number" + got,
        "bool_type": "must be true or false" + got,
        "dict_type": "must be a mapping" + got,
        "tuple_type": "must be a list" + got,
        "list_type": "must be a list" + got,
        "recursion_loop": "refers to itself",
        "invalid_key": "unknown key: keys here are names, not numbers or other values",
    }
    if kind in simple:
        return simple[kind]
    if kind == "value_error":
        return str(ctx.get("error", fallback))
    if kind == "extra_forbidden":
        return _unknown_key(loc, root)
    if kind == "enum" and isinstance(expected, type) and issubclass(expected, Enum):
        return "must be one of " + ", ".join(str(m.value) for m in expected) + got
    if kind in ("model_type", "model_attributes_type"):
        keys = ", ".join(_fields(expected)) if expected else ""
        return f"must be a mapping{' with keys ' + keys if keys else ''}" + got
    bounds = {
        "greater_than": "greater than {gt}",
        "greater_than_equal": "at least {ge}",
        "less_than": "less than {lt}",
        "less_than_equal": "at most {le}",
        "string_too_long": "at most {max_length} characters long",
    }
    if kind in bounds:
        return "must be " + bounds[kind].format(**{k: _number(v) for k, v in ctx.items()}) + got
    return fallback + got


def _number(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _unknown_key(loc: KeyPath, root: type[BaseModel]) -> str:
    allowed = _fields(_type_at(loc[:-1], root))
    close = suggest(loc[-1], allowed) if loc else None
    if close:
        return f"unknown key; did you mean {close!r}?"
    return "unknown key" + (f" (expected one of: {', '.join(allowed)})" if allowed else "")


def _fields(annotation: object) -> list[str]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _type_at(loc: KeyPath, root: type[BaseModel]) -> object:
    """The declared type at ``loc`` in ``root``, or None if the path leaves it."""
    current: object = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(part) if isinstance(part, str) else None
            if info is None:
                return None
            current = info.annotation
            continue
        origin, args = get_origin(current), get_args(current)
        if origin in (Mapping, dict) and len(args) == 2:
            current = args[1]
        elif origin in (tuple, list) and args:
            current = args[0]
        else:
            return None
    return _unwrap(current)


def _unwrap(annotation: object) -> object:
    """Strip ``Annotated[...]`` and ``X | None`` down to the type that says what is expected."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation
