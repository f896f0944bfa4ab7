"""What a fuzz or fault scenario tried and what held: counted outcomes plus the failures seen."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Tally:
    """Outcome counts of one scenario (``ok``, ``rejected``...) and the failures (kept, capped)."""

    name: str
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    max_failures: int = 20

    def add(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] += n

    def fail(self, detail: str) -> None:
        self.counts["failed"] += 1
        if len(self.failures) < self.max_failures:
            self.failures.append(detail)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def held(self) -> bool:
        return self.counts["failed"] == 0

    def summary(self) -> str:
        parts = [f"{k} {v}" for k, v in sorted(self.counts.items()) if k != "failed"]
        failed = self.counts["failed"]
        return ", ".join(parts) + (f"; FAILED {failed}" if failed else "")

    def assert_held(self) -> None:
        if not self.held:
            shown = "\n".join(self.failures[:5])
            raise AssertionError(f"{self.name}: {self.counts['failed']} failure(s) of {self.total}:\n{shown}")
