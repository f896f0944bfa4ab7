"""Re-decide recorded guard results under another policy, without running any model.

The input is the audit log's JSONL export: one ``guard.types.AuditRecord`` per line. Each record
keeps the guard scores (``results``), the ``direction`` and the ``decision`` taken then; replay
calls ``decide(new_policy, direction, results)`` and compares. ``stream_window`` records are
output checks; ``review`` records are skipped (a person decided those), and so are ``moderation``
records (``/v1/moderations`` reports Llama Guard's codes; no policy category decided them).

What replay cannot know: what the new policy would have *scanned* differently (a longer context
window, a source the old policy did not scan, a category excluded from the old prompt). It judges
the recorded scores only, and counts records where the new policy applies Llama Guard but the
record holds no Llama Guard result (``unscanned``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from pydantic import ValidationError

from guard.errors import BadInput
from guard.policy.decide import decide
from guard.policy.schema import Policy
from guard.types import Action, AuditRecord, Decision, Direction, PolicyRef

REPLAY_DIRECTIONS: dict[str, Direction] = {"input": "input", "output": "output", "stream_window": "output"}


@dataclass(frozen=True)
class ReplayChange:
    record: AuditRecord
    new: Decision

    @property
    def old(self) -> Decision:
        return self.record.decision


@dataclass
class ReplayReport:
    policy: PolicyRef
    total: int = 0
    replayed: int = 0
    skipped: int = 0
    unscanned: int = 0
    changes: list[ReplayChange] = field(default_factory=list)
    # (old effective action, new effective action) -> count, over replayed records.
    transitions: Counter = field(default_factory=Counter)
    decisions: list[Decision] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return len(self.changes)


def read_records(path: Path | str) -> Iterator[AuditRecord]:
    """AuditRecords from a JSONL file; a bad line is a ``BadInput`` naming ``file:line``."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8")
    except OSError as error:
        raise BadInput(f"cannot read {path}: {error.strerror or error}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield AuditRecord.model_validate_json(line)
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise BadInput(f"{path}:{number}: not an audit record: {where}: {first['msg']}") from None


def changed(old: Decision, new: Decision) -> bool:
    return old.action is not new.action or old.effective_action is not new.effective_action


def replay(records: Iterable[AuditRecord], policy: Policy, *, keep_decisions: bool = False) -> ReplayReport:
    report = ReplayReport(policy=policy.ref)
    for record in records:
        report.total += 1
        direction = REPLAY_DIRECTIONS.get(record.direction)
        if direction is None:
            report.skipped += 1
            continue
        new = decide(policy, direction, record.results)
        report.replayed += 1
        if keep_decisions:
            report.decisions.append(new)
        if _unscanned(policy, direction, record):
            report.unscanned += 1
        report.transitions[(record.decision.effective_action, new.effective_action)] += 1
        if changed(record.decision, new):
            report.changes.append(ReplayChange(record=record, new=new))
    return report


def _unscanned(policy: Policy, direction: Direction, record: AuditRecord) -> bool:
    results = record.results
    return (policy.guards.llama_guard.applies(direction) and results.llama_guard is None
            and "llama_guard" not in results.errors and "llama_guard" not in results.timeouts)


def summary_line(report: ReplayReport) -> str:
    blocked_now = sum(n for (old, new), n in report.transitions.items()
                      if new is Action.BLOCK and old is not Action.BLOCK)
    unblocked = sum(n for (old, new), n in report.transitions.items()
                    if old is Action.BLOCK and new is not Action.BLOCK)
    return (f"{report.replayed} decisions replayed under {report.policy.id} v{report.policy.version} "
            f"({report.policy.hash[:12]}): {report.changed} change, {blocked_now} newly blocked, "
            f"{unblocked} no longer blocked; {report.skipped} skipped, {report.unscanned} without a "
            f"Llama Guard result")
