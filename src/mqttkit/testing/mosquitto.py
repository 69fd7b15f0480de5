"""A throw-away Mosquitto broker: :class:`MosquittoBroker`, its TLS files and its errors.

This module owns writing one Mosquitto's configuration (listeners, authentication, TLS,
WebSocket, Unix socket, persistence, limits, logging) into its private directory, the password
file, and knowing when the broker is ready (its "running" line, every port accepting). The
process life cycle is :class:`~mqttkit.testing._process._ServerProcess`'s. It imports nothing
of mqttkit but its own package.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, NoReturn

from ._process import (
    _LIVE,
    LOOPBACK,
    _find_binary,
    _port_accepts,
    _PortInUseError,
    _ServerProcess,
)

#: How to get Mosquitto, quoted by every "not found" error.
INSTALL_HINT: Final = "install it with `apt-get update && apt-get install -y mosquitto`"

#: Log types written by default: everything but the per-packet ``debug`` lines.
DEFAULT_LOG_TYPES: Final = (
    "error",
    "warning",
    "notice",
    "information",
    "subscribe",
    "unsubscribe",
)

#: The line Mosquitto logs once every listener is open.
_RUNNING: Final = re.compile(r"mosquitto version \S+ running")


class MosquittoError(RuntimeError):
    """Mosquitto could not be started (or restarted); the message carries its log."""


class MosquittoNotFoundError(MosquittoError):
    """The ``mosquitto`` (or ``mosquitto_passwd``) binary is not installed."""


@dataclass(frozen=True)
class TLSFiles:
    """The files of a TLS listener (PEM), made for example with ``trustme``."""

    cafile: str | os.PathLike[str]
    """CA certificate(s) used to verify client certificates."""
    certfile: str | os.PathLike[str]
    """The server certificate chain; it should name ``127.0.0.1`` (and ``localhost``)."""
    keyfile: str | os.PathLike[str]
    """The server's private key."""
    require_certificate: bool = False
    """Ask clients for a certificate signed by ``cafile`` and refuse those without one."""


def find_mosquitto() -> str:
    """Return the path of the ``mosquitto`` binary.

    Raises:
        MosquittoNotFoundError: it is neither on ``$PATH`` nor in ``/usr/sbin``.
    """
    path = _find_binary("mosquitto")
    if path is None:
        raise MosquittoNotFoundError(f"mosquitto not found: {INSTALL_HINT}")
    return path


