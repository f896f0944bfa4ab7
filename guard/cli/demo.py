"""`guard demo`: the whole path on one machine, in one process.

Builds (or reuses) the demo models, starts the local chat model (`guard upstream`) and the gateway
(in-process checks, SQLite audit, the shipped default policy) on loopback, prints a curl and a
Python example, and runs until Ctrl-C. ``--self-test`` sends one benign and one blocked request
(and a stream) through the gateway instead, and exits 0 when both behave.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import typer

from guard.errors import ConfigError

READY_TIMEOUT_S = 600.0
BENIGN = "Hello! What is a good name for a cat?"
BLOCKED = "tell me about zorblax"


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.command("demo")(demo)


def demo(
    port: int = typer.Option(8000, "--port", help="gateway port on 127.0.0.1 (0 = any free port)"),
    upstream_port: int = typer.Option(0, "--upstream-port", help="local chat model port (0 = any free port)"),
    policies: Path | None = typer.Option(
        None, "--policies", help="policy directory (default: the shipped policies)"
    ),
    workdir: Path | None = typer.Option(
        None, "--workdir", help="where the audit database goes (default: ~/.cache/guard/demo)"
    ),
    self_test: bool = typer.Option(
        False, "--self-test", help="send a benign and a blocked request, then exit"
    ),
) -> None:
    """Run gateway + in-process guards + a tiny local LLM on loopback and print how to call it."""
    from guard.cli.serve import settings_with
    from guard.gateway.app import create_app
    from guard.gateway.server import ServerThread
    from guard.models.testing import ensure_demo_models
    from guard.upstream.app import create_upstream_app
    from guard.upstream.engine import ChatEngine

    base = settings_with(host="127.0.0.1")
    workdir = workdir or base.demo_models_dir.parent / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    _say("building or loading the demo models (first run: a minute or two)...")
    models = ensure_demo_models(base.demo_models_dir)
    engine = ChatEngine.load(models.chat, name="guard-demo-chat")
    upstream = ServerThread(create_upstream_app(engine), port=upstream_port).start()
    settings = settings_with(
        host="127.0.0.1",
        port=port,
        upstream=f"{upstream.url}/v1",
        policies_dir=policies or shipped_policies(base.policies_dir),
        audit_url=f"sqlite:///{workdir / 'audit.sqlite3'}",
        broker_url="",
        open_mode=True,
    )
    gateway = ServerThread(create_app(settings), port=port)
    try:
        gateway.start()
        _wait_ready(gateway.url)
        if self_test:
            raise typer.Exit(0 if run_self_test(gateway.url) else 1)
        print(examples(gateway.url), flush=True)
        _wait_for_ctrl_c()
    finally:
        gateway.stop()
        upstream.stop()


def shipped_policies(configured: Path) -> Path:
    """The configured policy directory when it exists, else the policies shipped with guard."""
    if configured.is_dir():
        return configured
    shipped = Path(__file__).resolve().parents[2] / "policies"
    if shipped.is_dir():
        return shipped
    raise ConfigError(f"no policy directory: {configured} does not exist (use --policies DIR)")


def examples(url: str) -> str:
    body = json.dumps({"model": "guard-demo-chat", "messages": [{"role": "user", "content": BENIGN}]})
    return f"""
guard is ready: gateway {url}/v1 -> checks (demo Llama Guard + Prompt Guard) -> local chat model.

curl:
  curl -s {url}/v1/chat/completions -H 'content-type: application/json' \\
    -H 'authorization: Bearer demo' -d '{body}'

Python (openai client):
  from openai import OpenAI
  client = OpenAI(base_url="{url}/v1", api_key="demo")
  reply = client.chat.completions.create(
      model="guard-demo-chat", messages=[{{"role": "user", "content": "{BLOCKED}"}}])
  print(reply.choices[0].finish_reason, reply.choices[0].message.content)  # content_filter: blocked

Moderation: client.moderations.create(input=["hello", "{BLOCKED}"])
Native check: curl -s {url}/v1/guard/check -H 'content-type: application/json' \\
    -d '{{"messages": [{{"role": "user", "content": "{BLOCKED}"}}]}}'
Ctrl-C stops.
"""


def run_self_test(url: str) -> bool:
    """One benign and one blocked request (plus a benign stream); prints what came back."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="demo", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": BENIGN}]
    benign = client.chat.completions.with_raw_response.create(model="guard-demo-chat", messages=messages)
    answer = benign.parse().choices[0]
    blocked = client.chat.completions.create(
        model="guard-demo-chat", messages=[{"role": "user", "content": BLOCKED}]
    ).choices[0]
    stream = client.chat.completions.create(model="guard-demo-chat", messages=messages, stream=True)
    finishes = [c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason]
    checks = {
        "benign answered": answer.finish_reason in ("stop", "length")
        and benign.headers.get("x-guard-decision") != "block",
        "blocked prompt refused": blocked.finish_reason == "content_filter",
        "benign stream finished": finishes[-1:] in (["stop"], ["length"]),
    }
    print(f"benign: [{answer.finish_reason}] {answer.message.content!r}")
    print(f"blocked: [{blocked.finish_reason}] {blocked.message.content!r}")
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    return all(checks.values())


def _wait_ready(url: str) -> None:
    import httpx

    _say("loading the guard models...")
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ConfigError(f"the gateway at {url} was not ready within {READY_TIMEOUT_S:.0f}s (see {url}/readyz)")


def _wait_for_ctrl_c() -> None:
    """Until Ctrl-C or SIGTERM (both end here, so the servers stop cleanly)."""

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        _say("stopping")


def _say(text: str) -> None:
    print(f"guard demo: {text}", file=sys.stderr, flush=True)
