"""The committed CLI reference, docs/cli.md, is exactly what docs/gen_cli.py makes now."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

DOCS = Path(__file__).resolve().parents[3] / "docs"


def render() -> str:
    generator: Callable[[], str] = runpy.run_path(str(DOCS / "gen_cli.py"))["render"]
    return generator()


def test_the_cli_reference_is_up_to_date() -> None:
    committed = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert render() == committed, (
        "docs/cli.md is out of date: run `.venv/bin/python docs/gen_cli.py > docs/cli.md`"
    )


def test_the_documented_command_ignores_the_terminal_and_the_environment(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "COLUMNS": "40",
        "LINES": "10",
        "TERMINAL_WIDTH": "40",
        "FORCE_COLOR": "1",
        "LANG": "C",
        "LC_ALL": "C",
        "BASTION_CONFIG": str(tmp_path / "elsewhere.yaml"),
        "BASTION_STATE_DIR": str(tmp_path / "state"),
    }
    env.pop("PYTHONIOENCODING", None)
    generated = subprocess.run(
        [sys.executable, str(DOCS / "gen_cli.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert generated.stdout == (DOCS / "cli.md").read_bytes()
    assert list(tmp_path.iterdir()) == []


def test_every_command_has_a_section() -> None:
    page = render()
    for path in (
        "bastion",
        "bastion init",
        "bastion config check",
        "bastion principal add",
        "bastion key revoke",
        "bastion lock",
        "bastion events tail",
        "bastion login",
    ):
        assert f"\n## `{path}`\n\n```text\nUsage: {path} [OPTIONS]" in page
    assert "\x1b[" not in page  # no colour codes
    assert "╭" not in page  # no Rich panels
