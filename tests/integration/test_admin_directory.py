"""The admin API's directory: orgs, compartments, principals, keys, grants and locks.

Admins read and change it, auditors only read it, vendors and everyone else are refused; what
bastion.yaml declares is read-only; every change is audited and counts from the next request."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import orjson
import pytest

from bastion.client.profile import Profile
from bastion.errors import InvalidClient
from bastion.identity.dpop import sign_proof
from bastion.identity.keys import generate_private_jwk, public_jwk, thumbprint
from bastion.store import events as event_rows
from bastion.store import principals as principal_rows
from bastion.testing import BASE_URL, Harness, running
from tests.conftest import CONFIG
from tests.integration.conftest import People

pytestmark = pytest.mark.anyio

DIRECTORY_CONFIG = CONFIG.replace(
    "  audrey: {kind: user, org: lab, roles: [auditor]}\n",
    "  audrey: {kind: user, org: lab, roles: [auditor]}\n"
    "  root: {kind: user, org: lab, roles: [admin]}\n",
).replace(
    '    contract: {start: "2026-01-01T00:00:00Z", end: "2099-01-01T00:00:00Z"}\n',
    '    contract: {start: "2026-01-01T00:00:00Z", end: "2099-01-01T00:00:00Z"}\n'
    "    seat_limit: 1\n"
    "    allowed_networks: [10.0.0.0/8]\n",
)
CHAT = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}
READS = [
    "/admin/v1/orgs",
    "/admin/v1/orgs/acme",
    "/admin/v1/compartments",
    "/admin/v1/compartments/frontier",
    "/admin/v1/principals",
    "/admin/v1/principals/alice",
    "/admin/v1/principals/alice/keys",
    "/admin/v1/grants",
    "/admin/v1/locks",
]
WRITES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/admin/v1/principals", {"name": "dana", "org": "lab"}),
    ("POST", "/admin/v1/principals/alice/enrollment-codes", None),
    ("POST", "/admin/v1/principals/alice/enable", {"reason": "back from leave"}),
    ("POST", "/admin/v1/keys/some-jkt/revoke", {"reason": "lost laptop"}),
    ("POST", "/admin/v1/locks", {"target_type": "principal", "target": "bob", "reason": "x"}),
    ("POST", "/admin/v1/locks/lk_0123456789abcdef/release", {"reason": "done"}),
    ("PATCH", "/admin/v1/principals/alice", {"disabled": True}),
    ("DELETE", "/admin/v1/orgs/acme", None),
]


@pytest.fixture
def config_text() -> str:
    assert "root:" in DIRECTORY_CONFIG
    assert "seat_limit: 1" in DIRECTORY_CONFIG
    return DIRECTORY_CONFIG


@pytest.fixture
async def people(harness: Harness) -> AsyncIterator[People]:
    crowd = People(harness)
    yield crowd
    await crowd.close()


async def call(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    return await client.request(method, path, json=body)


def admin_actions(harness: Harness) -> list[dict[str, Any]]:
    with harness.services.store.read() as conn:
        rows = event_rows.last(conn, 500)
    return [orjson.loads(row.body) | {"name": row.name} for row in rows]


def principal_set(harness: Harness) -> set[tuple[str, str, str, str, bool]]:
    """Who exists, as what (activity times aside: the caller's own token moves them)."""
    return {
        (row.name, row.kind, row.org, row.source, row.disabled)
        for row in harness.services.principals.all()
    }


def refused(response: httpx.Response, status: int, needle: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert needle in body["error"]["message"], body


async def test_admin_lists_and_shows_everything(harness: Harness, people: People) -> None:
    root = await people("root")
    await people("alice")
    config = harness.services.holder.current.config
    request = harness.services.access.request(
        config, "alice", "frontier", reason="incident 7", duration=600
    )
    for approver in ("bob", "audrey"):
        harness.services.access.decide(config, request.id, approver, approve=True, reason="ok")
    await harness.reload()

    orgs = (await root.get("/admin/v1/orgs")).json()["orgs"]
    assert [org["name"] for org in orgs] == ["lab", "acme"]
    acme = (await root.get("/admin/v1/orgs/acme")).json()
    assert acme["kind"] == "vendor"
    assert acme["sponsor"] == "alice"
    assert acme["contract"]["end"].startswith("2099-01-01T00:00:00")
    assert acme["allowed_networks"] == ["10.0.0.0/8"]
    assert (acme["seat_limit"], acme["seats_used"], acme["over_seats"]) == (1, 1, [])
    assert (acme["ceiling"], acme["working_hours"]) == ("critical", None)

    frontier = (await root.get("/admin/v1/compartments/frontier")).json()
    assert frontier["level"] == "critical"
    assert frontier["models"] == ["cyber-frontier"]
    assert frontier["approvers"] == ["bob", "audrey"]
    assert frontier["access"]["approvals"] == 2
    assert frontier["grants"] == {"orgs": [], "principals": ["carol"]}
    assert frontier["token_binding"] == "required"
    assert frontier["audit"] == "required"
    names = [c["name"] for c in (await root.get("/admin/v1/compartments")).json()["compartments"]]
    assert names == ["general", "frontier"]

    principals = (await root.get("/admin/v1/principals")).json()["principals"]
    by_name = {p["name"]: p for p in principals}
    assert {"alice", "bob", "carol", "victor", "audrey", "root"} <= set(by_name)
    assert by_name["root"]["roles"] == ["admin"]
    assert by_name["victor"] | {"created_at": 0} == {
        "dormant": False,
        "name": "victor",
        "org": "acme",
        "kind": "user",
        "source": "config",
        "disabled": False,
        "roles": [],
        "over_seat": False,
        "created_at": 0,
        "last_active_at": None,
    }
    alice = (await root.get("/admin/v1/principals/alice")).json()
    assert [key["jkt"] for key in alice["keys"]] == [
        thumbprint(public_jwk(harness.profiles["alice"].private_jwk))
    ]
    assert alice["locks"] == []

    grants = (await root.get("/admin/v1/grants")).json()["grants"]
    standing = {(g["compartment"], g["holder"]) for g in grants if g["kind"] == "standing"}
    assert standing == {("general", "lab"), ("frontier", "carol")}
    [timed] = [g for g in grants if g["kind"] == "time-bound"]
    assert (timed["holder"], timed["compartment"]) == ("alice", "frontier")
    assert timed["expires_at"] == pytest.approx(timed["granted_at"] + 600)
    assert timed["id"].startswith("gr_")
    assert (await root.get("/admin/v1/locks")).json() == {"locks": []}


async def test_auditor_reads_but_cannot_write(harness: Harness, people: People) -> None:
    audrey = await people("audrey")
    for path in READS:
        assert (await audrey.get(path)).status_code == 200, path
    before = (await audrey.get("/admin/v1/principals")).json()
    for method, path, body in WRITES:
        response = await call(audrey, method, path, body)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"]["reasons"] == ["not_granted"]
    assert (await audrey.get("/admin/v1/principals")).json() == before
    assert harness.services.locks.active() == []


async def test_vendors_and_plain_principals_are_refused_everything(people: People) -> None:
    victor, alice = await people("victor"), await people("alice")
    for path in READS:
        vendor = await victor.get(path)
        assert vendor.status_code == 403, path
        assert vendor.json()["error"]["reasons"] == ["vendor_control_plane"]
        assert (await alice.get(path)).json()["error"]["reasons"] == ["not_granted"]
    for method, path, body in WRITES:
        vendor = await call(victor, method, path, body)
        assert vendor.status_code == 403, path
        assert vendor.json()["error"]["reasons"] == ["vendor_control_plane"]


async def test_anonymous_callers_are_asked_to_authenticate(harness: Harness) -> None:
    async with harness.client() as anonymous:
        for method, path, body in [("GET", path, None) for path in READS] + WRITES:
            response = await call(anonymous, method, path, body)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"].startswith('DPoP error="invalid_token"')


async def enroll_with_code(harness: Harness, name: str, code: str) -> Profile:
    private = generate_private_jwk("EdDSA")
    url = BASE_URL + "/oauth/enroll"
    async with harness.client() as client:
        response = await client.post(
            url,
            json={"principal": name, "code": code, "jwk": public_jwk(private)},
            headers={"DPoP": sign_proof(private, method="POST", url=url)},
        )
    assert response.status_code == 200, response.text
    return Profile(server=BASE_URL, client_id=name, private_jwk=private)


async def test_add_a_principal_then_enroll_it_with_a_code(harness: Harness, people: People) -> None:
    root = await people("root")
    created = await root.post("/admin/v1/principals", json={"name": "dana", "org": "lab"})
    assert created.status_code == 201, created.text
    assert created.json()["source"] == "api"
    assert (created.json()["kind"], created.json()["roles"]) == ("user", [])

    issued = await root.post("/admin/v1/principals/dana/enrollment-codes")
    assert issued.status_code == 201, issued.text
    assert issued.headers["cache-control"] == "no-store"
    code = issued.json()["code"]
    profile = await enroll_with_code(harness, "dana", code)
    async with harness.client(profile) as dana:
        assert (await dana.post("/v1/chat/completions", json=CHAT)).status_code == 200
        jkt = thumbprint(public_jwk(profile.private_jwk))
        keys = (await root.get("/admin/v1/principals/dana/keys")).json()
        assert [(k["jkt"], k["revoked_at"]) for k in keys["keys"]] == [(jkt, None)]

        revoked = await root.post(f"/admin/v1/keys/{jkt}/revoke", json={"reason": "lost laptop"})
        assert revoked.json() == {"jkt": jkt, "revoked": True}
        with pytest.raises(InvalidClient, match="not enrolled"):  # the 401 sends it for a token
            await dana.post("/v1/chat/completions", json=CHAT)
    again = await root.post(f"/admin/v1/keys/{jkt}/revoke", json={"reason": "twice"})
    refused(again, 404, "no active device key")

    actions = {e["name"]: e for e in admin_actions(harness)}
    for name in ("principal.created", "enrollment.code_issued", "key.enrolled", "key.revoked"):
        assert name in actions
    assert actions["principal.created"]["actor"] == "principal:root"
    assert actions["key.revoked"]["reason"] == "lost laptop"
    assert code not in str(admin_actions(harness))  # only the code's digest is kept


async def test_a_new_vendor_principal_beyond_the_seat_limit_shows_as_over(
    people: People,
) -> None:
    root = await people("root")
    created = await root.post("/admin/v1/principals", json={"name": "vera", "org": "acme"})
    assert created.status_code == 201, created.text
    assert created.json()["over_seat"] is True
    acme = (await root.get("/admin/v1/orgs/acme")).json()
    assert (acme["seats_used"], acme["over_seats"]) == (2, ["vera"])


async def test_lock_through_the_api_then_release(harness: Harness, people: People) -> None:
    root, alice = await people("root"), await people("alice")
    assert (await alice.post("/v1/chat/completions", json=CHAT)).status_code == 200
    placed = await root.post(
        "/admin/v1/locks",
        json={"target_type": "principal", "target": "alice", "reason": "suspicious volume"},
    )
    assert placed.status_code == 201, placed.text
    lock = placed.json()["lock"]
    assert (lock["author"], lock["expires_at"]) == ("principal:root", None)

    denied = await alice.post("/v1/chat/completions", json=CHAT)
    assert denied.status_code == 403
    assert denied.json()["error"]["reasons"] == ["locked_principal"]
    shown = (await root.get("/admin/v1/principals/alice")).json()["locks"]
    assert [item["id"] for item in shown] == [lock["id"]]
    assert [item["id"] for item in (await root.get("/admin/v1/locks")).json()["locks"]] == [
        lock["id"]
    ]

    released = await root.post(
        f"/admin/v1/locks/{lock['id']}/release", json={"reason": "false positive"}
    )
    assert released.status_code == 200, released.text
    assert (await alice.post("/v1/chat/completions", json=CHAT)).status_code == 200
    again = await root.post(f"/admin/v1/locks/{lock['id']}/release", json={"reason": "twice"})
    refused(again, 404, "no active lock")
    names = [(e["name"], e["actor"], e.get("reason")) for e in admin_actions(harness)]
    assert ("lock.created", "principal:root", "suspicious volume") in names
    assert ("lock.released", "principal:root", "false positive") in names


async def test_releasing_one_lock_keeps_the_others_on_that_target(
    harness: Harness, people: People
) -> None:
    first, _ = harness.services.locks.lock("principal", "bob", reason="one", author="test")
    second, _ = harness.services.locks.lock("principal", "bob", reason="two", author="test")
    root = await people("root")
    released = await root.post(f"/admin/v1/locks/{first.id}/release", json={"reason": "ok"})
    assert released.json()["lock"]["id"] == first.id
    shown = (await root.get("/admin/v1/principals/bob")).json()["locks"]
    assert [lock["id"] for lock in shown] == [second.id]


async def test_an_expiring_org_lock_names_its_expiry(people: People) -> None:
    root, victor = await people("root"), await people("victor")
    before = await victor.get("/admin/v1/orgs")  # victor holds a token from here on
    assert before.json()["error"]["reasons"] == ["vendor_control_plane"]
    placed = await root.post(
        "/admin/v1/locks",
        json={"target_type": "org", "target": "acme", "reason": "D12", "expires_in_seconds": 60},
    )
    assert placed.status_code == 201, placed.text
    lock = placed.json()["lock"]
    assert lock["expires_at"] == pytest.approx(lock["created_at"] + 60)
    denied = await victor.get("/admin/v1/orgs")  # locks come before Cedar
    assert denied.json()["error"]["reasons"] == ["locked_org"]


LOCK = {"target_type": "principal", "target": "bob", "reason": "why"}


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({**LOCK, "target_type": "planet"}, 400, "body.target_type"),
        ({**LOCK, "target": "nobody"}, 404, "no principal 'nobody' is known"),
        ({**LOCK, "target_type": "org", "target": "nope"}, 404, "no org 'nope'"),
        ({**LOCK, "target_type": "compartment", "target": "vault"}, 404, "no compartment"),
        ({**LOCK, "target_type": "key", "target": "no-such-jkt"}, 404, "no key"),
        ({**LOCK, "target": "bob smith"}, 400, "invalid principal name"),
        ({**LOCK, "target": "b" * 129}, 400, "body.target"),
        ({**LOCK, "reason": "r" * 501}, 400, "body.reason"),
        ({**LOCK, "reason": "   "}, 400, "a lock needs a reason"),
        ({**LOCK, "reason": ""}, 400, "body.reason"),
        ({"target_type": "principal", "target": "bob"}, 400, "body.reason"),
        ({**LOCK, "expires_in_seconds": -5}, 400, "body.expires_in_seconds"),
        ({**LOCK, "expires_in_seconds": 0}, 400, "body.expires_in_seconds"),
        ({**LOCK, "expires_in_seconds": 10**9}, 400, "body.expires_in_seconds"),
        ({**LOCK, "expires_in_seconds": "soon"}, 400, "body.expires_in_seconds"),
        ({**LOCK, "author": "someone-else"}, 400, "body.author"),
    ],
)
async def test_bad_lock_requests_change_nothing(
    harness: Harness, people: People, body: dict[str, Any], status: int, needle: str
) -> None:
    response = await (await people("root")).post("/admin/v1/locks", json=body)
    refused(response, status, needle)
    assert harness.services.locks.active() == []


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/admin/v1/locks/lk_nope/release", {"reason": "x"}, 404, "no active lock 'lk_nope'"),
        ("/admin/v1/locks/LOCK/release", {}, 400, "body.reason"),
        ("/admin/v1/locks/LOCK/release", {"reason": "x", "force": True}, 400, "body.force"),
        ("/admin/v1/locks/LOCK/release", {"reason": "r" * 501}, 400, "body.reason"),
        ("/admin/v1/locks/" + "l" * 33 + "/release", {"reason": "x"}, 400, "lock_id"),
    ],
)
async def test_bad_releases_change_nothing(
    harness: Harness, people: People, path: str, body: dict[str, Any], status: int, needle: str
) -> None:
    lock, _ = harness.services.locks.lock("principal", "bob", reason="held", author="test")
    response = await (await people("root")).post(path.replace("LOCK", lock.id), json=body)
    refused(response, status, needle)
    assert [row.id for row in harness.services.locks.active()] == [lock.id]


