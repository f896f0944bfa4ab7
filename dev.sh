#!/usr/bin/env bash
# Set up a virtual environment (CPU torch from the local wheel first, then the project) and run:
#   ./dev.sh demo   the whole path on one machine: demo models, in-process checks, SQLite audit
#   ./dev.sh test   the test suite
#   ./dev.sh bench  the benchmarks (minutes)
set -euo pipefail
cd "$(dirname "$0")"
VENV=${GUARD_VENV:-.venv}
PY=${PYTHON:-python3}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
  local stamp="$VENV/.guard-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    local log="$VENV/install.log"
    echo "guard: installing into $VENV (log: $log)" >&2
    {
      python -m pip install --upgrade pip &&
      # The CPU build of torch lies on disk; installing it first keeps pip from pulling a CUDA build.
      python -m pip install "torch==2.13.0" &&
      python -m pip install -e '.[dev]'
    } >"$log" 2>&1 || { tail -n 40 "$log" >&2; echo "guard: install failed, see $log" >&2; exit 1; }
    touch "$stamp"
  fi
}

cmd=${1:-demo}
shift || true
setup
case "$cmd" in
  demo) exec guard demo "$@" ;;
  test) exec python -m pytest "$@" ;;
  bench) exec python -m bench "$@" ;;
  *) echo "usage: ./dev.sh demo|test|bench [args]" >&2; exit 2 ;;
esac
