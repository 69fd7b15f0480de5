#!/usr/bin/env bash
# The whole test suite: installs what it needs, then lint, types, the docs check and pytest
# (which starts its own Mosquitto brokers on free loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
python -m ruff check src tests examples tools
python -m ruff format --check src tests examples tools
python -m mypy src
python -m pytest "$@"
