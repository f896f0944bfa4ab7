"""Separate processes for the load and reliability benchmarks (loopback only): the scripted
upstream, ``guard serve``, ``redis-server``, ``guard worker``; and an RSS sampler per process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench._reliability.harness import FAMILY, write_policies


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def guard_command() -> list[str]:
    script = Path(sys.executable).with_name("guard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "guard"]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)

    def tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def spawn(name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> Proc:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                 cwd=workdir)
    return Proc(name, popen, log)


def wait_http(url: str, proc: Proc, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} did not answer {url} within {timeout:g}s:\n{proc.tail()}")


SCRIPTED = ("import sys; from guard.gateway.server import serve_forever; "
            "from guard.upstream.scripted import create_scripted_app; "
            "serve_forever(create_scripted_app(), '127.0.0.1', int(sys.argv[1]), log_level='warning')")


@dataclass
class Stack:
    """Everything started for one run, by name, with the gateway's URL."""

    procs: dict[str, Proc] = field(default_factory=dict)
    gateway_url: str = ""


@contextmanager
def service_stack(workdir: Path, demo: Any, *, celery: bool, worker_concurrency: int = 32,
                  judgement_cache: int | None = None) -> Iterator[Stack]:
    """Scripted upstream + gateway (+ redis and one worker per model kind with ``celery``);
    ``judgement_cache`` sets the gateway's ``GUARD_JUDGEMENT_CACHE_SIZE`` (else its default)."""
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack()
    with ExitStack() as cleanup:
        def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
            proc = spawn(name, argv, workdir, env)
            stack.procs[name] = proc
            cleanup.callback(proc.stop)
            return proc

        up_port, gw_port = free_port(), free_port()
        upstream = start("upstream", [sys.executable, "-c", SCRIPTED, str(up_port)])
        env = {"GUARD_LLAMA_GUARD": str(demo.llama_guard), "GUARD_FAMILY": FAMILY,
               "GUARD_PROMPT_GUARD": str(demo.prompt_guard_2), "GUARD_DTYPE": "float32", "GUARD_DEVICE": "cpu",
               "GUARD_AUDIT_URL": f"sqlite:///{workdir / 'audit.sqlite3'}", "GUARD_CONFIG_FILE": "",
               "GUARD_MAX_WAIT_MS": "5", "GUARD_MAX_BATCH_SIZE": "32"}
        if judgement_cache is not None:
            env["GUARD_JUDGEMENT_CACHE_SIZE"] = str(judgement_cache)
        if celery:
            redis_port = free_port()
            start("redis", [shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--bind",
                            "127.0.0.1", "--save", "", "--appendonly", "no"])
            broker = f"redis://127.0.0.1:{redis_port}/0"
            env.update({"GUARD_BROKER_URL": broker, "GUARD_RESULT_BACKEND": broker})
            for queue, model in (("llama_guard", ["--model", str(demo.llama_guard), "--family", FAMILY]),
                                 ("prompt_guard", ["--model", str(demo.prompt_guard_2)])):
                start(f"worker-{queue}", [*guard_command(), "worker", "--queue", queue, *model, "--dtype", "float32",
                                          "--device", "cpu", "--broker", broker, "--name", f"{queue}-load@%h",
                                          "--concurrency", str(worker_concurrency)],
                      {"GUARD_RESULT_BACKEND": broker})
        gateway = start("gateway", [*guard_command(), "serve", "--port", str(gw_port), "--upstream",
                                    f"http://127.0.0.1:{up_port}/v1", "--policies",
                                    str(write_policies(workdir / "policies")), "--log-level", "warning"], env)
        wait_http(f"http://127.0.0.1:{up_port}/healthz", upstream)
        stack.gateway_url = f"http://127.0.0.1:{gw_port}"
        wait_http(f"{stack.gateway_url}/healthz", gateway)
        _wait_ready(stack.gateway_url, gateway)
        yield stack


def _wait_ready(url: str, gateway: Proc, timeout: float = 300.0) -> None:
    """Until one real check passes end to end (models loaded, workers answering)."""
    deadline = time.monotonic() + timeout
    body = {"messages": [{"role": "user", "content": "hello"}]}
    while time.monotonic() < deadline:
        if gateway.popen.poll() is not None:
            raise RuntimeError(f"gateway exited:\n{gateway.tail()}")
        try:
            answer = httpx.post(f"{url}/v1/guard/check", json=body, timeout=60).json()
            if answer.get("decision", {}).get("guard_status") == "ok":
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1.0)
    raise RuntimeError(f"the gateway's checks did not come up within {timeout:g}s:\n{gateway.tail()}")


class RssSampler:
    """Samples the resident memory of each process (and its children) every ``interval`` seconds."""

    def __init__(self, pids: dict[str, int], interval: float = 1.0) -> None:
        self.pids = pids
        self.interval = interval
        self.samples: dict[str, list[tuple[float, int]]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.started = time.monotonic()

    def __enter__(self) -> RssSampler:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic() - self.started
            for name, pid in self.pids.items():
                try:
                    proc = psutil.Process(pid)
                    rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
                except psutil.Error:
                    continue
                self.samples[name].append((now, rss))
            self._stop.wait(self.interval)

    def now(self) -> float:
        """Seconds since the sampler started (the time base of its samples)."""
        return time.monotonic() - self.started

    def _points(self, name: str, since: float = 0.0, until: float = float("inf")) -> list[tuple[float, int]]:
        return [(t, rss) for t, rss in self.samples[name] if since <= t <= until]

    def peak_mb(self, name: str, since: float = 0.0) -> float:
        return max((rss for _, rss in self._points(name, since)), default=0) / 2**20

    def growth_mb(self, name: str, window: float, since: float = 0.0, until: float = float("inf")) -> float:
        """Mean RSS of the last ``window`` seconds minus that of the first ``window`` seconds of the
        samples taken between ``since`` and ``until``."""
        points = self._points(name, since, until)
        if len(points) < 2:
            return 0.0
        start, end = points[0][0], points[-1][0]
        first = [rss for t, rss in points if t <= start + window]
        last = [rss for t, rss in points if t >= end - window]
        return (sum(last) / len(last) - sum(first) / len(first)) / 2**20

    def trace_mb(self, name: str, step: float = 10.0) -> list[tuple[float, float]]:
        """(seconds, MB) every ``step`` seconds: the curve behind peak and growth."""
        out: list[tuple[float, float]] = []
        points = self.samples[name]
        for i, (t, rss) in enumerate(points):
            if not out or t >= out[-1][0] + step or i == len(points) - 1:  # and the last sample
                out.append((round(t, 1), round(rss / 2**20, 1)))
        return out
