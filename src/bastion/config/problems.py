"""How a config problem is told: where it is (a key path as the reader finds it in the file) and
what the value was, shown short and safe (a secret pasted in the wrong place is never echoed
whole). Model validators raise :class:`ConfigProblems`; the loader places each problem on its
own line as ``file:line: path: what``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeAlias

KeyPath: TypeAlias = tuple[str | int, ...]
"""Where a value sits in the document: ``("models", 0, "upstream")`` is ``models[0].upstream``."""

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SHOWN_CHARS = 60


def format_path(path: Sequence[str | int]) -> str:
    """Render a key path the way a reader finds it in the file: ``models[0].upstream``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += "[" + describe(part) + "]"
    return out


def describe(value: object) -> str:
    """A short, safe rendering of a value for an error message.

    Strings are quoted and cut at 60 characters, so a secret pasted in the wrong place is never
    echoed whole; containers are named, never printed.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        shown = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…"
        return repr(shown)
    if isinstance(value, int | float):
        text = repr(value)
        return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, bytes):
        return "binary data"
    return f"a {type(value).__name__} value"


def suggest(word: object, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to a mistyped ``word``, if one is close enough to help."""
    if not isinstance(word, str):
        return None
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


class ConfigProblems(ValueError):
    """Raised by model validators: problems at key paths relative to the model that found them.

    Pydantic keeps the exception in the error's context, so the loader can place every problem on
    its own line instead of reporting one combined message at the model's line.
    """

    def __init__(self, problems: Sequence[tuple[KeyPath, str]]) -> None:
        self.problems: tuple[tuple[KeyPath, str], ...] = tuple(problems)
        super().__init__("; ".join(f"{format_path(p)}: {m}" for p, m in self.problems))
