"""A real SOCKS4/SOCKS5/HTTP CONNECT proxy server for the proxy tests: pproxy, as a subprocess.

This module owns starting and stopping pproxy (a test-only dependency) on a free loopback port:
with or without a user name and password, and stopped by its PID. Every wait is bounded; a
proxy that does not come up fails with its output.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mqttkit.testing import free_port

__all__ = ["ProxyServer"]

_START_TIMEOUT = 15.0
_PORT_ATTEMPTS = 3


class ProxyServer:
    """pproxy listening on ``127.0.0.1:port`` for the given protocols.

    Args:
        protocols: what it speaks on its one port, e.g. ``("socks5", "socks4", "http")``.
        username, password: required from every client when given (``--auth 0``: pproxy
            otherwise lets an address that authenticated once in without credentials).
    """

    def __init__(
        self,
        protocols: tuple[str, ...] = ("socks5", "socks4", "http"),
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.protocols = protocols
        self.username = username
        self.password = password
        self.host = "127.0.0.1"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.mkstemp(prefix="mqttkit-pproxy-", suffix=".log")[1])

    def url(self, scheme: str, *, username: str | None = None, password: str | None = None) -> str:
        """The proxy as a URL for the ``proxy`` option, with these credentials (if any)."""
        auth = ""
        if username is not None:
            auth = username + (f":{password}" if password is not None else "") + "@"
        return f"{scheme}://{auth}{self.host}:{self.port}"

    def start(self) -> ProxyServer:
        """Start it on a free port and wait until it accepts connections.

        Raises:
            RuntimeError: it did not come up (its output is in the message).
        """
        for _ in range(_PORT_ATTEMPTS):
            self.port = free_port()
            if self._launch():
                return self
        raise RuntimeError(f"pproxy did not start:\n{self.log_text()}")

    def _launch(self) -> bool:
        listen = f"{'+'.join(self.protocols)}://{self.host}:{self.port}"
        if self.username is not None:
            listen += f"#{self.username}:{self.password or ''}"
        with self._log.open("wb") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-u", "-m", "pproxy", "-l", listen, "--auth", "0", "-v"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False  # most likely the port was taken meanwhile: another one
            address = (self.host, self.port)
            with contextlib.suppress(OSError), socket.create_connection(address, 0.2):
                return True
            time.sleep(0.02)  # polling the port, bounded by the deadline
        self.stop()
        raise RuntimeError(f"pproxy did not accept connections in {_START_TIMEOUT} s")

    def stop(self) -> None:
        """Stop it by its PID (SIGTERM, then SIGKILL); the port stays for :meth:`start`."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def restart_on_same_port(self) -> None:
        """Start it again on the port it had (after :meth:`stop`).

        Raises:
            RuntimeError: it did not come back (the port was taken meanwhile).
        """
        if not self._launch():
            raise RuntimeError(f"pproxy did not start again:\n{self.log_text()}")

    def log_text(self) -> str:
        """What pproxy printed (``-v``: one line per tunnel, ``Unauthorized ...``)."""
        return self._log.read_text(errors="replace")

    def close(self) -> None:
        """Stop it and remove its log file."""
        self.stop()
        self._log.unlink(missing_ok=True)

    def __enter__(self) -> ProxyServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
