"""The Audit page (``/console/audit``): the latest signed checkpoint, the running integrity
watch's status, a search of events, each event's detail and its inclusion receipt.

Everything here reads; nothing changes state. The receipt is the one ``bastion audit prove`` and
``GET /v1/audit/proofs/inclusion`` produce (``audit/receipt.py``), proved against the latest
signed checkpoint, downloaded as a file that ``bastion-verify receipt --key KEY FILE`` checks
offline. An event the checkpointer has not signed yet (it signs every few seconds) gets a clear
"try again" page: a GET never signs a checkpoint itself.

The search's query string is hostile input: every parameter is checked (known names only, each
at most once, bounded lengths, times in ISO 8601) and refused with a page that says which one is
wrong and why.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bastion.audit.integrity import IntegrityWatch
from bastion.audit.log import AuditLog
from bastion.audit.receipt import make_receipt
from bastion.errors import BadRequest, NotFound, Unavailable
from bastion.store import Store
from bastion.store import events as rows
from bastion.store.events import CheckpointRow, EventQuery, EventRow

from .guard import ConsoleGuard, Viewer

ACTION = "audit_read"
PAGE_SIZE = 50
MAX_PAGE = 200
MAX_QUERY = 2000  # characters of the whole query string
MAX_VALUE = 128  # characters of one search value
MAX_TIME = 40
MAX_INDEX = 2**53
PARAMS = ("principal", "model", "name", "from", "to", "before", "limit")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\*?|\*")
_EVENT_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
TIME_HINT = "use ISO 8601, e.g. 2026-11-27T15:00 (UTC) or 2026-11-27T15:00:00+01:00"


@dataclass(frozen=True, slots=True)
class Search:
    """A validated search: the store query and the form's values as the viewer typed them."""

    query: EventQuery
    form: dict[str, str]

    def link(self, **changes: str) -> str:
        """The page's URL with these parameters changed (empty ones dropped)."""
        values = {**self.form, **changes}
        kept = {key: value for key, value in values.items() if value}
        return "/console/audit" + ("?" + urlencode(kept) if kept else "")