NEW = {"name": "dana", "org": "lab"}


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({**NEW, "name": "alice"}, 409, "'alice' is declared in bastion.yaml"),
        ({**NEW, "org": "labs"}, 400, "unknown org 'labs'"),
        ({**NEW, "name": "Dana Smith"}, 400, "principal names are 1-63 characters"),
        ({**NEW, "name": "d" * 64}, 400, "body.name"),
        ({**NEW, "name": ""}, 400, "body.name"),
        ({**NEW, "kind": "robot"}, 400, "body.kind"),
        ({**NEW, "roles": ["admin"]}, 400, "body.roles"),
        ({"name": "dana"}, 400, "body.org"),
    ],
)
async def test_bad_principal_requests_change_nothing(
    harness: Harness, people: People, body: dict[str, Any], status: int, needle: str
) -> None:
    before = principal_set(harness)
    response = await (await people("root")).post("/admin/v1/principals", json=body)
    refused(response, status, needle)
    assert principal_set(harness) == before


async def test_a_principal_cannot_be_added_twice(people: People) -> None:
    root = await people("root")
    assert (await root.post("/admin/v1/principals", json=NEW)).status_code == 201
    refused(await root.post("/admin/v1/principals", json=NEW), 409, "'dana' already exists")


@pytest.mark.parametrize(
    ("method", "path", "status", "needle"),
    [
        ("PATCH", "/admin/v1/principals/alice", 405, "'alice' is declared in bastion.yaml"),
        ("DELETE", "/admin/v1/principals/alice", 405, "'alice' is declared in bastion.yaml"),
        ("PUT", "/admin/v1/principals/dana", 405, "lock one"),
        ("DELETE", "/admin/v1/principals/nobody", 404, "no principal named 'nobody'"),
        ("POST", "/admin/v1/orgs", 405, "orgs are declared in bastion.yaml"),
        ("DELETE", "/admin/v1/orgs/acme", 405, "orgs are declared in bastion.yaml"),
        ("PATCH", "/admin/v1/compartments/general", 405, "compartments are declared"),
        ("POST", "/admin/v1/compartments", 405, "compartments are declared"),
        ("DELETE", "/admin/v1/locks", 405, "DELETE is not allowed"),
    ],
)
async def test_what_the_config_declares_is_read_only(
    harness: Harness, people: People, method: str, path: str, status: int, needle: str
) -> None:
    root = await people("root")
    assert (await root.post("/admin/v1/principals", json=NEW)).status_code == 201
    before = principal_set(harness)
    refused(await call(root, method, path, {"disabled": True}), status, needle)
    assert principal_set(harness) == before


