"""Device profiles on disk: where they live, mode 0600, and clear errors for every bad file."""

from __future__ import annotations

import stat
from pathlib import Path

import orjson
import platformdirs
import pytest

from bastion.client.profile import Profile, client_dir, load_profile, profile_path, save_profile
from bastion.errors import BadRequest, ConfigError, NotFound
from bastion.identity.keys import generate_private_jwk, public_jwk


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"BASTION_CLIENT_DIR": str(tmp_path / "bastion")}


@pytest.fixture
def profile() -> Profile:
    return Profile(
        server="https://bastion.test",
        client_id="alice",
        private_jwk=generate_private_jwk("ES256"),
        name="work",
    )


def test_profiles_live_in_the_user_config_dir_unless_overridden(tmp_path: Path) -> None:
    assert client_dir({}) == Path(platformdirs.user_config_dir("bastion"))
    assert client_dir({"BASTION_CLIENT_DIR": str(tmp_path)}) == tmp_path
    assert profile_path("x", {"BASTION_CLIENT_DIR": str(tmp_path)}) == (
        tmp_path / "profiles" / "x.json"
    )


def test_a_saved_profile_loads_back_and_is_0600(
    profile: Profile, env: dict[str, str], tmp_path: Path
) -> None:
    path = save_profile(profile, env)
    assert path == tmp_path / "bastion" / "profiles" / "work.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_profile("work", env) == profile
    assert profile.token_endpoint == "https://bastion.test/oauth/token"
    assert profile.private_jwk["d"] not in repr(profile)


def test_the_environment_variable_is_read_by_default(
    profile: Profile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_CLIENT_DIR", str(tmp_path))
    save_profile(profile)
    assert load_profile("work").client_id == "alice"


def test_a_missing_profile_says_how_to_create_one(env: dict[str, str]) -> None:
    with pytest.raises(NotFound) as info:
        load_profile("ghost", env)
    path = profile_path("ghost", env)
    assert info.value.message == f"no Bastion profile 'ghost' at {path}: run `bastion login`"


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "", ".hidden", "x" * 65, "a b"])
def test_profile_names_cannot_escape_the_directory(name: str, env: dict[str, str]) -> None:
    with pytest.raises(BadRequest, match=r"profile name .* is invalid"):
        profile_path(name, env)


def test_a_profile_readable_by_others_is_refused(profile: Profile, env: dict[str, str]) -> None:
    path = save_profile(profile, env)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_profile("work", env)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{", "is not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"client_id": "a", "private_jwk": {}}', "server: missing"),
        (b'{"server": "https://b.test", "private_jwk": {}}', "client_id: missing"),
        (b'{"server": "https://b.test", "client_id": "a"}', "private_jwk: missing"),
        (b'{"server": "https://b.test", "client_id": "a", "private_jwk": {"d": 1}}', "private_jwk"),
    ],
)
def test_broken_profile_files_name_the_problem(
    content: bytes, problem: str, env: dict[str, str]
) -> None:
    path = profile_path("work", env)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=problem) as info:
        load_profile("work", env)
    assert str(path) in info.value.message


@pytest.mark.parametrize(
    ("server", "problem"),
    [
        ("ftp://bastion.test", "http:// or https://"),
        ("bastion.test", "http:// or https://"),
        ("https://bastion.test/?x=1", "without query"),
    ],
)
def test_the_server_must_be_a_base_url(
    profile: Profile, server: str, problem: str, env: dict[str, str]
) -> None:
    bad = Profile(server, profile.client_id, profile.private_jwk, name="work")
    with pytest.raises(ConfigError, match=problem):
        save_profile(bad, env)


def test_a_public_key_is_not_a_profile_key(profile: Profile, env: dict[str, str]) -> None:
    path = profile_path("work", env)
    path.parent.mkdir(parents=True)
    data = {
        "server": "https://b.test",
        "client_id": "a",
        "private_jwk": public_jwk(profile.private_jwk),
    }
    path.write_bytes(orjson.dumps(data))
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="private_jwk: JWK member d is missing"):
        load_profile("work", env)
