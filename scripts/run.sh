#!/usr/bin/env bash
# The README's commands:
#   bash scripts/run.sh demo   set up .venv, build the reference models, classify the bundled photos
#   bash scripts/run.sh test   set up .venv and run the whole test suite (what CI runs)
#   bash scripts/run.sh quick  the fast loop: all but the corpus, container and slow tests
#   bash scripts/run.sh lint   ruff over the tree and mypy over edge/ (CI runs it before the tests)
# Set EDGEPORT_VENV to use another virtualenv folder.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${EDGEPORT_VENV:-.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
# torch==2.13.0 (in the 'torch' extra) is the CPU build; an open range would pull CUDA.
"$venv/bin/python" -m pip install --quiet -e '.[all]'

case "${1:-demo}" in
  demo)
    shift || true
    exec "$venv/bin/python" scripts/demo.py "$@"
    ;;
  test)
    shift || true
    exec "$venv/bin/python" -m pytest -ra "$@"
    ;;
  quick)
    shift || true
    exec "$venv/bin/python" -m pytest -ra -m "not corpus and not container and not slow" "$@"
    ;;
  lint)
    shift || true
    "$venv/bin/python" -m ruff check .
    exec "$venv/bin/python" -m mypy
    ;;
  *)
    echo "usage: bash scripts/run.sh demo|test|quick|lint [args...]" >&2
    exit 2
    ;;
esac
