"""``python -m bench NAME [options]``: run the benchmark module ``bench.NAME`` as a script (its own
``--help`` lists its options); without a name, list the benchmarks."""

from __future__ import annotations

import pkgutil
import runpy
import sys
from pathlib import Path

import bench


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(bench.__file__).parent)])
                  if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m bench NAME [options]   (python -m bench NAME --help for its options)")
        print("benchmarks: " + ", ".join(names))
        return 0
    name, rest = argv[0].replace("-", "_"), argv[1:]
    if name not in names:
        print(f"bench: unknown benchmark {argv[0]!r} (one of {', '.join(names)})", file=sys.stderr)
        return 2
    sys.argv = [f"bench.{name}", *rest]
    try:
        runpy.run_module(f"bench.{name}", run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
