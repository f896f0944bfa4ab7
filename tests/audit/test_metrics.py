"""Metrics: the exposition parses with prometheus_client.parser, counters move with audit traffic,
multiprocess mode aggregates forked processes, and a worker can serve /metrics on its own port."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from guard import metrics
from guard.audit import SqlAuditStore
from tests.audit.helpers import record


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(text: str, sample: str, **labels) -> float:
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_exposition_parses_and_names_every_guard_metric():
    metrics.observe_decision("acme", "input", "block", ["S9", "S1"])
    body, content_type = metrics.render_latest()
    assert content_type.startswith("text/plain")
    families = _families(body.decode())
    for name in (
        "guard_requests",
        "guard_decisions",
        "guard_decision_categories",
        "guard_check_seconds",
        "guard_queue_wait_seconds",
        "guard_batch_size",
        "guard_errors",
        "guard_timeouts",
        "guard_fail_open",
        "guard_policy_reloads",
        "guard_policy_reload_failures",
        "guard_audit_write_seconds",
        "guard_audit_write_failures",
        "guard_audit_journal_depth",
        "guard_upstream_seconds",
    ):
        assert name in families, name
    buckets = [s.labels["le"] for s in families["guard_check_seconds"].samples if s.name.endswith("_bucket")]
    assert buckets == [] or (buckets[0] == "0.001" and "10.0" in buckets)


def test_counters_move_with_audit_traffic(store_url):
    before = metrics.render_latest()[0].decode()
    store = SqlAuditStore(store_url)
    store.append([record(), record()])
    store.close()
    metrics.GUARD_SECONDS.labels("llama_guard").observe(0.02)
    metrics.FAIL_OPEN.labels("acme", "input", "llama_guard").inc()
    after = metrics.render_latest()[0].decode()
    assert (
        _value(after, "guard_audit_records_total", sink="store")
        == _value(before, "guard_audit_records_total", sink="store") + 2
    )
    assert _value(after, "guard_audit_write_seconds_count") > _value(
        before, "guard_audit_write_seconds_count"
    )
    assert (
        _value(after, "guard_check_seconds_count", guard="llama_guard")
        == _value(before, "guard_check_seconds_count", guard="llama_guard") + 1
    )
    assert _value(after, "guard_fail_open_total") == _value(before, "guard_fail_open_total") + 1


def test_summary_quantiles_follow_the_histogram():
    buckets = [(0.01, 10.0), (0.1, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert metrics.histogram_quantile(0.5, buckets) == pytest.approx(0.055)
    assert metrics.histogram_quantile(0.99, buckets) == pytest.approx(0.91)
    assert metrics.histogram_quantile(1.0, [(0.5, 2.0), (float("inf"), 4.0)]) == 0.5  # in +Inf
    assert metrics.histogram_quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None


_CHILD = textwrap.dedent("""
    import os, sys
    from guard import metrics
    metrics.REQUESTS.labels("/v1/chat/completions", "200").inc(int(sys.argv[1]))
    metrics.GUARD_SECONDS.labels("llama_guard").observe(0.05)
    metrics.AUDIT_JOURNAL_DEPTH.set(int(sys.argv[1]))
    if len(sys.argv) > 2:
        sys.stdout.write(metrics.render_latest()[0].decode())
""")


def test_multiprocess_mode_aggregates_forked_workers(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", _CHILD, "3"], env=env, check=True, timeout=60)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, "4", "render"],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
    assert _value(out, "guard_requests_total", route="/v1/chat/completions", status="200") == 7
    assert _value(out, "guard_check_seconds_count", guard="llama_guard") == 2


def test_worker_metrics_server_serves_the_exposition():
    server, thread = metrics.start_metrics_server(0)
    try:
        metrics.GUARD_TIMEOUTS.labels("prompt_guard").inc()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert _value(text, "guard_timeouts_total", guard="prompt_guard") >= 1
    finally:
        server.shutdown()
        thread.join(5)
