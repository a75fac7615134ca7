#!/usr/bin/env bash
# Install (scripts/setup.sh) and run the default test suite. Slow tests: add `-m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
