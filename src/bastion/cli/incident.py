"""``bastion incident``: list, show, resolve and assign incidents (on the server, from the store).

``show`` is what a responder reads first: the incident, its findings and actions, the timeline
(times relative to the first signal, ``T-5m02s`` before it, ``T+12s`` after) and the blast
radius. Everything printed from the store is plain text, never Rich markup: a finding's
explanation or a resolution reason such as ``[/x]`` is shown as written.
"""

from __future__ import annotations

import orjson
import typer
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from bastion.config import BastionConfig
from bastion.respond.blast_radius import BlastRadius
from bastion.respond.incidents import IncidentDetail, IncidentService, incident_dict
from bastion.respond.timeline import Timeline, TimelineEntry
from bastion.store.incidents import IncidentRow
from bastion.timefmt import relative, when

from .context import Context, actor

out = Console(highlight=False)
_STATUS_STYLE = {"open": "bold red", "contained": "yellow", "resolved": "green"}
_SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "dim"}


def _service(c: Context) -> IncidentService:
    def config() -> BastionConfig | None:
        return c.config if c.settings.config_file.exists() else None

    return IncidentService(c.store, c.audit, config=config, access_ttl=c.settings.access_token_ttl)


def _json(value: object) -> None:
    out.print(orjson.dumps(value).decode(), markup=False, soft_wrap=True)


def _table(*headers: str | Column, title: str = "") -> Table:
    return Table(*headers, title=title or None, title_justify="left", title_style="bold")


def _row(table: Table, *cells: str) -> None:
    table.add_row(*(Text(cell) for cell in cells))


def register(app: typer.Typer) -> None:
    incident_app = typer.Typer(
        help="Incidents: grouped findings with a timeline and blast radius.",
        no_args_is_help=True,
    )
    app.add_typer(incident_app, name="incident")

    @incident_app.command("list")
    def list_incidents(
        ctx: typer.Context,
        status: str = typer.Option("", help="only open, contained or resolved incidents"),
        limit: int = typer.Option(100, min=1, max=1000),
        as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
    ) -> None:
        """Incidents, newest first."""
        rows = _service(ctx.obj).list(status=status or None, limit=limit)
        if as_json:
            for row in rows:
                _json(incident_dict(row))
            return
        table = _table(Column("id", no_wrap=True), "status", "severity", "owner", "opened", "title")
        for row in rows:
            _row(
                table,
                row.id,
                row.status,
                str(row.severity),
                row.owner or "-",
                when(row.opened_at),
                row.title,
            )
        out.print(table)

    @incident_app.command("show")
    def show(
        ctx: typer.Context,
        incident_id: str = typer.Argument(..., help="in_..."),
        events: int = typer.Option(
            200, min=2, max=2000, help="timeline events to print (the first and last half)"
        ),
        as_json: bool = typer.Option(False, "--json", help="everything, as one JSON object"),
    ) -> None:
        """One incident: findings, actions, timeline and blast radius."""
        detail = _service(ctx.obj).detail(incident_id)
        if as_json:
            _json(detail.as_dict())
            return
        render(detail, events)

    @incident_app.command("resolve")
    def resolve(
        ctx: typer.Context,
        incident_id: str = typer.Argument(..., help="in_..."),
        reason: str = typer.Option(..., help="why it is over (1 to 1000 characters; audited)"),
    ) -> None:
        """Resolve an incident (its locks stay until released: see `bastion locks`)."""
        row = _service(ctx.obj).resolve(incident_id, by=actor(), reason=reason)
        out.print(Text(f"resolved {row.id}: {row.resolution}"))

    @incident_app.command("assign")
    def assign(
        ctx: typer.Context,
        incident_id: str = typer.Argument(..., help="in_..."),
        owner: str = typer.Option(..., help="who works on it (e.g. a principal's name)"),
    ) -> None:
        """Give an incident an owner."""
        row = _service(ctx.obj).assign(incident_id, owner=owner, by=actor())
        out.print(Text(f"{row.id} assigned to {row.owner}"))


