"""SIGKILL of `guard serve` under load: every response a client received has its audit record.

A real gateway process (demo models in-process, the scripted upstream, the test policies with
4-piece stream windows, fail-closed audit) takes concurrent traffic of every kind: allowed and
blocked inputs and outputs, hold-back and stream-first streams, a blocked stream window, upstream
errors, the native check API. Every request carries its own ``x-request-id``. The gateway is killed
with SIGKILL mid-load; then, for everything a client received, the store must hold the records the
gateway promised to make durable before releasing it:

* a JSON answer: its input record, and the output record when the input passed (the
  ``x-guard-decision`` header is the most severe of them); an upstream error (502) after the input
  was judged: the input record;
* a stream: the input record as soon as any event arrived; under ``hold_back``, the record of every
  window whose pieces arrived (N pieces received means windows 0..ceil(N/4)-1), and of the window
  that blocked the stream; a stream that reached ``[DONE]``: every window it was cut into.

Afterwards `guard audit verify` passes on what the killed process left (a SQLite WAL file, or
PostgreSQL), and a new record chains onto the head it left. The same test runs on both backends.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench._reliability.procs import Proc, free_port, guard_command, spawn, wait_http
from guard.audit import AuditFilters, SqlAuditStore
from guard.types import Action, AuditRecord
from tests.audit.helpers import record
from tests.fixtures.audit import BACKENDS, audit_store_url, postgres_reachable
from tests.fixtures.servers import write_policies

CHAT, CHECK = "/v1/chat/completions", "/v1/guard/check"
WINDOW = 4  # window_tokens of the test policies (tests.fixtures.servers.POLICIES)
CLIENTS = 12
MIN_ANSWERED = 24  # complete answers (every kind among them) before the kill ...
MIN_LOAD_S = 1.5  # ... and at least this long under load (at most MAX_LOAD_S: a busy machine)
MAX_LOAD_S = 15.0
REPO = Path(__file__).resolve().parents[2]
GENEROUS_TIMEOUTS = "guards:\n  llama_guard: {timeout_ms: 60000}\n  prompt_guard: {timeout_ms: 60000}\n"


@dataclass(frozen=True)
class Kind:
    name: str
    path: str
    text: str
    stream: bool = False
    policy: str | None = None


KINDS = (
    Kind("allowed", CHAT, "[[words:8]]"),
    Kind("input-blocked", CHAT, "tell me about zorblax"),
    Kind("output-blocked", CHAT, "[[say:unsafe]]"),
    Kind("upstream-error", CHAT, "hello [[status:500]]"),
    Kind("hold-back", CHAT, "[[words:12]] [[delay_ms:15]]", stream=True),
    Kind("window-blocked", CHAT, "[[unsafe_at:6:12]] [[delay_ms:15]]", stream=True),
    Kind("stream-first", CHAT, "[[words:12]] [[delay_ms:15]]", stream=True, policy="first"),
    Kind("stream-upstream-error", CHAT, "hello [[status:503]]", stream=True),
    Kind("check", CHECK, "how do I make zorblax at home"),
)


@dataclass
class Seen:
    """What one client received before the kill (or the end of its answer)."""

    kind: Kind
    request_id: str
    status: int | None = None
    decision: str | None = None  # x-guard-decision
    body: dict | None = None  # a complete JSON answer
    pieces: int = 0  # content pieces of a stream (the refusal of a blocked input included)
    events: int = 0
    finish: str | None = None
    done: bool = False
    error: str | None = None


# --------------------------------------------------------------------------- the gateway


@dataclass
class KilledGateway:
    url: str
    audit_url: str
    seen: list[Seen]
    in_flight_at_kill: int
    returncode: int | None


def _spawn_gateway(workdir: Path, demo, upstream_url: str, audit_url: str) -> tuple[Proc, str]:
    port = free_port()
    env = {
        "GUARD_LLAMA_GUARD": str(demo.llama_guard),
        "GUARD_FAMILY": "llama-guard-3-1b",
        "GUARD_PROMPT_GUARD": str(demo.prompt_guard_2),
        "GUARD_DTYPE": "float32",
        "GUARD_DEVICE": "cpu",
        "GUARD_AUDIT_URL": audit_url,
        "GUARD_AUDIT_ON_FAILURE": "fail_closed",
        "GUARD_CONFIG_FILE": "",
        "GUARD_BROKER_URL": "",
    }
    argv = [*guard_command(), "serve", "--port", str(port), "--upstream", f"{upstream_url}/v1",
            "--policies", str(_policies(workdir / "policies")), "--log-level", "warning"]
    return spawn("gateway", argv, workdir, env), f"http://127.0.0.1:{port}"


def _policies(directory: Path) -> Path:
    """The gateway tests' policies, with guard timeouts a busy CI machine cannot hit (a timeout
    fails closed: everything would be a block, and the kinds of traffic would not differ)."""
    write_policies(directory)
    default = directory / "default.yaml"
    default.write_text(default.read_text() + GENEROUS_TIMEOUTS, encoding="utf-8")
    return directory


def _wait_checks(url: str, proc, timeout: float = 120.0) -> None:
    """Until one real check passes end to end (models loaded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"gateway exited:\n{proc.tail()}")
        try:
            answer = httpx.post(f"{url}{CHECK}", json={"messages": [{"role": "user", "content": "hi"}]},
                                headers={"x-request-id": "warm-up"}, timeout=60)
            if answer.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the gateway's checks did not come up within {timeout:g}s:\n{proc.tail()}")


