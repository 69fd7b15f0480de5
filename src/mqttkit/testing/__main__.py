"""``python -m mqttkit.testing run [--] COMMAND...``: a command against a throw-away broker.

It starts a private Mosquitto on a free loopback port, runs the command with ``MQTT_URL`` set,
and stops the broker; nothing else.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence

from .mosquitto import MosquittoBroker, MosquittoError


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mqttkit.testing run [--] COMMAND...``: start a private Mosquitto on a free
    loopback port, run COMMAND with ``MQTT_URL`` set to it, stop the broker, and exit with
    COMMAND's status."""
    parser = argparse.ArgumentParser(
        prog="python -m mqttkit.testing",
        description="Run a command against a throw-away Mosquitto broker (MQTT_URL is set).",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run COMMAND with MQTT_URL pointing at a fresh broker")
    run.add_argument("command", nargs=argparse.REMAINDER, help="the command to run")
    args = parser.parse_args(argv)
    command = [c for c in args.command if c != "--"] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("run needs a command, e.g. run -- python examples/hello.py")
    try:
        broker = MosquittoBroker().start()
    except MosquittoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with broker:
        env = {**os.environ, "MQTT_URL": broker.url}
        return subprocess.call(command, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
