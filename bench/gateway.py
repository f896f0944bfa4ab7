"""Gateway overhead: the same streams sent straight to the upstream and through the gateway.

The guards cost nothing here (``ZeroCostExecutor`` answers "safe" at once), so the difference is
what the gateway itself adds: HTTP hop, auth, policy, plans, decisions, audit (SQLite by default,
``--audit none`` to leave it out), SSE re-encoding and window bookkeeping. Upstream = the scripted
OpenAI-compatible server; upstream, gateway and load generator run as three processes.

    python -m bench.gateway [--streams 64] [--rounds 6] [--pieces 32] [--audit sqlite|none]

Prints p50/p99 of the full stream time and of the time to first content chunk for both paths,
and the added latency (gateway minus direct) at each percentile. Target: p50 <= 2 ms, p99 <= 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from guard.gateway.sse_client import SSEClient
from guard.types import LlamaGuardResult, ModelInfo, PromptGuardResult

LG_INFO = ModelInfo(model="zero-cost-llama-guard", family="llama-guard-3-1b")
PG_INFO = ModelInfo(model="zero-cost-prompt-guard", family="prompt-guard-2")
POLICY = """id: default
categories: {S9: {action: block, threshold: 0.5}}
streaming: {default: hold_back, window_tokens: 200, overlap_tokens: 50}
audit: {retention: full}
"""


class ZeroCostExecutor:
    """Answers every check with "safe" at once: what is left is the gateway's own cost."""

    async def llama_guard(self, requests: Sequence[Any], timeout: float) -> list[LlamaGuardResult]:
        return [LlamaGuardResult(model=LG_INFO, unsafe_score=0.0, unsafe_score_pair=0.0) for _ in requests]

    async def prompt_guard(self, requests: Sequence[Any], timeout: float) -> list[PromptGuardResult]:
        return [
            PromptGuardResult(model=PG_INFO, jailbreak_score=0.0, injection_score=0.0, source=r.source)
            for r in requests
        ]

    async def status(self) -> list[Any]:
        from guard.executor.wire import WorkerStatus

        return [
            WorkerStatus(worker="zero-cost", queue=k, loaded=True) for k in ("llama_guard", "prompt_guard")
        ]

    def close(self) -> None:
        pass


class NullAudit:
    async def append_async(self, records: Sequence[Any]) -> list[Any]:
        return list(records)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- server roles


def run_upstream(port: int) -> None:
    from guard.gateway.server import serve_forever
    from guard.upstream.scripted import create_scripted_app

    serve_forever(create_scripted_app(), "127.0.0.1", port, log_level="warning")


def run_gateway(port: int, upstream: str, audit: str, workdir: Path) -> None:
    from guard.audit import open_store
    from guard.gateway.app import create_app
    from guard.gateway.config import load_config
    from guard.gateway.server import serve_forever
    from guard.gateway.services import GatewayServices
    from guard.gateway.upstream import UpstreamPool
    from guard.policy import PolicyStore
    from guard.settings import GuardSettings

    policies = workdir / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "default.yaml").write_text(POLICY)
    settings = GuardSettings(
        upstream=upstream,
        policies_dir=policies,
        audit_url=f"sqlite:///{workdir / 'a.db'}",
        host="127.0.0.1",
        port=port,
    )
    store = open_store(settings.audit_url, settings=settings) if audit == "sqlite" else NullAudit()
    services = GatewayServices(
        settings=settings,
        config=load_config(None, settings),
        policies=PolicyStore(policies),
        executor=ZeroCostExecutor(),
        audit=store,  # type: ignore[arg-type]
        upstreams=UpstreamPool(timeout_s=30),
        watch_policies=False,
    )
    profile_to = os.environ.get("GUARD_BENCH_PROFILE")  # where to write cProfile stats of the gateway
    if not profile_to:
        serve_forever(create_app(settings, services), "127.0.0.1", port, log_level="warning")
        return
    import cProfile
    import signal

    def stop(*_: object) -> None:
        raise KeyboardInterrupt  # uvicorn re-raises SIGTERM after its shutdown: end here, then dump

    signal.signal(signal.SIGTERM, stop)
    profiler = cProfile.Profile()
    try:
        profiler.runcall(
            serve_forever, create_app(settings, services), "127.0.0.1", port, log_level="warning"
        )
    except KeyboardInterrupt:
        pass
    finally:
        profiler.dump_stats(profile_to)


# --------------------------------------------------------------------------- load


async def one_stream(client: SSEClient, body: bytes) -> tuple[float, float]:
    """(full stream time, time to the first content chunk), in seconds."""
    started = time.perf_counter()
    first = 0.0
    async for payload in client.stream("/chat/completions", body):
        if not first and (b'"content": "w' in payload or b'"content":"w' in payload):
            first = time.perf_counter() - started
    return time.perf_counter() - started, first


async def worker(
    client: SSEClient, body: bytes, count: int, stagger_s: float, out: list[tuple[float, float]]
) -> None:
    await asyncio.sleep(random.uniform(0, stagger_s))
    for _ in range(count):
        out.append(await one_stream(client, body))


async def phase(client: SSEClient, args: argparse.Namespace) -> list[tuple[float, float]]:
    """``streams`` clients, each sending ``per_client`` streams one after another (closed loop),
    with random start offsets so that the load is steady rather than one burst."""
    text = f"[[words:{args.pieces}]] [[delay_ms:{args.delay_ms}]]"
    body = json.dumps(
        {"model": "scripted", "stream": True, "messages": [{"role": "user", "content": text}]}
    ).encode()
    stagger = args.pieces * args.delay_ms / 1000
    out: list[tuple[float, float]] = []
    await asyncio.gather(*(worker(client, body, args.per_client, stagger, out) for _ in range(args.streams)))
    return out


