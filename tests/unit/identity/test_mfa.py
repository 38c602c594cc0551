"""TOTP factors: sealed at rest, one use per time step, one step of drift, throttled guessing.

The service runs on a real SQLite file in ``tmp_path`` (the point of several tests is what the
database holds); nothing touches a network.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyotp
import pytest
import sqlalchemy as sa

from bastion.audit import keys as audit_keys
from bastion.audit.commitment import Committer
from bastion.audit.log import AuditLog
from bastion.errors import BadRequest, ConfigError, Conflict, InvalidGrant, NotFound
from bastion.identity.mfa import (
    ACR_KEY,
    ACR_MFA,
    KEY_FILE,
    MAX_FAILURES,
    STEP_SECONDS,
    THROTTLE_SECONDS,
    MfaRefused,
    MfaService,
    SecretBox,
    auth_context,
    matching_step,
)
from bastion.store import Store
from bastion.store import events as event_rows
from bastion.store import mfa as mfa_rows
from bastion.store import principals as principal_rows
from bastion.store.principals import PrincipalRow
from bastion.store.tables import mfa_factors

NOW = 1_800_000_015.0  # 15 s into a time step
STEP = int(NOW // STEP_SECONDS)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'bastion.db'}")
    store.migrate()
    with store.begin() as conn:
        for name, kind in (("alice", "user"), ("bob", "user"), ("robot", "service")):
            principal_rows.insert(conn, PrincipalRow(name, kind, "lab", "cli", False, NOW))
    yield store
    store.close()


@pytest.fixture
def service(store: Store, tmp_path: Path) -> MfaService:
    keys = audit_keys.load_or_create(tmp_path / "state")
    audit = AuditLog(Committer(keys.salt), keys.signer, keys.origin)
    return MfaService(store, audit, tmp_path / "state" / KEY_FILE, clock=Clock())


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret).generate_otp(step)


def factor(store: Store, principal: str = "alice") -> mfa_rows.FactorRow:
    with store.read() as conn:
        row = mfa_rows.get(conn, principal)
    assert row is not None
    return row


def refused(service: MfaService, code: str, now: float = NOW, who: str = "alice") -> str:
    with pytest.raises(MfaRefused) as caught:
        service.verify(who, code, now)
    assert isinstance(caught.value, InvalidGrant)  # the token endpoint's invalid_grant
    assert caught.value.principal == who
    assert code not in caught.value.message or not code
    return caught.value.message


# -- enrolment and encryption at rest ---------------------------------------------------------


def test_enrolment_shows_the_secret_once_as_an_otpauth_uri(service: MfaService) -> None:
    enrollment = service.enroll("alice", author="cli:admin")
    assert len(enrollment.secret) == 32
    assert enrollment.uri == (
        f"otpauth://totp/Bastion:alice?secret={enrollment.secret}&issuer=Bastion"
    )
    assert enrollment.secret not in repr(enrollment)
    row = factor(service._store)
    assert (row.confirmed_at, row.last_step, row.failures) == (None, None, 0)


def test_the_secret_is_not_in_the_database_in_any_form(
    service: MfaService, store: Store, tmp_path: Path
) -> None:
    secret = service.enroll("alice", author="cli:admin").secret
    with store.read() as conn:
        stored = conn.execute(sa.select(mfa_factors)).one()._mapping
    assert secret not in str(dict(stored))
    assert stored["secret"].startswith("v1.")
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("bastion.db"))
    assert secret.encode() not in raw
    assert secret.lower().encode() not in raw


def test_the_key_file_is_made_on_first_use_with_mode_0600(
    service: MfaService, tmp_path: Path
) -> None:
    key_file = tmp_path / "state" / KEY_FILE
    assert not key_file.exists()
    service.enroll("alice", author="cli:admin")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(bytes.fromhex(key_file.read_text())) == 32


def test_enrolment_events_name_the_principal_but_never_the_secret(
    service: MfaService, store: Store
) -> None:
    secret = service.enroll("alice", author="cli:admin").secret
    service.remove("alice", author="cli:admin", reason="lost phone")
    with store.read() as conn:
        rows = event_rows.last(conn, 10)
    names = [row.name for row in rows]
    assert names[-2:] == ["mfa.enrolled", "mfa.removed"]
    bodies = [orjson.loads(row.body) for row in rows[-2:]]
    assert [(b["target"], b["actor"]) for b in bodies] == [("alice", "cli:admin")] * 2
    assert bodies[1]["reason"] == "lost phone"
    assert all(secret not in row.body for row in rows)


def test_only_users_get_factors_and_only_one_each(service: MfaService) -> None:
    with pytest.raises(BadRequest, match="'robot' is a service: MFA factors are for users"):
        service.enroll("robot", author="cli:admin")
    with pytest.raises(NotFound, match="no principal named 'nobody'"):
        service.enroll("nobody", author="cli:admin")
    service.enroll("alice", author="cli:admin")
    with pytest.raises(Conflict, match="remove it first with `bastion mfa remove alice`"):
        service.enroll("alice", author="cli:admin")
    assert [row.principal for row in service.factors()] == ["alice"]


def test_remove_then_enrol_again(service: MfaService) -> None:
    first = service.enroll("alice", author="cli:admin").secret
    service.remove("alice", author="cli:admin")
    with pytest.raises(NotFound, match="'alice' has no MFA factor"):
        service.remove("alice", author="cli:admin")
    assert "no MFA factor enrolled" in refused(service, code_at(first, STEP))
    second = service.enroll("alice", author="cli:admin").secret
    assert second != first
    service.verify("alice", code_at(second, STEP), NOW)


def test_a_sealed_secret_opens_only_for_its_principal_and_key(
    service: MfaService, store: Store, tmp_path: Path
) -> None:
    secret = service.enroll("alice", author="cli:admin").secret
    sealed = factor(store).secret
    with store.begin() as conn:  # someone copies alice's sealed secret into bob's row
        mfa_rows.insert(conn, "bob", sealed, NOW)
    message = refused(service, code_at(secret, STEP), who="bob")
    assert message == "the MFA factor cannot be read on this server; an admin must re-enrol it"
    other = SecretBox.load_or_create(tmp_path / "other.key")
    with pytest.raises(ValueError, match="does not open"):
        other.open("alice", sealed)
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(ValueError, match="does not open"):
        service._box.open("alice", tampered)
    with pytest.raises(ValueError, match="not a sealed MFA secret"):
        service._box.open("alice", secret)


def test_a_broken_key_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    path.write_text("not hex\n")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="is not a hex MFA key"):
        SecretBox.load_or_create(path)
    path.write_text("abcd\n")
    with pytest.raises(ConfigError, match="must be 32 bytes"):
        SecretBox.load_or_create(path)


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    SecretBox.load_or_create(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="accessible by group or others"):
        SecretBox.load_or_create(path)


def test_an_unusable_key_file_fails_closed_without_saying_where_it_is(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = audit_keys.load_or_create(tmp_path / "state")
    audit = AuditLog(Committer(keys.salt), keys.signer, keys.origin)
    key_file = tmp_path / "state" / KEY_FILE
    secret = MfaService(store, audit, key_file).enroll("alice", author="cli:admin").secret
    os.chmod(key_file, 0o644)  # someone loosened it: the server no longer trusts the key
    message = refused(MfaService(store, audit, key_file), code_at(secret, STEP))
    assert message == "MFA codes cannot be checked on this server right now; tell an admin"
    assert str(key_file) in caplog.text  # the operator is told where to look
    assert factor(store).last_step is None


# -- verification ------------------------------------------------------------------------------


def test_a_good_code_is_accepted_once_and_confirms_the_factor(
    service: MfaService, store: Store
) -> None:
    secret = service.enroll("alice", author="cli:admin").secret
    service.verify("alice", code_at(secret, STEP), NOW)
    row = factor(store)
    assert (row.confirmed_at, row.last_step) == (NOW, STEP)
    assert refused(service, code_at(secret, STEP)) == (
        "this MFA code was already used; wait for the next one"
    )
    assert factor(store) == row  # a replay changes nothing
    later = NOW + STEP_SECONDS
    service.verify("alice", code_at(secret, STEP + 1), later)
    assert factor(store).confirmed_at == NOW  # confirmed by the first use, not the last
    assert factor(store).last_step == STEP + 1


def test_an_older_step_is_refused_after_a_newer_one_was_used(service: MfaService) -> None:
    secret = service.enroll("alice", author="cli:admin").secret
    service.verify("alice", code_at(secret, STEP), NOW)
    # the previous step is inside the window, but time steps are used in order only
    assert "already used" in refused(service, code_at(secret, STEP - 1))


@pytest.mark.parametrize(("offset", "accepted"), [(-2, False), (-1, True), (1, True), (2, False)])
def test_one_step_of_clock_drift_either_way(
    service: MfaService, store: Store, offset: int, accepted: bool
) -> None:
    secret = service.enroll("alice", author="cli:admin").secret
    code = code_at(secret, STEP + offset)
    if code in {code_at(secret, STEP + d) for d in (-1, 0, 1)} and not accepted:
        pytest.skip("this random secret gives the same code for two steps")
    if accepted:
        service.verify("alice", code, NOW)
        assert factor(store).last_step == STEP + offset
    else:
        assert refused(service, code) == "the MFA code is wrong or has expired"
        assert factor(store).last_step is None


def test_matching_step_names_the_step_of_the_code() -> None:
    secret = pyotp.random_base32()
    codes = {offset: code_at(secret, STEP + offset) for offset in (-1, 0, 1)}
    if len(set(codes.values())) < 3:
        pytest.skip("this random secret gives the same code for two steps")
    for offset, code in codes.items():
        assert matching_step(secret, code, NOW) == STEP + offset
    assert matching_step(secret, code_at(secret, STEP + 5), NOW) is None


@pytest.mark.parametrize(
    "code",
    ["", "12345", "1234567", "abcdef", "12345a", " 123456", "123456\n", "١٢٣٤٥٦", "1" * 1000],
    ids=["empty", "5-digits", "7-digits", "letters", "mixed", "space", "newline", "arabic", "huge"],
)
def test_malformed_codes_are_refused_before_the_factor_is_touched(
    service: MfaService, store: Store, code: str
) -> None:
    service.enroll("alice", author="cli:admin")
    before = factor(store)
    assert refused(service, code) == "mfa_code must be 6 digits"
    assert factor(store) == before  # no failure counted, no step spent


def test_wrong_codes_are_throttled_then_allowed_again(service: MfaService, store: Store) -> None:
    secret = service.enroll("alice", author="cli:admin").secret
    good = code_at(secret, STEP)
    wrong = next(c for c in ("000000", "111111", "222222") if matching_step(secret, c, NOW) is None)
    for attempt in range(1, MAX_FAILURES + 1):
        assert refused(service, wrong) == "the MFA code is wrong or has expired"
        assert factor(store).failures == attempt
    assert refused(service, good, NOW + 1).startswith("too many wrong MFA codes; try again in ")
    assert factor(store).last_step is None  # the good code was not even looked at
    later = NOW + THROTTLE_SECONDS + 1
    fresh = code_at(secret, int(later // STEP_SECONDS))
    service.verify("alice", fresh, later)
    assert (factor(store).failures, factor(store).failed_at) == (0, None)


def test_a_principal_without_a_factor_is_told_how_to_get_one(service: MfaService) -> None:
    message = refused(service, "123456")
    assert message == (
        "principal 'alice' has no MFA factor enrolled; an admin enrols one with "
        "`bastion mfa enroll alice`"
    )


def test_what_tokens_say_about_the_login() -> None:
    assert auth_context(None) == (None, ("pop",), ACR_KEY)
    assert auth_context(NOW + 0.9) == (int(NOW), ("pop", "otp"), ACR_MFA)
