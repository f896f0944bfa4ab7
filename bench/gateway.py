"""Gateway overhead: the same streams sent straight to the upstream and through the gateway.

The guards cost nothing here (``ZeroCostExecutor`` answers "safe" at once), so the difference is
what the gateway itself adds: HTTP hop, auth, policy, plans, decisions, audit records and their
commits, window bookkeeping.

Roles, one process each: the scripted upstream (``guard.upstream.scripted``), one gateway per
audit variant, and the load generator (this process, on uvloop, reading streams with guard's lean
SSE client so that it does not starve the others on a small machine). Every phase sends the same
closed-loop load (``--streams`` clients, each sending ``--per-client`` streams one after another,
start times spread over one stream's duration); phases go direct, then through each gateway, and
the order rotates every round, so drift on a shared machine hits every path alike.
``--baseline-src DIR`` adds the same gateways run from another source tree (``git archive REV
guard | tar -x -C DIR``), as ``base/<variant>``: a before/after comparison under the same load.

    python -m bench gateway [--streams 64] [--rounds 4] [--pieces 32] [--delay-ms 20]
                            [--audit sqlite,sqlite-normal,none] [--retention full|none]

Audit variants: ``sqlite`` (the default store: WAL, ``synchronous=FULL``, one fsync per group
commit), ``sqlite-normal`` (WAL, ``synchronous=NORMAL``: a commit survives the process but not the
machine, no fsync per commit), ``none`` (records are built, then dropped). The workdir's fsync
latency is printed too: with a durable store a ``hold_back`` stream waits for at least one commit
after its last upstream chunk, so that latency is a floor under the added latency.

Per request: time to first byte (the first SSE event) and time to last byte (the stream's end).
Added latency = gateway percentile minus direct percentile, overall and per round (the range shows
the spread). Target: added p50 <= 2 ms, p99 <= 10 ms at 64 streams (time to last byte).
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
from typing import TYPE_CHECKING, Any

import httpx

from guard.types import LlamaGuardResult, ModelInfo, PromptGuardResult

LG_INFO = ModelInfo(model="zero-cost-llama-guard", family="llama-guard-3-1b")
PG_INFO = ModelInfo(model="zero-cost-prompt-guard", family="prompt-guard-2")
POLICY = """id: default
categories: {{S9: {{action: block, threshold: 0.5}}}}
streaming: {{default: hold_back, window_tokens: {window}, overlap_tokens: 50}}
audit: {{retention: {retention}}}
"""
if TYPE_CHECKING:  # the roles may run another version's guard (--baseline-src): import it where used
    from guard.gateway.sse_client import SSEClient

AUDIT_VARIANTS = ("sqlite", "sqlite-normal", "none")
Sample = tuple[float, float]  # (time to first byte, time to last byte), seconds


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
    """Takes the records (built by the gateway as usual) and drops them."""

    async def append_async(self, records: Sequence[Any]) -> list[Any]:
        return list(records)

    def close(self) -> None:
        pass


class TimedAudit:
    """The store, timed: how long a stream window's release waits for its record to be durable.
    The figures go to ``report_to`` (JSON) when the gateway shuts down."""

    def __init__(self, store: Any, report_to: Path) -> None:
        self._store = store
        self._report_to = report_to
        self._window_waits: list[float] = []

    async def append_async(self, records: Sequence[Any]) -> list[Any]:
        started = time.perf_counter()
        try:
            return await self._store.append_async(records)
        finally:
            if records and records[0].direction == "stream_window":
                self._window_waits.append(time.perf_counter() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def close(self) -> None:
        self._store.close()
        waits = self._window_waits
        if waits:
            self._report_to.write_text(
                json.dumps(
                    {
                        "window_record_p50_ms": percentile(waits, 50) * 1000,
                        "window_record_p99_ms": percentile(waits, 99) * 1000,
                    }
                )
            )


# --------------------------------------------------------------------------- server roles


def run_upstream(port: int) -> None:
    from guard.gateway.server import serve_forever
    from guard.upstream.scripted import create_scripted_app

    serve_forever(create_scripted_app(), "127.0.0.1", port, log_level="warning")


def open_audit(variant: str, url: str, settings: Any) -> Any:
    if variant == "none":
        return NullAudit()
    from sqlalchemy import event

    from guard.audit import open_store

    store = open_store(url, settings=settings)
    if variant == "sqlite-normal":
        engine = store._engine  # a benchmark variant, not a product setting

        @event.listens_for(engine, "connect")
        def _normal(dbapi_conn: Any, record: Any) -> None:
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")

        engine.dispose()  # connections opened while the schema was made were FULL
    return store


def run_gateway(port: int, upstream: str, args: argparse.Namespace, workdir: Path) -> None:
    from guard.gateway.app import create_app
    from guard.gateway.config import load_config
    from guard.gateway.server import serve_forever
    from guard.gateway.services import GatewayServices
    from guard.gateway.upstream import UpstreamPool
    from guard.policy import PolicyStore
    from guard.settings import GuardSettings

    policies = workdir / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "default.yaml").write_text(POLICY.format(window=args.window, retention=args.retention))
    settings = GuardSettings(
        upstream=upstream,
        policies_dir=policies,
        audit_url=f"sqlite:///{workdir / 'audit.db'}",
        host="127.0.0.1",
        port=port,
    )
    services = GatewayServices(
        settings=settings,
        config=load_config(None, settings),
        policies=PolicyStore(policies),
        executor=ZeroCostExecutor(),
        audit=TimedAudit(open_audit(args.audit, settings.audit_url, settings), workdir / "audit-waits.json"),
        upstreams=UpstreamPool(timeout_s=30),
        watch_policies=False,
    )
    app = create_app(settings, services)
    profile_to = os.environ.get("GUARD_BENCH_PROFILE")  # cProfile of the event loop thread, CPU time
    if not profile_to:
        serve_forever(app, "127.0.0.1", port, log_level="warning")
        return
    import cProfile
    import signal

    def stop(*_: object) -> None:
        raise KeyboardInterrupt  # uvicorn re-raises SIGTERM after its shutdown: end here, then dump

    signal.signal(signal.SIGTERM, stop)
    # CPU time of this thread, not wall time: on a shared machine wall time charges a function for
    # every moment the process was preempted inside it (a socket write that wakes the reader).
    profiler = cProfile.Profile(time.thread_time)
    try:
        profiler.runcall(serve_forever, app, "127.0.0.1", port, log_level="warning")
    except KeyboardInterrupt:
        pass
    finally:
        profiler.dump_stats(f"{profile_to}.{args.audit}")


# --------------------------------------------------------------------------- load


async def one_stream(client: SSEClient, body: bytes) -> Sample:
    """After the first event, the reader is woken only at the end of the stream (``ReadHint``):
    the load generator then costs little per token on either path and leaves the CPU to them."""
    from guard.gateway.sse_client import ReadHint

    started = time.perf_counter()
    first = 0.0
    hint = ReadHint()
    async for _ in client.groups("/chat/completions", body, hint):
        if not first:
            first = time.perf_counter() - started
            hint.events = 1 << 30
    return first, time.perf_counter() - started


async def worker(client: SSEClient, body: bytes, count: int, stagger_s: float, out: list[Sample]) -> None:
    await asyncio.sleep(random.uniform(0, stagger_s))
    for _ in range(count):
        out.append(await one_stream(client, body))


async def phase(client: SSEClient, args: argparse.Namespace, per_client: int) -> list[Sample]:
    """``streams`` clients, each sending ``per_client`` streams one after another (closed loop),
    with random start offsets so that the load is steady rather than one burst."""
    text = f"[[words:{args.pieces}]] [[delay_ms:{args.delay_ms}]]"
    body = json.dumps(
        {"model": "scripted", "stream": True, "messages": [{"role": "user", "content": text}]}
    ).encode()
    stagger = args.pieces * args.delay_ms / 1000
    out: list[Sample] = []
    await asyncio.gather(*(worker(client, body, per_client, stagger, out) for _ in range(args.streams)))
    return out


async def measure(
    urls: dict[str, str], args: argparse.Namespace, pids: dict[str, int]
) -> tuple[list[dict[str, list[Sample]]], dict[str, float]]:
    """Samples per round and path, and CPU seconds per role during the measured phases
    (``<path>`` for a gateway's own process, ``upstream``, ``loadgen``)."""
    from guard.gateway.sse_client import SSEClient

    headers = {"authorization": "Bearer bench"}
    clients = {name: SSEClient(url, headers=headers, timeout_s=60) for name, url in urls.items()}
    for client in clients.values():  # warm-up: connections, caches, the audit schema
        await phase(client, args, 1)
    rounds: list[dict[str, list[Sample]]] = []
    pids = {**pids, "loadgen": os.getpid()}
    cpu = dict.fromkeys([*urls, *pids, *(f"{name}:loop" for name in urls)], 0.0)
    names = list(clients)
    for index in range(args.rounds):
        order = names[index % len(names) :] + names[: index % len(names)]  # rotate the order
        samples: dict[str, list[Sample]] = {}
        for name in order:
            before = {role: cpu_seconds(pid) for role, pid in pids.items()}
            loop_before = cpu_seconds(pids[name], pids[name]) if name != "direct" else 0.0
            samples[name] = await phase(clients[name], args, args.per_client)
            for role, pid in pids.items():
                if role in ("upstream", "loadgen", name):
                    cpu[role] += cpu_seconds(pid) - before[role]
            if name != "direct":  # the event loop's thread; the rest is the audit writer's
                cpu[f"{name}:loop"] += cpu_seconds(pids[name], pids[name]) - loop_before
        rounds.append(samples)
    for client in clients.values():
        client.close()
    return rounds, cpu


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time so far of a process, or of one of its threads (Linux /proc)."""
    path = f"/proc/{pid}/task/{thread}/stat" if thread is not None else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fsync_ms(directory: Path, count: int = 60) -> tuple[float, float]:
    """p50/p99 of appending 300 bytes to a file and fdatasync-ing it: the floor of a durable commit."""
    path = directory / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    times = []
    try:
        for _ in range(count):
            os.write(fd, b"x" * 300)
            started = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return percentile(times, 50), percentile(times, 99)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return (
        statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]
        if len(ordered) > 1
        else ordered[0]
    )


def _ms(samples: list[Sample], index: int, q: int) -> float:
    return percentile([s[index] for s in samples], q) * 1000


def report(
    rounds: list[dict[str, list[Sample]]], cpu: dict[str, float], args: argparse.Namespace
) -> dict[str, Any]:
    paths = list(rounds[0])
    merged = {p: [s for r in rounds for s in r[p]] for p in paths}
    per_path = len(merged["direct"])
    table: dict[str, Any] = {
        "streams": args.streams,
        "rounds": args.rounds,
        "pieces": args.pieces,
        "delay_ms": args.delay_ms,
        "window_tokens": args.window,
        "retention": args.retention,
        "requests_per_path": per_path,
        "paths": {},
    }
    for path in paths:
        row: dict[str, Any] = {}
        for label, index in (("ttfb", 0), ("ttlb", 1)):
            for q in (50, 99):
                row[f"{label}_p{q}_ms"] = round(_ms(merged[path], index, q), 2)
                if path != "direct":
                    added = _ms(merged[path], index, q) - _ms(merged["direct"], index, q)
                    row[f"{label}_p{q}_added_ms"] = round(added, 2)
                    per_round = [_ms(r[path], index, q) - _ms(r["direct"], index, q) for r in rounds]
                    row[f"{label}_p{q}_added_range_ms"] = [round(min(per_round), 2), round(max(per_round), 2)]
        if path != "direct":
            row["cpu_ms_per_stream"] = round(cpu[path] * 1000 / len(merged[path]), 2)
            row["loop_cpu_ms_per_stream"] = round(cpu[f"{path}:loop"] * 1000 / len(merged[path]), 2)
        table["paths"][path] = row
    table["upstream_cpu_ms_per_stream"] = round(cpu["upstream"] * 1000 / (per_path * len(paths)), 2)
    table["loadgen_cpu_ms_per_stream"] = round(cpu["loadgen"] * 1000 / (per_path * len(paths)), 2)
    return table


def print_table(table: dict[str, Any]) -> None:
    print(
        f"gateway overhead: {table['streams']} concurrent streams, {table['requests_per_path']} per path, "
        f"{table['pieces']} chunks each at {table['delay_ms']:g} ms, hold_back window "
        f"{table['window_tokens']}, zero-cost guards, retention={table['retention']}"
    )
    print(
        f"{'gateway':<15}{'TTLB p50':>9}{'added':>8}{'(per round)':>17}{'TTLB p99':>10}{'added':>8}"
        f"{'(per round)':>17}{'TTFB p50':>10}{'added':>8}{'  CPU ms/stream':>14}{'record wait':>12}"
    )
    for path, row in table["paths"].items():
        if path == "direct":
            print(
                f"{path:<15}{row['ttlb_p50_ms']:>9.1f}{'':>25}{row['ttlb_p99_ms']:>10.1f}{'':>25}"
                f"{row['ttfb_p50_ms']:>10.1f}"
            )
            continue
        r50, r99 = row["ttlb_p50_added_range_ms"], row["ttlb_p99_added_range_ms"]
        wait = (
            f"{row['window_record_p50_ms']:.1f}/{row['window_record_p99_ms']:.1f}"
            if ("window_record_p50_ms" in row)
            else "-"
        )
        print(
            f"{path:<15}{row['ttlb_p50_ms']:>9.1f}{row['ttlb_p50_added_ms']:>8.1f}"
            f"{f'{r50[0]:.1f}..{r50[1]:.1f}':>17}{row['ttlb_p99_ms']:>10.1f}{row['ttlb_p99_added_ms']:>8.1f}"
            f"{f'{r99[0]:.1f}..{r99[1]:.1f}':>17}{row['ttfb_p50_ms']:>10.1f}{row['ttfb_p50_added_ms']:>8.1f}"
            f"{row['cpu_ms_per_stream']:>6.2f}/{row['loop_cpu_ms_per_stream']:<5.2f}{wait:>12}"
        )
    print(
        f"CPU per stream: upstream {table['upstream_cpu_ms_per_stream']:.2f} ms, "
        f"load generator {table['loadgen_cpu_ms_per_stream']:.2f} ms"
    )
    print(
        f"fsync (300 B + fdatasync) in the workdir: p50 {table['fsync_p50_ms']:.2f} ms, "
        f"p99 {table['fsync_p99_ms']:.2f} ms"
    )
    print(
        f"load average (1 min): {table['load_average_1m'][0]} at start, {table['load_average_1m'][1]} "
        f"at end, on {os.cpu_count()} cores"
    )
    print("CPU ms/stream: the gateway process / its event loop thread (the rest: the audit writer thread)")
    print("record wait: p50/p99 ms a window's release waited for its audit record to be durable")
    print("target: added p50 <= 2 ms, added p99 <= 10 ms (time to last byte)")


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


def _run_async(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(coro)
    return uvloop.run(coro)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4, help="rounds of one phase per path")
    parser.add_argument("--per-client", type=int, default=4, help="streams each client sends per phase")
    parser.add_argument("--pieces", type=int, default=32, help="chunks per stream")
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=20.0,
        help="upstream delay before each chunk (20 ms = 50 tokens/s per stream)",
    )
    parser.add_argument("--window", type=int, default=200, help="the policy's window_tokens")
    parser.add_argument(
        "--audit",
        default="sqlite",
        help=f"comma-separated audit variants, one gateway each: {', '.join(AUDIT_VARIANTS)}",
    )
    parser.add_argument("--retention", choices=("full", "redacted", "none"), default="full")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--baseline-src", type=Path, help="a directory holding another version's guard/ to compare with"
    )
    parser.add_argument("--role", choices=("upstream", "gateway"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.audit.split(",") if v.strip()]
    unknown = [v for v in variants if v not in AUDIT_VARIANTS]
    if unknown or not variants:
        parser.error(f"--audit: unknown variant(s) {unknown}; choose from {', '.join(AUDIT_VARIANTS)}")
    args.variants = variants
    return args


def start_roles(
    args: argparse.Namespace, workdir: Path
) -> tuple[dict[str, subprocess.Popen], dict[str, str]]:
    """The upstream and the gateways (one per audit variant, and per variant of the baseline tree):
    processes by role and base URLs by path (``direct`` is the upstream itself)."""
    me = [sys.executable, "-m", "bench.gateway"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    up_port = _free_port()
    upstream = f"http://127.0.0.1:{up_port}/v1"
    procs = {"upstream": subprocess.Popen([*me, "--role", "upstream", "--port", str(up_port)], env=env)}
    urls = {"direct": upstream}
    gateways = [(v, v, me, env) for v in args.variants]
    if args.baseline_src is not None:  # this file's roles, the other tree's guard package
        src = str(args.baseline_src.resolve())
        base = [sys.executable, str(Path(__file__).resolve())]
        gateways += [(f"base/{v}", v, base, {**env, "PYTHONPATH": src}) for v in args.variants]
    common = ["--pieces", str(args.pieces), "--window", str(args.window), "--retention", args.retention]
    for name, variant, command, environ in gateways:
        port = _free_port()
        role = ["--role", "gateway", "--port", str(port), "--upstream", upstream, "--audit", variant]
        workdir_of = ["--workdir", str(workdir / name.replace("/", "-"))]
        procs[name] = subprocess.Popen([*command, *role, *workdir_of, *common], env=environ)
        urls[name] = f"http://127.0.0.1:{port}/v1"
    return procs, urls


def stop_roles(procs: dict[str, subprocess.Popen]) -> None:
    for proc in procs.values():
        proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.role == "upstream":
        return run_upstream(args.port)
    if args.role == "gateway":
        return run_gateway(args.port, args.upstream, args, args.workdir)
    load_start = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        fsync = fsync_ms(workdir)
        procs, urls = start_roles(args, workdir)
        try:
            for url in urls.values():
                _wait_up(url.removesuffix("/v1"))
            rounds, cpu = _run_async(measure(urls, args, {k: p.pid for k, p in procs.items()}))
        finally:
            stop_roles(procs)
        # written by each gateway's TimedAudit on shutdown
        waits = [(name, workdir / name.replace("/", "-") / "audit-waits.json") for name in urls]
        waits = [(name, json.loads(path.read_text())) for name, path in waits if path.exists()]
    table = report(rounds, cpu, args)
    for name, figures in waits:
        table["paths"][name].update({k: round(v, 2) for k, v in figures.items()})
    table["fsync_p50_ms"], table["fsync_p99_ms"] = (round(v, 2) for v in fsync)
    # Other processes on the machine skew it all: say how busy it was.
    table["load_average_1m"] = [load_start, round(os.getloadavg()[0], 2)]
    print(json.dumps(table, indent=2)) if args.json else print_table(table)


if __name__ == "__main__":
    main()