def render(detail: IncidentDetail, events: int = 200) -> None:
    _header(detail.incident)
    if detail.findings:
        table = _table(
            Column("id", no_wrap=True),
            "detection",
            "severity",
            "entity",
            "seen",
            "what",
            title="Findings",
        )
        for f in detail.findings:
            _row(
                table,
                f.id,
                f.detection,
                str(f.severity),
                f"{f.entity_type} {f.entity}",
                f"{relative(f.first_seen - detail.incident.first_signal_at)}, {f.count}x",
                f.explanation,
            )
        out.print(table)
    if detail.actions:
        table = _table(
            Column("id", no_wrap=True), "action", "target", "status", "when", "by", title="Actions"
        )
        for a in detail.actions:
            _row(
                table,
                a.id,
                a.action,
                f"{a.target_type} {a.target}".strip(),
                f"{a.status} ({a.mode})",
                relative(a.created_at - detail.incident.first_signal_at),
                a.author,
            )
        out.print(table)
    _timeline(detail.timeline, detail.incident.first_signal_at, events)
    _blast_radius(detail.blast_radius)


def _header(row: IncidentRow) -> None:
    out.print(Text.assemble((row.id, "bold"), "  ", row.title))
    severity = str(row.severity)
    out.print(
        Text.assemble(
            "status ",
            (row.status, _STATUS_STYLE.get(row.status, "")),
            " · severity ",
            (severity, _SEVERITY_STYLE.get(severity, "")),
            f" · owner {row.owner or '-'}",
        )
    )
    times = [f"opened {when(row.opened_at)}", f"first signal {when(row.first_signal_at)}"]
    if row.contained_at is not None:
        times.append(f"contained {when(row.contained_at)}")
    if row.resolved_at is not None:
        times.append(f"resolved {when(row.resolved_at)} by {row.resolved_by or '-'}")
    out.print(Text(" · ".join(times) + " (UTC)"))
    if row.resolution:
        out.print(Text(f"resolution: {row.resolution}"))
    named = [
        f"{kind} {', '.join(values)}" for kind, values in row.entities.as_dict().items() if values
    ]
    out.print(Text("implicated: " + ("; ".join(named) or "-")))


def _timeline(timeline: Timeline, signal: float, events: int) -> None:
    entries = list(timeline.entries)
    title = (
        f"Timeline: {timeline.matched} events from {relative(timeline.start - signal)} "
        f"to now ({when(timeline.start)} to {when(timeline.end)} UTC)"
    )
    table = _table("when", "time", "kind", "event", title=title)
    skipped = max(0, len(entries) - events)
    head = entries[: events // 2] if skipped else entries
    tail = entries[len(entries) - (events - events // 2) :] if skipped else []
    for entry in head:
        _entry(table, entry, signal)
    if skipped:
        _row(table, "…", "", "", f"{skipped} events not printed (--events, or --json for all)")
    for entry in tail:
        _entry(table, entry, signal)
    out.print(table)
    if timeline.truncated:
        out.print(Text(f"timeline truncated: {timeline.note}", style="yellow"))


def _entry(table: Table, entry: TimelineEntry, signal: float) -> None:
    _row(table, relative(entry.time - signal), when(entry.time)[11:], entry.kind, entry.summary)


def _blast_radius(blast: BlastRadius) -> None:
    partial = " (partial: the audit window was not read in full)" if blast.partial else ""
    out.print()
    out.print(Text(f"Blast radius since {when(blast.since)} UTC{partial}", style="bold"))
    out.print(
        Text(
            f"requests: {blast.requests_served} served, {blast.requests_denied} denied; "
            f"output tokens served: {blast.tokens_out}"
        )
    )
    if blast.models:
        table = _table("model", "compartment", "requests", "tokens out")
        for use in blast.models:
            _row(table, use.model, use.compartment, str(use.requests), str(use.tokens_out))
        out.print(table)
    shared = [f"{s.principal} ({', '.join(s.via)})" for s in blast.shared_infrastructure]
    out.print(Text("other principals on the same infrastructure: " + ("; ".join(shared) or "none")))
    families = [
        f"{f.id} ({f.principal}, since {when(f.created_at)}{', locked' if f.locked else ''})"
        for f in blast.live_families
    ]
    out.print(Text("live token families: " + ("; ".join(families) or "none")))
    grants = [
        f"{g.principal} → {g.compartment} ({g.kind}, {g.via}"
        + (f", until {when(g.expires_at)})" if g.expires_at is not None else ")")
        for g in blast.grants
    ]
    out.print(Text("grants held: " + ("; ".join(grants) or "none")))
