"""Run ``mqttkit pub|sub|rr|bench`` and mosquitto_pub / mosquitto_sub / mosquitto_rr side by side.

Mosquitto's tools (Debian package ``mosquitto-clients``, installed by scripts/setup.sh) are the
reference: a test that needs them and cannot find them fails with the install command, it never
skips. Every run is bounded by a timeout; background runs are waited for through the broker's
log (the subscription line Mosquitto writes), not by sleeping.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from mqttkit.testing import MosquittoBroker

__all__ = [
    "CLIENTS_HINT",
    "TIMEOUT",
    "Result",
    "background",
    "both",
    "hp",
    "mosquitto_tool",
    "mqttkit",
    "real",
    "wait_subscribed",
]

#: How to get Mosquitto's command-line tools, quoted when one is missing.
CLIENTS_HINT = "install it with `apt-get update && apt-get install -y mosquitto-clients`"

#: Seconds any single command may take.
TIMEOUT = 20.0

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Result:
    """What a command did: exit status, stdout and stderr bytes."""

    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def first_error_line(self) -> bytes:
        """The first line of stderr (Mosquitto's wording, in both tools)."""
        return self.stderr.split(b"\n", 1)[0]


def mosquitto_tool(name: str) -> str:
    """The path of ``mosquitto_pub`` / ``mosquitto_sub`` / ``mosquitto_rr``; fails the test with
    the install command if it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: {CLIENTS_HINT}", pytrace=False)
    return path


def _env() -> dict[str, str]:
    # The mqttkit of this tree (src/) whatever is installed; Mosquitto's tools read a config
    # file from $XDG_CONFIG_HOME or ~/.config: point both at an empty place.
    src = str(ROOT / "src")
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": src + (os.pathsep + path if path else ""),
        "XDG_CONFIG_HOME": str(ROOT / "tests" / "cli" / "no-config"),
    }


def _run(command: Sequence[str], stdin: bytes, timeout: float) -> Result:
    done = subprocess.run(
        list(command),
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
        env=_env(),
    )
    return Result(done.returncode, done.stdout, done.stderr)


def mqttkit(*args: str, stdin: bytes = b"", timeout: float = TIMEOUT) -> Result:
    """Run ``python -m mqttkit ARGS``."""
    return _run([sys.executable, "-m", "mqttkit", *args], stdin, timeout)


def real(tool: str, *args: str, stdin: bytes = b"", timeout: float = TIMEOUT) -> Result:
    """Run ``mosquitto_<tool> ARGS``."""
    return _run([mosquitto_tool(f"mosquitto_{tool}"), *args], stdin, timeout)


def both(
    tool: str, *args: str, stdin: bytes = b"", timeout: float = TIMEOUT
) -> tuple[Result, Result]:
    """``(mosquitto_<tool> ARGS, mqttkit <tool> ARGS)``, one after the other."""
    return real(tool, *args, stdin=stdin, timeout=timeout), mqttkit(
        tool, *args, stdin=stdin, timeout=timeout
    )


def hp(broker: MosquittoBroker) -> list[str]:
    """``-h 127.0.0.1 -p PORT`` for ``broker``."""
    return ["-h", broker.host, "-p", str(broker.port)]


def wait_subscribed(
    broker: MosquittoBroker, client_id: str, topic: str, timeout: float = TIMEOUT, times: int = 1
) -> None:
    """Wait until the broker has logged ``client_id``'s subscription to ``topic`` ``times``
    times (Mosquitto logs ``<time>: <client id> <qos> <filter>`` per subscription)."""
    line = re.compile(rf"^\d+: {re.escape(client_id)} \d+ {re.escape(topic)}$", re.MULTILINE)
    deadline = time.monotonic() + timeout
    delay = 0.005
    for _ in range(100_000):  # bounded: at most `timeout` seconds
        if len(line.findall(broker.log_text())) >= times:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(delay)  # polling the log file, not waiting for the event itself
        delay = min(delay * 2, 0.05)
    raise AssertionError(
        f"{client_id} did not subscribe to {topic} within {timeout} s:\n{broker.log_text()}"
    )


class Background:
    """A command running in the background; :meth:`finish` waits for it (bounded)."""

    def __init__(self, command: Sequence[str], stdin: bytes | None) -> None:
        self.proc = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(),
        )
        self._stdin = stdin
        self._head = b""  # what read_line() took from stdout; finish() puts it back in front

    def read_line(self, timeout: float = TIMEOUT) -> bytes:
        """The next line of its stdout (its first if nothing was read), waiting at most
        ``timeout`` seconds; the test fails if none came."""
        stdout = self.proc.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise AssertionError(f"{self.proc.args} printed no line within {timeout} s")
                byte = os.read(stdout.fileno(), 1)  # one byte: nothing read past the line
                if not byte:
                    raise AssertionError(f"{self.proc.args} ended before a whole line")
                line += byte
        self._head += line
        return line

    def finish(self, timeout: float = TIMEOUT) -> Result:
        """Wait for the end (killing it after ``timeout`` s, which fails the test)."""
        try:
            out, err = self.proc.communicate(self._stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(
                f"{self.proc.args} did not end within {timeout} s; stdout "
                f"{(self._head + out)[-500:]!r}, stderr {err[-500:]!r}"
            ) from None
        return Result(self.proc.returncode, self._head + out, err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@contextmanager
def background(
    tool: str, *args: str, ours: bool = True, stdin: bytes | None = None
) -> Iterator[Background]:
    """Run ``mqttkit <tool> ARGS`` (or with ``ours=False`` ``mosquitto_<tool> ARGS``) in the
    background; killed at the end of the block if still running."""
    if ours:
        command = [sys.executable, "-m", "mqttkit", tool, *args]
    else:
        command = [mosquitto_tool(f"mosquitto_{tool}"), *args]
    run = Background(command, stdin)
    try:
        yield run
    finally:
        run.kill()
