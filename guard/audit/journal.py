"""A local JSONL journal that holds audit records while the store is down.

With ``GUARD_AUDIT_ON_FAILURE=journal`` the store writes records it cannot commit here (one
``AuditRecord`` JSON per line, fsynced before the append returns) and replays them into the store,
oldest first, before anything newer once the store answers again. Records are chained at replay
time, so the chain order is the order in which they were accepted. Replay skips ids the store
already holds, so a crash between the store commit and the journal truncation duplicates nothing.

Several processes may share one journal file: every access holds an exclusive ``flock``.
Nothing is ever dropped silently: a journal that cannot be written raises ``AuditUnavailable``.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from guard import metrics
from guard.errors import AuditUnavailable
from guard.types import AuditRecord

REPLAY_CHUNK = 1000


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._depth = self._count_lines() if self.path.exists() else 0
        metrics.AUDIT_JOURNAL_DEPTH.set(self._depth)

    @property
    def rejected_path(self) -> Path:
        return self.path.with_name(self.path.name + ".rejected")

    @property
    def depth(self) -> int:
        """Records waiting, as last seen by this process (another process may have added some)."""
        return self._depth

    def pending(self) -> bool:
        return self._depth > 0 or (self.path.exists() and self.path.stat().st_size > 0)

    def append(self, records: Sequence[AuditRecord]) -> None:
        """Write ``records`` durably (fsync) or raise ``AuditUnavailable``."""
        lines = "".join(r.model_dump_json() + "\n" for r in records)
        try:
            created = not self.path.exists()
            with self._locked("ab+") as handle:
                data = lines.encode("utf-8")
                end = handle.seek(0, os.SEEK_END)
                if end > 0:
                    handle.seek(end - 1)
                    if handle.read(1) != b"\n":  # a torn line from a crash: keep it on its own line
                        data = b"\n" + data
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if created:
                _fsync_dir(self.path.parent)
        except OSError as exc:
            raise AuditUnavailable(f"audit store down and journal {self.path} not writable: {exc}") from exc
        self._set_depth(self._depth + len(records))

    def replay(self, commit: Callable[[list[AuditRecord]], None]) -> int:
        """Feed every journaled record to ``commit`` (in chunks, in order), then empty the journal.

        ``commit`` must skip records already stored. On any error the journal is left as it was.
        """
        if not self.path.exists():
            self._set_depth(0)
            return 0
        with self._locked("r+") as handle:
            count = 0
            bad: list[str] = []
            for chunk in _chunks(_read(handle, bad), REPLAY_CHUNK):
                commit(chunk)
                count += len(chunk)
            if bad:  # kept beside the journal for inspection, never silently lost
                with open(self.rejected_path, "a", encoding="utf-8") as rejected:
                    rejected.writelines(bad)
                    rejected.flush()
                    os.fsync(rejected.fileno())
            handle.seek(0)
            handle.truncate()
            handle.flush()
            os.fsync(handle.fileno())
        self._set_depth(0)
        return count

    def records(self) -> list[AuditRecord]:
        if not self.path.exists():
            return []
        with self._locked("r") as handle:
            return list(_read(handle))

    # ------------------------------------------------------------------ internals

    @contextmanager
    def _locked(self, mode: str) -> Iterator[IO]:
        encoding = None if "b" in mode else "utf-8"
        with open(self.path, mode, encoding=encoding) as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield handle
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _count_lines(self) -> int:
        with open(self.path, "rb") as handle:
            return sum(1 for line in handle if line.strip())

    def _set_depth(self, depth: int) -> None:
        self._depth = depth
        metrics.AUDIT_JOURNAL_DEPTH.set(depth)


def _read(handle: IO[str], bad: list[str] | None = None) -> Iterator[AuditRecord]:
    """Records in order. A line that does not parse (a torn write whose append never returned, so
    no caller relied on it) is collected in ``bad`` (or raises when ``bad`` is None)."""
    handle.seek(0)
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            yield AuditRecord.model_validate_json(line)
        except ValueError as exc:
            if bad is None:
                raise AuditUnavailable(f"audit journal line {number} is unreadable: {exc}") from exc
            bad.append(line if line.endswith("\n") else line + "\n")


def _chunks(items: Iterator[AuditRecord], size: int) -> Iterator[list[AuditRecord]]:
    chunk: list[AuditRecord] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
