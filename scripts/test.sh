#!/usr/bin/env bash
# The whole test suite, as root on a fresh machine: installs what it needs, lints, type-checks, then
# runs unit tests and real-kernel integration tests (each inside a throwaway network sandbox).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

echo "== ruff"
.venv/bin/ruff check reconciler tests ansible_collections molecule bench
.venv/bin/ruff format --check reconciler tests ansible_collections molecule bench
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/pytest -q -p no:cacheprovider "$@"
