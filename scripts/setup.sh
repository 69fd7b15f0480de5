#!/usr/bin/env bash
# Installs what mqttkit's examples and tests need on a fresh Debian/Ubuntu machine:
# the Mosquitto broker, the NATS server and RabbitMQ (each only when missing; the tests start
# their own on free ports, never the system-wide service), Mosquitto's command-line tools
# (mosquitto_pub/sub/rr: the reference the CLI tests run side by side with `mqttkit pub|sub|rr`)
# and the package with its dev dependency group; for `dev` also Node.js and npm (when missing) and
# MQTT.js in bench/mqttjs (`npm ci`: the version its package-lock.json names), the benchmark's
# `mqttjs` peer.
set -euo pipefail
cd "$(dirname "$0")/.."

# have NAME: the binary is on $PATH or in /usr/sbin (often not on a user's $PATH).
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

# MQTTKIT_BROKERS: the packages to install when missing (scripts/hello.sh needs only
# mosquitto; the test suite needs them all).
packages="${MQTTKIT_BROKERS:-mosquitto mosquitto-clients nats-server rabbitmq-server}"
# The benchmark's MQTT.js peer (bench/mqttjs, `bench/run.py --clients mqttjs`) runs under Node.js.
if [ "${1:-dev}" = "dev" ]; then packages="$packages nodejs npm"; fi
missing=()
for package in $packages; do
  case "$package" in
    mosquitto-clients) binary=mosquitto_rr ;;  # the package's binaries have other names
    nodejs) binary=node ;;
    *) binary="$package" ;;
  esac
  have "$binary" || missing+=("$package")
done

if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  # Keep the packages from starting their system-wide services (they would take ports 1883,
  # 4222, 5672, 25672 and epmd's 4369): invoke-rc.d asks /usr/sbin/policy-rc.d, and exit
  # status 101 means "action forbidden" (Debian's documented mechanism, /usr/share/doc/init-system-helpers/README.policy-rc.d).
  created_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  remove_policy() {
    if [ -n "$created_policy" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
  }
  trap remove_policy EXIT
  $SUDO apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
  remove_policy
  created_policy=""
  trap - EXIT
fi

export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
# Dependency groups (PEP 735) need pip >= 25.1.
python -m pip install --quiet --upgrade "pip>=25.1"
python -m pip install --quiet -e . --group "${1:-dev}"

# MQTT.js for the benchmark, at the version bench/mqttjs/package-lock.json names (node_modules is
# not committed); again only when the lock file is newer than what npm last installed.
if [ "${1:-dev}" = "dev" ] && have node && have npm; then
  if [ ! -e bench/mqttjs/node_modules/.package-lock.json ] ||
    [ bench/mqttjs/package-lock.json -nt bench/mqttjs/node_modules/.package-lock.json ]; then
    (cd bench/mqttjs && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
