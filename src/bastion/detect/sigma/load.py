"""Reading Sigma rule files: from the paths in ``detection.rules`` to a compiled :class:`RuleSet`,
or a :class:`~bastion.errors.ConfigError` naming each bad file, line and rule.

A rule file is input like any other: it is read with a size cap, YAML is composed with a depth
cap, a node cap (aliases expanded) and duplicate keys refused (PyYAML would keep the last one
silently, dropping a selection), then each document is parsed by pySigma and compiled by
``match.py`` / ``rules.py``. Every problem in every file is reported, not just the first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bastion.errors import ConfigError

from .errors import RuleProblem
from .rules import (
    CorrelationRule,
    DetectionRule,
    RuleSet,
    correlation_rule,
    detection_rule,
    meta_of,
)

MAX_FILE_BYTES = 256 * 1024
MAX_FILES = 200  # per listed directory
MAX_DIRECTORIES = 1000  # searched per listed directory
MAX_RULES = 500
MAX_DEPTH = 32
MAX_NODES = 50_000  # per file, after expanding aliases
MAX_PROBLEMS = 50
SUFFIXES = (".yml", ".yaml")


class _FileProblem(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class _Parsed:
    """One rule as pySigma parsed it, and where it is written."""

    file: str
    line: int
    keys: dict[str, int]  # the first line of each key in the document
    rule: SigmaRule | SigmaCorrelationRule

    def report(self, problems: _Problems, message: str, key: str = "") -> None:
        line = self._line_of(key) if key else self.line
        problems.add(self.file, line, f"rule {self.rule.title[:60]!r}: {message}")

    def _line_of(self, key: str) -> int:
        if key in self.keys:
            return self.keys[key]
        for written, line in self.keys.items():
            if written.split("|", 1)[0] == key:
                return line
        return self.line


def load_rules(paths: Sequence[str], base_dir: Path = Path()) -> RuleSet:
    """Read and compile every rule under ``paths`` (files, or directories searched for
    ``*.yml``/``*.yaml``); relative paths are taken from ``base_dir`` (the directory of
    bastion.yaml)."""
    problems = _Problems()
    parsed: list[_Parsed] = []
    seen: set[Path] = set()
    for entry in paths:
        for file in _files(entry, base_dir, problems):
            if file.resolve() not in seen:
                seen.add(file.resolve())
                problems.note(str(file))
                parsed.extend(_read(file, problems))
    if len(parsed) > MAX_RULES:
        problems.add("detection.rules", 0, f"{len(parsed)} rules, more than {MAX_RULES}")
    rules = _compile(parsed, problems)
    problems.raise_any()
    return rules


class _Problems:
    """What is wrong, in the order files were listed, then by line."""

    def __init__(self) -> None:
        self._found: list[tuple[str, int, str]] = []
        self._order: dict[str, int] = {}

    def note(self, file: str) -> None:
        self._order.setdefault(file, len(self._order))

    def add(self, file: str, line: int, message: str) -> None:
        self.note(file)
        self._found.append((file, line, message))

    def raise_any(self) -> None:
        if not self._found:
            return
        found = sorted(self._found, key=lambda p: (self._order[p[0]], p[1]))
        lines = [
            f"{file}:{line}: {what}" if line else f"{file}: {what}" for file, line, what in found
        ]
        files = {file for file, _, _ in found}
        where = files.pop() if len(files) == 1 else "detection.rules"
        if len(lines) > MAX_PROBLEMS:
            more = len(lines) - MAX_PROBLEMS
            lines = [*lines[:MAX_PROBLEMS], f"{where}: … and {more} more problems"]
        raise ConfigError(where, lines)


# -- files ---------------------------------------------------------------------------------------


def _files(entry: str, base_dir: Path, problems: _Problems) -> list[Path]:
    path = Path(entry)
    if not path.is_absolute():
        path = base_dir / path
    if path.is_dir():
        try:
            return sorted(_walk(path))
        except _TooMany as exc:
            problems.add(str(path), 0, str(exc))
            return []
    if path.is_file():
        return [path]
    if path.exists():
        problems.add(str(path), 0, "not a regular file or directory")
    else:
        problems.add(str(path), 0, "no such file or directory (listed in detection.rules)")
    return []


class _TooMany(Exception):
    pass


def _walk(directory: Path) -> Iterator[Path]:
    """Rule files below ``directory``: hidden entries skipped, symlinked directories not followed
    (so a link loop cannot make the search endless), and the search bounded (a mistyped path
    such as ``/`` fails fast instead of walking the whole disk)."""
    files = 0
    for visited, (root, dirs, names) in enumerate(os.walk(directory), 1):
        if visited > MAX_DIRECTORIES:
            raise _TooMany(f"more than {MAX_DIRECTORIES} directories to search for rules")
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        for name in names:
            path = Path(root, name)
            if not name.startswith(".") and name.endswith(SUFFIXES) and path.is_file():
                files += 1
                if files > MAX_FILES:
                    raise _TooMany(f"more than {MAX_FILES} rule files")
                yield path


def _read(file: Path, problems: _Problems) -> list[_Parsed]:
    name = str(file)
    try:
        with file.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        problems.add(name, 0, f"cannot read: {exc.strerror or type(exc).__name__}")
        return []
    if len(raw) > MAX_FILE_BYTES:
        problems.add(name, 0, f"too large (over {MAX_FILE_BYTES} bytes, the limit for a rule file)")
        return []
    try:
        text = raw.decode("utf-8")
        documents = _documents(text)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        problems.add(name, line, "not valid UTF-8")
        return []
    except _FileProblem as exc:
        problems.add(name, exc.line, exc.message)
        return []
    rules = []
    for line, keys, data in documents:
        rule = _parse(name, line, data, problems)
        if rule is not None:
            rules.append(_Parsed(name, line, keys, rule))
    return rules


def _parse(
    name: str, line: int, data: object, problems: _Problems
) -> SigmaRule | SigmaCorrelationRule | None:
    """One YAML document as a pySigma rule, or a problem."""
    if not isinstance(data, dict):
        problems.add(name, line, "a Sigma rule must be a mapping (title:, detection: ...)")
        return None
    title = data.get("title")
    label = f"rule {title[:60]!r}" if isinstance(title, str) else "rule"
    if "action" in data:
        problems.add(name, line, f"{label}: collection actions (action:) are not supported")
        return None
    if "filter" in data:
        message = "Sigma filters are not supported; use detection.suppressions"
        problems.add(name, line, f"{label}: {message}")
        return None
    try:
        if "correlation" in data:
            return SigmaCorrelationRule.from_dict(data)
        return SigmaRule.from_dict(data)
    except SigmaError as exc:
        message = str(exc.args[0]) if exc.args else type(exc).__name__
    except RecursionError:
        message = "nested too deeply"
    except Exception as exc:  # pySigma raises whatever odd input provokes
        message = f"not a valid Sigma rule ({type(exc).__name__})"
    problems.add(name, line, f"{label}: {message[:300]}")
    return None


# -- compiling -----------------------------------------------------------------------------------


def _compile(parsed: list[_Parsed], problems: _Problems) -> RuleSet:
    keys: dict[str, str] = {}  # detection key -> where it is defined
    targets: dict[str, str] = {}  # a detection rule's name and id -> its key
    named: list[tuple[_Parsed, str]] = []
    for item in parsed:
        try:
            key = meta_of(item.rule).key
        except RuleProblem as exc:
            item.report(problems, exc.message, exc.key)
            continue
        if key in keys:
            item.report(problems, f"duplicate rule name {key!r} (also {keys[key]})", "name")
            continue
        keys[key] = f"{item.file}:{item.line}"
        named.append((item, key))
        if isinstance(item.rule, SigmaRule):
            for reference in (item.rule.name, item.rule.id):
                if reference:
                    targets[str(reference)] = key
    quiet = {
        targets.get(reference.reference, "")
        for item, _ in named
        if isinstance(item.rule, SigmaCorrelationRule) and not item.rule.generate
        for reference in item.rule.rules or ()
    }
    detections: list[DetectionRule] = []
    correlations: list[CorrelationRule] = []
    for item, key in named:
        try:
            if isinstance(item.rule, SigmaRule):
                detections.append(detection_rule(item.rule, emits=key not in quiet))
            else:
                correlations.append(correlation_rule(item.rule, targets))
        except RuleProblem as exc:
            item.report(problems, exc.message, exc.key)
        except SigmaError as exc:  # the condition, parsed on first use
            item.report(problems, str(exc.args[0])[:300] if exc.args else "invalid")
    return RuleSet(tuple(detections), tuple(_inherit(correlations, detections)))


def _inherit(
    correlations: list[CorrelationRule], detections: list[DetectionRule]
) -> list[CorrelationRule]:
    """A correlation's techniques are its own tags' plus those of the rules it counts."""
    techniques = {rule.meta.key: rule.meta.techniques for rule in detections}
    return [
        replace(
            rule,
            meta=replace(
                rule.meta,
                techniques=tuple(
                    dict.fromkeys(
                        (
                            *rule.meta.techniques,
                            *(t for k in rule.rules for t in techniques.get(k, ())),
                        )
                    )
                ),
            ),
        )
        for rule in correlations
    ]


# -- YAML ----------------------------------------------------------------------------------------


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
                raise _FileProblem(event.start_mark.line + 1, f"nested deeper than {MAX_DEPTH}")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _documents(text: str) -> list[tuple[int, dict[str, int], Any]]:
    """Each YAML document: its first line, the line of each key, its data."""
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise _FileProblem(line, "a character YAML does not allow") from None
    documents = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            walk = _Walk()
            walk.visit(node, 0)
            data = loader.construct_document(node)
            documents.append((node.start_mark.line + 1, walk.lines, data))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = ", ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        raise _FileProblem(mark.line + 1 if mark else 1, f"YAML error: {what}") from None
    except _FileProblem:
        raise
    except Exception as exc:  # PyYAML's constructors raise whatever odd input provokes
        raise _FileProblem(1, f"YAML error: {type(exc).__name__}") from None
    finally:
        loader.dispose()
    return documents


class _Walk:
    """Counts nodes (aliases expanded), refuses recursive aliases and duplicate keys, and notes
    the first line of every key."""

    def __init__(self) -> None:
        self.lines: dict[str, int] = {}
        self.count = 0
        self.ancestors: set[int] = set()

    def visit(self, node: Node, depth: int) -> None:
        line = node.start_mark.line + 1
        self.count += 1
        if self.count > MAX_NODES:
            raise _FileProblem(line, f"more than {MAX_NODES} values (after expanding aliases)")
        if depth > MAX_DEPTH:
            raise _FileProblem(line, f"nested deeper than {MAX_DEPTH} levels (through aliases)")
        if isinstance(node, ScalarNode):
            return
        if id(node) in self.ancestors:
            raise _FileProblem(line, "an alias refers to a value that contains it")
        self.ancestors.add(id(node))
        if isinstance(node, SequenceNode):
            for item in node.value:
                self.visit(item, depth + 1)
        elif isinstance(node, MappingNode):
            self._mapping(node, depth)
        self.ancestors.discard(id(node))

    def _mapping(self, node: MappingNode, depth: int) -> None:
        first: dict[str, int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if not isinstance(key, ScalarNode):
                raise _FileProblem(line, "a key must be a plain name, not a collection")
            if key.value in first and key.tag != "tag:yaml.org,2002:merge":
                raise _FileProblem(
                    line, f"duplicate key {key.value[:60]!r} (first on line {first[key.value]})"
                )
            first[key.value] = line
            self.lines.setdefault(key.value, line)
            self.visit(value, depth + 1)
