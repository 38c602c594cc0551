"""``bastion init``, ``config check``, ``login`` and usage errors: output, exit code, files.

Commands run in-process through ``bastion.cli.main:main`` (the real entry point, which renders
errors; see the ``cli`` fixture) in a fresh directory; a few run as ``python -m bastion``.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.config import example_config_text
from bastion.identity.keys import public_jwk, thumbprint
from bastion.identity.principals import PrincipalService
from tests.conftest import CONFIG
from tests.integration.conftest import Cli


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --- init and config check ---------------------------------------------------------------


def test_init_writes_the_example_and_a_private_state_directory(cli: Cli) -> None:
    result = cli("init")
    assert result.code == 0
    assert result.out.splitlines() == [
        "wrote bastion.yaml",
        "issuer key .bastion/issuer.jwk (mode 0600)",
        "database ready (sqlite)",
        "next: bastion config check && bastion serve",
    ]
    assert (cli.root / "bastion.yaml").read_text() == example_config_text()
    assert "#" in example_config_text()  # the example explains itself
    assert mode(cli.root / ".bastion") == 0o700
    assert mode(cli.root / ".bastion" / "issuer.jwk") == 0o600
    assert (cli.root / ".bastion" / "bastion.db").is_file()
    assert [row.name for row in PrincipalService(cli.store, cli.audit).all()] == [
        "alice",
        "ops",
    ]  # the example's


def test_init_keeps_an_edited_file_unless_forced_and_never_rotates_the_issuer_key(cli: Cli) -> None:
    cli("init")
    config, issuer = cli.root / "bastion.yaml", cli.root / ".bastion" / "issuer.jwk"
    config.write_text(CONFIG)
    key = issuer.read_bytes()

    kept = cli("init")
    assert kept.code == 0
    assert "kept existing bastion.yaml (use --force to overwrite)" in kept.out
    assert config.read_text() == CONFIG

    forced = cli("init", "--force")
    assert forced.code == 0
    assert "wrote bastion.yaml" in forced.out
    assert config.read_text() == example_config_text()
    assert issuer.read_bytes() == key


def test_config_check_counts_the_example_and_warns_about_unset_upstream_keys(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("init")
    result = cli("config", "check")
    assert result.code == 0
    assert result.out.splitlines() == [
        "bastion.yaml: ok — 2 upstreams, 5 models, 4 compartments, 3 orgs, 2 principals",
        "warning: EXAMPLE_UPSTREAM_KEY is not set: its upstream will refuse requests",
    ]
    monkeypatch.setenv("EXAMPLE_UPSTREAM_KEY", "set")
    assert "warning" not in cli("config", "check").out


BROKEN = {  # name: (old, new, the line's marker, what stderr must say about that line)
    "unknown key": (
        "    api: anthropic\n",
        "    api: anthropic\n    timeout_secs: 5\n",
        "timeout_secs",
        "upstreams.example-anthropic.timeout_secs: unknown key; did you mean 'timeout_seconds'?",
    ),
    "bad level": (
        "level: internal",
        "level: top",
        "level: top",
        "compartments.general.level: must be one of open, internal, restricted, critical "
        "(got 'top')",
    ),
    "unknown upstream": (
        "upstream: example-anthropic",
        "upstream: example-antropic",
        "example-antropic",
        "models[1].upstream: unknown upstream 'example-antropic' (declared: example-anthropic, "
        "example-openai); did you mean 'example-anthropic'?",
    ),
    "YAML syntax": (
        "alice: {kind: user, org: lab}",
        "alice: {kind: user, org: lab]",
        "org: lab]",
        "YAML syntax error: while parsing a flow mapping, expected ',' or '}', but got ']'",
    ),
    "duplicate key": (
        "  acme:\n    kind: vendor\n",
        "  lab: {kind: vendor}\n  acme:\n    kind: vendor\n",
        "lab: {kind: vendor}",
        "orgs: duplicate key 'lab' (first on line {first})",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_config_check_names_file_line_and_key_and_writes_nothing(cli: Cli, case: str) -> None:
    old, new, marker, message = BROKEN[case]
    text = CONFIG.replace(old, new, 1)
    assert text != CONFIG
    (cli.root / "broken.yaml").write_text(text)
    before = tree(cli.root)

    result = cli("--config", "broken.yaml", "config", "check")

    assert result.code == 1
    assert result.out == ""
    message = message.replace("{first}", str(line_of(text, "lab: {kind: internal}")))
    assert result.err.splitlines() == [
        "error: invalid configuration (broken.yaml)",
        f"  broken.yaml:{line_of(text, marker)}: {message}",
    ]
    assert tree(cli.root) == before  # no .bastion/, no database


def test_config_check_on_a_missing_file_says_how_to_make_one(cli: Cli) -> None:
    result = cli("config", "check")
    assert result.code == 1
    assert result.err.splitlines() == [
        "error: invalid configuration (bastion.yaml)",
        "  bastion.yaml: no such file (`bastion init` writes an example)",
    ]
    assert tree(cli.root) == []


def test_an_admin_command_before_init_keeps_the_state_directory_private(cli: Cli) -> None:
    assert cli("principal", "list").code == 0
    assert mode(cli.root / ".bastion") == 0o700


# --- login ----------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_login_to_an_unreachable_server_fails_cleanly_and_saves_nothing(cli: Cli) -> None:
    server = f"http://127.0.0.1:{closed_port()}"
    args = ("login", "--principal", "p", "--code", "CODE", "--profile", "x")
    result = cli(*args, "--server", server)
    assert result.code == 1
    assert result.err == f"error: cannot reach {server}: ConnectError\n"
    assert not (cli.root / "client").exists()

    for bad in ("ftp://example.test", "example.test:8080"):
        refused = cli(*args, "--server", bad)
        assert refused.code == 1
        assert refused.err == f"error: --server must be an http:// or https:// URL (got {bad!r})\n"
    assert not (cli.root / "client").exists()


def test_login_print_public_key_saves_a_private_profile_and_prints_only_the_public_key(
    cli: Cli,
) -> None:
    result = cli(
        "login", "--server", "http://gw.test/", "--principal", "p", "--print-public-key",
        "--profile", "x",
    )  # fmt: skip
    assert result.code == 0
    profile = cli.root / "client" / "profiles" / "x.json"
    assert mode(profile) == 0o600
    saved = json.loads(profile.read_text())
    assert saved["server"] == "http://gw.test"
    assert saved["client_id"] == "p"
    printed = json.loads(result.out.splitlines()[-1])
    assert "d" not in printed
    assert printed == public_jwk(saved["private_jwk"])
    assert result.out.splitlines()[:2] == [
        f"device key {thumbprint(printed)} saved to {profile}",
        "ask an admin to run: bastion key enroll p KEY.json",
    ]


# --- usage errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch"], "Error: No such command 'nosuch'."),
        (["--bogus"], "Error: No such option: --bogus"),
        (["principal", "add", "dave"], "Error: Missing option '--org'."),
        (["events", "tail", "-n", "0"], "Error: Invalid value for '-n'"),
    ],
)
def test_usage_errors_exit_2_with_usage_and_no_traceback(
    cli: Cli, args: list[str], message: str
) -> None:
    result = cli(*args)
    assert result.code == 2
    assert result.err.startswith("Usage: ")
    assert "' for help." in result.err
    assert message in result.err
    assert "internal error" not in result.err


COLOUR_VARIABLES = ("FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "TTY_COMPATIBLE", "COLUMNS")


def run_module(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("BASTION_") and name not in COLOUR_VARIABLES
    }
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_python_m_bastion_renders_usage_and_bastion_errors(tmp_path: Path) -> None:
    unknown = run_module(tmp_path, "frobnicate")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("Usage: python -m bastion [OPTIONS] COMMAND [ARGS]...\n")
    assert "Error: No such command 'frobnicate'." in unknown.stderr
    assert "Traceback" not in unknown.stdout + unknown.stderr

    missing = run_module(tmp_path, "config", "check")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: invalid configuration (bastion.yaml)\n")
    assert "Traceback" not in missing.stdout + missing.stderr

    helped = run_module(tmp_path, "--help")
    assert helped.returncode == 0
    assert "Usage: python -m bastion [OPTIONS] COMMAND [ARGS]..." in helped.stdout
    assert tree(tmp_path) == []
