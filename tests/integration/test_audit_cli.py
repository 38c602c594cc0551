"""The audit commands as an operator and an auditor run them: real subprocesses, real files.

``bastion audit`` runs beside a state directory made by ``bastion init`` and a few admin
commands; ``bastion-verify`` runs with nothing but the verifier key and the evidence.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from bastion.audit import keys as audit_keys
from bastion.audit.commitment import Committer
from bastion.audit.events import AdminAction
from bastion.audit.log import AuditLog
from bastion.audit.note import generate_key
from bastion.identity.keys import write_private_file
from bastion.store import Store
from bastion.store.tables import audit_events
from tests.conftest import CONFIG
from tests.unit.audit.test_note import NOTE, PETER_VKEY, TEXT

VERIFY = [sys.executable, "-c", "from bastion.audit.offline import main; main()"]


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env["COLUMNS"] = "80"  # a pipe: what a script capturing the output sees
    result = subprocess.run(
        list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


@dataclass(frozen=True)
class AuditDir:
    """A directory after ``bastion init`` and a few admin commands, and the log's verifier key."""

    root: Path
    key: str
    lock_event: str

    def bastion(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(self.root, sys.executable, "-m", "bastion", *args)

    def verify(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(self.root, *VERIFY, *args)


def make_audit_dir(root: Path) -> AuditDir:
    (root / "bastion.yaml").write_text(CONFIG, encoding="utf-8")
    partial = AuditDir(root, "", "")
    for args in (
        ("init",),
        ("principal", "add", "dave", "--org", "lab"),
        ("lock", "principal", "bob", "--reason", "suspected token theft"),
        ("unlock", "principal", "bob", "--reason", "false alarm"),
    ):
        done = partial.bastion(*args)
        assert done.returncode == 0, done.stderr
    tail = partial.bastion("events", "tail", "-n", "20", "--json").stdout.splitlines()
    events = [orjson.loads(line) for line in tail if line.strip()]
    lock_event = next(e["id"] for e in events if e["name"] == "lock.created")
    key = partial.bastion("audit", "key")
    assert key.returncode == 0, key.stderr
    return AuditDir(root, key.stdout.strip(), lock_event)


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory: pytest.TempPathFactory) -> AuditDir:
    return make_audit_dir(tmp_path_factory.mktemp("audit-cli"))


@pytest.fixture(scope="module")
def receipt(audit_dir: AuditDir, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A genuine receipt for the ``lock.created`` event (tests copy it before editing)."""
    path = tmp_path_factory.mktemp("receipt") / "r.json"
    proved = audit_dir.bastion("audit", "prove", audit_dir.lock_event, "-o", str(path))
    assert proved.returncode == 0, proved.stderr
    return path


# -- bastion audit verify-note -----------------------------------------------------------------


def test_verify_note_accepts_gos_published_example(audit_dir: AuditDir, tmp_path: Path) -> None:
    note = tmp_path / "go.note"
    note.write_text(NOTE, encoding="utf-8")
    done = audit_dir.bastion("audit", "verify-note", "--key", PETER_VKEY, str(note))
    assert done.returncode == 0, done.stderr
    assert "verified by: PeterNeumann" in done.stdout
    assert TEXT in done.stdout  # not a checkpoint: the verified text is shown as it is


def test_verify_note_accepts_a_bastion_checkpoint_and_rejects_a_tampered_one(
    audit_dir: AuditDir, tmp_path: Path
) -> None:
    signed = audit_dir.bastion("audit", "checkpoint")
    assert signed.returncode == 0, signed.stderr
    origin, size, *_ = signed.stdout.split("\n")
    checkpoint = tmp_path / "checkpoint.txt"
    checkpoint.write_text(signed.stdout, encoding="utf-8")

    done = audit_dir.bastion("audit", "verify-note", "--key", audit_dir.key, str(checkpoint))
    assert done.returncode == 0, done.stderr
    assert f"verified by: {origin}" in done.stdout
    assert f"checkpoint: origin {origin}, size {size}" in done.stdout

    shrunk = tmp_path / "shrunk.txt"  # claim a smaller tree, keep the signature
    shrunk.write_text(signed.stdout.replace(f"\n{size}\n", f"\n{int(size) - 1}\n", 1), "utf-8")
    bad = audit_dir.bastion("audit", "verify-note", "--key", audit_dir.key, str(shrunk))
    assert bad.returncode == 1
    assert "note does not verify: invalid signature by known key" in bad.stderr

    other = audit_dir.bastion("audit", "verify-note", "--key", PETER_VKEY, str(checkpoint))
    assert other.returncode == 1
    assert "note does not verify: no known verifier signed this note" in other.stderr


def test_verify_note_rejects_an_edited_go_note(audit_dir: AuditDir, tmp_path: Path) -> None:
    note = tmp_path / "go.note"
    note.write_text(NOTE.replace("cryptography", "blockchain"), encoding="utf-8")
    done = audit_dir.bastion("audit", "verify-note", "--key", PETER_VKEY, str(note))
    assert done.returncode == 1
    assert "note does not verify: invalid signature by known key PeterNeumann+c74f20a3" in (
        done.stderr
    )


# -- receipts -----------------------------------------------------------------------------------


def test_receipt_verifies_offline_and_an_edited_leaf_does_not(
    audit_dir: AuditDir, receipt: Path, tmp_path: Path
) -> None:
    body = orjson.loads(receipt.read_bytes())
    assert orjson.loads(body["leaf"])["id"] == audit_dir.lock_event

    ok = audit_dir.verify("receipt", "--key", audit_dir.key, str(receipt))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith(f"VERIFIED: entry {body['index']} is in ")

    forged = tmp_path / "forged.json"
    leaf = body["leaf"].replace("suspected token theft", "routine check")
    assert leaf != body["leaf"]
    forged.write_bytes(orjson.dumps({**body, "leaf": leaf}))
    bad = audit_dir.verify("receipt", "--key", audit_dir.key, str(forged))
    assert bad.returncode == 1
    assert bad.stdout.startswith("NOT VERIFIED")
    assert f"inclusion: the leaf is not at index {body['index']}" in bad.stdout


def test_prove_an_unknown_event_fails_clearly(audit_dir: AuditDir) -> None:
    done = audit_dir.bastion("audit", "prove", "ev_00000000000000000000", "-o", "r.json")
    assert done.returncode == 1
    assert "no audit event 'ev_00000000000000000000'" in done.stderr
    assert not (audit_dir.root / "r.json").exists()


# -- exports ------------------------------------------------------------------------------------


def test_export_verifies_offline_and_a_deleted_line_does_not(
    audit_dir: AuditDir, tmp_path: Path
) -> None:
    export, checkpoint = tmp_path / "ex.jsonl", tmp_path / "cp.txt"
    done = audit_dir.bastion(
        "audit", "export", "-o", str(export), "--checkpoint-out", str(checkpoint)
    )
    assert done.returncode == 0, done.stderr
    lines = export.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 4
    assert [orjson.loads(line)["index"] for line in lines] == list(range(len(lines)))

    ok = audit_dir.verify(
        "export", "--key", audit_dir.key, "--checkpoint", str(checkpoint), str(export)
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"VERIFIED: {len(lines)} entries match the signed checkpoint" in ok.stdout

    export.write_text("".join(f"{line}\n" for i, line in enumerate(lines) if i != 1), "utf-8")
    bad = audit_dir.verify(
        "export", "--key", audit_dir.key, "--checkpoint", str(checkpoint), str(export)
    )
    assert bad.returncode == 1
    assert "NOT VERIFIED" in bad.stdout
    assert "order: line 2: expected index 1, found 2 (an entry is missing" in bad.stdout


def test_an_export_whose_ocsf_fields_were_edited_does_not_verify(
    audit_dir: AuditDir, tmp_path: Path
) -> None:
    export, checkpoint = tmp_path / "ex.jsonl", tmp_path / "cp.txt"
    done = audit_dir.bastion(
        "audit", "export", "-o", str(export), "--checkpoint-out", str(checkpoint)
    )
    assert done.returncode == 0, done.stderr
    lines = [orjson.loads(line) for line in export.read_text(encoding="utf-8").splitlines()]
    lock = next(line for line in lines if line["message"] == "lock.created")
    lock["unmapped"]["reason"] = "routine check"  # what a SIEM shows; the leaf is untouched
    export.write_text("".join(orjson.dumps(line).decode() + "\n" for line in lines), "utf-8")
    key, cp = audit_dir.key, str(checkpoint)
    done = audit_dir.verify("export", "--key", key, "--checkpoint", cp, str(export))
    assert done.returncode == 1, done.stdout
    assert "unmapped differ from the leaf" in done.stdout


# -- bastion-verify used wrongly ---------------------------------------------------------------


@pytest.mark.parametrize("key", ["garbage", "name+0000000+AAAA", ""])
def test_bastion_verify_refuses_a_garbage_key(audit_dir: AuditDir, receipt: Path, key: str) -> None:
    for args in (
        ("receipt", "--key", key, str(receipt)),
        ("export", "--key", key, "--checkpoint", str(receipt), str(receipt)),
    ):
        done = audit_dir.verify(*args)
        assert done.returncode == 2, (args, done.returncode, done.stdout, done.stderr)
        assert "bastion-verify: bad verifier key:" in done.stderr
        assert "VERIFIED" not in done.stdout  # neither VERIFIED nor NOT VERIFIED: no verdict


def test_bastion_verify_refuses_a_missing_file(audit_dir: AuditDir, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    checkpoint = tmp_path / "cp.txt"
    checkpoint.write_text(audit_dir.bastion("audit", "checkpoint").stdout, encoding="utf-8")
    for args in (
        ("receipt", "--key", audit_dir.key, missing),
        ("export", "--key", audit_dir.key, "--checkpoint", missing, missing),
        ("export", "--key", audit_dir.key, "--checkpoint", str(checkpoint), missing),
    ):
        done = audit_dir.verify(*args)
        assert done.returncode == 2, (args, done.returncode, done.stdout, done.stderr)
        assert f"bastion-verify: cannot read {tmp_path}" in done.stderr
        assert "FileNotFoundError" in done.stderr


def test_the_bastion_verify_script_is_installed(audit_dir: AuditDir, receipt: Path) -> None:
    script = Path(sys.executable).with_name("bastion-verify")
    if not script.exists():
        pytest.skip("bastion-verify is not installed next to this interpreter")
    done = run(audit_dir.root, str(script), "receipt", "--key", audit_dir.key, str(receipt))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "VERIFIED" in done.stdout


# -- output an operator pipes into other tools ---------------------------------------------------


def test_a_long_origin_is_printed_on_one_line(tmp_path: Path) -> None:
    """Origins are ``<hostname>/bastion-audit-<hex>``; cloud host names are long, and the key
    must come out whole on a pipe (80 columns), or `$(bastion audit key)` is a broken key."""
    origin = "ip-172-31-22-101.eu-west-1.compute.internal/bastion-audit-0a1b2c3d"
    signer, verifier = generate_key(origin)
    write_private_file(tmp_path / ".bastion" / audit_keys.KEY_FILE, f"{signer}\n".encode())
    (tmp_path / "bastion.yaml").write_text(CONFIG, encoding="utf-8")
    audit_dir = AuditDir(tmp_path, verifier, "")
    assert audit_dir.bastion("init").returncode == 0
    assert audit_dir.bastion("principal", "add", "dave", "--org", "lab").returncode == 0

    assert audit_dir.bastion("audit", "key").stdout == verifier + "\n"
    signed = audit_dir.bastion("audit", "checkpoint").stdout
    checkpoint = tmp_path / "cp.txt"
    checkpoint.write_text(signed, encoding="utf-8")
    noted = audit_dir.bastion("audit", "verify-note", "--key", verifier, str(checkpoint))
    assert noted.stdout.splitlines() == [
        f"verified by: {origin}",
        f"checkpoint: origin {origin}, size {signed.splitlines()[1]}",
    ]


def test_verify_prints_each_problem_on_one_line(tmp_path: Path) -> None:
    (tmp_path / "bastion.yaml").write_text(CONFIG, encoding="utf-8")
    audit_dir = AuditDir(tmp_path, "", "")
    assert audit_dir.bastion("init").returncode == 0
    assert audit_dir.bastion("principal", "add", "dave", "--org", "lab").returncode == 0
    signed = audit_dir.bastion("audit", "checkpoint").stdout.split("\n")[1]
    store = Store(f"sqlite:///{tmp_path / '.bastion' / 'bastion.db'}")
    with store.begin() as conn:
        conn.execute(
            audit_events.update()
            .where(audit_events.c.idx == 0)  # principal.created: "dave" becomes "eve"
            .values(body=sa.func.replace(audit_events.c.body, '"dave"', '"eve"'))
        )
    store.close()
    done = audit_dir.bastion("audit", "verify")
    assert done.returncode == 1
    assert (
        f"  checkpoint {signed}: the recomputed root differs; entries before {signed} were "
        "changed, removed or reordered\n"
    ) in done.stderr


# -- bastion audit verify on a live log ---------------------------------------------------------


def test_verify_while_another_process_appends_and_checkpoints(tmp_path: Path) -> None:
    """The server appends and signs checkpoints while an operator runs ``bastion audit verify``:
    a log that only grew must not be reported as tampered."""
    (tmp_path / "bastion.yaml").write_text(CONFIG, encoding="utf-8")
    audit_dir = AuditDir(tmp_path, "", "")
    assert audit_dir.bastion("init").returncode == 0
    store = Store(f"sqlite:///{tmp_path / '.bastion' / 'bastion.db'}")
    keys = audit_keys.load_or_create(tmp_path / ".bastion")
    audit = AuditLog(Committer(keys.salt), keys.signer, keys.origin)

    def action(i: int) -> AdminAction:
        return AdminAction(
            actor="test", action="principal.created", target_type="principal", target=f"p{i}"
        )

    with store.begin() as conn:  # enough entries that verifying takes a while
        audit.append(conn, [action(i) for i in range(2000)])
        audit.checkpoint(conn)
    stop = threading.Event()
    signed: list[int] = []

    def grow() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            with store.begin() as conn:
                audit.append(conn, [action(-i)])
                row = audit.checkpoint(conn)
            if row is not None:
                signed.append(row.size)
            stop.wait(0.005)

    writer = threading.Thread(target=grow)
    writer.start()
    try:
        results = [audit_dir.bastion("audit", "verify") for _ in range(2)]
    finally:
        stop.set()
        writer.join(10)
        store.close()
    assert len(signed) > 10  # checkpoints really were signed while verify ran
    for result in results:
        assert result.returncode == 0, result.stderr
        assert "audit log OK" in result.stdout
