#!/usr/bin/env bash
# Install what the tests need into the active Python environment, then run every check
# CI runs: the editor bundle is reproducible, lint, strict typing, and the whole test
# suite (Python, Node interop, the editor in Chromium). Needs Node.js with npm, and
# Debian's chromium at /usr/bin/chromium (never downloaded by a tool).
set -euo pipefail
cd "$(dirname "$0")/.."
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1  # belt and braces: never fetch a browser

python -m pip install --quiet --disable-pip-version-check -e '.[test,cluster]'
npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error
# Third-party editors (Lexical, Quill, CodeMirror) for the restore tests, built into
# tests/editors/dist/ (not committed: the tests build what the lockfile pins).
npm ci --prefix tests/editors --no-audit --no-fund --loglevel=error
npm run --silent --prefix tests/editors build
# The committed editor bundle must be what the sources and the lockfile build.
npm ci --prefix frontend --no-audit --no-fund --loglevel=error
npm run --silent --prefix frontend check

ruff check collab tests scripts
ruff format --check collab tests scripts
mypy --strict collab
python -m pytest "$@"
