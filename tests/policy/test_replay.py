"""Replay: re-deciding recorded results equals deciding from scratch; the CLI reports changes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from guard.cli import app
from guard.errors import BadInput
from guard.policy import decide, load_policy_dir
from guard.policy.replay import read_records, replay
from guard.policy.synthetic import synthetic_records
from guard.types import Action

ROOT = Path(__file__).resolve().parents[2]
POLICIES = load_policy_dir(ROOT / "policies")
OLD, NEW = POLICIES.get("default"), POLICIES.get("strict")
JUDGED = {"input": "input", "output": "output", "stream_window": "output"}


@pytest.fixture(scope="module")
def records_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "records.jsonl"
    records = synthetic_records(OLD, 400, seed=7)
    path.write_text("".join(r.model_dump_json() + "\n" for r in records), encoding="utf-8")
    return path


def test_replay_equals_deciding_from_scratch(records_file):
    records = list(read_records(records_file))
    assert len(records) == 400
    report = replay(records, NEW, keep_decisions=True)
    replayable = [r for r in records if r.direction in JUDGED]
    assert report.replayed == len(replayable) and report.skipped == 400 - len(replayable)
    assert report.decisions == [decide(NEW, JUDGED[r.direction], r.results) for r in replayable]
    changed_ids = {c.record.id for c in report.changes}
    expected = {r.id for r, d in zip(replayable, report.decisions)
                if (d.action, d.effective_action) != (r.decision.action, r.decision.effective_action)}
    assert changed_ids == expected and 0 < len(changed_ids) < len(replayable)
    # the synthetic scores exercise every kind of outcome
    kinds = {reason.kind for d in report.decisions for reason in d.reasons}
    assert kinds == {"category", "jailbreak", "injection", "guard_error"}


def test_replay_under_the_recording_policy_changes_nothing(records_file):
    report = replay(read_records(records_file), OLD)
    assert report.changed == 0 and report.replayed > 0


def test_replay_under_shadow_changes_only_effective_actions(records_file):
    report = replay(read_records(records_file), POLICIES.get("shadow"))
    assert report.changes, "the default blocks some of these"
    assert all(c.new.action is c.old.action and c.new.effective_action is Action.ALLOW for c in report.changes)


def test_a_bad_record_line_names_the_file_and_line(tmp_path, records_file):
    bad = tmp_path / "bad.jsonl"
    first = records_file.read_text().splitlines()[0]
    bad.write_text(first + "\n\n" + '{"id": "x"}\n')
    with pytest.raises(BadInput, match=rf"{bad}:3: not an audit record"):
        list(read_records(bad))


def test_the_replay_command_prints_the_changes_and_a_summary(records_file):
    result = CliRunner().invoke(app, ["policy", "replay", "--records", str(records_file),
                                      "--policy", str(ROOT / "policies" / "strict.yaml"), "--show", "3"])
    assert result.exit_code == 0, result.output
    expected = replay(read_records(records_file), NEW)
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith(f"{expected.replayed} decisions replayed under strict v1")
    assert f": {expected.changed} change," in lines[-1]
    assert lines[-2] == f"... and {expected.changed - 3} more"
    assert lines[0].startswith(expected.changes[0].record.id)


def test_validate_exits_2_with_file_line_messages_and_0_when_valid():
    broken = ROOT / "tests" / "policy" / "fixtures" / "broken-code.yaml"
    bad = subprocess.run([sys.executable, "-m", "guard", "policy", "validate", str(broken)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        f"{broken}:7: categories.S21: unknown category code 'S21' (expected S1..S14 or a code declared "
        "in custom_categories)",
        f"{broken}:10: guards.llama_guard.timeout: Extra inputs are not permitted",
    ]
    good = CliRunner().invoke(app, ["policy", "validate", str(ROOT / "policies")])
    assert good.exit_code == 0 and good.output.count("\nok  ") + good.output.startswith("ok  ") == len(POLICIES.policies)


def test_show_prints_the_resolved_policy_as_yaml():
    import yaml

    result = CliRunner().invoke(app, ["policy", "show", "tenant-kids", "--dir", str(ROOT / "policies")])
    assert result.exit_code == 0, result.output
    assert "# chain: tenant-kids <- strict <- default" in result.output
    shown = yaml.safe_load(result.output)
    kids = POLICIES.get("tenant-kids")
    assert shown == kids.model_dump(mode="json")
    assert f"# hash: {kids.content_hash}" in result.output
