"""What every test server shares: free loopback ports, finding a binary, the process.

This module owns :class:`_ServerProcess` (a private temporary directory, a process started on
free ports and chosen again when one was taken, stopped by its PID, the context manager), the
port helpers (:func:`free_port`), the binary lookup (``$PATH``, then where Debian/Ubuntu put
them) and the ``atexit`` hook that kills brokers an interrupted run left behind. It knows no
broker in particular and imports nothing of mqttkit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import weakref
from pathlib import Path
from typing import IO, Final, Self

#: The loopback address every broker listens on.
LOOPBACK: Final = "127.0.0.1"

#: Where Debian/Ubuntu put the binaries, tried after ``$PATH`` (sbin is often not on it).
_FALLBACK_PATHS: Final = {
    "mosquitto": ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"),
    "mosquitto_passwd": ("/usr/bin/mosquitto_passwd", "/usr/local/bin/mosquitto_passwd"),
    "nats-server": (
        "/usr/sbin/nats-server",
        "/usr/local/sbin/nats-server",
        "/usr/local/bin/nats-server",
    ),
    # Debian/Ubuntu's script first: /usr/sbin/rabbitmq-server only wraps it (see
    # find_rabbitmq_server).
    "rabbitmq-server": (
        "/usr/lib/rabbitmq/bin/rabbitmq-server",
        "/usr/local/sbin/rabbitmq-server",
        "/usr/sbin/rabbitmq-server",
    ),
    "epmd": ("/usr/bin/epmd", "/usr/lib/erlang/bin/epmd", "/usr/local/bin/epmd"),
}

#: How many times a start retries with fresh ports when one was taken in between.
_PORT_ATTEMPTS: Final = 5


def _find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in _FALLBACK_PATHS.get(name, ()):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that was free on ``host`` a moment ago (bind to port 0, then release).

    Another process may take it before the caller binds it: callers retry on ``EADDRINUSE``.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# Every broker still running, so that an interrupted test run does not leave orphans behind.
_LIVE: weakref.WeakSet[_ServerProcess] = weakref.WeakSet()


@atexit.register
def _kill_orphans() -> None:  # pragma: no cover - only matters when a run is interrupted
    for broker in list(_LIVE):
        with contextlib.suppress(Exception):
            broker.kill()


class _ServerProcess:
    """What the test servers share: a private temporary directory, a process started on free
    loopback ports (chosen again when one was taken in between), stopped by its PID, and the
    context manager. Each server writes its configuration and launches its process."""

    _what: str  # the server, in messages
    _dir_prefix: str
    _error: type[RuntimeError]

    _dir: Path | None
    _ports: dict[str, int]
    _proc: subprocess.Popen[bytes] | None
    _output: IO[bytes] | None
    _final_log: str

    # -- what each server provides ---------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        raise NotImplementedError

    def start(self) -> Self:
        raise NotImplementedError

    def log_text(self) -> str:
        raise NotImplementedError

    def _choose_ports(self) -> dict[str, int]:
        raise NotImplementedError

    def _config_text(self) -> str:
        raise NotImplementedError

    def _launch(self, executable: str) -> None:
        raise NotImplementedError

    # -- life cycle ------------------------------------------------------------------------------

    def _start_on_ports(self, executable: str) -> None:
        first = not self._ports
        attempts = _PORT_ATTEMPTS if first else 1  # a restart keeps its ports
        for attempt in range(attempts):
            if first:
                self._ports = self._choose_ports()
            self.config_path.write_text(self._config_text(), encoding="utf-8")
            try:
                self._launch(executable)
                return
            except _PortInUseError:
                if attempt + 1 == attempts:
                    raise self._error(
                        f"{self._what} could not bind its ports after {attempts} attempts:\n"
                        + self.log_text()
                    ) from None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server by its PID: SIGTERM, wait up to ``timeout`` seconds, then SIGKILL.

        The temporary directory stays (so :meth:`restart` and :meth:`log_text` work);
        :meth:`close` removes it. Does nothing when the server is not running.
        """
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=timeout)
            self._proc = None
        self._close_output()
        _LIVE.discard(self)

    def kill(self) -> None:
        """Kill the server with SIGKILL: a crash (Mosquitto saves no persistence and does no
        will cleanup; NATS's JetStream recovers its store on restart)."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            self._proc = None
        self._close_output()
        _LIVE.discard(self)

    def restart(self, timeout: float = 5.0) -> None:
        """Stop (gracefully) and start again on the same ports; what the server persists
        (Mosquitto's database, NATS's JetStream store) survives.

        Raises:
            MosquittoError, NatsServerError: it did not come back (a port taken meanwhile...).
        """
        self.stop(timeout)
        self.start()

    def close(self) -> None:
        """Stop the server and remove its temporary directory (the log is kept in memory)."""
        self.stop()
        if self._dir is not None:
            self._final_log = self.log_text()
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _workdir(self, create: bool = False) -> Path:
        if self._dir is None:
            if not create:
                raise RuntimeError(f"the {self._what} has not been started yet (or was closed)")
            self._dir = Path(tempfile.mkdtemp(prefix=self._dir_prefix))
        return self._dir

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None


class _PortInUseError(Exception):
    """Another process took one of the chosen ports between choosing and binding."""


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free on the loopback a moment ago."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()
