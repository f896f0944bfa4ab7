"""Workers re-execute themselves once with jemalloc preloaded, where it is installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from guard.errors import ConfigError
from workers import allocator
from workers.allocator import find_jemalloc, jemalloc_loaded, preload_env

JEMALLOC = "libjemalloc.so.2"
needs_jemalloc = pytest.mark.skipif(find_jemalloc() is None, reason="jemalloc is not installed here")


def test_preload_env_per_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "find_jemalloc", lambda: JEMALLOC)
    assert preload_env("auto", {"PATH": "/bin"}) == {"PATH": "/bin", "LD_PRELOAD": JEMALLOC}
    assert preload_env("jemalloc", {"LD_PRELOAD": "libx.so"}) == {"LD_PRELOAD": f"{JEMALLOC}:libx.so"}
    assert preload_env("system", {}) is None
    assert preload_env("auto", {"LD_PRELOAD": f"/usr/lib/{JEMALLOC}"}) is None  # already preloaded: no loop


def test_without_jemalloc_auto_runs_as_is_and_jemalloc_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "find_jemalloc", lambda: None)
    assert preload_env("auto", {}) is None
    with pytest.raises(ConfigError, match="libjemalloc2"):
        preload_env("jemalloc", {})


def test_jemalloc_loaded_reads_the_process_maps(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f10 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n")
    assert jemalloc_loaded(maps)
    maps.write_text("7f00-7f10 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert not jemalloc_loaded(maps)
    assert not jemalloc_loaded(tmp_path / "missing")


PROBE = "from workers.allocator import jemalloc_loaded, reexec_with; import sys; " \
        "print(jemalloc_loaded(), flush=True); reexec_with(sys.argv[1])"


def _probe(choice: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    done = subprocess.run([sys.executable, "-c", PROBE, choice], capture_output=True, text=True, env=env,
                          timeout=60, check=True)
    return done.stdout.split()


@needs_jemalloc
def test_a_process_reexecutes_once_with_jemalloc_mapped() -> None:
    assert _probe("auto") == ["False", "True"]  # the first run re-executes; the second runs on jemalloc


def test_system_keeps_the_process_as_it_is() -> None:
    assert _probe("system") == ["False"]
