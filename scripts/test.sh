#!/usr/bin/env bash
# The whole test suite: installs what it needs, then lint, types, pytest (which starts its own
# Mosquitto, NATS and RabbitMQ brokers on free loopback ports), the core's tests on the compiled
# build (scripts/compiled.sh) and a small-N run of the benchmark, which checks that every
# workload completes with every message (it asserts no timing).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
python -m ruff check src tests examples tools bench
python -m ruff format --check src tests examples tools bench
python -m mypy src
python -m pytest "$@"
# The optional compiled build (docs/performance.md): the core's tests again, on the mypyc wheel.
bash scripts/compiled.sh
python bench/run.py --quick \
    --clients mqttkit-sync,mqttkit-inline,mqttkit-aio,paho,gmqtt,raw,mqttjs \
    --out "${TMPDIR:-/tmp}/mqttkit-bench-quick.json"
python bench/run.py --render "${TMPDIR:-/tmp}/mqttkit-bench-quick.json" > /dev/null