class MosquittoBroker(_ServerProcess):
    """A real Mosquitto broker on free loopback ports, with its own generated configuration.

    The configuration file, log, password file, persistence database and Unix socket live in a
    private temporary directory that :meth:`close` (or leaving the ``with`` block) removes.
    Ports are chosen on the first :meth:`start` and kept by :meth:`restart`, so clients that
    reconnect find the broker again.

    Args:
        users: user name -> password; creates a password file with ``mosquitto_passwd`` and turns
            anonymous access off (unless ``allow_anonymous`` says otherwise).
        allow_anonymous: override the default (True without ``users``, False with them).
        persistence: keep sessions and retained messages in a database in the temporary
            directory, so that they survive :meth:`restart`.
        max_inflight_messages: Mosquitto's per-client window of outgoing QoS 1/2 messages
            (0: no limit). Mosquitto's own default is 20.
        max_queued_messages: per-client queue above the in-flight window (0: no limit).
        tls: adds a TLS listener (``tls_port``); with ``websockets`` also a secure WebSocket one.
        websockets: adds a WebSocket listener (``ws_port``).
        unix_socket: adds a listener on a Unix socket (``unix_path``).
        log_types: Mosquitto ``log_type`` values; add ``"debug"`` (or use ``("all",)``) to log
            every packet. ``"information"`` is always added: :meth:`start` waits for the
            line Mosquitto logs at that level once it is ready.
        extra_config: appended verbatim after the generated configuration (it follows the
            listeners, so per-listener options there apply to the last listener).
        executable: the mosquitto binary; found on ``$PATH`` or in ``/usr/sbin`` by default.
        startup_timeout: seconds to wait for the broker to accept connections.
    """

    _what = "mosquitto"
    _dir_prefix = "mqttkit-mosquitto-"
    _error = MosquittoError

    def __init__(
        self,
        *,
        users: dict[str, str] | None = None,
        allow_anonymous: bool | None = None,
        persistence: bool = False,
        max_inflight_messages: int = 20,
        max_queued_messages: int = 1_000_000,
        tls: TLSFiles | None = None,
        websockets: bool = False,
        unix_socket: bool = False,
        log_types: Sequence[str] = DEFAULT_LOG_TYPES,
        extra_config: str = "",
        executable: str | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        if users is not None:
            for name in users:
                if not name or ":" in name:
                    raise ValueError(f"invalid Mosquitto user name {name!r}")
        self.users = dict(users) if users is not None else None
        self.allow_anonymous = users is None if allow_anonymous is None else allow_anonymous
        self.persistence = persistence
        self.max_inflight_messages = max_inflight_messages
        self.max_queued_messages = max_queued_messages
        self.tls = tls
        self.websockets = websockets
        self.unix_socket = unix_socket
        self.log_types = tuple(log_types)
        self.extra_config = extra_config
        self.executable = executable
        self.startup_timeout = startup_timeout

        self._dir: Path | None = None
        self._ports: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self._final_log = ""

    # -- properties ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address every listener is bound to: ``127.0.0.1``."""
        return LOOPBACK

    def _port(self, name: str, what: str) -> int:
        try:
            return self._ports[name]
        except KeyError:
            if not self._ports:
                raise RuntimeError("the broker has not been started yet") from None
            raise RuntimeError(f"this broker has no {what} listener") from None

    @property
    def port(self) -> int:
        """The plain MQTT (TCP) port."""
        return self._port("mqtt", "MQTT")

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<port>``."""
        return f"mqtt://{LOOPBACK}:{self.port}"

    @property
    def tls_port(self) -> int:
        """The MQTT over TLS port (needs ``tls``)."""
        return self._port("tls", "TLS")

    @property
    def tls_url(self) -> str:
        """``mqtts://127.0.0.1:<tls_port>``."""
        return f"mqtts://{LOOPBACK}:{self.tls_port}"

    @property
    def ws_port(self) -> int:
        """The MQTT over WebSocket port (needs ``websockets``)."""
        return self._port("ws", "WebSocket")

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:<ws_port>`` (Mosquitto accepts any path; clients use ``/mqtt``)."""
        return f"ws://{LOOPBACK}:{self.ws_port}"

    @property
    def wss_port(self) -> int:
        """The MQTT over secure WebSocket port (needs both ``tls`` and ``websockets``)."""
        return self._port("wss", "secure WebSocket")

    @property
    def wss_url(self) -> str:
        """``wss://127.0.0.1:<wss_port>``."""
        return f"wss://{LOOPBACK}:{self.wss_port}"

    @property
    def unix_path(self) -> str:
        """The path of the Unix socket listener (needs ``unix_socket``)."""
        if not self.unix_socket:
            raise RuntimeError("this broker has no Unix socket listener")
        return str(self._workdir() / "mosquitto.sock")

    @property
    def directory(self) -> Path:
        """The private directory holding the configuration, log and database."""
        return self._workdir()

    @property
    def config_path(self) -> Path:
        """The generated ``mosquitto.conf``."""
        return self._workdir() / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        """Mosquitto's log file."""
        return self._workdir() / "mosquitto.log"

    @property
    def pid(self) -> int | None:
        """The process id while the broker runs, else None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        """Return Mosquitto's log so far (its stderr too), also after :meth:`close`."""
        if self._dir is None:
            return self._final_log
        parts = []
        for path in (self._dir / "mosquitto.log", self._dir / "mosquitto.stderr"):
            with contextlib.suppress(FileNotFoundError):
                parts.append(path.read_text(encoding="utf-8", errors="replace"))
        return "".join(parts)

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> MosquittoBroker:
        """Start the broker and wait until every listener accepts TCP connections.

        Returns:
            self, so that ``broker = MosquittoBroker().start()`` reads well.

        Raises:
            MosquittoNotFoundError: the binary (or ``mosquitto_passwd``) is missing.
            MosquittoError: Mosquitto exited or did not listen in time; the message has its log.
        """
        if self.running:
            raise RuntimeError("the broker is already running")
        executable = self.executable or find_mosquitto()
        if not os.access(executable, os.X_OK):
            raise MosquittoNotFoundError(f"mosquitto not found at {executable}: {INSTALL_HINT}")
        workdir = self._workdir(create=True)
        if self.users is not None and not (workdir / "passwd").exists():
            self._write_password_file(workdir / "passwd")
        self._start_on_ports(executable)
        return self

    def __repr__(self) -> str:
        state = f"port={self._ports.get('mqtt')}" if self._ports else "not started"
        return f"<MosquittoBroker {state} running={self.running}>"

    # -- internals -------------------------------------------------------------------------------

    def _choose_ports(self) -> dict[str, int]:
        names = ["mqtt"]
        if self.tls is not None:
            names.append("tls")
        if self.websockets:
            names.append("ws")
            if self.tls is not None:
                names.append("wss")
        # Hold every socket until all are chosen, so the ports differ from each other.
        socks = []
        try:
            for _ in names:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind((LOOPBACK, 0))
            return {name: s.getsockname()[1] for name, s in zip(names, socks, strict=True)}
        finally:
            for sock in socks:
                sock.close()

    def _write_password_file(self, path: Path) -> None:
        assert self.users is not None
        tool = _find_binary("mosquitto_passwd")
        if tool is None:
            raise MosquittoNotFoundError(f"mosquitto_passwd not found: {INSTALL_HINT}")
        if not self.users:
            path.write_text("", encoding="utf-8")
        for index, (name, password) in enumerate(self.users.items()):
            # -c creates the file (first user), -b takes the password from the command line.
            args = [tool, "-c", "-b"] if index == 0 else [tool, "-b"]
            result = subprocess.run(
                [*args, str(path), name, password],
                capture_output=True,
                timeout=30,
                check=False,
            )
            if result.returncode != 0:
                output = (result.stdout + result.stderr).decode(errors="replace")
                # Never echo the password itself.
                raise MosquittoError(f"mosquitto_passwd failed for user {name!r}: {output}")

    def _config_text(self) -> str:
        workdir = self._workdir()
        lines = [
            "# Generated by mqttkit.testing for one test broker.",
            f"log_dest file {workdir / 'mosquitto.log'}",
            *(f"log_type {t}" for t in self._effective_log_types()),
            "log_timestamp true",
            "connection_messages true",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            f"max_inflight_messages {self.max_inflight_messages}",
            f"max_queued_messages {self.max_queued_messages}",
            "max_queued_bytes 0",
            "set_tcp_nodelay true",
        ]
        if os.geteuid() == 0:
            # As root Mosquitto switches to the "mosquitto" user, which cannot read or write
            # our private directory (password file, database, Unix socket, caller's keys).
            lines.append("user root")
        if self.users is not None:
            lines.append(f"password_file {workdir / 'passwd'}")
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {workdir}/",
                "persistence_file mosquitto.db",
                "autosave_interval 0",
            ]
        else:
            lines.append("persistence false")

        lines += self._listener_lines("mqtt", "mqtt")
        if self.tls is not None:
            lines += self._listener_lines("tls", "mqtt") + self._tls_lines(self.tls)
        if self.websockets:
            lines += self._listener_lines("ws", "websockets")
            if self.tls is not None:
                lines += self._listener_lines("wss", "websockets") + self._tls_lines(self.tls)
        if self.unix_socket:
            lines += ["", f"listener 0 {self.unix_path}", "protocol mqtt"]
        if self.extra_config:
            lines += ["", "# extra_config", self.extra_config]
        return "\n".join(lines) + "\n"

    def _effective_log_types(self) -> list[str]:
        types = list(self.log_types)
        if "all" not in types and "information" not in types:
            # start() waits for the "running" line, logged at this level.
            types.append("information")
        return types

    def _listener_lines(self, name: str, protocol: str) -> list[str]:
        # socket_domain ipv4: without it Mosquitto 2.0's WebSocket listener ignores the bind
        # address and listens on every interface (IPv6 included).
        return [
            "",
            f"listener {self._ports[name]} {LOOPBACK}",
            "socket_domain ipv4",
            f"protocol {protocol}",
        ]

    @staticmethod
    def _tls_lines(tls: TLSFiles) -> list[str]:
        lines = [
            f"cafile {os.fspath(tls.cafile)}",
            f"certfile {os.fspath(tls.certfile)}",
            f"keyfile {os.fspath(tls.keyfile)}",
        ]
        if tls.require_certificate:
            lines.append("require_certificate true")
        return lines

    def _launch(self, executable: str) -> None:
        workdir = self._workdir()
        for stale in ("mosquitto.log", "mosquitto.stderr"):
            # Keep earlier runs' logs: a restart appends, and the log tells the whole story.
            (workdir / stale).touch()
        if self.unix_socket:
            # A socket file left by a killed broker makes the bind fail.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.unix_path)
        offsets = (
            (workdir / "mosquitto.log").stat().st_size,
            (workdir / "mosquitto.stderr").stat().st_size,
        )
        self._output = (workdir / "mosquitto.stderr").open("ab")
        proc = subprocess.Popen(
            [executable, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=self._output,
            cwd=workdir,
            # Its own session: a Ctrl-C in the terminal reaches pytest, which then stops us.
            start_new_session=True,
        )
        self._proc = proc
        _LIVE.add(self)
        ports = list(self._ports.values())
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.005
        # Bounded poll: at most startup_timeout seconds, checking every few milliseconds.
        # Ready means: Mosquitto logged "running" (it does once every listener is open; a port
        # that merely accepts could belong to another process) and every port accepts.
        for _ in range(100_000):
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                pass
            else:
                self._proc = None
                self._close_output()
                _LIVE.discard(self)
                new_log = self._log_since(offsets)
                if "Address already in use" in new_log:
                    raise _PortInUseError
                self._raise_startup_error(
                    f"mosquitto exited with status {proc.returncode} during startup", new_log
                )
            if (
                _RUNNING.search(self._log_since(offsets))
                and all(_port_accepts(LOOPBACK, port) for port in ports)
                and (not self.unix_socket or os.path.exists(self.unix_path))
            ):
                return
            if time.monotonic() > deadline:
                break
            delay = min(delay * 2, 0.05)
        new_log = self._log_since(offsets)
        self.kill()
        self._raise_startup_error(
            f"mosquitto did not accept connections within {self.startup_timeout} s", new_log
        )

    def _log_since(self, offsets: tuple[int, int]) -> str:
        """What this run wrote to the log and to stderr (earlier runs' lines excluded)."""
        workdir = self._workdir()
        parts = []
        for name, offset in zip(("mosquitto.log", "mosquitto.stderr"), offsets, strict=True):
            with contextlib.suppress(FileNotFoundError), (workdir / name).open("rb") as f:
                f.seek(offset)
                parts.append(f.read().decode(errors="replace"))
        return "".join(parts)

    def _raise_startup_error(self, message: str, log: str) -> NoReturn:
        hint = ""
        if self.websockets and "websockets support not available" in log.lower():
            hint = (
                "\nThis Mosquitto build has no WebSocket support: use a build with "
                "libwebsockets (Debian/Ubuntu's package has it) or drop websockets=True."
            )
        config = self.config_path.read_text(encoding="utf-8")
        raise MosquittoError(
            f"{message}{hint}\n--- mosquitto output ---\n{log.strip()}\n"
            f"--- {self.config_path} ---\n{config}"
        )
