"""`guard demo --self-test` and `guard serve` as a user runs them: real processes, real ports."""

from __future__ import annotations

import os
import subprocess
import sys

from guard.gateway.config import hash_key


def guard(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guard", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_demo_self_test_runs_the_whole_path_and_exits_0(demo_models, tmp_path):
    env = {"GUARD_DEMO_MODELS_DIR": str(demo_models.chat.parent.parent)}  # root/<builder key>/chat
    done = guard("demo", "--self-test", "--port", "0", "--workdir", str(tmp_path), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   blocked prompt refused" in done.stdout
    assert "[content_filter]" in done.stdout
    assert (tmp_path / "audit.sqlite3").exists()


def test_serve_hash_key_prints_the_config_hash():
    done = guard("serve", "--hash-key", "sk-example", timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == hash_key("sk-example")


def test_serve_refuses_a_bad_config_file_with_one_line(tmp_path):
    bad = tmp_path / "gateway.yaml"
    bad.write_text("tenants: [not, a, mapping]\n")
    done = guard("serve", "--config", str(bad), "--policies", str(tmp_path), "--port", "0", timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("guard: ") and "Traceback" not in done.stderr
