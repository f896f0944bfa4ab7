"""`guard audit`, `guard review` and `guard stats` as an operator runs them: through the real entry
point (argument parsing, error mapping, exit codes), in-process to keep the suite fast, and as real
processes for the exit-code contract of `verify` and for `stats`. The store commands run against
SQLite and PostgreSQL (``store_url``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from guard import metrics
from guard.audit import SqlAuditStore
from guard.cli import main
from guard.settings import get_settings
from guard.types import Action, AuditRecord
from tests.audit.helpers import raw_execute, record

REPO = Path(__file__).resolve().parents[2]


def guard_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guard", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def guard(capsys, monkeypatch):
    """Run `guard ARGS` in this process through `guard.cli.main`; returns (returncode, stdout, stderr)."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        for name in ("GUARD_AUDIT_URL", "GUARD_AUDIT_SIGNING_KEY"):
            monkeypatch.delenv(name, raising=False)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        monkeypatch.setattr(sys, "argv", ["guard", *args])
        capsys.readouterr()
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            get_settings.cache_clear()
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


@pytest.fixture
def log(store_url):
    """Four records (one 45 days old, one blocked, one escalated) on each backend."""
    url = store_url
    store = SqlAuditStore(url)
    old = datetime.now(timezone.utc) - timedelta(days=45)
    records = store.append(
        [
            record("old", request_id="req-old", time=old),
            record("fine", request_id="req-fine"),
            record("zorblax", request_id="req-block", action=Action.BLOCK, categories=["S9"]),
            record("quintrex", request_id="req-esc", action=Action.ESCALATE, categories=["S1"]),
        ]
    )
    store.close()
    return url, records


def test_query_lists_and_filters(log, guard):
    url, records = log
    table = guard("audit", "query", "--store", url)
    assert table.returncode == 0, table.stderr
    assert all(r.id in table.stdout for r in records)
    as_json = guard("audit", "query", "--store", url, "--action", "block", "--category", "S9", "--json")
    assert [AuditRecord.model_validate_json(line).id for line in as_json.stdout.splitlines()] == [
        records[2].id
    ]
    by_time = guard("audit", "query", "--since", "30d", "--json", env={"GUARD_AUDIT_URL": url})
    assert len(by_time.stdout.splitlines()) == 3
    bad = guard("audit", "query", "--store", url, "--action", "explode")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_verify_passes_then_names_the_record_after_a_deletion(log):
    url, records = log
    ok = guard_process("audit", "verify", "--store", url)
    assert ok.returncode == 0 and "4 record(s)" in ok.stdout
    raw_execute(url, "DELETE FROM audit_records WHERE id = %s", (records[1].id,))
    broken = guard_process("audit", "verify", "--store", url)
    assert broken.returncode == 1
    assert records[2].id in broken.stdout and "BROKEN" in broken.stdout


def test_export_then_prune_keeps_the_chain_verifiable(log, guard, tmp_path):
    url, records = log
    out = tmp_path / "log.jsonl"
    exported = guard("audit", "export", "--format", "jsonl", "-o", str(out), "--store", url)
    assert exported.returncode == 0, exported.stderr
    assert [AuditRecord.model_validate_json(line) for line in out.read_text().splitlines()] == records
    assert guard("audit", "export", "--format", "csv", "--store", url).returncode == 2

    pruned = guard(
        "audit",
        "prune",
        "--older-than",
        "30d",
        "--store",
        url,
        env={"GUARD_AUDIT_SIGNING_KEY": "test-signing-key"},
    )
    assert pruned.returncode == 0 and "acme: 1 record(s) pruned" in pruned.stdout
    verified = guard("audit", "verify", "--store", url, env={"GUARD_AUDIT_SIGNING_KEY": "test-signing-key"})
    assert verified.returncode == 0 and "3 record(s)" in verified.stdout and not verified.stderr
    wrong_key = guard("audit", "verify", "--store", url, env={"GUARD_AUDIT_SIGNING_KEY": "another-key"})
    assert wrong_key.returncode == 1 and "checkpoint" in wrong_key.stdout


def test_review_list_and_decide(log, guard):
    url, records = log
    listed = guard("review", "list", "--store", url)
    assert listed.returncode == 0 and records[3].id in listed.stdout and records[2].id not in listed.stdout
    decided = guard(
        "review",
        "decide",
        records[3].id,
        "--verdict",
        "confirm",
        "--note",
        "real threat",
        "--reviewer",
        "ana",
        "--store",
        url,
    )
    assert decided.returncode == 0, decided.stderr
    store = SqlAuditStore(url, create=False)
    [review] = [r for r in store.query() if r.direction == "review"]
    store.close()
    assert review.ref_id == records[3].id and review.review["note"] == "real threat"
    assert guard("review", "list", "--json", "--store", url).stdout == ""
    bad = guard("review", "decide", records[3].id, "--verdict", "perhaps", "--store", url)
    assert bad.returncode == 2 and "confirm or overturn" in bad.stderr
    again = guard("review", "decide", records[3].id, "--verdict", "overturn", "--store", url)
    assert again.returncode == 2 and again.stderr.startswith("guard: conflict: record ")
    assert review.id in again.stderr and "Traceback" not in again.stderr and again.stdout == ""


def test_a_missing_store_is_one_line_not_a_new_empty_log(tmp_path, guard):
    missing = tmp_path / "nothing.sqlite3"
    result = guard("audit", "verify", "--store", f"sqlite:///{missing}")
    assert result.returncode == 1 and "no audit store" in result.stderr and "Traceback" not in result.stderr
    assert not missing.exists()


def test_stats_prints_key_figures_from_metrics(guard):
    metrics.REQUESTS.labels("/v1/chat/completions", "200").inc(5)
    metrics.observe_decision("acme", "input", "block", ["S9"])
    for seconds in (0.01, 0.02, 0.03, 2.0):
        metrics.GUARD_SECONDS.labels("llama_guard").observe(seconds)
    metrics.FAIL_OPEN.labels("acme", "input", "prompt_guard").inc()
    server, thread = metrics.start_metrics_server(0)
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        text = guard_process("stats", "--url", url)
        figures = json.loads(guard("stats", "--url", url, "--json").stdout)
    finally:
        server.shutdown()
        thread.join(5)
    assert text.returncode == 0 and "fail-open events" in text.stdout and "llama_guard: p50" in text.stdout
    assert figures["requests"]["by_status"]["200"] >= 5
    assert figures["decisions"]["by_action"]["block"] >= 1
    assert figures["fail_open"] >= 1
    latency = figures["guard_latency"]["llama_guard"]
    assert latency["count"] >= 4 and latency["p50_ms"] < latency["p99_ms"] <= 2500
    down = guard("stats", "--url", url)
    assert down.returncode == 1 and "cannot read" in down.stderr


def test_replay_journal_moves_journaled_records_into_the_store(tmp_path, store_url, guard):
    from guard.audit.journal import Journal

    journal = Journal(tmp_path / "gateway.journal.jsonl")
    journal.append([record(request_id="j1"), record(request_id="j2")])
    url = store_url
    result = guard("audit", "replay-journal", "--journal", str(journal.path), "--store", url)
    assert result.returncode == 0 and json.loads(result.stdout)["replayed"] == 2
    listed = guard("audit", "query", "--json", "--store", url)
    assert sorted(AuditRecord.model_validate_json(x).request_id for x in listed.stdout.splitlines()) == [
        "j1",
        "j2",
    ]
    assert (
        guard("audit", "replay-journal", "--journal", str(tmp_path / "none"), "--store", url).returncode == 2
    )
