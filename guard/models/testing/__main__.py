"""Build one demo model: ``python -m guard.models.testing NAME OUT_DIR`` (the child process that
``ensure_demo_models`` starts); prints the CPU seconds it used."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from guard.models.testing.cache import BUILDERS, quiet_single_thread


def main(argv: list[str]) -> None:
    name, out_dir = argv
    with quiet_single_thread():
        BUILDERS[name](Path(out_dir))
    print(f"cpu_seconds {time.process_time():.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
