#!/usr/bin/env bash
# Installs what mqttkit's examples and tests need on a fresh Debian/Ubuntu machine:
# the Mosquitto broker (only when missing) and the package with its dev dependency group.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  $SUDO apt-get install -y mosquitto
fi

export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
# Dependency groups (PEP 735) need pip >= 25.1.
python -m pip install --quiet --upgrade "pip>=25.1"
python -m pip install --quiet -e . --group "${1:-dev}"