@pytest.mark.parametrize(
    ("method", "path", "needle"),
    [
        ("GET", "/admin/v1/orgs/nope", "no org named 'nope'"),
        ("GET", "/admin/v1/compartments/nope", "no compartment named 'nope'"),
        ("GET", "/admin/v1/principals/nope", "no principal named 'nope'"),
        ("GET", "/admin/v1/principals/nope/keys", "no principal named 'nope'"),
        ("POST", "/admin/v1/principals/nope/enrollment-codes", "no principal named 'nope'"),
        ("GET", "/admin/v1/nothing-here", "no such admin API route"),
    ],
)
async def test_unknown_names_are_404(people: People, method: str, path: str, needle: str) -> None:
    refused(await call(await people("root"), method, path), 404, needle)


async def test_overlong_path_names_are_refused(people: People) -> None:
    root = await people("root")
    refused(await root.get("/admin/v1/principals/" + "a" * 64), 400, "name")
    refused(
        await root.post("/admin/v1/keys/" + "k" * 65 + "/revoke", json={"reason": "x"}), 400, "jkt"
    )


async def test_openapi_document_lists_every_route(harness: Harness) -> None:
    async with harness.client() as client:
        spec = (await client.get("/admin/openapi.json")).json()
    expected = {
        "/v1/orgs": {"get"},
        "/v1/orgs/{name}": {"get"},
        "/v1/compartments": {"get"},
        "/v1/compartments/{name}": {"get"},
        "/v1/principals": {"get", "post"},
        "/v1/principals/{name}": {"get"},
        "/v1/principals/{name}/keys": {"get"},
        "/v1/principals/{name}/enable": {"post"},
        "/v1/principals/{name}/enrollment-codes": {"post"},
        "/v1/keys/{jkt}/revoke": {"post"},
        "/v1/grants": {"get"},
        "/v1/locks": {"get", "post"},
        "/v1/locks/{lock_id}/release": {"post"},
    }
    for path, methods in expected.items():
        assert set(spec["paths"][path]) == methods, path
    schemas = spec["components"]["schemas"]
    for name in ("NewLock", "Release", "NewPrincipal", "Revocation", "Enablement"):
        assert schemas[name]["additionalProperties"] is False, name
    assert schemas["NewLock"]["properties"]["target_type"]["enum"] == [
        "principal",
        "org",
        "key",
        "family",
        "compartment",
        "network",
        "stepup",
        "throttle",
        "all",
    ]
    for name in ("OrgOut", "CompartmentOut", "PrincipalDetail", "GrantList", "LockChange"):
        assert name in schemas, name


