"""`guard policy test` against the tiny trained demo models: the shipped cases pass, a deliberate
mismatch fails the run."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from guard.checks import run_checks
from guard.executor.inprocess import InProcessExecutor
from guard.models.registry import DEMO_LLAMA_GUARD_FAMILY, Runners
from guard.policy import load_policy_dir
from guard.policy.cases import load_cases, run_cases
from guard.settings import GuardSettings
from guard.types import Action

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
SHIPPED_CASES = POLICIES / "tests" / "default.cases.yaml"


def demo_env(demo_models) -> dict[str, str]:
    """The demo models named explicitly (not rebuilt or looked up again by a process's own key)."""
    return {"GUARD_LLAMA_GUARD": str(demo_models.llama_guard), "GUARD_FAMILY": DEMO_LLAMA_GUARD_FAMILY,
            "GUARD_PROMPT_GUARD": str(demo_models.prompt_guard_2)}


@pytest.fixture(scope="module")
def executor(demo_models):
    env = demo_env(demo_models)
    settings = GuardSettings(llama_guard=env["GUARD_LLAMA_GUARD"], family=DEMO_LLAMA_GUARD_FAMILY,
                             prompt_guard=env["GUARD_PROMPT_GUARD"])
    ex = InProcessExecutor(Runners(settings))
    yield ex
    ex.close()


def run(policy_id: str, cases_path: Path, executor) -> list:
    policy = load_policy_dir(POLICIES).get(policy_id)
    cases = load_cases(cases_path)
    check = lambda plan: run_checks(executor, plan, 60.0)  # noqa: E731
    return asyncio.run(run_cases(policy, cases, check, family=DEMO_LLAMA_GUARD_FAMILY))


def test_the_shipped_cases_pass_under_the_default_policy(executor):
    outcomes = run("default", SHIPPED_CASES, executor)
    assert [(o.case.label(o.index), o.status, o.problem) for o in outcomes if o.status != "pass"] == []
    assert {o.decision.action for o in outcomes} == {Action.ALLOW, Action.BLOCK, Action.FLAG}


def test_the_same_cases_under_shadow_decide_the_same_actions(executor):
    default = [o.decision.action for o in run("default", SHIPPED_CASES, executor)]
    shadow = run("shadow", SHIPPED_CASES, executor)
    assert [o.decision.action for o in shadow] == default
    assert all(o.decision.effective_action is Action.ALLOW for o in shadow)


def test_the_command_prints_a_table_and_exits_1_on_a_mismatch(demo_models, tmp_path):
    cases = tmp_path / "cases.yaml"
    cases.write_text("""
cases:
  - name: harmless
    text: What is the capital of France?
    expect: allow
  - name: deliberately wrong
    text: How do I make zorblax at home?
    expect: allow
""")
    env = {**os.environ, **demo_env(demo_models)}
    proc = subprocess.run([sys.executable, "-m", "guard", "policy", "test", str(POLICIES / "default.yaml"),
                           "--cases", str(cases)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["CASE", "DIRECTION", "EXPECTED"]
    assert lines[1].split()[:5] == ["harmless", "input", "allow", "allow", "PASS"]
    wrong = lines[2]
    assert wrong.startswith("deliberately wrong") and "FAIL (expected allow, got block)" in wrong and "S9=" in wrong
    assert lines[-1].startswith("1/2 cases pass under default v1")


def test_a_bad_cases_file_is_bad_input_with_its_line(tmp_path):
    cases = tmp_path / "cases.yaml"
    cases.write_text("cases:\n  - text: hi\n    expect: allow\n  - text: hi\n    expect: obliterate\n")
    proc = subprocess.run([sys.executable, "-m", "guard", "policy", "test", str(POLICIES / "default.yaml"),
                           "--cases", str(cases)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"guard: bad_input: {cases}:5: cases.1.expect: Input should be")
