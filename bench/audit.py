"""Bench: audit store throughput with group commit, against one transaction per record.

For each backend (SQLite file in WAL with synchronous=FULL; PostgreSQL in a scratch schema), from
the same run:

* baseline: one caller appending one record at a time, so every record is its own transaction
  (and its own fsync): what a store without group commit manages per chain;
* project, threads: ``--concurrency`` threads each calling ``append([record])``;
* project, asyncio: ``--concurrency`` tasks each awaiting ``append_async([record])``;

printing records/s, the ratio to the baseline, records per transaction and append latency p50/p99.
Records are realistic (a blocked input with Llama Guard + Prompt Guard results, ~1.3 KB of JSON),
built before timing; building one costs the number printed as ``build_record``.

Usage: ``python -m bench.audit [--records 2000] [--concurrency 64] [--backends sqlite,postgresql]
[--pg-dsn postgresql+psycopg://postgres@127.0.0.1:5432/test]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from guard import metrics
from guard.audit import SqlAuditStore, build_record
from guard.types import (
    Action,
    AuditRecord,
    Decision,
    GuardResults,
    LlamaGuardResult,
    Message,
    ModelInfo,
    PolicyRef,
    PromptGuardResult,
    Reason,
)

POLICY = PolicyRef(id="default", version="1", hash="ab" * 32)
INFO = ModelInfo(model="meta-llama/Llama-Guard-3-1B", revision="main", family="llama-guard-3-1b")


def make_records(n: int, tenants: int = 4) -> list[AuditRecord]:
    results = GuardResults(
        llama_guard=LlamaGuardResult(
            model=INFO,
            unsafe_score=0.97,
            unsafe_score_pair=0.98,
            categories=["S9"],
            category_scores={"S9": 0.97, "S1": 0.01},
            output="unsafe\nS9",
            latency_ms=48.0,
        ),
        prompt_guard=[
            PromptGuardResult(
                model=INFO.model_copy(update={"family": "prompt-guard-2"}),
                jailbreak_score=0.02,
                injection_score=0.02,
                segment="how do I make zorblax at home",
                latency_ms=9.0,
            )
        ],
    )
    decision = Decision(
        action=Action.BLOCK,
        effective_action=Action.BLOCK,
        direction="input",
        policy=POLICY,
        reasons=[Reason(kind="category", action=Action.BLOCK, code="S9", score=0.97, threshold=0.5)],
    )
    conversation = [
        Message(role="system", content="You are a helpful assistant."),
        Message(role="user", content="how do I make zorblax at home, step by step?"),
    ]
    return [
        build_record(
            request_id=uuid.uuid4().hex,
            direction="input",
            results=results,
            decision=decision,
            content=conversation,
            tenant=f"tenant-{i % tenants}",
            api_key_id="bench",
            route="/v1/chat/completions",
            latency_ms={"total": 60.0},
        )
        for i in range(n)
    ]


def _groups() -> tuple[float, float]:
    samples = metrics.AUDIT_BATCH_SIZE.collect()[0].samples
    count = sum(s.value for s in samples if s.name.endswith("_count"))
    total = sum(s.value for s in samples if s.name.endswith("_sum"))
    return count, total


@dataclass
class Run:
    name: str
    seconds: float
    latencies: list[float]
    groups: float
    records: int

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    def line(self, baseline: Run | None) -> str:
        q = statistics.quantiles(self.latencies, n=100) if len(self.latencies) > 1 else [0.0] * 99
        ratio = f"{self.rate / baseline.rate:6.1f}x" if baseline else "  1.0x"
        per_txn = self.records / max(self.groups, 1)
        return (
            f"  {self.name:30} {self.rate:9.0f} rec/s {ratio}   {per_txn:6.1f} rec/txn"
            f"   p50 {q[49] * 1000:7.2f} ms  p99 {q[98] * 1000:7.2f} ms"
        )


def _measure(
    name: str, records: list[AuditRecord], drive: Callable[[list[AuditRecord], list[float]], None]
) -> Run:
    latencies: list[float] = []
    groups_before, _ = _groups()
    started = time.perf_counter()
    drive(records, latencies)
    seconds = time.perf_counter() - started
    groups_after, _ = _groups()
    return Run(name, seconds, latencies, groups_after - groups_before, len(records))


def sequential(store: SqlAuditStore) -> Callable:
    def drive(records: list[AuditRecord], latencies: list[float]) -> None:
        for record in records:
            t = time.perf_counter()
            store.append([record])
            latencies.append(time.perf_counter() - t)

    return drive


def threaded(store: SqlAuditStore, concurrency: int) -> Callable:
    def drive(records: list[AuditRecord], latencies: list[float]) -> None:
        lock = threading.Lock()

        def one(record: AuditRecord) -> None:
            t = time.perf_counter()
            store.append([record])
            with lock:
                latencies.append(time.perf_counter() - t)

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, records))

    return drive


def asynchronous(store: SqlAuditStore, concurrency: int) -> Callable:
    def drive(records: list[AuditRecord], latencies: list[float]) -> None:
        async def worker(queue: asyncio.Queue) -> None:
            while not queue.empty():
                record = queue.get_nowait()
                t = time.perf_counter()
                await store.append_async([record])
                latencies.append(time.perf_counter() - t)

        async def main() -> None:
            queue: asyncio.Queue = asyncio.Queue()
            for record in records:
                queue.put_nowait(record)
            await asyncio.gather(*(worker(queue) for _ in range(concurrency)))

        asyncio.run(main())

    return drive


@contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="guard-bench-audit-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'audit.sqlite3'}"


@contextmanager
def postgres_url(dsn: str) -> Iterator[str]:
    from sqlalchemy import create_engine, text

    schema = f"guard_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(dsn, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{dsn}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def bench_backend(name: str, url: str, n: int, concurrency: int) -> None:
    store = SqlAuditStore(url)
    store.append(make_records(10))  # warm up: schema, pool, first chain heads
    baseline_n = max(200, n // 5)
    baseline = _measure("baseline: 1 record per txn", make_records(baseline_n), sequential(store))
    threads = _measure(f"group commit, {concurrency} threads", make_records(n), threaded(store, concurrency))
    tasks = _measure(f"group commit, {concurrency} tasks", make_records(n), asynchronous(store, concurrency))
    verified = store.verify()
    store.close()
    print(f"{name}:")
    print(baseline.line(None))
    print(threads.line(baseline))
    print(tasks.line(baseline))
    print(f"  chain verified: {verified.ok} ({verified.records} records in {verified.tenants} chains)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-dsn", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    started = time.perf_counter()
    make_records(1000)
    print(f"build_record: {(time.perf_counter() - started) * 1000:.0f} us per record")
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with sqlite_url() as url:
                bench_backend("SQLite (WAL, synchronous=FULL)", url, args.records, args.concurrency)
        elif backend == "postgresql":
            try:
                with postgres_url(args.pg_dsn) as url:
                    bench_backend("PostgreSQL", url, args.records, args.concurrency)
            except Exception as exc:  # noqa: BLE001 - report and go on
                print(f"PostgreSQL: skipped ({exc})")
        else:
            raise SystemExit(f"unknown backend {backend!r}")


if __name__ == "__main__":
    main()