async def measure(
    direct: str, gateway: str, args: argparse.Namespace, gateway_pid: int
) -> tuple[dict[str, list[tuple[float, float]]], float]:
    """Latencies per path, and the gateway's CPU seconds during its measured phases.

    The load generator reads the streams with guard's lean SSE client: with httpx it would spend
    more CPU than the gateway itself and skew both paths on a small machine."""
    headers = {"authorization": "Bearer bench"}
    clients = {
        "direct": SSEClient(direct, headers=headers, timeout_s=60),
        "gateway": SSEClient(gateway, headers=headers, timeout_s=60),
    }
    results: dict[str, list[tuple[float, float]]] = {"direct": [], "gateway": []}
    warm = argparse.Namespace(**{**vars(args), "per_client": 1})
    for client in clients.values():  # warm-up: connections, caches
        await phase(client, warm)
    cpu = 0.0
    for _ in range(args.rounds):  # alternate, so drift hits both paths alike
        for name, client in clients.items():
            before = cpu_seconds(gateway_pid)
            results[name] += await phase(client, args)
            if name == "gateway":
                cpu += cpu_seconds(gateway_pid) - before
    for client in clients.values():
        client.close()
    return results, cpu


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return (
        statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]
        if len(ordered) > 1
        else ordered[0]
    )


def report(results: dict[str, list[tuple[float, float]]], args: argparse.Namespace) -> dict[str, Any]:
    table: dict[str, Any] = {
        "streams": args.streams,
        "rounds": args.rounds,
        "pieces": args.pieces,
        "delay_ms": args.delay_ms,
        "audit": args.audit,
        "requests_per_path": len(results["direct"]),
    }
    for label, index in (("stream_ms", 0), ("ttft_ms", 1)):
        for q in (50, 99):
            d = percentile([r[index] for r in results["direct"]], q) * 1000
            g = percentile([r[index] for r in results["gateway"]], q) * 1000
            table[f"{label}_p{q}"] = {"direct": round(d, 2), "gateway": round(g, 2), "added": round(g - d, 2)}
    return table


def print_table(table: dict[str, Any]) -> None:
    print(
        f"gateway overhead: {table['streams']} concurrent streams, {table['requests_per_path']} per path, "
        f"{table['pieces']} chunks each at {table['delay_ms']:g} ms, zero-cost guards, audit={table['audit']}"
    )
    print(f"{'metric':<16}{'direct ms':>12}{'gateway ms':>12}{'added ms':>10}{'ratio':>8}")
    for key in ("stream_ms_p50", "stream_ms_p99", "ttft_ms_p50", "ttft_ms_p99"):
        row = table[key]
        ratio = row["gateway"] / row["direct"] if row["direct"] else float("nan")
        print(f"{key:<16}{row['direct']:>12.2f}{row['gateway']:>12.2f}{row['added']:>10.2f}{ratio:>8.2f}")
    print(
        f"gateway CPU per stream: {table['gateway_cpu_ms_per_stream']:.2f} ms "
        f"({table['gateway_cpu_ms_per_stream'] / (table['pieces'] + 2):.3f} ms per chunk)"
    )
    print(f"machine load average (1 min) at the end: {table['load_average_1m']} on {os.cpu_count()} cores")
    print("target: added p50 <= 2 ms, added p99 <= 10 ms (full stream time)")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_up(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of direct and gateway phases")
    parser.add_argument("--per-client", type=int, default=4, help="streams each client sends per phase")
    parser.add_argument("--pieces", type=int, default=32, help="chunks per stream")
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=20.0,
        help="upstream delay before each chunk (20 ms = 50 tokens/s per stream)",
    )
    parser.add_argument("--audit", choices=("sqlite", "none"), default="sqlite")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--role", choices=("upstream", "gateway"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "upstream":
        return run_upstream(args.port)
    if args.role == "gateway":
        return run_gateway(args.port, args.upstream, args.audit, args.workdir)
    up_port, gw_port = _free_port(), _free_port()
    direct, gateway = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{gw_port}"
    with tempfile.TemporaryDirectory() as workdir:
        me = [sys.executable, "-m", "bench.gateway"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        procs = [
            subprocess.Popen([*me, "--role", "upstream", "--port", str(up_port)], env=env),
            subprocess.Popen(
                [
                    *me,
                    "--role",
                    "gateway",
                    "--port",
                    str(gw_port),
                    "--upstream",
                    f"{direct}/v1",
                    "--audit",
                    args.audit,
                    "--workdir",
                    workdir,
                ],
                env=env,
            ),
        ]
        try:
            _wait_up(direct)
            _wait_up(gateway)
            results, gateway_cpu = asyncio.run(measure(f"{direct}/v1", f"{gateway}/v1", args, procs[1].pid))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    table = report(results, args)
    table["gateway_cpu_ms_per_stream"] = round(gateway_cpu * 1000 / len(results["gateway"]), 2)
    table["load_average_1m"] = round(os.getloadavg()[0], 2)  # other processes on the machine skew it all
    print(json.dumps(table, indent=2)) if args.json else print_table(table)


if __name__ == "__main__":
    main()
