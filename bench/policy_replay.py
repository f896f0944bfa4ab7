"""Bench: `guard policy replay` on generated audit records.

Baseline: reading and validating the JSONL records only (the floor any replay pays).
Project: the full replay (read, validate, re-decide under another policy, compare).
Prints both, the ratio, and decisions per second.

    python bench/policy_replay.py [--records 500] [--repeat 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from guard.policy import load_policy_dir
from guard.policy.replay import read_records, replay
from guard.policy.synthetic import synthetic_records

ROOT = Path(__file__).resolve().parents[1]


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    policies = load_policy_dir(ROOT / "policies")
    old, new = policies.get("default"), policies.get("strict")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.jsonl"
        records = synthetic_records(old, args.records, seed=1)
        path.write_text("".join(r.model_dump_json() + "\n" for r in records), encoding="utf-8")
        baseline = best_of(args.repeat, lambda: list(read_records(path)))
        project = best_of(args.repeat, lambda: replay(read_records(path), new))
        report = replay(read_records(path), new)
        size = path.stat().st_size
    print(f"records: {args.records} ({size} bytes), "
          f"{report.replayed} replayed, {report.changed} change")
    print(f"baseline (read+validate only): {baseline * 1000:8.1f} ms")
    print(f"project  (full replay):        {project * 1000:8.1f} ms")
    print(f"ratio project/baseline:        {project / baseline:8.2f}x")
    print(f"replay throughput:             {report.replayed / project:8.0f} decisions/s")


if __name__ == "__main__":
    main()
