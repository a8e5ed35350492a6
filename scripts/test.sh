#!/usr/bin/env bash
# Install what the tests need into the active Python environment, then run every check
# CI runs: lint, strict typing, and the whole test suite (Python, Node interop).
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check -e '.[test]'
npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error

ruff check collab tests scripts
ruff format --check collab tests scripts
mypy --strict collab
python -m pytest "$@"