async def _one(client: httpx.AsyncClient, kind: Kind, request_id: str, seen: list[Seen]) -> Seen:
    got = Seen(kind, request_id)
    seen.append(got)  # appended first: what arrives before the kill is kept
    headers = {"x-request-id": request_id, **({"x-guard-policy": kind.policy} if kind.policy else {})}
    messages = [{"role": "user", "content": kind.text}]
    body = {"messages": messages} if kind.path == CHECK else {
        "model": "scripted", "stream": kind.stream, "messages": messages}
    try:
        async with client.stream("POST", kind.path, json=body, headers=headers) as response:
            got.status = response.status_code
            got.decision = response.headers.get("x-guard-decision")
            streaming = response.headers.get("content-type", "").startswith("text/event-stream")
            if not streaming:
                got.body = json.loads(await response.aread())
                return got
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                got.events += 1
                if line == "data: [DONE]":
                    got.done = True
                    continue
                for choice in json.loads(line[6:]).get("choices") or []:
                    if choice.get("finish_reason"):
                        got.finish = choice["finish_reason"]
                    elif (choice.get("delta") or {}).get("content"):
                        got.pieces += 1
    except (httpx.HTTPError, ValueError) as exc:
        got.error = type(exc).__name__
    return got


async def _load_then_kill(url: str, proc) -> tuple[list[Seen], int]:
    seen: list[Seen] = []
    stop = asyncio.Event()
    in_flight = [0]

    async def client_loop(client: httpx.AsyncClient, number: int) -> None:
        i = 0
        while not stop.is_set():
            kind = KINDS[(number + i) % len(KINDS)]
            in_flight[0] += 1
            try:
                await _one(client, kind, f"kill-{number}-{i}", seen)
            finally:
                in_flight[0] -= 1
            i += 1

    def enough() -> bool:
        answered = [s.kind for s in seen if s.body is not None or s.done]
        return len(answered) >= MIN_ANSWERED and set(answered) == set(KINDS)

    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        loops = [asyncio.ensure_future(client_loop(client, n)) for n in range(CLIENTS)]
        started = time.monotonic()
        while time.monotonic() - started < MAX_LOAD_S:
            await asyncio.sleep(0.05)
            if enough() and time.monotonic() - started >= MIN_LOAD_S and in_flight[0] >= CLIENTS // 2:
                break
        in_flight_at_kill = in_flight[0]
        proc.popen.send_signal(signal.SIGKILL)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*loops), 60)
    return seen, in_flight_at_kill


Outcome = KilledGateway | str  # the killed gateway, or why its backend was skipped


@pytest.fixture(scope="module")
def killed_gateways(demo_models, scripted_upstream, tmp_path_factory) -> Iterator[dict[str, Outcome]]:
    """Per backend: a gateway loaded then killed, or why it could not run (PostgreSQL down).

    The gateways start side by side (start-up is mostly imports and model loading: they overlap),
    then each one takes its load and its SIGKILL in turn."""
    out: dict[str, Outcome] = {}
    with ExitStack() as stack:
        started: dict[str, tuple[Proc, str, str]] = {}
        for backend in BACKENDS:
            reason = postgres_reachable() if backend == "postgresql" else None
            if reason:
                out[backend] = reason
                continue
            workdir = tmp_path_factory.mktemp(f"killed-{backend}")
            audit_url = stack.enter_context(audit_store_url(backend, workdir))
            proc, url = _spawn_gateway(workdir, demo_models, scripted_upstream.url, audit_url)
            stack.callback(_reap, proc)
            started[backend] = (proc, url, audit_url)
        for backend, (proc, url, audit_url) in started.items():
            wait_http(f"{url}/healthz", proc, timeout=180)
            _wait_checks(url, proc)
            seen, in_flight = asyncio.run(_load_then_kill(url, proc))
            proc.popen.wait(10)
            out[backend] = KilledGateway(url, audit_url, seen, in_flight, proc.popen.returncode)
        yield out


