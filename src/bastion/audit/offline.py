"""``bastion-verify``: check Bastion's audit evidence offline, trusting only a verifier key.

No database, no server, no configuration: it reads a receipt (``bastion audit prove``) or an
export (``bastion audit export``) and the log's verifier key, and says whether the evidence
holds. Exit status 0 means verified, 1 means it does not verify (with every finding), 2 means the
command was used wrongly.

    bastion-verify receipt --key KEY RECEIPT.json [--trusted CHECKPOINT]
    bastion-verify export  --key KEY --checkpoint CHECKPOINT EXPORT.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .checkpoint import Checkpoint, open_checkpoint
from .export import rebuilt_line
from .note import NoteError, Verifier, parse_verifier_key
from .receipt import verify_export, verify_receipt


def _usage_error(message: str) -> NoReturn:
    """No verdict: exit 2, so a wrong key or path is never taken for evidence that failed."""
    print(f"bastion-verify: {message}", file=sys.stderr)
    raise SystemExit(2)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _usage_error(f"cannot read {path}: {type(exc).__name__}")


def _verifiers(keys: Sequence[str]) -> list[Verifier]:
    try:
        return [parse_verifier_key(key.strip()) for key in keys]
    except NoteError as exc:
        _usage_error(f"bad verifier key: {exc}")


def _receipt(args: argparse.Namespace) -> int:
    verifiers = _verifiers(args.key)
    try:
        receipt = json.loads(_read(args.receipt))
    except json.JSONDecodeError:
        print("NOT VERIFIED: the receipt is not JSON")
        return 1
    trusted: Checkpoint | None = None
    if args.trusted is not None:
        try:
            trusted = open_checkpoint(_read(args.trusted), verifiers)
        except NoteError as exc:
            _usage_error(f"the trusted checkpoint does not verify: {exc}")
    verdict = verify_receipt(receipt if isinstance(receipt, dict) else {}, verifiers, trusted)
    if verdict.ok and verdict.checkpoint is not None:
        cp = verdict.checkpoint
        print(f"VERIFIED: entry {receipt['index']} is in {cp.origin} at tree size {cp.size}")
        return 0
    print("NOT VERIFIED:")
    for finding in verdict.findings:
        print(f"  {finding}")
    return 1


def _export(args: argparse.Namespace) -> int:
    verifiers = _verifiers(args.key)
    note = _read(args.checkpoint)
    try:
        lines = args.export.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        _usage_error(f"cannot read {args.export}: {type(exc).__name__}")
    verdict = verify_export(lines, verifiers, note)
    edited = _edited_fields(lines)
    if verdict.ok and not edited:
        print(f"VERIFIED: {verdict.entries} entries match the signed checkpoint")
        return 0
    print(f"NOT VERIFIED ({verdict.entries} entries read):")
    for finding in verdict.findings:
        print(f"  {finding}")
    for problem in edited[:20]:
        print(f"  edited: {problem}")
    return 1


def _edited_fields(lines: Sequence[str]) -> list[str]:
    """Lines whose SIEM-facing fields differ from what their verified leaf says."""
    problems = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            expected = rebuilt_line(int(entry["index"]), str(entry["leaf"]))
        except (ValueError, KeyError, TypeError):
            continue  # malformed lines are verify_export's findings
        if expected is not None and entry != expected:
            fields = sorted(
                k for k in set(entry) | set(expected) if entry.get(k) != expected.get(k)
            )
            problems.append(f"line {number}: {', '.join(fields)} differ from the leaf")
    return problems


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bastion-verify", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    receipt = commands.add_parser("receipt", help="check one event's receipt")
    receipt.add_argument("--key", action="append", required=True, help="verifier key (repeat)")
    receipt.add_argument("--trusted", type=Path, help="an earlier signed checkpoint you trust")
    receipt.add_argument("receipt", type=Path)
    export = commands.add_parser("export", help="check an exported log against a checkpoint")
    export.add_argument("--key", action="append", required=True, help="verifier key (repeat)")
    export.add_argument("--checkpoint", type=Path, required=True, help="signed checkpoint")
    export.add_argument("export", type=Path)
    args = parser.parse_args(argv)
    sys.exit(_receipt(args) if args.command == "receipt" else _export(args))
