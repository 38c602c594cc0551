"""Real processes, real SDKs: `bastion serve` under uvicorn, clients enrolled with `bastion login`,
calls made with the official `openai` and `anthropic` SDKs through `bastion.client`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import anthropic
import openai
import orjson
import pytest

import bastion.client
from tests.conftest import UPSTREAM_KEY

from .conftest import Deployment

pytestmark = pytest.mark.e2e
PROMPT_MARKER = "zebra-prompt-marker-7731"


@pytest.fixture(scope="module")
def logged_in(deployment: Deployment) -> Deployment:
    for principal in ("alice", "bob", "carol", "audrey"):
        deployment.login(principal, profile=f"e2e-{principal}")
    return deployment


@pytest.fixture(autouse=True)
def client_dir(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_CLIENT_DIR", deployment.env["BASTION_CLIENT_DIR"])


@pytest.fixture
def oai(logged_in: Deployment) -> Iterator[Callable[[Deployment, str], openai.OpenAI]]:
    """Make OpenAI SDK clients for enrolled principals; all closed after the test."""
    made: list[openai.OpenAI] = []

    def make(d: Deployment, principal: str) -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=d.url + "/v1",
            api_key="unused",
            http_client=bastion.client.http_client(profile=f"e2e-{principal}"),
            max_retries=0,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def test_allowed_and_streaming_calls(
    logged_in: Deployment, oai: Callable[[Deployment, str], openai.OpenAI]
) -> None:
    client = oai(logged_in, "alice")
    reply = client.chat.completions.create(
        model="demo-chat", messages=[{"role": "user", "content": f"hi {PROMPT_MARKER}"}]
    )
    assert PROMPT_MARKER in (reply.choices[0].message.content or "")
    stream = client.chat.completions.create(
        model="demo-chat",
        messages=[{"role": "user", "content": f"stream {PROMPT_MARKER}"}],
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert PROMPT_MARKER in text


def test_anthropic_sdk(
    logged_in: Deployment, oai: Callable[[Deployment, str], openai.OpenAI]
) -> None:
    client = anthropic.Anthropic(
        base_url=logged_in.url,
        api_key="unused",
        http_client=bastion.client.http_client(profile="e2e-bob"),
        max_retries=0,
    )
    with client:
        check_anthropic(client)


def check_anthropic(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="demo-claude", max_tokens=50, messages=[{"role": "user", "content": "hello"}]
    )
    assert "hello" in message.content[0].text  # type: ignore[union-attr]
    with client.messages.stream(
        model="demo-claude", max_tokens=50, messages=[{"role": "user", "content": "streamed"}]
    ) as stream:
        assert "streamed" in "".join(stream.text_stream)


def test_denied_model_and_filtered_listing(
    logged_in: Deployment, oai: Callable[[Deployment, str], openai.OpenAI]
) -> None:
    client = oai(logged_in, "alice")
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(
            model="cyber-frontier", messages=[{"role": "user", "content": "x"}]
        )
    assert "not_granted" in str(denied.value)
    assert [m.id for m in client.models.list()] == ["demo-chat", "demo-claude", "demo-embed"]
    assert "cyber-frontier" in [m.id for m in oai(logged_in, "carol").models.list()]


def test_cli_lock_refuses_next_request(
    logged_in: Deployment, oai: Callable[[Deployment, str], openai.OpenAI]
) -> None:
    client = oai(logged_in, "bob")
    client.chat.completions.create(model="demo-chat", messages=[{"role": "user", "content": "a"}])
    locked = logged_in.cli("lock", "principal", "bob", "--reason", "e2e containment")
    assert "enforced by 1 gateway" in locked.stdout
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(
            model="demo-chat", messages=[{"role": "user", "content": "b"}]
        )
    assert "locked_principal" in str(denied.value)
    logged_in.cli("unlock", "principal", "bob", "--reason", "done")
    client.chat.completions.create(model="demo-chat", messages=[{"role": "user", "content": "c"}])


def test_stream_in_flight_cut_by_lock(
    logged_in: Deployment, oai: Callable[[Deployment, str], openai.OpenAI]
) -> None:
    client = oai(logged_in, "carol")
    stream = client.chat.completions.create(
        model="demo-chat",
        messages=[{"role": "user", "content": "long story"}],
        stream=True,
        extra_headers={"x-example-chunk-delay": "0.05", "x-example-chunks": "400"},
    )
    received = 0
    started = time.monotonic()
    lockers: list[threading.Thread] = []

    def consume() -> None:
        nonlocal received
        for _chunk in stream:
            received += 1
            if received == 3:
                lockers.append(
                    threading.Thread(
                        target=logged_in.cli,
                        args=("lock", "principal", "carol", "--reason", "cut the stream"),
                    )
                )
                lockers[0].start()

    with pytest.raises(openai.APIError) as cut:
        consume()
    for locker in lockers:
        locker.join()
    assert received < 400
    assert time.monotonic() - started < 15
    assert "locked_principal" in str(cut.value)
    logged_in.cli("unlock", "principal", "carol")


def test_no_secrets_in_responses_or_logs(
    logged_in: Deployment, oai: Callable[[Deployment, str], openai.OpenAI]
) -> None:
    client = oai(logged_in, "alice")
    client.chat.completions.create(
        model="demo-chat", messages=[{"role": "user", "content": PROMPT_MARKER}]
    )
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(
            model="cyber-frontier", messages=[{"role": "user", "content": PROMPT_MARKER}]
        )
    assert UPSTREAM_KEY not in str(denied.value.body)
    events = logged_in.cli("events", "tail", "-n", "500", "--json").stdout
    log = logged_in.log.read_text(errors="replace")
    for text in (events, log):
        assert UPSTREAM_KEY not in text
        assert PROMPT_MARKER not in text
        assert "eyJ" not in text  # no JWT (token, proof or assertion) of any kind
        assert "Traceback" not in text
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines, "the server logged nothing"
    for line in lines:  # structured: every line is one JSON object
        assert isinstance(orjson.loads(line), dict), line


def test_just_in_time_access_with_two_approvals_from_the_cli(
    logged_in: Deployment, oai: Callable[[Deployment, str], openai.OpenAI]
) -> None:
    client = oai(logged_in, "alice")
    hello = [{"role": "user", "content": "hi"}]
    asked = logged_in.cli(
        "access",
        "request",
        "cyber-frontier",
        "--reason",
        "incident 7",
        "--duration",
        "30m",
        "--profile",
        "e2e-alice",
    )
    request_id = asked.stdout.split(":")[0].strip()
    assert request_id.startswith("rq_"), asked.stdout
    own = logged_in.cli("access", "approve", request_id, "--profile", "e2e-alice", check=False)
    assert own.returncode == 1
    assert "cannot approve their own request" in own.stderr
    first = logged_in.cli("access", "approve", request_id, "--profile", "e2e-bob")
    assert "pending" in first.stdout
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="cyber-frontier", messages=hello)
    second = logged_in.cli("access", "approve", request_id, "--profile", "e2e-audrey")
    assert "approved" in second.stdout
    client.chat.completions.create(model="cyber-frontier", messages=hello)
    grants = logged_in.cli("access", "grants").stdout
    grant_id = next(word for word in grants.split() if word.startswith("gr_"))
    logged_in.cli("access", "revoke", grant_id, "--reason", "incident closed")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the server applies the revocation within a poll
        try:
            client.chat.completions.create(model="cyber-frontier", messages=hello)
        except openai.PermissionDeniedError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the revoked grant still worked after 5 s")