@pytest.fixture(params=BACKENDS)
def killed_gateway(request, killed_gateways) -> KilledGateway:
    gateway = killed_gateways[request.param]
    if isinstance(gateway, str):
        pytest.skip(gateway)
    return gateway


def _reap(proc: Proc) -> None:
    if proc.popen.poll() is None:
        proc.popen.kill()
        proc.popen.wait(10)


# --------------------------------------------------------------------------- what must be stored


def _missing(seen: Seen, records: list[AuditRecord]) -> list[str]:
    """What the store lacks for what this client received (empty: all there)."""
    inputs = [r for r in records if r.direction == "input"]
    outputs = [r for r in records if r.direction == "output"]
    windows = {r.window_index: r for r in records if r.direction == "stream_window"}
    kind, problems = seen.kind, []

    def need_input() -> bool:
        if not inputs:
            problems.append("no input record")
        return bool(inputs)

    if seen.body is not None:  # a whole JSON answer
        if "error" in seen.body and seen.status in (400, 401, 403, 404, 413, 422):
            return []  # refused before any check: nothing to record
        if not need_input():
            return problems
        if kind.path == CHECK:
            if inputs[0].decision.action.value != seen.body["decision"]["action"]:
                problems.append("recorded action differs from the answer")
            return problems
        if seen.status == 200 and inputs[0].decision.effective_action is not Action.BLOCK:
            if not outputs:
                problems.append("no output record")
        if seen.decision is not None:
            recorded = Action.most_severe([r.decision.effective_action for r in inputs + outputs]).value
            if recorded != seen.decision:
                problems.append(f"x-guard-decision {seen.decision} but the records say {recorded}")
        return problems
    if not seen.events:
        return []  # nothing (or only headers) arrived: nothing was released
    if not need_input() or seen.decision == "block":
        return problems  # a blocked input streams only the refusal: no windows
    held_back = kind.policy is None
    needed = math.ceil(seen.pieces / WINDOW) if held_back or seen.done else 0
    blocked = seen.finish == "content_filter"
    lacking = [i for i in range(needed) if i not in windows]
    if lacking:
        problems.append(f"{seen.pieces} piece(s) received but no record of window(s) {lacking}")
    if blocked and not any(w.decision.effective_action is Action.BLOCK for w in windows.values()):
        problems.append("the stream was stopped by a window that has no record")
    if seen.done and sorted(windows) != list(range(len(windows))):
        problems.append(f"window records {sorted(windows)} are not contiguous")
    return problems


def _all_records(url: str) -> dict[str, list[AuditRecord]]:
    store = SqlAuditStore(url, create=False)
    try:
        records = store.query(AuditFilters(limit=None, newest_first=False))
    finally:
        store.close()
    by_request: dict[str, list[AuditRecord]] = defaultdict(list)
    for stored in records:
        by_request[stored.request_id].append(stored)
    return by_request


def test_every_response_received_before_a_sigkill_has_its_audit_record(killed_gateway):
    gateway = killed_gateway
    assert gateway.returncode == -signal.SIGKILL
    seen = gateway.seen
    answered = [s for s in seen if s.body is not None or s.done]
    kinds = Counter(s.kind.name for s in answered)
    assert set(kinds) == {k.name for k in KINDS} and gateway.in_flight_at_kill >= CLIENTS // 2, (
        f"not killed under load of every kind: answers {dict(kinds)}, {gateway.in_flight_at_kill} in flight")
    assert any(s.status == 502 for s in answered) and any(s.finish == "content_filter" for s in answered)

    by_request = _all_records(gateway.audit_url)
    problems = [
        f"{s.request_id} ({s.kind.name}): {problem}"
        for s in seen
        for problem in _missing(s, by_request[s.request_id])
    ]
    listed = "\n".join(problems[:20])
    assert not problems, f"{len(problems)} received answer(s) without their records:\n{listed}"
    assert all(_missing(s, []) for s in answered), "an answer whose records were all lost would pass"


def test_the_chain_a_killed_gateway_left_verifies_and_keeps_growing(killed_gateway):
    url = killed_gateway.audit_url
    verified = subprocess.run([*guard_command(), "audit", "verify", "--store", url],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0 and "ok:" in verified.stdout, verified.stdout + verified.stderr
    store = SqlAuditStore(url, create=False)
    try:
        before = store.verify()
        store.append([record(tenant="default", request_id="after-the-kill")])
        after = store.verify()
    finally:
        store.close()
    assert after.ok and after.records == before.records + 1, after.broken
