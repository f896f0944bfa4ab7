"""Every Prometheus metric of the guard, defined once (``guard_`` prefix, Prometheus conventions).

The gateway and every worker import their metric objects from here and never define their own.
Exposition:

* single process: :func:`render_latest` on the default registry;
* forked workers (gunicorn/uvicorn ``--workers``, Celery prefork): set ``PROMETHEUS_MULTIPROC_DIR``
  to an empty, writable directory *before the first import of prometheus_client* (the client picks
  its value store at import time). Each process then writes its samples to mmap files there and
  :func:`render_latest` aggregates them with a ``MultiProcessCollector``. Call
  :func:`mark_process_dead` from the parent when a child exits, so its live gauges disappear.
* a worker without an HTTP server of its own calls :func:`start_metrics_server` to serve
  ``/metrics`` on a port of its own (127.0.0.1 by default).

Label values are plain strings: this module imports nothing of the guard, so every room may use it.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.metrics_core import Metric

#: Latency buckets from 1 ms to 10 s (CPU guard inference sits in the 10 ms .. 2 s range).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

# --------------------------------------------------------------------------- gateway

REQUESTS = Counter(
    "guard_requests_total", "HTTP requests answered, by route and status code", ["route", "status"]
)
REQUEST_SECONDS = Histogram(
    "guard_request_seconds", "End-to-end HTTP request duration", ["route"], buckets=LATENCY_BUCKETS
)
DECISIONS = Counter(
    "guard_decisions_total",
    "Guard decisions, one per checked direction (the action is the policy's, shadow included)",
    ["tenant", "direction", "action"],
)
DECISION_CATEGORIES = Counter(
    "guard_decision_categories_total",
    "Hazard categories behind decisions (one increment per category per decision)",
    ["tenant", "direction", "action", "category"],
)
FAIL_OPEN = Counter(
    "guard_fail_open_total",
    "Requests let through although a guard failed or timed out (policy on_error: open); alert on it",
    ["tenant", "direction", "guard"],
)
UPSTREAM_SECONDS = Histogram(
    "guard_upstream_seconds",
    "Latency of the wrapped LLM (time to full answer or stream end)",
    ["outcome"],
    buckets=LATENCY_BUCKETS,
)

# --------------------------------------------------------------------------- guard checks

GUARD_SECONDS = Histogram(
    "guard_check_seconds",
    "Latency of one guard check as seen by its caller",
    ["guard"],
    buckets=LATENCY_BUCKETS,
)
QUEUE_WAIT_SECONDS = Histogram(
    "guard_queue_wait_seconds",
    "Time a check request waited before its batch started",
    ["guard"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "guard_batch_size", "Number of requests in one model batch", ["guard"], buckets=BATCH_BUCKETS
)
GUARD_ERRORS = Counter(
    "guard_errors_total", "Guard checks that failed, by guard and error kind", ["guard", "kind"]
)
GUARD_TIMEOUTS = Counter("guard_timeouts_total", "Guard checks that timed out", ["guard"])
JUDGEMENT_CACHE = Counter(
    "guard_judgement_cache_total",
    "Guard requests answered from the judgement cache (hit) or sent to a model (miss)",
    ["guard", "result"],
)

# --------------------------------------------------------------------------- policies

POLICY_RELOADS = Counter("guard_policy_reloads_total", "Successful policy reloads")
POLICY_RELOAD_FAILURES = Counter(
    "guard_policy_reload_failures_total", "Policy reloads rejected (the old policy stays in force)"
)

# --------------------------------------------------------------------------- audit

AUDIT_WRITE_SECONDS = Histogram(
    "guard_audit_write_seconds",
    "Duration of one audit group commit (one transaction)",
    buckets=LATENCY_BUCKETS,
)
AUDIT_BATCH_SIZE = Histogram(
    "guard_audit_batch_size", "Records written by one audit group commit", buckets=BATCH_BUCKETS
)
AUDIT_RECORDS = Counter(
    "guard_audit_records_total", "Audit records made durable, by sink (store or journal)", ["sink"]
)
AUDIT_WRITE_FAILURES = Counter(
    "guard_audit_write_failures_total", "Audit group commits that failed, by error kind", ["kind"]
)
AUDIT_JOURNAL_DEPTH = Gauge(
    "guard_audit_journal_depth",
    "Audit records waiting in the local journal for the store",
    multiprocess_mode="livemax",
)


# --------------------------------------------------------------------------- helpers


def observe_policy_reload(event: object) -> None:
    """``PolicyStore`` listener: count a reload that took effect or was rejected (duck-typed on the
    store's ``ReloadEvent.ok``, so this module imports nothing of the policy room)."""
    (POLICY_RELOADS if getattr(event, "ok", False) else POLICY_RELOAD_FAILURES).inc()


_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, kept: ``labels`` takes a lock and rebuilds its key on every call,
    and the hot path asks for the same few series per request (bounded, cleared when large)."""
    key = (id(metric), values)
    found = _CHILDREN.get(key)
    if found is None:
        if len(_CHILDREN) > 4096:
            _CHILDREN.clear()
        found = _CHILDREN[key] = metric.labels(*values)
    return found


def observe_checks(guard_seconds: dict[str, float], errors: dict[str, str], timeouts: Iterable[str]) -> None:
    """Count what one ``run_checks`` saw: latency per guard, failures by guard and error kind
    (the ``kind`` before ``:`` in ``GuardResults.errors``), timeouts by guard."""
    for guard, seconds in guard_seconds.items():
        child(GUARD_SECONDS, guard).observe(seconds)
    for guard, text in errors.items():
        GUARD_ERRORS.labels(guard, text.split(":", 1)[0].strip() or "guard_error").inc()
    for guard in timeouts:
        GUARD_TIMEOUTS.labels(guard).inc()


def observe_decision(tenant: str, direction: str, action: str, categories: Iterable[str] = ()) -> None:
    """Count one decision and the categories behind it."""
    child(DECISIONS, tenant, direction, action).inc()
    for code in sorted(set(categories)):
        child(DECISION_CATEGORIES, tenant, direction, action, code).inc()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def exposition_registry() -> CollectorRegistry:
    """The registry to expose: an aggregating one in multiprocess mode, else the default."""
    if multiprocess_dir() is None:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def render_latest(tenant: str | None = None) -> tuple[bytes, str]:
    """The ``/metrics`` body and its content type; with ``tenant``, samples labelled with another
    tenant are left out (what an admin key of that tenant may read)."""
    registry = exposition_registry()
    return generate_latest(registry if tenant is None else _TenantView(registry, tenant)), CONTENT_TYPE_LATEST


class _TenantView:
    """A registry's families without the samples whose ``tenant`` label names another tenant."""

    def __init__(self, registry: CollectorRegistry, tenant: str) -> None:
        self._registry = registry
        self._tenant = tenant

    def collect(self) -> Iterable[Metric]:
        for family in self._registry.collect():
            samples = [s for s in family.samples if s.labels.get("tenant", self._tenant) == self._tenant]
            if len(samples) != len(family.samples):
                family = copy.copy(family)
                family.samples = samples
            yield family


def start_metrics_server(port: int, addr: str = "127.0.0.1") -> tuple[object, object]:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread (for workers); returns the server
    and its thread (call ``server.shutdown()`` to stop). ``port=0`` picks a free port:
    ``server.server_port`` tells which."""
    return start_http_server(port, addr=addr, registry=exposition_registry())


def mark_process_dead(pid: int) -> None:
    """Drop a dead child's live gauges (multiprocess mode only; a no-op otherwise)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)


# --------------------------------------------------------------------------- quick view (guard stats)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus-style quantile from cumulative ``(upper bound, count)`` buckets (linear inside a
    bucket; the largest finite bound when it falls in ``+Inf``); None without observations."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def summarize(text: str) -> dict:
    """Key figures from a ``/metrics`` exposition (what ``guard stats`` prints)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def total(name: str, by: str | None = None) -> float | dict[str, float]:
        if by is None:
            return sum(s.value for s in samples if s.name == name)
        out: dict[str, float] = {}
        for s in samples:
            if s.name == name:
                out[s.labels.get(by, "")] = out.get(s.labels.get(by, ""), 0.0) + s.value
        return dict(sorted(out.items()))

    def latency(name: str, by: str | None) -> dict[str, dict[str, float | None]]:
        groups: dict[str, dict[float, float]] = {}
        for s in samples:
            if s.name == f"{name}_bucket":
                key = s.labels.get(by, "") if by else "all"
                bound = float(s.labels["le"])
                groups.setdefault(key, {})[bound] = groups.setdefault(key, {}).get(bound, 0.0) + s.value
        out = {}
        for key, buckets in sorted(groups.items()):
            pairs = sorted(buckets.items())
            p50, p99 = histogram_quantile(0.5, pairs), histogram_quantile(0.99, pairs)
            out[key] = {
                "count": pairs[-1][1] if pairs else 0.0,
                "p50_ms": None if p50 is None else p50 * 1000,
                "p99_ms": None if p99 is None else p99 * 1000,
            }
        return out

    return {
        "requests": {
            "total": total("guard_requests_total"),
            "by_status": total("guard_requests_total", "status"),
        },
        "decisions": {
            "total": total("guard_decisions_total"),
            "by_action": total("guard_decisions_total", "action"),
        },
        "guard_latency": latency("guard_check_seconds", "guard"),
        "queue_wait": latency("guard_queue_wait_seconds", "guard"),
        "upstream_latency": latency("guard_upstream_seconds", None),
        "guard_errors": total("guard_errors_total"),
        "guard_timeouts": total("guard_timeouts_total"),
        "fail_open": total("guard_fail_open_total"),
        "policy_reload_failures": total("guard_policy_reload_failures_total"),
        "audit": {
            "records_by_sink": total("guard_audit_records_total", "sink"),
            "write_failures": total("guard_audit_write_failures_total"),
            "journal_depth": total("guard_audit_journal_depth"),
            "write_latency": latency("guard_audit_write_seconds", None).get("all"),
        },
    }