DORMANCY_CONFIG = (
    DIRECTORY_CONFIG.replace(
        "  root: {kind: user, org: lab, roles: [admin]}\n",
        "  root: {kind: user, org: lab, roles: [admin]}\n"
        "  zed: {kind: user, org: lab, disabled: true}\n",
    )
    + "lifecycle: {dormant_after_days: 30}\n"
)


@pytest.fixture
async def lifecycle(
    tmp_path: Path,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
) -> AsyncIterator[Harness]:
    async with running(
        DORMANCY_CONFIG,
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        database_url=database_url,
    ) as harness:
        yield harness


async def test_enable_ends_a_dormancy_but_not_a_config_disable(lifecycle: Harness) -> None:
    people = People(lifecycle)
    try:
        root, alice = await people("root"), await people("alice")
        assert (await alice.post("/v1/chat/completions", json=CHAT)).status_code == 200
        with lifecycle.services.store.begin() as conn:  # alice was last seen 31 days ago
            principal_rows.touch(conn, "alice", time.time() - 31 * 86400)
        await lifecycle.reload()
        idle = await alice.post("/v1/chat/completions", json=CHAT)
        assert idle.json()["error"]["reasons"] == ["dormant_principal"]
        assert (await root.get("/admin/v1/principals/alice")).json()["dormant"] is True

        bad = await root.post("/admin/v1/principals/alice/enable", json={"reason": "x", "a": 1})
        refused(bad, 400, "body.a")
        refused(await root.post("/admin/v1/principals/alice/enable", json={}), 400, "body.reason")
        enabled = await root.post(
            "/admin/v1/principals/alice/enable", json={"reason": "back from leave"}
        )
        assert enabled.status_code == 200, enabled.text
        assert enabled.json()["dormant"] is False
        assert (await alice.post("/v1/chat/completions", json=CHAT)).status_code == 200

        zed = await root.post("/admin/v1/principals/zed/enable", json={"reason": "please"})
        refused(zed, 409, "'zed' is disabled in bastion.yaml")
        nobody = await root.post("/admin/v1/principals/nobody/enable", json={"reason": "x"})
        refused(nobody, 404, "no principal named 'nobody'")
    finally:
        await people.close()
    enabled_events = [e for e in admin_actions(lifecycle) if e["name"] == "principal.enabled"]
    assert [(e["target"], e["actor"], e["reason"]) for e in enabled_events] == [
        ("alice", "principal:root", "back from leave")
    ]