def utc(seconds: float) -> str:
    """A time as the page shows it: ``2026-11-27 15:56:45 UTC``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def parse_time(field: str, text: str) -> float:
    """An ISO 8601 time (UTC unless it has an offset) as seconds since the epoch."""
    if len(text) > MAX_TIME:
        raise BadRequest(f"{field}: the time is longer than {MAX_TIME} characters; {TIME_HINT}")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{field}: {text!r} is not a time; {TIME_HINT}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _text(field: str, value: str) -> str:
    if len(value) > MAX_VALUE:
        raise BadRequest(f"{field}: at most {MAX_VALUE} characters")
    if not value.isprintable():
        raise BadRequest(f"{field}: control characters are not allowed")
    return value


def _int(field: str, value: str, low: int, high: int) -> int:
    if not value.isascii() or not value.isdigit():
        raise BadRequest(f"{field}: {value[:20]!r} is not a whole number")
    if len(value) > 16 or not low <= int(value) <= high:
        raise BadRequest(f"{field}: must be between {low} and {high}")
    return int(value)


def parse_search(raw_query: str, params: list[tuple[str, str]]) -> Search:
    """The search the query string asks for; ``BadRequest`` naming the first bad parameter."""
    if len(raw_query) > MAX_QUERY:
        raise BadRequest(f"the query string is longer than {MAX_QUERY} characters")
    given: dict[str, str] = {}
    for key, value in params:
        if key not in PARAMS:
            known = ", ".join(PARAMS)
            raise BadRequest(f"unknown search field {key[:40]!r} (known: {known})")
        if key in given:
            raise BadRequest(f"{key}: given more than once")
        given[key] = value.strip()
    form = {key: value for key, value in given.items() if value}
    name = form.get("name")
    if name is not None and not _NAME.fullmatch(name):
        raise BadRequest(
            f"name: {name[:70]!r} is not an event name (lower-case letters, digits, '.', '_', "
            "'-', at most 64; end with * for a prefix such as token.*)"
        )
    since = parse_time("from", form["from"]) if "from" in form else None
    until = parse_time("to", form["to"]) if "to" in form else None
    if since is not None and until is not None and since >= until:
        raise BadRequest("from must be earlier than to")
    query = EventQuery(
        principal=_text("principal", form["principal"]) if "principal" in form else None,
        model=_text("model", form["model"]) if "model" in form else None,
        name=None if name in (None, "*") else name,
        since=since,
        until=until,
        before=_int("before", form["before"], 1, MAX_INDEX) if "before" in form else None,
        limit=_int("limit", form["limit"], 1, MAX_PAGE) if "limit" in form else PAGE_SIZE,
    )
    return Search(query, form)


def event_id_of(request: Request) -> str:
    event_id = str(request.path_params["event_id"])
    if not _EVENT_ID.fullmatch(event_id):
        raise NotFound("there is no audit event with that id (ids look like ev_0123456789abcdef)")
    return event_id


def summary(row: EventRow) -> dict[str, Any]:
    """One line of the results table."""
    body = orjson.loads(row.body)
    allowed = body.get("allowed")
    decision = "" if allowed is None else ("allowed" if allowed else "denied")
    if row.name == "request.authorized":
        decision = "allowed"
    elif row.name == "token.refused":
        decision = "refused"
    return {
        "index": row.idx,
        "id": row.id,
        "time": utc(row.time),
        "name": row.name,
        "principal": str(body.get("principal") or ""),
        "actor": str(body.get("actor") or ""),
        "model": str(body.get("model") or ""),
        "decision": decision,
    }


def checkpoint_view(cp: CheckpointRow | None, audit: AuditLog) -> dict[str, Any] | None:
    if cp is None:
        return None
    return {
        "origin": audit.origin,
        "size": cp.size,
        "root": base64.b64encode(cp.root).decode(),
        "at": utc(cp.created_at),
        "note": cp.note,
    }


def integrity_view(watch: IntegrityWatch | None) -> dict[str, Any] | None:
    if watch is None:
        return None
    status = watch.status()
    checked = status["checked_at"]
    return {**status, "checked": utc(checked) if checked is not None else "not yet"}


class AuditPage:
    def __init__(
        self,
        guard: ConsoleGuard,
        store: Store,
        audit: AuditLog,
        integrity: IntegrityWatch | None,
    ) -> None:
        self.guard = guard
        self.store = store
        self.audit = audit
        self.integrity = integrity

    def routes(self) -> list[BaseRoute]:
        page = self.guard.page(ACTION)
        return [
            Route("/audit", page(self.search), methods=["GET"]),
            Route("/audit/checkpoint", page(self.checkpoint_file), methods=["GET"]),
            Route("/audit/events/{event_id}", page(self.detail), methods=["GET"]),
            Route("/audit/events/{event_id}/receipt", page(self.receipt), methods=["GET"]),
        ]

    # -- the page -------------------------------------------------------------------------------

    def _find(self, query: EventQuery) -> tuple[list[EventRow], CheckpointRow | None, int]:
        with self.store.read() as conn:
            found = rows.search(conn, query)
            return found, rows.latest_checkpoint(conn), rows.size(conn)

    async def search(self, request: Request, viewer: Viewer) -> Response:
        wanted = parse_search(request.url.query, request.query_params.multi_items())
        found, cp, size = await anyio.to_thread.run_sync(self._find, wanted.query)
        older = ""
        if len(found) == wanted.query.limit and found[-1].idx > 0:
            older = wanted.link(before=str(found[-1].idx))
        return self.guard.render(
            request,
            "audit.html",
            viewer,
            checkpoint=checkpoint_view(cp, self.audit),
            verifier_key=self.audit.signer.verifier.text,
            integrity=integrity_view(self.integrity),
            size=size,
            form=wanted.form,
            events=[summary(row) for row in found],
            older=older,
            newest=wanted.link(before="") if "before" in wanted.form else "",
            limit=wanted.query.limit,
            max_page=MAX_PAGE,
        )

    def _latest(self) -> CheckpointRow | None:
        with self.store.read() as conn:
            return rows.latest_checkpoint(conn)

    async def checkpoint_file(self, request: Request, viewer: Viewer) -> Response:
        """The latest signed checkpoint as a file (``bastion-verify receipt --trusted``)."""
        cp = await anyio.to_thread.run_sync(self._latest)
        if cp is None:
            raise NotFound("no checkpoint has been signed yet")
        return _download(cp.note.encode(), "text/plain; charset=utf-8", f"checkpoint-{cp.size}.txt")

    # -- one event ------------------------------------------------------------------------------

    def _event(self, event_id: str) -> tuple[EventRow, CheckpointRow | None]:
        with self.store.read() as conn:
            row = rows.by_id(conn, event_id)
            if row is None:
                raise NotFound(f"there is no audit event {event_id!r}")
            return row, rows.latest_checkpoint(conn)

    async def detail(self, request: Request, viewer: Viewer) -> Response:
        row, cp = await anyio.to_thread.run_sync(self._event, event_id_of(request))
        body = orjson.loads(row.body)
        return self.guard.render(
            request,
            "audit_event.html",
            viewer,
            event=summary(row),
            recorded=orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode(),
            leaf=row.leaf,
            checkpoint=checkpoint_view(cp, self.audit),
            covered=cp is not None and row.idx < cp.size,
        )

    def _receipt(self, event_id: str) -> dict[str, Any]:
        with self.store.read() as conn:
            row = rows.by_id(conn, event_id)
            if row is None:
                raise NotFound(f"there is no audit event {event_id!r}")
            cp = rows.latest_checkpoint(conn)
            if cp is None or row.idx >= cp.size:
                raise Unavailable(
                    f"event {row.idx} is not in a signed checkpoint yet (checkpoints are "
                    "signed every few seconds); try again in a moment"
                )
            proof = self.audit.inclusion(conn, row.idx, cp.size)
        return make_receipt(
            leaf=row.leaf.encode(),
            index=row.idx,
            tree_size=cp.size,
            inclusion=proof,
            checkpoint=cp.note,
        )

    async def receipt(self, request: Request, viewer: Viewer) -> Response:
        event_id = event_id_of(request)
        receipt = await anyio.to_thread.run_sync(self._receipt, event_id)
        text = orjson.dumps(receipt, option=orjson.OPT_INDENT_2) + b"\n"
        return _download(text, "application/json", f"bastion-receipt-{event_id}.json")


def _download(content: bytes, media_type: str, filename: str) -> Response:
    """A file the browser saves (``filename`` is built from checked characters only)."""
    disposition = f'attachment; filename="{filename}"'
    return Response(content, media_type=media_type, headers={"content-disposition": disposition})
