"""``bastion audit``: checkpoints, full verification, receipts, export, signed-note checks, and
the tamper state the running servers share (``integrity``, ``acknowledge-tamper``)."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import typer
from rich.console import Console

from bastion.audit.checkpoint import parse_checkpoint
from bastion.audit.export import ocsf_line
from bastion.audit.integrity import IntegrityWatch
from bastion.audit.note import NoteError, open_note, parse_verifier_key
from bastion.audit.receipt import make_receipt
from bastion.audit.verify import verify_log
from bastion.errors import BadRequest, NotFound
from bastion.store import events as rows
from bastion.store.events import CheckpointRow

from .context import Context, actor

out = Console(highlight=False, soft_wrap=True)  # one greppable line per message
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _covering_checkpoint(c: Context, size: int) -> CheckpointRow:
    """The latest checkpoint, signing a new one first if it does not cover ``size`` entries."""
    with c.store.begin() as conn:
        latest = rows.latest_checkpoint(conn)
        if latest is None or latest.size < size:
            c.audit.checkpoint(conn)
            latest = rows.latest_checkpoint(conn)
    if latest is None or latest.size < size:
        raise NotFound("the log has no checkpoint covering that entry")
    return latest


def _write(output: Path | None, text: str) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def register(app: typer.Typer) -> None:
    audit_app = typer.Typer(help="The verifiable audit log.", no_args_is_help=True)
    app.add_typer(audit_app, name="audit")

    @audit_app.command("key")
    def key(ctx: typer.Context) -> None:
        """Print the log's verifier key (give it to auditors)."""
        c: Context = ctx.obj
        out.print(c.audit.signer.verifier.text, markup=False)

    @audit_app.command("checkpoint")
    def checkpoint(ctx: typer.Context) -> None:
        """Sign a checkpoint of the current tree (if it grew) and print the latest one."""
        c: Context = ctx.obj
        with c.store.begin() as conn:
            c.audit.checkpoint(conn)
            latest = rows.latest_checkpoint(conn)
        if latest is None:
            raise NotFound("the audit log is empty: nothing to checkpoint")
        sys.stdout.write(latest.note)

    @audit_app.command("verify")
    def verify(ctx: typer.Context) -> None:
        """Recompute the tree from the stored events and check every signed checkpoint."""
        c: Context = ctx.obj
        with c.store.read() as conn:
            verdict = verify_log(conn, c.audit)
        if verdict.ok:
            out.print(
                f"audit log OK: {verdict.size} entries, {verdict.checkpoints} signed checkpoints "
                "verified and consistent"
            )
            return
        err.print(f"[red]AUDIT LOG TAMPERED[/]: {len(verdict.problems)} problem(s)")
        if verdict.first_bad_index is not None:
            err.print(f"first bad index: {verdict.first_bad_index}")
        for problem in verdict.problems:
            err.print(f"  {problem}", markup=False)
        raise typer.Exit(1)

    @audit_app.command("integrity")
    def integrity(
        ctx: typer.Context,
        as_json: bool = typer.Option(False, "--json", help="print the status as one JSON object"),
    ) -> None:
        """Check the log against itself now, as the server does every second, and show the
        tamper state the servers share; exits 1 while the log is held tampered."""
        c: Context = ctx.obj
        watch = IntegrityWatch(c.store, c.audit, new_per_pass=None, recheck_per_pass=None)
        status = watch.check()
        tampered = status["state"] != "ok"
        if as_json:
            sys.stdout.write(orjson.dumps(status).decode() + "\n")
        elif not tampered:
            out.print(f"audit log intact: {status['verified_size']} entries verified")
        else:
            err.print("[red]AUDIT LOG TAMPERED[/]: audit-required compartments are refused")
            if status["first_bad_index"] is not None:
                err.print(f"first bad index: {status['first_bad_index']}")
            err.print(f"  {status['problem']}", markup=False)
            now = watch.verify_now()
            err.print(
                "checked now: the log verifies from entry 0"
                if now is None
                else f"checked now: {now.problem}",
                markup=False,
            )
            err.print(
                "once investigated (and what was changed restored): "
                'bastion audit acknowledge-tamper --reason "..."',
                markup=False,
            )
        if tampered:
            raise typer.Exit(1)

    @audit_app.command("acknowledge-tamper")
    def acknowledge_tamper(
        ctx: typer.Context,
        reason: str = typer.Option(..., "--reason", help="what was found and done (recorded)"),
    ) -> None:
        """Clear the tamper mark (recorded as audit.tamper_acknowledged): every server verifies
        the log from entry 0 again, and finds any damage that is still there."""
        c: Context = ctx.obj
        event = IntegrityWatch(c.store, c.audit).acknowledge(reason, actor())
        out.print(
            f"tamper mark cleared ({event.id}); servers verify the log again from entry 0",
            markup=False,
        )

    @audit_app.command("prove")
    def prove(
        ctx: typer.Context,
        event_id: str,
        output: Path | None = typer.Option(None, "--output", "-o", help="write here"),
        from_size: int | None = typer.Option(
            None, help="also prove consistency with an earlier checkpoint of this size"
        ),
    ) -> None:
        """Write a self-contained receipt for one event (check it with `bastion-verify`)."""
        c: Context = ctx.obj
        with c.store.read() as conn:
            row = rows.by_id(conn, event_id)
        if row is None:
            raise NotFound(f"no audit event {event_id[:40]!r}")
        cp = _covering_checkpoint(c, row.idx + 1)
        with c.store.read() as conn:
            inclusion = c.audit.inclusion(conn, row.idx, cp.size)
            consistency = None
            if from_size is not None:
                if not 0 < from_size <= cp.size:
                    raise BadRequest(f"--from-size must be between 1 and {cp.size}")
                consistency = (from_size, c.audit.consistency(conn, from_size, cp.size))
        receipt = make_receipt(
            leaf=row.leaf.encode(),
            index=row.idx,
            tree_size=cp.size,
            inclusion=inclusion,
            checkpoint=cp.note,
            consistency=consistency,
        )
        _write(output, orjson.dumps(receipt, option=orjson.OPT_INDENT_2).decode() + "\n")

    @audit_app.command("export")
    def export(
        ctx: typer.Context,
        output: Path | None = typer.Option(None, "--output", "-o", help="JSON lines file"),
        checkpoint_out: Path | None = typer.Option(
            None, help="also write the signed checkpoint the export matches"
        ),
    ) -> None:
        """Export the log as OCSF-shaped JSON lines (each with its index and leaf)."""
        c: Context = ctx.obj
        with c.store.read() as conn:
            size = rows.size(conn)
        cp = _covering_checkpoint(c, size) if size else None
        limit = cp.size if cp else 0
        lines: list[str] = []
        cursor = -1
        with c.store.read() as conn:
            while cursor + 1 < limit:
                batch = [r for r in rows.after(conn, cursor, 2000) if r.idx < limit]
                if not batch:
                    break
                lines.extend(ocsf_line(r) for r in batch)
                cursor = batch[-1].idx
        _write(output, "".join(line + "\n" for line in lines))
        if checkpoint_out is not None and cp is not None:
            checkpoint_out.write_text(cp.note, encoding="utf-8")

    @audit_app.command("verify-note")
    def verify_note(
        key: list[str] = typer.Option(..., "--key", help="verifier key name+id+key (repeatable)"),
        file: Path = typer.Argument(..., help="the signed note"),
    ) -> None:
        """Verify any C2SP signed note (from Bastion or another implementation)."""
        try:
            verifiers = [parse_verifier_key(k.strip()) for k in key]
        except NoteError as exc:
            raise BadRequest(f"bad verifier key: {exc}") from None
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise BadRequest(f"{file}: not a readable UTF-8 file") from None
        try:
            body, names = open_note(text, verifiers)
        except NoteError as exc:
            err.print(f"[red]note does not verify:[/] {exc}", highlight=False)
            raise typer.Exit(1) from None
        out.print(f"verified by: {', '.join(names)}", markup=False)
        try:
            cp = parse_checkpoint(body)
            out.print(f"checkpoint: origin {cp.origin}, size {cp.size}", markup=False)
        except NoteError:
            out.print(body, markup=False, end="")
