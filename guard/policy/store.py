"""PolicyStore: the policies in force, reloaded on file change or SIGHUP, swapped atomically.

The store holds one immutable ``PolicySet``; a reload builds a complete new set and replaces the
reference in one assignment, so a request sees either the old set or the new one, never a mix.
A reload that fails (bad YAML, bad field, unknown parent, missing default...) changes nothing:
the previous set stays in force, the problems are logged and passed to the listeners (the metrics
module attaches one: ``store.add_listener(...)``). The process never crashes on a bad file.

Change detection polls the directory's fingerprint (file names, sizes and mtimes) every
``poll_interval`` seconds on a daemon thread; ``SIGHUP`` forces a reload. A file caught
half-written fails to parse, is reported, and is picked up again once its mtime changes.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from guard.policy.loader import PolicyIssue, PolicyLoadError, PolicySet, load_policy_dir, policy_files
from guard.policy.schema import Policy

log = logging.getLogger("guard.policy")


@dataclass(frozen=True)
class ReloadEvent:
    ok: bool
    # Policy ids added, removed or whose content hash changed (empty when nothing changed or failed).
    changed: tuple[str, ...] = ()
    issues: tuple[PolicyIssue, ...] = ()
    fingerprint: str = ""  # of the set in force after the attempt
    trigger: str = "manual"  # manual | poll | sighup

    @property
    def errors(self) -> list[str]:
        return [str(issue) for issue in self.issues]


Listener = Callable[[ReloadEvent], None]


@dataclass
class _Watch:
    stamp: tuple = ()
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    wake: threading.Event = field(default_factory=threading.Event)
    wake_reason: str = "poll"


class PolicyStore:
    def __init__(self, directory: Path | str, *, default_id: str | None = "default",
                 poll_interval: float = 2.0) -> None:
        """Load ``directory`` now; a bad directory at start is a ``PolicyLoadError`` (refuse to start)."""
        self.directory = Path(directory)
        self.default_id = default_id
        self.poll_interval = poll_interval
        self._lock = threading.Lock()  # one reload at a time; readers never take it
        self._listeners: list[Listener] = []
        self._watch = _Watch(stamp=self._stamp())
        self._current = load_policy_dir(self.directory, default_id=default_id)

    # ----------------------------------------------------------------------- reading

    @property
    def current(self) -> PolicySet:
        return self._current

    def get(self, policy_id: str) -> Policy:
        return self._current.get(policy_id)

    def select(self, **request: str | None) -> Policy:
        return self._current.select(**request)

    # ----------------------------------------------------------------------- reloading

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def reload(self, trigger: str = "manual") -> ReloadEvent:
        """Load the directory again; swap if valid, keep the old set otherwise. Never raises for
        bad policy files."""
        with self._lock:
            self._watch.stamp = self._stamp()
            old = self._current
            try:
                new = load_policy_dir(self.directory, default_id=self.default_id)
            except PolicyLoadError as error:
                event = ReloadEvent(ok=False, issues=tuple(error.issues), fingerprint=old.fingerprint, trigger=trigger)
            except Exception as error:  # noqa: BLE001 - e.g. the directory vanished: keep serving
                issue = PolicyIssue(str(self.directory), None, f"{type(error).__name__}: {error}")
                event = ReloadEvent(ok=False, issues=(issue,), fingerprint=old.fingerprint, trigger=trigger)
            else:
                self._current = new
                event = ReloadEvent(ok=True, changed=_changed(old, new), fingerprint=new.fingerprint, trigger=trigger)
        self._report(event)
        return event

    def check_for_changes(self) -> ReloadEvent | None:
        """Reload if the directory's files changed since the last load (one poll step)."""
        if self._stamp() == self._watch.stamp:
            return None
        return self.reload("poll")

    def _report(self, event: ReloadEvent) -> None:
        if event.ok:
            if event.changed:
                log.info("policies reloaded (%s): changed %s", event.trigger, ", ".join(event.changed))
        else:
            log.error("policy reload rejected (%s), previous policies stay in force:\n%s",
                      event.trigger, "\n".join(event.errors))
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a broken listener must not stop reloads
                log.exception("policy reload listener failed")

    def _stamp(self) -> tuple:
        try:
            files = policy_files(self.directory)
            return tuple((p.name, st.st_size, st.st_mtime_ns) for p in files for st in (p.stat(),))
        except Exception:  # noqa: BLE001 - a vanished directory is a change too
            return ("<unreadable>",)

    # ----------------------------------------------------------------------- watching

    def start(self) -> None:
        """Poll for changes on a daemon thread (idempotent)."""
        if self._watch.thread is not None:
            return
        self._watch.stop.clear()
        thread = threading.Thread(target=self._run, name="policy-watch", daemon=True)
        self._watch.thread = thread
        thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        thread = self._watch.thread
        if thread is None:
            return
        self._watch.stop.set()
        self._watch.wake.set()
        thread.join(timeout)
        self._watch.thread = None

    def request_reload(self, trigger: str = "sighup") -> None:
        """Ask the watch thread to reload now (safe from a signal handler); without a running
        watch thread, reload on a one-off thread."""
        if self._watch.thread is None:
            # Not inline: a signal may arrive while this thread holds the reload lock.
            threading.Thread(target=self.reload, args=(trigger,), name="policy-reload", daemon=True).start()
            return
        self._watch.wake_reason = trigger
        self._watch.wake.set()

    def install_sighup(self, loop=None) -> None:
        """Reload on SIGHUP: through ``loop.add_signal_handler`` when an asyncio loop is given,
        else with ``signal.signal`` (main thread only)."""
        if loop is not None:
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        else:
            signal.signal(signal.SIGHUP, lambda signum, frame: self.request_reload())

    def _run(self) -> None:
        watch = self._watch
        while not watch.stop.is_set():
            woken = watch.wake.wait(self.poll_interval)
            if watch.stop.is_set():
                break
            try:
                if woken:
                    watch.wake.clear()
                    self.reload(watch.wake_reason)
                    watch.wake_reason = "poll"
                else:
                    self.check_for_changes()
            except Exception:  # noqa: BLE001 - the watcher must survive anything
                log.exception("policy watcher step failed")

    def __enter__(self) -> PolicyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _changed(old: PolicySet, new: PolicySet) -> tuple[str, ...]:
    ids = set(old.policies) | set(new.policies)
    return tuple(sorted(
        pid for pid in ids
        if pid not in old.policies or pid not in new.policies
        or old.policies[pid].content_hash != new.policies[pid].content_hash
    ))
