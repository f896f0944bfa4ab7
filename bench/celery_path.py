"""Bench: what the Celery path adds over the in-process path, with a no-op-cost model.

Both paths run the same fake runners (``BenchNoOp*Runner``: answer instantly, used only here), so
the difference is the executor: publish to Redis, a worker thread, the worker's batcher, the result
published back and read by the client's listener. Printed side by side from the same run:

* sequential latency per call (p50 / p99) for one Prompt Guard request and for a full input check
  (``run_checks``: one Llama Guard + one Prompt Guard request, in parallel), and the added latency;
* throughput (checks/s) with many concurrent callers;
* the floor of any design that passes a check through a Redis queue to another process: a bare
  round trip (LPUSH, a process that BRPOPs and PUBLISHes the item back, the caller's subscription),
  measured in the same rounds. On a shared machine most of the added latency is this floor: each
  hop waits for the scheduler to run the next process.

Usage: ``python -m bench.celery_path [--redis URL] [--n 500] [--total 4000] [--concurrency 64]``.
Without ``--redis`` it starts its own ``redis-server`` on a free port. The worker is a real
``celery worker`` subprocess (``python -m bench.celery_path --worker``) with the fake runners.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from guard.settings import GuardSettings
from guard.types import (
    LlamaGuardRequest,
    LlamaGuardResult,
    Message,
    ModelInfo,
    PromptGuardRequest,
    PromptGuardResult,
)

NOOP_INFO = ModelInfo(model="bench-noop", family="bench-noop")


class BenchNoOpLlamaGuardRunner:
    """Fake Llama Guard for this benchmark only: answers "safe" instantly."""

    info = NOOP_INFO

    def classify(self, requests: Sequence[LlamaGuardRequest]) -> list[LlamaGuardResult]:
        return [LlamaGuardResult(model=self.info, unsafe_score=0.0, unsafe_score_pair=0.0) for _ in requests]


class BenchNoOpPromptGuardRunner:
    """Fake Prompt Guard for this benchmark only: scores 0 instantly."""

    info = NOOP_INFO

    def scan(self, requests: Sequence[PromptGuardRequest]) -> list[PromptGuardResult]:
        return [PromptGuardResult(model=self.info, jailbreak_score=0.0, injection_score=0.0, source=r.source)
                for r in requests]


def install_noop_runners() -> None:
    """Make this process's registry load the fake runners instead of real models."""
    from guard.models import registry

    registry._LOADERS.update(  # noqa: SLF001 - the benchmark swaps in its fakes on purpose
        llama_guard=lambda spec: BenchNoOpLlamaGuardRunner(),
        prompt_guard=lambda spec: BenchNoOpPromptGuardRunner(),
    )


def run_worker(concurrency: int, queues: str) -> None:
    install_noop_runners()
    from workers.app import app

    app.worker_main(["worker", "-Q", queues, "-P", "threads", "-c", str(concurrency),
                     "-n", f"bench-{queues.replace(',', '+')}@%h", "--loglevel", "ERROR", "--without-mingle", "--without-gossip"])


# --------------------------------------------------------------------------- the floor

ECHO_QUEUE = "bench-echo"


