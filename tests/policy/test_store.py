"""PolicyStore with real files: reload swaps atomically, a broken file keeps the old policy."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from guard.policy import PolicyLoadError, PolicyStore, ReloadEvent

GOOD = "id: default\nversion: '{v}'\ncategories:\n  S1: {{action: block, threshold: {t}}}\n"


def write(path: Path, text: str) -> None:
    """Write and move the mtime forward, so a change is visible even within one clock tick."""
    path.write_text(text, encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    write(tmp_path / "default.yaml", GOOD.format(v=1, t=0.5))
    return tmp_path


def test_a_bad_directory_at_start_refuses_to_load(tmp_path):
    write(tmp_path / "default.yaml", "categories: {S77: {action: block}}\n")
    with pytest.raises(PolicyLoadError, match="default.yaml:1: categories.S77"):
        PolicyStore(tmp_path)


def test_reload_swaps_and_a_broken_file_keeps_the_previous_policy(policy_dir):
    events: list[ReloadEvent] = []
    store = PolicyStore(policy_dir)
    store.add_listener(events.append)
    first = store.current
    assert store.get("default").rule("S1", "input").threshold == 0.5
    assert store.check_for_changes() is None  # nothing changed on disk

    write(policy_dir / "default.yaml", GOOD.format(v=2, t=0.3))
    event = store.check_for_changes()
    assert event is not None and event.ok and event.changed == ("default",) and event.trigger == "poll"
    second = store.current
    assert second is not first and second.get("default").version == "2"
    assert second.get("default").rule("S1", "input").threshold == 0.3

    write(policy_dir / "default.yaml", "id: default\ncategories:\n  S1: {action: block, threshold: 3}\n")
    event = store.check_for_changes()
    assert event is not None and not event.ok
    assert event.errors == [f"{policy_dir / 'default.yaml'}:3: categories.S1.threshold: "
                            "Input should be less than or equal to 1"]
    assert store.current is second  # the old set stays in force, untouched
    assert store.get("default").version == "2"
    assert event.fingerprint == second.fingerprint

    write(policy_dir / "default.yaml", "id: default\ncategories: [\n")  # half-written
    assert not store.check_for_changes().ok and store.current is second
    (policy_dir / "default.yaml").unlink()  # the default vanished
    assert not store.reload().ok and store.current is second

    write(policy_dir / "default.yaml", GOOD.format(v=3, t=0.4))
    assert store.check_for_changes().ok and store.get("default").version == "3"
    assert [e.ok for e in events] == [True, False, False, False, True]


def test_a_failing_listener_does_not_stop_the_reload(policy_dir):
    store = PolicyStore(policy_dir)
    store.add_listener(lambda event: 1 / 0)
    write(policy_dir / "default.yaml", GOOD.format(v=9, t=0.5))
    assert store.reload().ok and store.get("default").version == "9"


def test_the_watch_thread_picks_up_file_changes(policy_dir):
    with PolicyStore(policy_dir, poll_interval=0.05) as store:
        store.start()
        write(policy_dir / "strict.yaml", "extends: default\ncategories: {S1: {threshold: 0.1}}\n")
        assert wait_for(lambda: "strict" in store.current.policies)
        write(policy_dir / "strict.yaml", "extends: nowhere\n")
        time.sleep(0.3)  # several poll periods: the broken file is seen and rejected
        assert store.get("strict").rule("S1", "input").threshold == 0.1
    assert store._watch.thread is None


def test_sighup_reloads(policy_dir):
    store = PolicyStore(policy_dir, poll_interval=60)  # polling alone would not see it in time
    previous = signal.getsignal(signal.SIGHUP)
    try:
        store.install_sighup()
        write(policy_dir / "default.yaml", GOOD.format(v=5, t=0.5))
        os.kill(os.getpid(), signal.SIGHUP)
        assert wait_for(lambda: store.get("default").version == "5")
        store.start()
        write(policy_dir / "default.yaml", GOOD.format(v=6, t=0.5))
        os.kill(os.getpid(), signal.SIGHUP)
        assert wait_for(lambda: store.get("default").version == "6")
    finally:
        store.stop()
        signal.signal(signal.SIGHUP, previous)
