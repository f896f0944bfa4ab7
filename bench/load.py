"""Load on loopback: N concurrent clients for D seconds, half streaming, against the gateway with
the demo guard models in-process and with Celery workers (scripted upstream, shipped default
policy with guard timeouts raised to 60 s, SQLite audit; every process separate).

    python -m bench load [--clients 200] [--duration 60] [--quick] [--mode inprocess|celery|both]

Prints, per mode: requests, errors (transport errors, non-200 answers, streams without [DONE] or
with an error event), blocks (refusals: on benign prompts these come from the demo guard's false
positives or from guard errors), p50/p99 latency of full answers and of the first streamed byte,
peak RSS of each process and its RSS growth between the first and the last 20 s of the measured
load (a third of it with ``--quick``; the drain after it, while in-flight requests finish, is not
load from 200 clients and counts only in the curve), and its RSS every 10 s.

``--warmup S`` (default 240 s, 3 s with ``--quick``) runs the same load for S seconds before the
measured ``--duration``: requests started in it are counted apart (their errors still fail the
run), and the memory each process gained during it is printed beside the measured growth and the
RSS curve of the whole run, so the growth is shown, not hidden. It exists because a fresh
process's RSS rises for a while under load without leaking: a worker's bounded caches fill (the
Prompt Guard attention plans, up to 24 MB, as long sequences arrive), its allocator grows to its
working set, Redis holds the results of the calls in flight, and the gateway's judgement cache
fills (bounded here, see ``JUDGEMENT_CACHE``). Under this load the workers' RSS is near its level
after about 3.5 minutes (a 60 s warm-up left them still rising: +2 to +7 MB in the measured minute;
240 s: +0.1 to +2.7 MB; the Llama Guard worker's slow drift is described in docs/reliability.md). Growth between the first and last 20 s of the
measured window is what would keep rising (docs/reliability.md, "Memory under load")."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench._reliability.procs import RssSampler, service_stack

#: Seconds of load before the measured window (see the module docstring).
WARMUP_S = 240.0
#: The gateway's judgement cache (``GUARD_JUDGEMENT_CACHE_SIZE``, default 10,000 results) during load:
#: every load prompt is new, so the cache only fills (a few results per request: input, output or
#: stream window, per guard); at its default size it would still be filling through the measured
#: minute (~22 MB of results, ~37 MB RSS when full, measured with ``ResultCache`` alone). 1,000
#: entries are full within the warm-up, so the growth measured after it is not the cache's. It
#: answers nothing here either way (no prompt repeats).
JUDGEMENT_CACHE = 1_000


@dataclass
class LoadResult:
    mode: str
    clients: int
    duration_s: float
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: {"json": [], "stream": [], "first_byte": []})
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    rss_growth_mb: dict[str, float] = field(default_factory=dict)
    warmup_s: float = 0.0
    judgement_cache: int | None = None
    #: What the warm-up did: its request outcomes, and the RSS each process gained during it.
    warmup_outcomes: Counter[str] = field(default_factory=Counter)
    warmup_errors: list[str] = field(default_factory=list)
    warmup_growth_mb: dict[str, float] = field(default_factory=dict)
    rss_trace_mb: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return sum(self.outcomes.values())

    @property
    def error_count(self) -> int:
        return self.outcomes["error"]

    def percentile(self, kind: str, q: float) -> float | None:
        values = sorted(self.latencies_ms[kind])
        if not values:
            return None
        return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "clients": self.clients, "duration_s": round(self.duration_s, 1),
            "requests": self.requests, "per_s": round(self.requests / self.duration_s, 1),
            "errors": self.error_count, "blocks": self.outcomes["block"],
            "p50_ms": {k: _round(self.percentile(k, 0.5)) for k in self.latencies_ms},
            "p99_ms": {k: _round(self.percentile(k, 0.99)) for k in self.latencies_ms},
            "peak_rss_mb": {k: round(v, 1) for k, v in self.peak_rss_mb.items()},
            "rss_growth_mb": {k: round(v, 1) for k, v in self.rss_growth_mb.items()},
            "first_errors": self.errors[:5],
            "warmup_s": round(self.warmup_s, 1),
            "judgement_cache": self.judgement_cache,
            "warmup_requests": sum(self.warmup_outcomes.values()),
            "warmup_errors": self.warmup_outcomes["error"],
            "warmup_first_errors": self.warmup_errors[:5],
            "warmup_growth_mb": {k: round(v, 1) for k, v in self.warmup_growth_mb.items()},
            "rss_trace_mb": self.rss_trace_mb,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


async def _one(client: httpx.AsyncClient, index: int, stream: bool, result: LoadResult) -> None:
    body = {"model": "scripted", "stream": stream,
            "messages": [{"role": "user", "content": f"what is the best way to plan a garden {index} [[words:24]]"}]}
    started = time.perf_counter()
    try:
        if not stream:
            response = await client.post("/v1/chat/completions", json=body)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
            choice = response.json()["choices"][0]
            result.latencies_ms["json"].append(elapsed)
            result.outcomes["block" if choice["finish_reason"] == "content_filter" else "ok"] += 1
            return
        first = None
        text = b""
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
            async for block in response.aiter_bytes():
                if first is None:
                    first = (time.perf_counter() - started) * 1000
                text += block
        elapsed = (time.perf_counter() - started) * 1000
        if not text.rstrip().endswith(b"data: [DONE]") or b'"error"' in text:
            raise RuntimeError(f"broken stream: {text[-200:]!r}")
        result.latencies_ms["stream"].append(elapsed)
        result.latencies_ms["first_byte"].append(first or elapsed)
        result.outcomes["block" if b"content_filter" in text else "ok"] += 1
    except Exception as error:  # noqa: BLE001 - counted, the run goes on
        result.outcomes["error"] += 1
        if len(result.errors) < 20:
            kind = "stream" if stream else "json"
            result.errors.append(f"{kind} after {(time.perf_counter() - started):.1f} s: "
                                 f"{type(error).__name__}: {error!r}")


async def drive(url: str, clients: int, duration: float, result: LoadResult, *, warmup: float = 0.0,
                warm: LoadResult | None = None) -> None:
    """``clients`` loops for ``warmup`` + ``duration`` seconds; a request started in the first
    ``warmup`` seconds counts in ``warm``, every other one in ``result``."""
    # httpx's default idle expiry (5 s), as clients have it: the gateway keeps idle connections
    # longer (GUARD_KEEP_ALIVE_S, 75 s), so the client always closes first. With equal timeouts (5 s,
    # uvicorn's default) a request sent as the server closed its connection was reset (ReadError).
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        measured_from = time.monotonic() + warmup
        deadline = measured_from + duration

        async def loop(worker: int) -> None:
            n = 0
            while (now := time.monotonic()) < deadline:
                into = warm if warm is not None and now < measured_from else result
                await _one(client, worker * 100_000 + n, stream=(worker + n) % 2 == 1, result=into)
                n += 1

        await asyncio.gather(*(loop(i) for i in range(clients)))


def run_mode(mode: str, demo: Any, clients: int, duration: float, workdir: Path, warmup: float = 0.0,
             judgement_cache: int | None = JUDGEMENT_CACHE) -> LoadResult:
    """One stack, ``warmup`` seconds of load not counted, then ``duration`` seconds measured."""
    result = LoadResult(mode=mode, clients=clients, duration_s=duration, warmup_s=warmup,
                        judgement_cache=judgement_cache)
    warm = LoadResult(mode=mode, clients=clients, duration_s=warmup)
    with service_stack(workdir / mode, demo, celery=(mode == "celery"),
                       judgement_cache=judgement_cache) as stack:
        pids = {name: proc.pid for name, proc in stack.procs.items()}
        with RssSampler(pids) as rss:
            started = rss.now()
            asyncio.run(drive(stack.gateway_url, clients, duration, result, warmup=warmup, warm=warm))
            ended = rss.now()
        # The measured window starts when the first measured request could start.
        measured_from = started + warmup
        result.duration_s = ended - measured_from
        result.warmup_outcomes, result.warmup_errors = warm.outcomes, warm.errors
        if result.error_count or warm.error_count:  # what the gateway said about it, first
            result.errors.insert(0, "gateway log: " + " / ".join(stack.procs["gateway"].tail(1500).splitlines()[-8:]))
        window = 20.0 if duration >= 50 else duration / 3
        # Growth over the ``duration`` seconds of full load; the drain after it (fewer and fewer
        # clients while in-flight requests finish) is in the curve, not in the growth.
        load_ended = measured_from + duration
        result.peak_rss_mb = {name: rss.peak_mb(name) for name in pids}
        result.rss_growth_mb = {name: rss.growth_mb(name, window, since=measured_from, until=load_ended)
                                for name in pids}
        if warmup > 0:
            result.warmup_growth_mb = {name: _warmup_growth(rss, name, started, measured_from)
                                       for name in pids}
        result.rss_trace_mb = {name: rss.trace_mb(name) for name in pids}
    return result


def _warmup_growth(rss: RssSampler, name: str, started: float, measured_from: float) -> float:
    """RSS when the measured window starts minus RSS when the load started (the stack was idle and
    ready then): what the warm-up added."""
    points = rss.samples[name]
    before = [r for t, r in points if t <= started + 1.0] or [r for _, r in points[:1]]
    at = [r for t, r in points if measured_from - 1.0 <= t <= measured_from + 1.0]
    if not before or not at:
        return 0.0
    return (sum(at) / len(at) - sum(before) / len(before)) / 2**20


def print_result(result: LoadResult) -> None:
    s = result.summary()
    print(f"\n== {s['mode']}: {s['clients']} clients for {s['duration_s']} s, "
          f"after {s['warmup_s']} s of warm-up")
    print(f"warm-up: requests {s['warmup_requests']}, errors {s['warmup_errors']} "
          f"(not in the figures below); gateway judgement cache {s['judgement_cache'] or 'default size'}")
    print(f"requests {s['requests']} ({s['per_s']}/s), errors {s['errors']}, blocks {s['blocks']}")
    for kind in ("json", "stream", "first_byte"):
        print(f"  {kind:<10} p50 {s['p50_ms'][kind]} ms   p99 {s['p99_ms'][kind]} ms")
    for name in s["peak_rss_mb"]:
        print(f"  {name:<22} peak RSS {s['peak_rss_mb'][name]:>7} MB   "
              f"growth {s['rss_growth_mb'][name]:>6} MB"
              f"   (warm-up added {s['warmup_growth_mb'].get(name, 0.0):>6} MB)")
    for name, trace in s["rss_trace_mb"].items():
        print(f"  rss {name:<18} " + " ".join(f"{t:.0f}s:{mb:.0f}" for t, mb in trace))
    for error in s["warmup_first_errors"] + s["first_errors"]:
        print(f"  error: {error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench load", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true", help="10 s per mode")
    parser.add_argument("--mode", choices=("inprocess", "celery", "both"), default="both")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of the same load before the measured window, not counted "
                        "(default 60, 3 with --quick)")
    parser.add_argument("--judgement-cache", type=int, default=JUDGEMENT_CACHE,
                        help=f"the gateway's GUARD_JUDGEMENT_CACHE_SIZE (default {JUDGEMENT_CACHE}; "
                        "-1: its own default)")
    parser.add_argument("--json", type=Path, help="write the summaries here")
    args = parser.parse_args(argv)
    from bench._reliability.harness import demo_models

    demo = demo_models()
    duration = 10.0 if args.quick else args.duration
    warmup = args.warmup if args.warmup is not None else (3.0 if args.quick else WARMUP_S)
    modes = ["inprocess", "celery"] if args.mode == "both" else [args.mode]
    results = []
    with tempfile.TemporaryDirectory(prefix="guard-load-") as tmp:
        for mode in modes:
            cache = None if args.judgement_cache < 0 else args.judgement_cache
            result = run_mode(mode, demo, args.clients, duration, Path(tmp), warmup=warmup,
                              judgement_cache=cache)
            print_result(result)
            results.append(result.summary())
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["errors"] == 0 and r["warmup_errors"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
