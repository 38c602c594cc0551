"""`make demo`: Bastion on the embedded default, in front of the stand-in example upstream.

1. writes `.bastion-demo/bastion.yaml` (the example config) and its state directory,
2. starts the STAND-IN model server (`examples/upstream.py`, not a model) on 127.0.0.1:8081
   with a random upstream key that only Bastion knows, behind Bastion's guard (docs/guard.md):
   it answers only requests carrying Bastion's signed assertion,
3. enrolls a device key for the example user `alice` (profile `demo` in your Bastion config dir)
   and one for the admin `ops` (profile `demo-ops`: `bastion console login --profile demo-ops`
   prints a one-time link into the console),
4. starts `bastion serve` on 127.0.0.1:8080, makes one plain and one streaming call with the
   official OpenAI SDK through it, shows a direct call to the upstream being refused, and prints
   how to call it yourself,
5. runs the contractor-breach drill (`bastion drill contractor-breach`, docs/response.md)
   against it and prints the scorecard. The server trusts loopback as a proxy so the drill can
   play the vendor's networks through X-Forwarded-For (never do that in production).

It keeps serving until Ctrl-C, so the drill's incidents can be inspected (`bastion incident
list`). Ports: DEMO_PORT (8080) and DEMO_UPSTREAM_PORT (8081). DEMO_DRILL=0 skips the drill.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".bastion-demo"
PORT = int(os.environ.get("DEMO_PORT", "8080"))
UPSTREAM_PORT = int(os.environ.get("DEMO_UPSTREAM_PORT", "8081"))
URL = f"http://127.0.0.1:{PORT}"

SNIPPET = f"""\
from openai import OpenAI
import bastion.client

client = OpenAI(base_url="{URL}/v1", api_key="unused",
                http_client=bastion.client.http_client(profile="demo"))
reply = client.chat.completions.create(
    model="demo-chat", messages=[{{"role": "user", "content": "Hello through Bastion"}}])
