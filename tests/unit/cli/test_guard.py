"""``bastion guard``: bad flags are one clear error line and nothing starts; good flags start the
guard proxy on the address given, refusing unsigned requests."""

from __future__ import annotations

import sys
from typing import Any

import httpx
import pytest

from bastion.cli.main import main
from bastion.guard import GuardMiddleware

JWKS = "http://127.0.0.1:8080/.well-known/jwks.json"
GOOD = ["--upstream", "http://127.0.0.1:8081", "--jwks-url", JWKS, "--audience", "aud"]


def run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, list[dict[str, Any]]]:
    started: list[dict[str, Any]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: started.append({"app": app, **kw}))
    monkeypatch.setattr("logging.config.dictConfig", lambda config: None)  # the test's logging
    monkeypatch.setattr(sys, "argv", ["bastion", "guard", *args])
    code: int | str | None = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code
    assert isinstance(code, int)
    return code, capsys.readouterr().err, started


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--upstream", "http://127.0.0.1:8081", "--audience", "a"], "exactly one of --jwks-url"),
        ([*GOOD, "--jwks-file", "jwks.json"], "exactly one of --jwks-url"),
        (
            ["--upstream", "http://m", "--audience", "a", "--jwks-url", "http://b.example/jwks"],
            "--jwks-url must start with https://",
        ),
        (
            ["--upstream", "http://m", "--audience", "a", "--jwks-url", "https://b.example/k"],
            "give --issuer",
        ),
        (
            ["--upstream", "http://m", "--audience", "a", "--jwks-file", __file__],
            "--jwks-file needs --issuer",
        ),
        ([*GOOD, "--listen", "8082"], "--listen must be HOST:PORT"),
        ([*GOOD, "--listen", "127.0.0.1:99999"], "--listen must be HOST:PORT"),
        (["--upstream", "ftp://m", "--jwks-url", JWKS, "--audience", "a"], "http(s) URL"),
        (["--upstream", "http://u:p@m", "--jwks-url", JWKS, "--audience", "a"], "credentials"),
        ([*GOOD, "--log-level", "loud"], "--log-level must be"),
        ([*GOOD, "--audience", ""], "every --audience must be non-empty"),
        (
            [*GOOD[:2], "--audience", "a", "--issuer", "https://b", "--jwks-file", "/no/jwks"],
            "--jwks-file /no/jwks is not a file",
        ),
    ],
)
def test_bad_flags_are_one_clear_error_and_nothing_starts(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    code, err, started = run(monkeypatch, capsys, *args)
    assert code == 1
    assert message in err
    assert "Traceback" not in err
    assert started == []


def test_audience_is_required(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err, started = run(monkeypatch, capsys, "--upstream", "http://m", "--jwks-url", JWKS)
    assert code == 2
    assert "--audience" in err
    assert started == []


@pytest.mark.anyio
async def test_good_flags_start_the_guard_on_the_address_given(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, [started] = run(
        monkeypatch, capsys, *GOOD, "--listen", "[::1]:9000", "--open-path", "/healthz"
    )
    assert code == 0
    assert (started["host"], started["port"]) == ("::1", 9000)
    app = started["app"]
    assert isinstance(app, GuardMiddleware)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://guard") as client:
        refused = await client.post("/v1/chat/completions", content=b"{}")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "missing_assertion"
