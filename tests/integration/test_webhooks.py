"""Webhooks against a real HTTP server on loopback: a finding arrives signed, a failing receiver
ends in a dead-letter row after its retries, and a hanging receiver never slows the gateway."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import httpx2
import pytest

from bastion.config.response import Webhook
from bastion.respond.notify import Notifier, targets, verify
from bastion.store import deliveries
from bastion.testing import Harness, running
from tests.integration.test_detection import chat, enumeration_config
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

SECRET = "whsec-integration-s3cret"


class WebhookServer:
    """A real HTTP server on loopback that records what it is sent and answers with ``status``
    (or, while ``hang`` is set, holds the request until ``release`` is set)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.hang = False
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                server.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if server.hang:
                    server.release.wait(30)  # close() releases it
                self.send_response(server.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_port}/hooks/bastion"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )  # shutdown() waits up to one poll_interval (0.5 s by default)
        self._thread.start()

    def close(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def server() -> Iterator[WebhookServer]:
    webhook_server = WebhookServer()
    yield webhook_server
    webhook_server.close()


def config_with_webhook(url: str) -> str:
    return enumeration_config() + (
        "response:\n  webhooks:\n"
        f'    - {{name: soc, url: "{url}", secret_env: SOC_SECRET, min_severity: low, '
        "events: [finding]}\n"
    )


@pytest.fixture
async def notified(
    tmp_path: Path,
    server: WebhookServer,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
) -> AsyncIterator[Harness]:
    async with running(
        config_with_webhook(server.url),
        tmp_path,
        upstream=upstream_transport,
        env={**upstream_env, "SOC_SECRET": SECRET},
        database_url=database_url,
    ) as harness:
        yield harness
        server.release.set()  # let a held delivery finish before shutdown drains


async def probe(harness: Harness) -> None:
    """Three denied models in a row: the enumeration detection (D5)."""
    for n in range(3):
        assert await chat(harness, "alice", f"secret-{n}") == 403


async def test_a_finding_reaches_the_receiver_signed(
    notified: Harness, server: WebhookServer
) -> None:
    await probe(notified)
    await eventually(lambda: bool(server.received))
    (headers, body), *_ = server.received
    assert verify(SECRET.encode(), body, headers["x-bastion-signature"], time.time())
    assert not verify(b"wrong-secret", body, headers["x-bastion-signature"], time.time())
    message = json.loads(body)
    assert message["kind"] == "finding"
    assert headers["x-bastion-delivery"] == message["id"]
    assert message["data"]["detection"] == "D5"
    assert message["data"]["entity"] == "alice"
    assert SECRET not in body.decode()
    notifier = notified.services.notifier
    assert notifier is not None
    await eventually(lambda: notifier.stats()["delivered"] >= 1)  # the 200 was read


async def test_a_failing_receiver_is_retried_then_dead_lettered(
    notified: Harness, server: WebhookServer
) -> None:
    server.status = 500
    hook = Webhook(name="soc", url=server.url, secret_env="SOC_SECRET")
    notifier = Notifier(
        targets([hook], {"SOC_SECRET": SECRET}, "bastion.yaml"),
        notified.services.store,
        attempts=3,
        base_delay=0.05,
        max_delay=0.1,
    )
    notifier.notify("finding", {"detection": "D5", "severity": "high", "entity": "alice"})
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(notifier.run)
        await eventually(lambda: notifier.stats()["dead"] >= 1)
        tasks.cancel_scope.cancel()
    await notifier.stop(grace=0.1)
    assert len(server.received) == 3
    with notified.services.store.read() as conn:
        (letter,) = deliveries.dead(conn, webhook="soc")
    assert (letter.kind, letter.attempts, letter.last_error) == ("finding", 3, "HTTP 500")
    assert letter.payload["detection"] == "D5"
    assert letter.dead_at is not None
    assert letter.delivered_at is None
    assert SECRET not in letter.last_error
    assert "127.0.0.1" not in letter.last_error


async def test_a_hanging_receiver_never_slows_model_requests(
    notified: Harness, server: WebhookServer
) -> None:
    assert await chat(notified, "bob", "demo-chat") == 200  # enrolled, warm
    server.hang = True
    await probe(notified)  # alice probes: a finding (and the playbook throttles her, not bob)
    await eventually(lambda: bool(server.received))  # the receiver holds the delivery open
    assert notified.services.notifier is not None
    assert notified.services.notifier.stats()["in_flight"] == 1
    for _ in range(5):  # a request that waited on the delivery would take its 5 s timeout
        started = time.perf_counter()
        assert await chat(notified, "bob", "demo-chat") == 200
        assert time.perf_counter() - started < 2.5
    assert notified.services.notifier.stats()["in_flight"] == 1  # still held, never waited on
