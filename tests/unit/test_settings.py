"""Process settings: BASTION_* variables, CLI overrides, and a repr that never shows a password."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bastion.errors import ConfigError
from bastion.settings import Settings

PASSWORD = "hunter2-Pa55"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"postgresql+psycopg://bastion:{PASSWORD}@db.internal:5432/bastion",
            "postgresql+psycopg://bastion:***@db.internal:5432/bastion",
        ),
        (
            f"postgresql://bastion:{PASSWORD}@with@at:and:colon@db/bastion",
            "postgresql://bastion:***@db/bastion",
        ),
        (f"postgresql://:{PASSWORD}@db/bastion", "postgresql://:***@db/bastion"),
    ],
)
def test_repr_hides_the_database_password(url: str, shown: str) -> None:
    settings = Settings(database_url=url)
    for text in (repr(settings), str(settings), f"{settings}", repr([settings])):
        assert PASSWORD not in text
        assert shown in text


def test_repr_hides_a_password_given_as_a_query_parameter() -> None:
    # libpq and SQLAlchemy both accept the password in the query string.
    settings = Settings(database_url=f"postgresql+psycopg://bastion@db/bastion?password={PASSWORD}")
    assert PASSWORD not in repr(settings)


def test_repr_shows_urls_without_a_password_as_they_are() -> None:
    assert "postgresql://bastion@db/bastion" in repr(
        Settings(database_url="postgresql://bastion@db/bastion")
    )
    assert "sqlite:////var/lib/bastion.db" in repr(
        Settings(database_url="sqlite:////var/lib/bastion.db")
    )


def test_repr_names_where_things_are() -> None:
    text = repr(Settings(state_dir=Path("/srv/state"), public_url="https://gw.example"))
    assert "state_dir='/srv/state'" in text
    assert "public_url='https://gw.example'" in text


def test_the_default_database_is_sqlite_in_the_state_directory(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'state' / 'bastion.db'}"
    assert settings.issuer_key_file == tmp_path / "state" / "issuer.jwk"


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().public_url = "https://elsewhere"  # type: ignore[misc]


# -- from_env -------------------------------------------------------------------------------------


def test_no_variables_give_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({"UNRELATED": "1", "bastion_config": "lowercase.yaml"}) == Settings()


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "BASTION_STATE_DIR": "/srv/bastion",
            "BASTION_CONFIG": "/etc/bastion/bastion.yaml",
            "BASTION_DATABASE_URL": "postgresql://u:p@db/b",
            "BASTION_PUBLIC_URL": "https://gw.example/",
            "BASTION_TRUSTED_PROXIES": " 10.0.0.0/8, ,fd00::/8,",
            "BASTION_ACCESS_TOKEN_TTL": "300",
        }
    )
    assert settings.state_dir == Path("/srv/bastion")
    assert settings.config_file == Path("/etc/bastion/bastion.yaml")
    assert settings.database_url == "postgresql://u:p@db/b"
    assert settings.public_url == "https://gw.example"  # trailing slash dropped
    assert settings.trusted_proxies == ("10.0.0.0/8", "fd00::/8")
    assert settings.access_token_ttl == 300


def test_an_empty_proxy_list_trusts_no_one() -> None:
    assert Settings.from_env({"BASTION_TRUSTED_PROXIES": ""}).trusted_proxies == ()
    assert Settings.from_env({"BASTION_TRUSTED_PROXIES": " , "}).trusted_proxies == ()


def test_the_process_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_PUBLIC_URL", "https://from-the-env.example")
    monkeypatch.delenv("BASTION_ACCESS_TOKEN_TTL", raising=False)
    assert Settings.from_env().public_url == "https://from-the-env.example"


def test_explicit_overrides_win_and_none_means_not_given() -> None:
    env = {"BASTION_STATE_DIR": "/from/env", "BASTION_CONFIG": "/from/env.yaml"}
    settings = Settings.from_env(env, state_dir=Path("/from/flag"), config_file=None)
    assert settings.state_dir == Path("/from/flag")
    assert settings.config_file == Path("/from/env.yaml")


@pytest.mark.parametrize(("raw", "value"), [("30", 30), ("900", 900), (" 120 ", 120)])
def test_the_access_token_ttl_accepts_30_to_900_seconds(raw: str, value: int) -> None:
    assert Settings.from_env({"BASTION_ACCESS_TOKEN_TTL": raw}).access_token_ttl == value


@pytest.mark.parametrize("raw", ["", "ten", "60s", "1e2", "60.0"])
def test_a_ttl_that_is_not_an_integer_is_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"BASTION_ACCESS_TOKEN_TTL": raw})
    assert caught.value.file == "BASTION_ACCESS_TOKEN_TTL"
    assert caught.value.problems == [f"must be an integer, got {raw!r}"]


@pytest.mark.parametrize("raw", ["29", "901", "0", "-60"])
def test_a_ttl_out_of_range_is_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"BASTION_ACCESS_TOKEN_TTL": raw})
    assert caught.value.message == (
        f"BASTION_ACCESS_TOKEN_TTL: must be between 30 and 900, got {int(raw)}"
    )


@pytest.mark.parametrize(
    ("raw", "value"), [("1", 1.0), ("0.25", 0.25), (" 0.1 ", 0.1), ("3600", 3600)]
)
def test_the_integrity_interval_accepts_a_tenth_of_a_second_to_an_hour(
    raw: str, value: float
) -> None:
    assert Settings.from_env({"BASTION_INTEGRITY_INTERVAL": raw}).integrity_interval == value
    assert Settings().integrity_interval == 0.25


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("", "must be a number of seconds, got ''"),
        ("1s", "must be a number of seconds, got '1s'"),
        ("0.05", "must be between 0.1 and 3600, got '0.05'"),
        ("-1", "must be between 0.1 and 3600, got '-1'"),
        ("3601", "must be between 0.1 and 3600, got '3601'"),
        ("nan", "must be between 0.1 and 3600, got 'nan'"),
        ("inf", "must be between 0.1 and 3600, got 'inf'"),
    ],
)
def test_a_bad_integrity_interval_is_a_config_error(raw: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"BASTION_INTEGRITY_INTERVAL": raw})
    assert caught.value.file == "BASTION_INTEGRITY_INTERVAL"
    assert caught.value.problems == [problem]


def test_a_redis_url_switches_to_cluster_mode_and_is_never_shown() -> None:
    settings = Settings.from_env({"BASTION_REDIS_URL": "redis://:s3cret@10.0.0.5:6379/2"})
    assert settings.cluster
    assert "s3cret" not in repr(settings)
    assert not Settings().cluster


@pytest.mark.parametrize(
    "raw", ["http://10.0.0.5:6379", "10.0.0.5:6379", "redis://a b", "", "s3cret-not-a-url"]
)
def test_a_bad_redis_url_is_refused_without_echoing_it(raw: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"BASTION_REDIS_URL": raw})
    assert "BASTION_REDIS_URL" in str(refused.value)
    assert (raw or "\x00") not in str(refused.value).replace("BASTION_REDIS_URL", "")


@pytest.mark.parametrize("raw", ["", "-x", "a" * 65, "a:b", "a b", "ü"])
def test_a_bad_redis_prefix_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="BASTION_REDIS_PREFIX"):
        Settings.from_env({"BASTION_REDIS_PREFIX": raw})
