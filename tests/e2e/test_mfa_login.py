"""``bastion login --mfa`` against a real server: enrol a factor with the admin CLI, log in with a
code from it (given or typed at the prompt), and the profile remembers the MFA login."""

from __future__ import annotations

import json
import subprocess
import time

import pyotp
import pytest

from .conftest import BASTION, Deployment

pytestmark = pytest.mark.e2e


def code_for(secret: str, steps_ahead: int) -> str:
    """A code the server accepts (one step of drift is allowed) and has not seen yet."""
    return pyotp.TOTP(secret).at(time.time() + steps_ahead * 30)


def test_login_with_mfa_then_again_on_the_same_device(deployment: Deployment) -> None:
    added = deployment.cli("principal", "add", "mia", "--org", "lab")
    enrollment_code = added.stdout.splitlines()[2].strip()
    enrolled = deployment.cli("mfa", "enroll", "mia").stdout.splitlines()
    secret = enrolled[3].removeprefix("secret (base32): ")
    login = [
        "login", "--server", deployment.url, "--principal", "mia", "--profile", "e2e-mia",
    ]  # fmt: skip

    wrong = deployment.cli(*login, "--code", enrollment_code, "--mfa-code", "12345", check=False)
    assert wrong.returncode == 1
    assert "refused the grant (invalid_grant): mfa_code must be 6 digits" in wrong.stderr
    profile_file = deployment.workdir / "client" / "profiles" / "e2e-mia.json"
    assert json.loads(profile_file.read_text()).get("mfa") is None  # the key, but no MFA login

    code = code_for(secret, 0)
    first = deployment.cli(*login, "--mfa", "--mfa-code", code)  # the enrolled profile's key
    assert first.stdout.startswith("logged in as mia with MFA; models you may use: demo-chat")
    assert json.loads(profile_file.read_text())["mfa"] is True
    assert code not in first.stdout + first.stderr

    replayed = deployment.cli(*login, "--mfa-code", code, check=False)
    assert replayed.returncode == 1
    assert "this MFA code was already used; wait for the next one" in replayed.stderr

    prompted = subprocess.run(
        [*BASTION, *login, "--mfa"],
        cwd=deployment.workdir,
        env=deployment.env,
        input=code_for(secret, 1) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert prompted.returncode == 0, prompted.stderr
    assert "TOTP code from your authenticator app" in prompted.stdout
    assert "logged in as mia with MFA" in prompted.stdout

    listed = deployment.cli("mfa", "list").stdout
    [row] = [line for line in listed.splitlines() if "mia" in line]
    assert row.split("│")[3].strip() != "-"  # confirmed


def test_login_mfa_needs_a_profile_or_an_enrollment_code(deployment: Deployment) -> None:
    login = ["login", "--server", deployment.url, "--principal", "bob", "--mfa-code", "123456"]
    missing = deployment.cli(*login, "--profile", "e2e-nobody", check=False)
    assert missing.returncode == 1
    assert "no Bastion profile 'e2e-nobody'" in missing.stderr
    both = deployment.cli(*login, "--print-public-key", check=False)
    assert both.returncode == 1
    assert "--mfa needs an enrolled device key" in both.stderr
