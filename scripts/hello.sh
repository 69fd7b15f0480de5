#!/usr/bin/env bash
# The main job: a real publish/subscribe round trip. Starts a private Mosquitto on a free
# loopback port (installing Mosquitto first if it is missing), runs examples/hello.py against
# it, which prints "Hello mqtt" and exits by itself, then stops the broker.
set -euo pipefail
cd "$(dirname "$0")/.."
MQTTKIT_BROKERS=mosquitto bash scripts/setup.sh test >/dev/null
python -m mqttkit.testing run -- python examples/hello.py