print(reply.choices[0].message.content)
"""


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_ready(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"demo: {what} exited early (code {process.returncode}); see its output above")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    sys.exit(f"demo: {what} did not become ready at {url}")


def bastion(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "bastion", *args],
        cwd=WORK,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"demo: bastion {args[0]} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def first_calls() -> None:
    from openai import OpenAI

    import bastion.client

    client = OpenAI(
        base_url=f"{URL}/v1",
        api_key="unused",
        http_client=bastion.client.http_client(profile="demo"),
    )
    reply = client.chat.completions.create(
        model="demo-chat", messages=[{"role": "user", "content": "Hello through Bastion"}]
    )
    print(f"  completion: {reply.choices[0].message.content}")
    stream = client.chat.completions.create(
        model="demo-chat",
        messages=[{"role": "user", "content": "Stream this through Bastion"}],
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    print(f"  streamed:   {text}")
    print(f"  models alice may use: {', '.join(m.id for m in client.models.list())}")


def direct_call(upstream_key: str) -> None:
    """Around Bastion, even with the upstream key: the guard refuses it."""
    response = httpx.post(
        f"http://127.0.0.1:{UPSTREAM_PORT}/v1/chat/completions",
        json={"model": "example-gpt", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {upstream_key}"},
    )
    code = response.json()["error"]["code"]
    print(f"  straight to the upstream, with its key: {response.status_code} {code}")


def run_drill(env: dict[str, str]) -> bool:
    """The drill in its own process, as an operator runs it; its scorecard goes to the screen."""
    result = subprocess.run(
        [sys.executable, "-m", "bastion", "drill", "contractor-breach", "--url", URL],
        cwd=WORK,
        env=env,
        check=False,
    )
    return result.returncode == 0


def main() -> None:
    for port in (PORT, UPSTREAM_PORT):
        if not port_free(port):
            sys.exit(f"demo: port {port} is busy (set DEMO_PORT / DEMO_UPSTREAM_PORT)")
    WORK.mkdir(exist_ok=True)
    env = {**os.environ, "EXAMPLE_UPSTREAM_KEY": "demo-" + secrets.token_urlsafe(16)}
    env["BASTION_TRUSTED_PROXIES"] = "127.0.0.1/32"  # the drill plays vendor sites (see above)
    env["PYTHONPATH"] = str(ROOT)
    from bastion.config import example_config_text

    config = example_config_text().replace("127.0.0.1:8081", f"127.0.0.1:{UPSTREAM_PORT}")
    (WORK / "bastion.yaml").write_text(config, encoding="utf-8")
    bastion("init", env=env)
    bastion("config", "check", env=env)

    children: list[subprocess.Popen[bytes]] = []
    try:
        children.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "examples" / "upstream.py"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(UPSTREAM_PORT),
                    "--guard-jwks-url",
                    f"{URL}/.well-known/jwks.json",
                    "--guard-audience",  # the base_url of each upstream in bastion.yaml
                    f"http://127.0.0.1:{UPSTREAM_PORT}/v1",
                    "--guard-audience",
                    f"http://127.0.0.1:{UPSTREAM_PORT}",
                ],
                env=env,
            )
        )
        wait_ready(f"http://127.0.0.1:{UPSTREAM_PORT}/healthz", children[0], "example upstream")
        print(f"stand-in upstream (not a model) on 127.0.0.1:{UPSTREAM_PORT}, behind the guard")

        key_out = bastion(
            "login",
            "--server",
            URL,
            "--principal",
            "alice",
            "--profile",
            "demo",
            "--print-public-key",
            env=env,
        )
        (WORK / "alice-demo.pub.json").write_text(key_out.strip().splitlines()[-1])
        bastion("key", "enroll", "alice", str(WORK / "alice-demo.pub.json"), env=env)
        print("enrolled a device key for alice (profile 'demo')")
        ops_key = bastion(
            "login",
            "--server",
            URL,
            "--principal",
            "ops",
            "--profile",
            "demo-ops",
            "--print-public-key",
            env=env,
        )
        (WORK / "ops-demo.pub.json").write_text(ops_key.strip().splitlines()[-1])
        bastion("key", "enroll", "ops", str(WORK / "ops-demo.pub.json"), env=env)
        print("enrolled a device key for ops, an admin (profile 'demo-ops'), for the console")

        children.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bastion",
                    "serve",
                    "--port",
                    str(PORT),
                    "--log-level",
                    "warning",
                ],
                cwd=WORK,
                env=env,
            )
        )
        wait_ready(f"{URL}/readyz", children[1], "bastion serve")
        print(f"\nBastion is serving on {URL}. First calls through it:")
        first_calls()
        direct_call(env["EXAMPLE_UPSTREAM_KEY"])
        drill_passed = True
        if os.environ.get("DEMO_DRILL", "1") != "0":
            print("\nThe contractor-breach drill (threat model T1-T10) against it:\n")
            drill_passed = run_drill(env)
        print("\nCall it yourself (from this checkout, with .venv/bin/python):\n")
        print(SNIPPET)
        print(
            "Watch the audit events:  .venv/bin/bastion --config .bastion-demo/bastion.yaml "
            "--state-dir .bastion-demo/.bastion events tail -f"
        )
        print(
            "Lock alice:               .venv/bin/bastion --config .bastion-demo/bastion.yaml "
            "--state-dir .bastion-demo/.bastion lock principal alice --reason demo"
        )
        print(
            "Inspect the drill's incidents: .venv/bin/bastion --config .bastion-demo/bastion.yaml "
            "--state-dir .bastion-demo/.bastion incident list"
        )
        print(
            "Open the console (a one-time sign-in link, as the admin ops): "
            ".venv/bin/bastion console login --profile demo-ops"
        )
        if not drill_passed:
            print("\nTHE DRILL FAILED: see the scorecard above.")
        print("\nCtrl-C stops the demo.")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    main()
