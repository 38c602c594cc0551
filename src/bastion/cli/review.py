"""``bastion review``: vendor access reviews, decided by the vendor org's sponsor (or an admin).

Every command acts as a person: it calls the admin API with the device key of a profile (see
``bastion login``), so the server knows who reviews, and applies the same rules as the API: only
the org's sponsor or an admin decides, never a vendor principal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.table import Table

from bastion.client import httpx_client
from bastion.errors import AccessDenied, BadRequest, BastionError, Conflict, NotFound, Unavailable
from bastion.timefmt import when

from .admin import add_row, id_column

out = Console(highlight=False, soft_wrap=True)
_ERRORS: dict[int, type[BastionError]] = {
    403: AccessDenied,
    404: NotFound,
    409: Conflict,
    503: Unavailable,
}
_PROFILE = typer.Option("default", help="your device profile (see `bastion login`)")


def _call(profile: str, method: str, path: str, body: Mapping[str, object] | None = None) -> Any:
    try:
        with httpx_client(profile=profile, timeout=30) as client:
            response = client.request(method, path, json=body)
    except httpx.HTTPError as exc:
        raise BadRequest(f"cannot reach the server: {type(exc).__name__}") from None
    data = (
        response.json()
        if response.headers.get("content-type", "").startswith("application/json")
        else {}
    )
    if response.status_code != 200:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        message = str(error.get("message", response.text[:200]))
        raise _ERRORS.get(response.status_code, BadRequest)(message)
    return data


def _path(review_id: str, *rest: str) -> str:
    """A review's admin API path; the id is quoted so it can only ever name a review."""
    return "/".join(("/admin/v1/reviews", quote(review_id, safe=""), *rest))


def _status(review: dict[str, Any]) -> str:
    if review.get("completed_at") is not None:
        return f"completed by {review.get('completed_by')}"
    return "OVERDUE" if review.get("overdue") else "open"


def _decision(member: dict[str, Any]) -> str:
    decision = member.get("decision")
    if not decision:
        return "-"
    return f"{decision['decision']} by {decision['decided_by']}: {decision['reason']}"


def _grants(member: dict[str, Any]) -> str:
    standing = [f"{name} (standing)" for name in member.get("standing", [])]
    timed = [
        f"{grant['compartment']} until {when(grant['expires_at'])}"
        for grant in member.get("grants", [])
    ]
    return ", ".join(standing + timed) or "-"


def _decide(profile: str, review_id: str, principal: str, decision: str, reason: str) -> None:
    body = {"principal": principal, "decision": decision, "reason": reason}
    row = _call(profile, "POST", _path(review_id, "decisions"), body)
    verb = "kept" if decision == "keep" else "removed (locked, time-bound grants revoked)"
    out.print(f"{row['principal']}: {verb} in review {row['review']}", markup=False)


def register(app: typer.Typer) -> None:
    review_app = typer.Typer(help="Vendor access reviews (as the sponsor).", no_args_is_help=True)
    app.add_typer(review_app, name="review")

    @review_app.command("list")
    def list_reviews(
        open_only: bool = typer.Option(False, "--open", help="only open reviews"),
        profile: str = _PROFILE,
    ) -> None:
        """Reviews you may see: your sponsored orgs' (all of them for admins and auditors)."""
        data = _call(profile, "GET", "/admin/v1/reviews" + ("?open=true" if open_only else ""))
        table = Table(id_column("id"), "org", "opened", "due", "status")
        for review in data["reviews"]:
            add_row(
                table,
                review["id"],
                review["org"],
                when(review["opened_at"]),
                when(review["due_at"]),
                _status(review),
            )
        out.print(table)

    @review_app.command("show")
    def show(review_id: str, profile: str = _PROFILE) -> None:
        """A review: each principal of the org, its grants and the decision so far."""
        review = _call(profile, "GET", _path(review_id))
        out.print(
            f"{review['id']}: org {review['org']}, due {when(review['due_at'])} UTC — "
            f"{_status(review)}",
            markup=False,
        )
        table = Table(id_column("principal"), "kind", "grants", "decision")
        for member in review["principals"]:
            add_row(table, member["principal"], member["kind"], _grants(member), _decision(member))
        out.print(table)

    @review_app.command("keep")
    def keep(
        review_id: str,
        principal: str,
        reason: str = typer.Option(..., help="why it keeps its access (recorded)"),
        profile: str = _PROFILE,
    ) -> None:
        """Recertify a principal: it keeps its access."""
        _decide(profile, review_id, principal, "keep", reason)

    @review_app.command("remove")
    def remove(
        review_id: str,
        principal: str,
        reason: str = typer.Option(..., help="why it loses its access (recorded)"),
        profile: str = _PROFILE,
    ) -> None:
        """Remove a principal: locked at once, its time-bound grants revoked."""
        _decide(profile, review_id, principal, "remove", reason)

    @review_app.command("complete")
    def complete(review_id: str, profile: str = _PROFILE) -> None:
        """Complete a review once every principal of the org has a decision."""
        review = _call(profile, "POST", _path(review_id, "complete"))
        out.print(
            f"completed {review['id']} for org {review['org']}; the next one opens shortly",
            markup=False,
        )