def run_echo(url: str) -> None:
    """The other end of the floor: BRPOP an item ``<channel> <body>``, PUBLISH the body back."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=None)
    while True:
        popped = client.brpop([ECHO_QUEUE], timeout=1)
        if popped is not None:
            channel, _, body = popped[1].partition(b" ")
            client.publish(channel, body)


class EchoClient:
    """One LPUSH per call, answered on one subscribed channel (the shape of the Celery path, minus
    Celery, the worker's thread hand-off and the result store)."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self._client = aioredis.Redis.from_url(url)
        self._pubsub = self._client.pubsub()
        self._channel = f"bench-echo-{os.getpid()}"
        self._waiters: dict[bytes, asyncio.Future[None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._count = 0

    async def call(self) -> None:
        if self._reader is None:
            await self._pubsub.subscribe(self._channel)
            self._reader = asyncio.get_running_loop().create_task(self._read())
        self._count += 1
        key = str(self._count).encode()
        waiter = self._waiters[key] = asyncio.get_running_loop().create_future()
        await self._client.lpush(ECHO_QUEUE, f"{self._channel} ".encode() + key)
        await asyncio.wait_for(waiter, 10.0)

    async def _read(self) -> None:
        while True:
            message = await self._pubsub.get_message(timeout=None)
            if message is not None and message["type"] == "message":
                self._waiters.pop(message["data"]).set_result(None)

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self._pubsub.aclose()
        await self._client.aclose()


# --------------------------------------------------------------------------- measuring

PG_REQUEST = PromptGuardRequest(text="What is the capital of France?")
LG_REQUEST = LlamaGuardRequest(conversation=[Message(role="user", content="What is the capital of France?")])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sequential_ms(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    for _ in range(min(50, n)):  # warm-up
        await call()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of a process (this one when ``pid`` is None)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def throughput(call: Callable[[], Awaitable[Any]], total: int, concurrency: int,
                     pids: Sequence[int | None]) -> tuple[float, float]:
    """(checks/s, CPU ms per check summed over ``pids``: client, worker, Redis)."""
    left = total

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    cpu0 = [cpu_seconds(pid) for pid in pids]
    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu = sum(cpu_seconds(pid) - c for pid, c in zip(pids, cpu0))
    return total / elapsed, cpu / total * 1000


def calls(executor: Any) -> dict[str, Callable[[], Awaitable[Any]]]:
    from guard.checks import run_checks

    plan = check_plan()

    async def pg() -> Any:
        return await executor.prompt_guard([PG_REQUEST], 10.0)

    async def check() -> Any:
        results = await run_checks(executor, plan, 10.0)
        assert not results.errors, results.errors
        return results

    return {"prompt_guard call": pg, "input check (LG+PG)": check}


def check_plan() -> Any:
    from guard.policy.plan import CheckPlan, PlannedScan

    return CheckPlan(direction="input", llama_guard=LG_REQUEST, llama_guard_messages=[0],
                     prompt_guard=[PlannedScan(message_index=0, request=PG_REQUEST)])


async def measure(executor: Any, n: int, total: int, concurrency: int,
                  pids: Sequence[int | None]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, call in calls(executor).items():
        times = await sequential_ms(call, n)
        per_s, cpu_ms = await throughput(call, total, concurrency, pids)
        out[name] = {"p50": statistics.median(times), "p99": percentile(times, 0.99), "per_s": per_s,
                     "cpu_ms": cpu_ms}
    return out


def median_of(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {name: {key: statistics.median(r[name][key] for r in rounds) for key in rounds[0][name]}
            for name in rounds[0]}


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                             "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    for _ in range(200):
        try:
            if redis.Redis.from_url(url).ping():
                return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def start_worker(url: str, concurrency: int, queues: str, env_extra: dict[str, str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ, GUARD_BROKER_URL=url, GUARD_RESULT_BACKEND=url, **env_extra)
    return subprocess.Popen([sys.executable, "-m", "bench.celery_path", "--worker", "--worker-concurrency",
                             str(concurrency), "--queues", queues], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_ready(executor: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await executor.prompt_guard([PG_REQUEST], 2.0)
            await executor.llama_guard([LG_REQUEST], 2.0)
            return
        except Exception:  # noqa: BLE001 - not up yet
            await asyncio.sleep(0.2)
    raise RuntimeError("worker not ready")


def report(base: dict[str, dict[str, float]], celery: dict[str, dict[str, float]],
           floor: dict[str, float]) -> None:
    print(f"{'':22} {'in-process':>34} {'celery':>34}   added")
    for name in base:
        b, c = base[name], celery[name]
        print(f"{name:22} p50 {b['p50']:6.3f} ms  p99 {b['p99']:6.3f} ms       "
              f"p50 {c['p50']:6.3f} ms  p99 {c['p99']:6.3f} ms       "
              f"p50 +{c['p50'] - b['p50']:.3f} ms  p99 +{c['p99'] - b['p99']:.3f} ms")
        print(f"{'':22} {b['per_s']:6.0f} checks/s {b['cpu_ms']:5.2f} ms CPU/check   "
              f"{c['per_s']:6.0f} checks/s {c['cpu_ms']:5.2f} ms CPU/check   "
              f"throughput ratio {c['per_s'] / b['per_s']:.2f}")
    print(f"{'redis round trip':22} floor: LPUSH -> BRPOP -> PUBLISH, no Celery     "
          f"p50 {floor['p50']:6.3f} ms  p99 {floor['p99']:6.3f} ms       "
          f"celery prompt_guard call over it: p50 +{celery['prompt_guard call']['p50'] - floor['p50']:.3f} ms")


async def bench(args: argparse.Namespace, url: str, worker_pids: list[int], redis_pid: int | None) -> None:
    from guard.executor.celery import CeleryExecutor
    from guard.executor.inprocess import InProcessExecutor
    from guard.models.registry import Runners

    settings = GuardSettings(broker_url=url, result_backend=url, max_wait_ms=args.max_wait_ms)
    inproc = InProcessExecutor(Runners.of(settings, llama_guard=BenchNoOpLlamaGuardRunner(),
                                          prompt_guard=BenchNoOpPromptGuardRunner()),
                               max_batch_size=settings.max_batch_size, max_wait_ms=args.max_wait_ms)
    celery = CeleryExecutor(settings)
    echo = EchoClient(url)
    load_before = os.getloadavg()[0]
    base_rounds, celery_rounds, floor_rounds = [], [], []
    try:
        await wait_ready(celery)
        for _ in range(args.rounds):  # alternated, so that load from elsewhere hits both alike
            base_rounds.append(await measure(inproc, args.n, args.total, args.concurrency, [None]))
            celery_rounds.append(await measure(celery, args.n, args.total, args.concurrency,
                                               [None, *worker_pids, redis_pid]))
            times = await sequential_ms(echo.call, args.n)
            floor_rounds.append({"p50": statistics.median(times), "p99": percentile(times, 0.99)})
        statuses = await celery.status()
    finally:
        await echo.aclose()
        await celery.aclose()
        inproc.close()
    print(f"max_wait_ms={args.max_wait_ms} workers={len(worker_pids)} x {args.worker_concurrency} threads "
          f"callers={args.concurrency} "
          f"cores={os.cpu_count()} rounds={args.rounds} (medians) "
          f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    report(median_of(base_rounds), median_of(celery_rounds),
           {key: statistics.median(r[key] for r in floor_rounds) for key in ("p50", "p99")})
    for status in statuses:
        b = status.batching
        print(f"worker {status.worker} {status.queue}: {b.batches} batches, {b.items} requests, "
              f"largest {b.max_batch}, mean {b.items / max(b.batches, 1):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default=None)
    parser.add_argument("--n", type=int, default=500, help="sequential calls per round")
    parser.add_argument("--total", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--worker-concurrency", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=0.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one-worker", action="store_true",
                        help="one worker serving both queues (default: one per queue, as compose.yaml runs them)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--echo", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--queues", default="llama_guard,prompt_guard", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.worker_concurrency, args.queues)
        return
    if args.echo:
        run_echo(args.echo)
        return
    groups = ["llama_guard,prompt_guard"] if args.one_worker else ["llama_guard", "prompt_guard"]
    with tempfile.TemporaryDirectory() as tmp:
        redis_proc, url = (None, args.redis) if args.redis else start_redis(Path(tmp))
        env = {"GUARD_MAX_WAIT_MS": str(args.max_wait_ms)}
        workers = [start_worker(url, args.worker_concurrency, queues, env) for queues in groups]
        echo = subprocess.Popen([sys.executable, "-m", "bench.celery_path", "--echo", url],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            asyncio.run(bench(args, url, [w.pid for w in workers],
                              redis_proc.pid if redis_proc is not None else None))
        finally:
            echo.kill()
            echo.wait(10)
            for worker in workers:
                worker.terminate()
                worker.wait(20)
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait(10)


if __name__ == "__main__":
    main()
