"""Admin commands (principals, device keys, locks, events): what an operator sees and what changes.

Each command runs in-process through ``main()`` next to the test config (``admin_cli`` fixture);
the assertions read the real SQLite store the command wrote.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from joserfc import jwk as joserfc_jwk

from bastion.errors import InvalidGrant
from bastion.identity.keys import generate_private_jwk, public_jwk, thumbprint
from bastion.identity.principals import PrincipalService
from bastion.respond.locks import LockService
from bastion.store import state
from tests.integration.conftest import Cli


def printed_code(out: str, name: str) -> str:
    lines = out.splitlines()
    return lines[lines.index(f"one-time enrollment code for {name} (valid 15 minutes):") + 1]


def write_json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value))
    return path


# --- principals -------------------------------------------------------------------------------


def test_principal_add_prints_a_one_time_code_that_enrolls_once(admin_cli: Cli) -> None:
    result = admin_cli("principal", "add", "dave", "--org", "lab")
    assert result.code == 0
    assert result.out.splitlines()[0] == "added user dave in org lab"
    assert result.out.splitlines()[-1] == (
        "on the device: bastion login --server URL --principal dave --code CODE"
    )
    service = PrincipalService(admin_cli.store, admin_cli.audit)
    dave = service.get("dave")
    assert (dave.kind, dave.org, dave.source) == ("user", "lab", "cli")
    code = printed_code(result.out, "dave")
    key = public_jwk(generate_private_jwk())
    assert service.enroll_with_code("dave", code, key) == thumbprint(key)
    with pytest.raises(InvalidGrant):
        service.enroll_with_code("dave", code, public_jwk(generate_private_jwk()))

    again = admin_cli("principal", "code", "dave")
    assert again.code == 0
    fresh = printed_code(again.out, "dave")
    assert fresh != code
    assert service.enroll_with_code("dave", fresh, public_jwk(generate_private_jwk()))


NAME_RULE = (
    "principal names are 1-63 characters of a-z, 0-9, '.', '_', '-' starting with a letter or digit"
)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("Dave", ["--org", "lab"], NAME_RULE),
        ("-dave", ["--org", "lab"], NAME_RULE),
        ("dave smith", ["--org", "lab"], NAME_RULE),
        ("d" * 64, ["--org", "lab"], NAME_RULE),
        ("dave", ["--org", "labs"], "unknown org 'labs' (declared: acme, lab)"),
        ("dave", ["--org", "[/x]"], "unknown org '[/x]' (declared: acme, lab)"),
        (
            "dave",
            ["--org", "lab", "--kind", "robot"],
            "principal kind must be one of user, service",
        ),
        ("alice", ["--org", "lab"], "principal 'alice' already exists"),
    ],
)
def test_principal_add_refuses_with_a_specific_message(
    admin_cli: Cli, name: str, options: list[str], message: str
) -> None:
    before = PrincipalService(admin_cli.store, admin_cli.audit).all()
    result = admin_cli("principal", "add", *options, "--", name)
    assert (result.code, result.out, result.err) == (1, "", f"error: {message}\n")
    assert PrincipalService(admin_cli.store, admin_cli.audit).all() == before


def test_principal_list_shows_config_and_cli_principals(admin_cli: Cli) -> None:
    admin_cli("principal", "add", "ci-bot", "--org", "lab", "--kind", "service", "--no-code")
    result = admin_cli("principal", "list")
    assert result.code == 0
    rows = [line.split("│")[1:6] for line in result.out.splitlines() if line.startswith("│")]
    assert [[cell.strip() for cell in row] for row in rows] == [
        ["alice", "user", "lab", "config", "False"],
        ["audrey", "user", "lab", "config", "False"],
        ["bob", "user", "lab", "config", "False"],
        ["carol", "user", "lab", "config", "False"],
        ["ci-bot", "service", "lab", "cli", "False"],
        ["victor", "user", "acme", "config", "False"],
    ]
    missing = admin_cli("principal", "code", "nobody")
    assert (missing.code, missing.err) == (1, "error: no principal named 'nobody'\n")


# --- device keys ------------------------------------------------------------------------------


def test_key_enroll_list_and_revoke(admin_cli: Cli) -> None:
    ed25519, p256 = public_jwk(generate_private_jwk()), public_jwk(generate_private_jwk("ES256"))
    for key in (ed25519, p256):
        result = admin_cli("key", "enroll", "alice", str(write_json(admin_cli.root / "k", key)))
        assert (result.code, result.out) == (0, f"enrolled key {thumbprint(key)} for alice\n")

    listed = admin_cli("key", "list", "alice")
    assert listed.code == 0
    for key, alg in ((ed25519, "EdDSA"), (p256, "ES256")):  # whole, even at 80 columns
        assert any(thumbprint(key) in line and alg in line for line in listed.out.splitlines())

    jkt = thumbprint(ed25519)
    revoked = admin_cli("key", "revoke", jkt, "--reason", "laptop lost")
    assert (revoked.code, revoked.out) == (0, f"revoked key {jkt}\n")
    keys = {
        row.jkt: row for row in PrincipalService(admin_cli.store, admin_cli.audit).keys("alice")
    }
    assert keys[jkt].revoked_at is not None
    assert keys[thumbprint(p256)].revoked_at is None
    again = admin_cli("key", "revoke", jkt, "--reason", "laptop lost")
    assert (again.code, again.err) == (1, "error: no active device key with that thumbprint\n")


def _key_whose_thumbprint_starts(prefix: str) -> dict[str, object]:
    while not thumbprint(key := public_jwk(generate_private_jwk())).startswith(prefix):
        pass
    return key


@pytest.mark.parametrize("prefix", ["-", "--"])
def test_a_thumbprint_that_starts_with_a_dash_is_an_argument(admin_cli: Cli, prefix: str) -> None:
    # base64url: one thumbprint in 64 starts with '-' (in 4,096 with '--'), and read as an option
    key = _key_whose_thumbprint_starts(prefix)
    jkt = thumbprint(key)
    assert admin_cli("key", "enroll", "alice", str(write_json(admin_cli.root / "k", key))).code == 0
    locked = admin_cli("lock", "key", jkt, "--reason", "copied")
    assert locked.code == 0, locked.err
    assert locked.out.startswith(f"locked key {jkt} (lk_")
    unlocked = admin_cli("unlock", "key", jkt, "--reason", "not copied")
    assert unlocked.code == 0, unlocked.err
    assert unlocked.out.startswith(f"unlocked key {jkt} (lk_")
    revoked = admin_cli("key", "revoke", jkt, "--reason", "laptop lost")
    assert (revoked.code, revoked.out) == (0, f"revoked key {jkt}\n")
    misspelled = admin_cli("key", "revoke", jkt, "--reason", "x", "--forse")
    assert misspelled.code == 2  # a misspelled option is still refused, as an extra argument
    assert "--forse" in misspelled.err


def _rsa_public_jwk() -> dict[str, object]:
    return dict(joserfc_jwk.RSAKey.generate_key(2048).as_dict(private=False))


REFUSED_KEYS = {
    "private JWK": (
        generate_private_jwk,
        "the device key JWK contains private key material; send the public key",
    ),
    "RSA key": (_rsa_public_jwk, "device keys must be Ed25519 (OKP) or P-256 (EC) public keys"),
    "JSON list": (lambda: [1, 2], "the device key must be a JWK object"),
    "garbage": (None, "{file}: not a readable JSON file"),
}


@pytest.mark.parametrize("case", list(REFUSED_KEYS))
def test_key_enroll_refuses_anything_but_a_public_device_key(admin_cli: Cli, case: str) -> None:
    make, message = REFUSED_KEYS[case]
    path = admin_cli.root / "key.json"
    if make is None:
        path.write_bytes(b"-----BEGIN PUBLIC KEY-----\n\x00\xff")
    else:
        write_json(path, make())
    result = admin_cli("key", "enroll", "alice", str(path))
    assert (result.code, result.out) == (1, "")
    assert result.err == f"error: {message.format(file=path)}\n"
    assert PrincipalService(admin_cli.store, admin_cli.audit).keys("alice") == []


def test_key_enroll_refuses_missing_files_unknown_principals_and_duplicates(
    admin_cli: Cli,
) -> None:
    path = write_json(admin_cli.root / "k.json", public_jwk(generate_private_jwk()))
    missing = admin_cli("key", "enroll", "alice", "nope.json")
    assert (missing.code, missing.err) == (1, "error: nope.json: not a readable JSON file\n")
    nobody = admin_cli("key", "enroll", "nobody", str(path))
    assert (nobody.code, nobody.err) == (1, "error: no principal named 'nobody'\n")
    assert admin_cli("key", "enroll", "alice", str(path)).code == 0
    twice = admin_cli("key", "enroll", "bob", str(path))
    assert (twice.code, twice.err) == (1, "error: this device key is already enrolled\n")
    assert PrincipalService(admin_cli.store, admin_cli.audit).keys("bob") == []


# --- locks ------------------------------------------------------------------------------------


def test_lock_list_and_unlock_a_principal(admin_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    before = time.time()
    result = admin_cli("lock", "principal", "alice", "--reason", "r", "--ttl", "30m")
    assert result.code == 0
    [lock] = LockService(admin_cli.store, admin_cli.audit).active()
    assert (lock.target_type, lock.target, lock.reason) == ("principal", "alice", "r")
    assert lock.expires_at is not None
    assert before + 1800 <= lock.expires_at <= time.time() + 1800
    assert result.out.splitlines() == [
        f"locked principal alice ({lock.id}, expires "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(lock.expires_at))} UTC)",
        "no gateway is running; it will apply this when it starts",
    ]

    listed = admin_cli("locks")
    assert listed.code == 0
    assert lock.id in listed.out  # whole, even at 80 columns
    monkeypatch.setenv("COLUMNS", "160")  # at 80 the other columns are cut short
    [row] = [line for line in admin_cli("locks").out.splitlines() if lock.id in line]
    assert [cell.strip() for cell in row.split("│")[1:6]] == [
        lock.id,
        "principal",
        "alice",
        "r",
        lock.author,
    ]
    assert lock.author.startswith("cli:")

    released = admin_cli("unlock", "principal", "alice", "--reason", "cleared")
    assert released.code == 0
    assert released.out.splitlines()[0] == f"unlocked principal alice ({lock.id})"
    assert LockService(admin_cli.store, admin_cli.audit).active() == []
    again = admin_cli("unlock", "principal", "alice")
    assert (again.code, again.err) == (1, "error: no active lock on principal alice\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bogus", "alice", "--reason", "r"], "unknown lock type 'bogus': use one of principal, "
         "org, key, family, compartment, network, stepup, throttle, all"),
        (["principal", "alice", "--reason", "  "], "a lock needs a reason of 1 to 500 characters"),
        (["principal", "al ice", "--reason", "r"], "invalid principal name for a lock target"),
        *(
            (["principal", "alice", "--reason", "r", "--ttl", ttl],
             f"invalid duration {ttl!r}: use a positive number with s, m, h or d")
            for ttl in ("0", "abc", "-5m")
        ),
    ],
)  # fmt: skip
def test_bad_locks_are_refused_and_store_nothing(
    admin_cli: Cli, args: list[str], message: str
) -> None:
    result = admin_cli("lock", *args)
    assert (result.code, result.out, result.err) == (1, "", f"error: {message}\n")
    assert LockService(admin_cli.store, admin_cli.audit).active() == []


def test_a_lock_without_reason_is_a_usage_error(admin_cli: Cli) -> None:
    result = admin_cli("lock", "principal", "alice")
    assert result.code == 2
    assert "Error: Missing option '--reason'." in result.err
    assert LockService(admin_cli.store, admin_cli.audit).active() == []


def test_lock_all_and_a_running_gateway_confirming_it(
    admin_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    with admin_cli.store.begin() as conn:  # a gateway already past any epoch this test makes
        now = time.time()
        state.heartbeat(conn, state.ProcessRow("gw1", "gateway", os.getpid(), "h", now, now, 10**9))
    result = admin_cli("lock", "all", "--reason", "[/x] incident 42")
    assert result.code == 0
    [lock] = LockService(admin_cli.store, admin_cli.audit).active()
    assert (lock.target_type, lock.target, lock.reason) == ("all", "*", "[/x] incident 42")
    assert result.out.splitlines()[0] == f"locked all * ({lock.id})"
    assert result.out.splitlines()[1].startswith("enforced by 1 gateway(s) (epoch ")
    monkeypatch.setenv("COLUMNS", "160")
    assert "│ [/x] incident 42 │" in admin_cli("locks").out  # as typed, not read as markup


# --- events -----------------------------------------------------------------------------------


def test_events_tail_shows_admin_events_and_never_a_code(admin_cli: Cli) -> None:
    code = printed_code(admin_cli("principal", "add", "dave", "--org", "lab").out, "dave")
    admin_cli("lock", "principal", "dave", "--reason", "suspicious")

    text = admin_cli("events", "tail", "-n", "5")
    assert text.code == 0
    lines = text.out.splitlines()  # "HH:MM:SS.mmm name by actor target [reason=...]"
    actor = lines[0].split()[3]
    assert actor.startswith("cli:")
    assert [line.split()[1:4] for line in lines] == [
        [name, "by", actor]
        for name in ("principal.created", "enrollment.code_issued", "lock.created")
    ]
    assert lines[0].endswith(" dave")
    assert lines[2].endswith(" dave reason='suspicious'")

    as_json = admin_cli("events", "tail", "-n", "2", "--json")
    assert as_json.code == 0
    events = [json.loads(line) for line in as_json.out.splitlines()]
    assert [(event["name"], event["target"]) for event in events] == [
        ("enrollment.code_issued", "dave"),
        ("lock.created", "dave"),
    ]
    assert events[1]["reason"] == "suspicious"
    assert events[0]["actor"].startswith("cli:")
    assert code not in text.out + as_json.out


def test_locking_an_unknown_target_locks_nothing_unless_forced(admin_cli: Cli) -> None:
    for target_type, target in (
        ("principal", "alcie"),
        ("org", "acmee"),
        ("key", "nokey"),
        ("family", "fam_nope"),
        ("compartment", "nowhere"),
    ):
        typo = admin_cli("lock", target_type, target, "--reason", "typo")
        assert typo.code == 1
        assert f"no {target_type} '{target}' is known, so nothing was locked" in typo.err
    assert LockService(admin_cli.store, admin_cli.audit).active() == []
    forced = admin_cli("lock", "principal", "future-hire", "--reason", "pre-emptive", "--force")
    assert forced.code == 0
    assert [lock.target for lock in LockService(admin_cli.store, admin_cli.audit).active()] == [
        "future-hire"
    ]
