#!/usr/bin/env bash
# Trofast developer entry point. Needs only Python 3.11+ (with venv) on a fresh machine.
#   ./run.sh demo   set up, generate the demo café chain and serve it on http://127.0.0.1:8000
#   ./run.sh test   set up, then lint, type-check and run every test on SQLite and PostgreSQL
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
VENV=.venv

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" || {
      echo "Could not create a virtual environment: on Debian run 'apt-get install python3-venv'." >&2
      exit 1
    }
  fi
  local stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
    rm -f "$VENV"/.installed-*
    touch "$stamp"
  fi
}

case "${1:-}" in
  demo)
    shift
    setup
    exec "$VENV/bin/trofast" demo "$@"
    ;;
  test)
    shift
    setup
    echo "== ruff"
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    echo "== mypy"
    "$VENV/bin/mypy"
    echo "== pytest (SQLite and PostgreSQL)"
    exec "$VENV/bin/pytest" -n 2 "$@"
    ;;
  *)
    echo "usage: ./run.sh demo [trofast demo options] | ./run.sh test [pytest options]" >&2
    exit 2
    ;;
esac
