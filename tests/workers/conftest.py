"""Real `guard worker` subprocesses on the demo models, and Celery executors that talk to them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from guard.executor.celery import CeleryExecutor
from guard.executor.wire import WorkerStatus
from guard.settings import GuardSettings

DEMO_FAMILY = "llama-guard-3-1b"
#: Short redelivery for the fault tests (production default: 60 s, see compose.yaml).
TEST_VISIBILITY_S = 3
WORKER_START_TIMEOUT_S = 180


def guard_command() -> list[str]:
    script = Path(sys.executable).with_name("guard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "guard"]


def model_settings(demo: Any, broker_url: str | None = None) -> GuardSettings:
    """Settings naming the demo models explicitly (what the workers are started with)."""
    return GuardSettings(llama_guard=str(demo.llama_guard), family=DEMO_FAMILY, prompt_guard=str(demo.prompt_guard_2),
                         dtype="float32", device="cpu", broker_url=broker_url, result_backend=broker_url,
                         broker_visibility_timeout_s=TEST_VISIBILITY_S, broker_restore_interval_s=1)


@dataclass
class WorkerProcess:
    """One `guard worker` subprocess; its output goes to ``log``."""

    name: str
    queue: str
    proc: subprocess.Popen[bytes]
    log: Path
    #: Threads of the process once its model was loaded (before any check reached it).
    threads_when_loaded: int = 0

    @property
    def node(self) -> str:
        return f"{self.name}@{os.uname().nodename}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def freeze(self) -> None:
        """SIGSTOP: the process stops reading, but Redis still answers a BRPOP it left waiting."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def start_worker(queue: str, demo: Any, broker_url: str, log_dir: Path, name: str, *, concurrency: int = 16,
                 visibility_s: float = 60, env: dict[str, str] | None = None) -> WorkerProcess:
    """A worker; ``visibility_s`` short only for fault tests (a busy worker's tasks would run twice:
    any worker's sweep redelivers every task unacknowledged for longer than its own setting)."""
    model = ["--model", str(demo.llama_guard), "--family", DEMO_FAMILY] if queue == "llama_guard" \
        else ["--model", str(demo.prompt_guard_2)]
    argv = [*guard_command(), "worker", "--queue", queue, *model, "--dtype", "float32", "--device", "cpu",
            "--broker", broker_url, "--name", f"{name}@%h", "--concurrency", str(concurrency)]
    environment = dict(os.environ, GUARD_BROKER_VISIBILITY_TIMEOUT_S=str(visibility_s),
                       GUARD_BROKER_RESTORE_INTERVAL_S="1", GUARD_RESULT_BACKEND=broker_url,
                       **(env or {}))
    environment.pop("GUARD_BROKER_URL", None)
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=environment)
    return WorkerProcess(name=name, queue=queue, proc=proc, log=log)


async def statuses(settings: GuardSettings) -> list[WorkerStatus]:
    executor = CeleryExecutor(settings)
    try:
        return await executor.status(timeout=0.5)
    finally:
        await executor.aclose()


def wait_loaded(settings: GuardSettings, *workers: WorkerProcess, timeout: float = WORKER_START_TIMEOUT_S) -> None:
    """Block until every worker answers the status broadcast with its model loaded."""
    deadline = time.monotonic() + timeout
    waiting = {w.node for w in workers}
    while waiting and time.monotonic() < deadline:
        for worker in workers:
            if worker.proc.poll() is not None:
                raise RuntimeError(f"worker {worker.name} exited:\n{worker.output()[-3000:]}")
        loaded = {s.worker for s in asyncio.run(statuses(settings)) if s.loaded}
        waiting -= loaded
        if waiting:
            time.sleep(0.3)
    if waiting:
        raise RuntimeError(f"workers {sorted(waiting)} not loaded after {timeout}s")


@pytest.fixture(scope="module")
def worker_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("workers")


@pytest.fixture(scope="module")
def celery_settings(demo_models: Any, redis_server: Any) -> GuardSettings:
    return model_settings(demo_models, redis_server.url)


@pytest.fixture(scope="module")
def workers(demo_models: Any, redis_server: Any, worker_logs: Path,
            celery_settings: GuardSettings) -> Iterator[dict[str, WorkerProcess]]:
    """One Llama Guard and one Prompt Guard worker for the whole module."""
    started = {queue: start_worker(queue, demo_models, redis_server.url, worker_logs, f"{queue}-{os.getpid()}")
               for queue in ("llama_guard", "prompt_guard")}
    try:
        wait_loaded(celery_settings, *started.values())
        for worker in started.values():
            worker.threads_when_loaded = psutil.Process(worker.proc.pid).num_threads()
        yield started
    finally:
        for worker in started.values():
            worker.stop()
