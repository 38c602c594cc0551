"""Incidents on a real SQLite store: which findings group together, status changes and their
audit events, bad input, and the timeline and blast radius read back from the audit log."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bastion.audit import keys as audit_keys
from bastion.audit.commitment import Committer
from bastion.audit.events import AdminAction, Event, FindingRaised, RequestDecided, TokenEvent
from bastion.audit.log import AuditLog
from bastion.detect.findings import Finding, Severity
from bastion.errors import BadRequest, Conflict, NotFound
from bastion.respond.entities import Implicated
from bastion.respond.incidents import IncidentService, title_of
from bastion.respond.locks import LockService
from bastion.respond.timeline import Scope, TimelineBuilder, read_window, summary
from bastion.store import Store
from bastion.store import findings as finding_rows
from bastion.store import incidents as incident_rows
from bastion.store import tokens as token_rows
from bastion.store.tables import audit_events

NOW = 1_800_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'bastion.db'}")
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    keys = audit_keys.load_or_create(tmp_path / "state")
    return AuditLog(Committer(keys.salt), keys.signer, keys.origin)


@pytest.fixture
def service(store: Store, audit: AuditLog) -> IncidentService:
    return IncidentService(store, audit, clock=lambda: NOW, lookback=600.0, group_window=3600.0)


def finding(
    entity: str = "vic",
    *,
    entity_type: str = "principal",
    detection: str = "D2",
    severity: Severity = Severity.MEDIUM,
    principal: str | None = None,
    org: str = "acme",
    at: float = NOW - 60,
    explanation: str = "token family fam_x used from two networks",
    evidence: tuple[str, ...] = (),
) -> Finding:
    return Finding(
        id=f"fd_{abs(hash((entity, detection, at, severity))) % 10**16:016d}",
        detection=detection,
        severity=severity,
        confidence=0.9,
        techniques=("T1550.001",),
        entity_type=entity_type,
        entity=entity,
        principal=entity if principal is None and entity_type == "principal" else principal or "",
        org=org,
        explanation=explanation,
        evidence=evidence,
        first_seen=at,
        last_seen=at,
    )


def who(
    principals: Sequence[str] = (),
    orgs: Sequence[str] = ("acme",),
    networks: Sequence[str] = (),
    keys: Sequence[str] = (),
    families: Sequence[str] = (),
) -> Implicated:
    return Implicated(
        principals=frozenset(principals),
        orgs=frozenset(orgs),
        networks=frozenset(networks),
        keys=frozenset(keys),
        families=frozenset(families),
    )


def attach(
    store: Store, service: IncidentService, found: Finding, implicated: Implicated
) -> tuple[incident_rows.IncidentRow, bool]:
    """As the response service does: in its transaction, with the finding stored."""
    with store.begin() as conn:
        finding_rows.upsert(conn, [found])
        return service.attach(conn, found, implicated, NOW)


def admin_events(store: Store, prefix: str = "incident.") -> list[dict[str, Any]]:
    with store.read() as conn:
        rows = conn.execute(sa.select(audit_events.c.body).order_by(audit_events.c.idx))
        bodies = [json.loads(row.body) for row in rows]
    return [body for body in bodies if body["name"].startswith(prefix)]


def record(store: Store, audit: AuditLog, *events: Event) -> None:
    with store.begin() as conn:
        audit.append(conn, list(events))


def request(
    principal: str,
    at: float,
    *,
    model: str = "demo-chat",
    compartment: str = "general",
    allowed: bool = True,
    source_ip: str = "10.1.9.7",
    tokens_out: int | None = 40,
    jkt: str = "jkt-vic",
    family: str = "fam_vic",
) -> RequestDecided:
    return RequestDecided(
        time=at,
        principal=principal,
        org="acme",
        model=model,
        compartment=compartment,
        route="/v1/chat/completions",
        allowed=allowed,
        reasons=() if allowed else ("not_granted",),
        policies=(),
        epoch=1,
        source_ip=source_ip,
        family=family,
        jkt=jkt,
        status=200 if allowed else 403,
        outcome="completed" if allowed else "denied",
        tokens_in=10 if allowed else None,
        tokens_out=tokens_out if allowed else None,
    )


# -- grouping ----------------------------------------------------------------------------------


def test_findings_about_one_principal_group_into_one_incident_at_the_highest_severity(
    store: Store, service: IncidentService
) -> None:
    first, opened = attach(store, service, finding(), who(["vic"], networks=["10.1.9.0/24"]))
    assert opened
    assert first.id.startswith("in_")
    assert len(first.id) == 19
    assert (first.status, first.severity, first.owner) == ("open", Severity.MEDIUM, None)
    later = finding(detection="D6", severity=Severity.CRITICAL, at=NOW - 900)
    joined, opened = attach(store, service, later, who(["vic"], families=["fam_vic"]))
    assert not opened
    assert joined.id == first.id
    assert joined.severity == Severity.CRITICAL
    assert joined.first_signal_at == NOW - 900  # the earlier signal moves the start back
    assert joined.entities.families == {"fam_vic"}
    assert joined.entities.networks == {"10.1.9.0/24"}
    assert service.get(first.id) == joined
    with store.read() as conn:
        assert sorted(incident_rows.findings_of(conn, first.id)) == sorted([finding().id, later.id])
    names = [(e["name"], e["detail"]["finding"], e["actor"]) for e in admin_events(store)]
    assert names == [
        ("incident.opened", finding().id, "bastion:response"),
        ("incident.finding_added", later.id, "bastion:response"),
    ]


def test_a_shared_office_network_does_not_merge_two_principals_incidents(
    store: Store, service: IncidentService
) -> None:
    vic, _ = attach(store, service, finding(), who(["vic"], networks=["10.1.9.0/24"]))
    same_net, opened = attach(
        store, service, finding("vera"), who(["vera"], networks=["10.1.9.0/24"])
    )
    assert opened
    assert same_net.id != vic.id
    about_the_network, opened = attach(
        store,
        service,
        finding("", entity_type="network", detection="D11"),
        who([], networks=["10.1.9.0/24"]),
    )
    assert (about_the_network.id, opened) in ((vic.id, False), (same_net.id, False))
    other, opened = attach(
        store, service, finding("olga", org="acme"), who(["olga"], networks=["192.0.2.0/24"])
    )
    assert opened
    assert other.id != vic.id
    assert {row.id for row in service.list()} == {other.id, vic.id, same_net.id}


def test_org_wide_findings_group_by_org_and_principal_findings_never_do(
    store: Store, service: IncidentService
) -> None:
    vic, _ = attach(store, service, finding(), who(["vic"]))
    campaign = finding("acme", entity_type="org", detection="D12", severity=Severity.HIGH)
    joined, opened = attach(store, service, campaign, who([], orgs=["acme"]))
    assert (joined.id, opened) == (vic.id, False)
    # another acme principal with nothing else in common is another incident
    vera, opened = attach(store, service, finding("vera"), who(["vera"], orgs=["acme"]))
    assert opened
    assert vera.id != vic.id


def test_attach_is_idempotent_for_a_finding(store: Store, service: IncidentService) -> None:
    first, _ = attach(store, service, finding(), who(["vic"]))
    again, opened = attach(store, service, finding(), who(["vic"], networks=["198.51.100.0/24"]))
    assert (again, opened) == (first, False)
    assert len(admin_events(store)) == 1


def test_resolved_and_stale_incidents_are_not_joined(
    store: Store, audit: AuditLog, service: IncidentService
) -> None:
    first, _ = attach(store, service, finding(), who(["vic"]))
    service.resolve(first.id, by="cli:sam", reason="false positive: pentest")
    second, opened = attach(store, service, finding(detection="D5"), who(["vic"]))
    assert opened
    assert second.id != first.id
    later = IncidentService(store, audit, clock=lambda: NOW, group_window=10.0)
    with store.begin() as conn:
        incident_rows.update(conn, second.id, updated_at=NOW - 11)
    third, opened = attach(store, later, finding(detection="D6"), who(["vic"]))
    assert opened
    assert third.id not in (first.id, second.id)


def test_the_title_says_what_was_found_on_one_bounded_line() -> None:
    assert title_of(finding()) == "D2 on principal vic: token family fam_x used from two networks"
    long = title_of(finding(explanation="x\x1b[2J\n" + "y" * 400))
    assert len(long) == 300
    assert long.endswith("…")
    assert "\x1b" not in long
    assert "\n" not in long


# -- status, owner -----------------------------------------------------------------------------


def test_contained_then_resolved_each_once_and_audited(
    store: Store, service: IncidentService
) -> None:
    row, _ = attach(store, service, finding(), who(["vic"]))
    with store.begin() as conn:
        service.contained(conn, row.id, NOW)
        service.contained(conn, row.id, NOW + 5)  # already contained: no change
    contained = service.get(row.id)
    assert (contained.status, contained.contained_at) == ("contained", NOW)
    resolved = service.resolve(row.id, by="principal:root", reason="  key rotated  ")
    assert (resolved.status, resolved.resolved_by, resolved.resolution) == (
        "resolved",
        "principal:root",
        "key rotated",
    )
    with pytest.raises(Conflict, match="already resolved"):
        service.resolve(row.id, by="principal:root", reason="again")
    with store.begin() as conn:
        service.contained(conn, row.id, NOW)
    assert service.get(row.id).status == "resolved"
    events = [(e["name"], e["actor"], e.get("reason")) for e in admin_events(store)]
    assert events[1:] == [
        ("incident.contained", "bastion:response", ""),
        ("incident.resolved", "principal:root", "key rotated"),
    ]
    assert [r.id for r in service.list(status="resolved")] == [row.id]
    assert service.list(status="open") == []


def test_a_persons_lock_contains_an_open_incident_in_their_name(
    store: Store, service: IncidentService
) -> None:
    row, _ = attach(store, service, finding(), who(["vic"]))
    service.contain(row.id, by="principal:root")
    service.contain(row.id, by="principal:audrey")  # already contained: no change, no event
    assert service.get(row.id).status == "contained"
    contained = [e for e in admin_events(store) if e["name"] == "incident.contained"]
    assert [e["actor"] for e in contained] == ["principal:root"]
    with pytest.raises(NotFound):
        service.contain("in_0000000000000000", by="principal:root")


@pytest.mark.parametrize("reason", ["", "   ", "r" * 1001])
def test_a_resolution_needs_a_reason_of_1_to_1000_characters(
    store: Store, service: IncidentService, reason: str
) -> None:
    row, _ = attach(store, service, finding(), who(["vic"]))
    with pytest.raises(BadRequest, match="1 to 1000"):
        service.resolve(row.id, by="cli:sam", reason=reason)
    assert service.get(row.id).status == "open"


def test_unknown_incidents_are_not_found(store: Store, service: IncidentService) -> None:
    for call in (
        lambda: service.get("in_nope"),
        lambda: service.detail("in_nope"),
        lambda: service.resolve("in_nope" + "x" * 500, by="cli:sam", reason="x"),
        lambda: service.assign("in_nope", owner="sam", by="cli:sam"),
    ):
        with pytest.raises(NotFound, match="no incident 'in_nope"):
            call()
    with store.begin() as conn, pytest.raises(NotFound):
        service.contained(conn, "in_nope", NOW)
    assert admin_events(store, "") == []


@pytest.mark.parametrize("owner", ["", "a" * 129, "[red]x[/]", "sam smith", "-sam", "sam\n"])
def test_owners_are_names(store: Store, service: IncidentService, owner: str) -> None:
    row, _ = attach(store, service, finding(), who(["vic"]))
    with pytest.raises(BadRequest, match="owner"):
        service.assign(row.id, owner=owner, by="cli:sam")
    assert service.get(row.id).owner is None


def test_assign_records_the_owner_and_who_assigned(store: Store, service: IncidentService) -> None:
    row, _ = attach(store, service, finding(), who(["vic"]))
    assert service.assign(row.id, owner="sam@soc", by="cli:lee").owner == "sam@soc"
    assert service.assign(row.id, owner="kim", by="cli:lee").owner == "kim"
    assigned = admin_events(store, "incident.assigned")
    assert [(e["actor"], e["detail"]) for e in assigned] == [
        ("cli:lee", {"owner": "sam@soc", "previous": None}),
        ("cli:lee", {"owner": "kim", "previous": "sam@soc"}),
    ]


def test_list_refuses_bad_status_and_limit(service: IncidentService) -> None:
    with pytest.raises(BadRequest, match="unknown incident status"):
        service.list(status="closed")
    with pytest.raises(BadRequest, match="limit"):
        service.list(limit=0)


# -- timeline and blast radius -----------------------------------------------------------------


def test_the_timeline_follows_the_implicated_entities_from_the_look_back(
    store: Store, audit: AuditLog, service: IncidentService
) -> None:
    signal = NOW - 60
    record(
        store,
        audit,
        request("vic", signal - 601),  # before the look-back (600 s)
        request("vic", signal - 599, model="frontier", compartment="secret", allowed=False),
        request("olga", signal - 10, source_ip="192.0.2.4", jkt="jkt-o", family="fam_o"),
        request("vic", signal, tokens_out=100),
        request("nora", signal + 1, source_ip="10.1.9.200", jkt="jkt-n", family="fam_n"),
        TokenEvent(time=signal + 2, action="refreshed", principal="vic", family="fam_vic"),
        AdminAction(
            time=signal + 3,
            actor="cli:sam",
            action="lock.created",
            target_type="network",
            target="10.1.0.0/16",
            reason="contain",
        ),
        AdminAction(
            time=signal + 4,
            actor="cli:sam",
            action="lock.created",
            target_type="principal",
            target="olga",
            reason="unrelated",
        ),
        FindingRaised(
            time=signal,
            finding=finding().id,
            detection="D2",
            severity="medium",
            status="open",
            entity_type="principal",
            entity="vic",
            principal="vic",
            org="acme",
            explanation="moved",
            evidence=(),
        ),
        request("vic", NOW + 1),  # after now
    )
    row, _ = attach(store, service, finding(at=signal), who(["vic"], networks=["10.1.9.0/24"]))
    detail = service.detail(row.id)
    timeline = detail.timeline
    assert (timeline.start, timeline.end) == (signal - 600, NOW)
    assert not timeline.truncated
    assert timeline.note == ""
    summaries = [e.summary for e in timeline.entries]
    assert summaries[0] == ("request.decided vic → model frontier DENIED not_granted from 10.1.9.7")
    assert [e.kind for e in timeline.entries] == [
        "request",  # denied, in the look-back
        "request",  # vic's allowed request
        "finding",
        "request",  # nora, from vic's /24
        "token",
        "admin",  # the /16 lock covering vic's network
        "admin",  # incident.opened
    ]
    assert summaries[1] == (
        "request.decided vic → model demo-chat allowed (completed, 100 tokens out) from 10.1.9.7"
    )
    assert summaries[-1].startswith(f"incident.opened by bastion:response on incident {row.id}")
    assert not any("olga" in s for s in summaries)
    assert [e.time for e in timeline.entries] == sorted(e.time for e in timeline.entries)

    blast = detail.blast_radius
    assert [(m.model, m.compartment, m.requests, m.tokens_out) for m in blast.models] == [
        ("demo-chat", "general", 1, 100)
    ]
    assert (blast.requests_served, blast.requests_denied, blast.tokens_out) == (1, 1, 100)
    assert blast.compartments == ("general",)
    assert [(s.principal, s.via) for s in blast.shared_infrastructure] == [
        ("nora", ("network 10.1.9.0/24",))
    ]
    assert [f.id for f in detail.findings] == [finding(at=signal).id]
    assert blast.grants == ()  # no config given, no time-bound grants
    assert not blast.partial


def test_live_families_follow_refresh_rotation(
    store: Store, audit: AuditLog, service: IncidentService
) -> None:
    with store.begin() as conn:
        token_rows.add_family(conn, "fam_old", "vic", "jkt-vic", NOW - 30 * 3600)
        token_rows.add_refresh(conn, "h1", "fam_old", NOW - 60, NOW + 8 * 3600)  # kept refreshed
        token_rows.add_family(conn, "fam_gone", "vic", "jkt-vic", NOW - 20 * 3600)
        token_rows.add_refresh(conn, "h2", "fam_gone", NOW - 20 * 3600, NOW - 12 * 3600)
        token_rows.add_family(conn, "fam_cut", "vic", "jkt-vic", NOW - 60)
        token_rows.revoke_family(conn, "fam_cut", "test", NOW - 30)
        token_rows.add_family(conn, "fam_xchg", "vic", "jkt-vic", NOW - 120)  # no refresh token
        token_rows.add_family(conn, "fam_olga", "olga", "jkt-o", NOW - 60)
    row, _ = attach(store, service, finding(), who(["vic"]))
    families = service.detail(row.id).blast_radius.live_families
    assert [f.id for f in families] == ["fam_xchg", "fam_old"]
    assert not any(f.locked for f in families)


def test_a_locked_family_is_listed_as_locked(
    store: Store, audit: AuditLog, service: IncidentService
) -> None:
    with store.begin() as conn:
        token_rows.add_family(conn, "fam_a", "vic", "jkt-vic", NOW - 60)
        token_rows.add_family(conn, "fam_b", "vic", "jkt-vic", NOW - 30)
    LockService(store, audit, lambda: NOW).lock("family", "fam_a", reason="D2", author="test")
    row, _ = attach(store, service, finding(), who(["vic"]))
    families = service.detail(row.id).blast_radius.live_families
    assert [(f.id, f.locked) for f in families] == [("fam_b", False), ("fam_a", True)]


def test_a_busy_window_is_read_from_both_ends_and_says_what_it_skipped(
    store: Store, audit: AuditLog
) -> None:
    record(store, audit, *(request("vic", NOW - 100 + n) for n in range(30)))
    scope = Scope(who(["vic"]), "in_x")
    with store.read() as conn:
        builder = TimelineBuilder(scope, max_kept=6)
        window = read_window(conn, NOW - 200, NOW, [builder], max_scanned=10, batch=3)
        timeline = builder.timeline(window)
        whole = TimelineBuilder(scope)
        complete = whole.timeline(read_window(conn, NOW - 200, NOW, [whole], batch=4))
    assert complete.matched == 30
    assert not complete.truncated
    assert [e.time for e in complete.entries] == [NOW - 100 + n for n in range(30)]
    assert window.scanned == 10
    assert window.unscanned == (NOW - 96, NOW - 75)  # after the 5th, before the 26th
    assert timeline.matched == 10
    assert timeline.omitted == 4
    assert [e.time - NOW for e in timeline.entries] == [-100, -99, -98, -73, -72, -71]
    assert timeline.truncated
    assert "were not read" in timeline.note
    assert "4 of 10 matching events" in timeline.note


def test_a_window_with_unreadable_bodies_skips_them(store: Store, audit: AuditLog) -> None:
    record(store, audit, request("vic", NOW - 5))
    with store.begin() as conn:
        conn.execute(audit_events.update().values(body="{not json"))
    builder = TimelineBuilder(Scope(who(["vic"]), "in_x"))
    with store.read() as conn:
        window = read_window(conn, NOW - 10, NOW, [builder])
    assert window.scanned == 1
    assert builder.timeline(window).entries == ()


def test_summaries_are_one_plain_line_whatever_the_event_holds() -> None:
    hostile = AdminAction(
        actor="cli:sam",
        action="lock.created",
        target_type="principal",
        target="vic",
        reason="[bold red]boom[/]\x1b[31m\nsecond line" + "z" * 500,
    ).record()
    line = summary("lock.created", hostile)
    assert line.startswith("lock.created by cli:sam on principal vic: [bold red]boom[/]")
    assert "\x1b" not in line
    assert "\n" not in line
    assert len(line) <= 300
    weird = {"principal": ["x"], "model": {"a": 1}, "allowed": False, "reasons": "nope"}
    assert summary("request.decided", weird) == "request.decided - → model - DENIED - from -"
    refused = TokenEvent(
        action="refused", principal="vic", jkt="abcdefghijklmnopqrstuvwxyz", error="invalid_grant"
    ).record()
    assert summary("token.refused", refused) == (
        "token.refused vic family - key abcdefghijkl… from - error invalid_grant"
    )


def test_merged_entities_stay_bounded(store: Store, service: IncidentService) -> None:
    row, _ = attach(store, service, finding(), who(["vic"], networks=["10.1.9.0/24"]))
    many = who(["vic"], networks=[f"10.{n // 250}.{n % 250}.0/24" for n in range(300)])
    joined, _ = attach(store, service, finding(detection="D4"), many)
    assert joined.id == row.id
    assert len(joined.entities.networks) == 200
    assert "10.1.9.0/24" in joined.entities.networks
    assert joined == service.get(row.id)
