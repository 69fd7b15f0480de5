"""Test helpers: throw-away brokers on free loopback ports, and pytest fixtures.

This module owns starting, restarting and stopping real Mosquitto brokers for tests and
benchmarks: it writes each broker's configuration (listeners, authentication, TLS, WebSocket,
persistence, limits, logging) into a private temporary directory, picks free ports on
127.0.0.1 (never 1883), waits until the broker accepts connections and reports its log when it
does not. :class:`NatsServer` does the same for a second, very different broker: a NATS server
with its MQTT gateway (MQTT 3.1.1 only, QoS 0/1, JetStream-backed sessions). It also registers
the fixtures ``mosquitto``, ``mosquitto_factory``, ``mosquitto_auth``, ``nats_server`` and
``nats_server_factory`` as a pytest plugin (entry point ``pytest11``).

It must import wherever pytest runs, with or without Mosquitto or NATS installed, and it must not
import the rest of mqttkit: a broken client must not break the tools that test it. pytest itself
is optional: without it the fixtures are simply not defined. A test that needs a broker and
cannot find it *fails* with the install command; it never skips.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, NoReturn, Self, TypeVar

__all__ = [
    "INSTALL_HINT",
    "NATS_INSTALL_HINT",
    "MosquittoBroker",
    "MosquittoError",
    "MosquittoNotFoundError",
    "NatsServer",
    "NatsServerError",
    "NatsServerNotFoundError",
    "TLSFiles",
    "find_mosquitto",
    "find_nats_server",
    "free_port",
]

#: How to get Mosquitto, quoted by every "not found" error.
INSTALL_HINT: Final = "install it with `apt-get update && apt-get install -y mosquitto`"

#: How to get the NATS server, quoted by every "not found" error about it.
NATS_INSTALL_HINT: Final = "install it with `apt-get update && apt-get install -y nats-server`"

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
}

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

#: How many times a start retries with fresh ports when one was taken in between.
_PORT_ATTEMPTS: Final = 5


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


def _find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in _FALLBACK_PATHS.get(name, ()):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def find_mosquitto() -> str:
    """Return the path of the ``mosquitto`` binary.

    Raises:
        MosquittoNotFoundError: it is neither on ``$PATH`` nor in ``/usr/sbin``.
    """
    path = _find_binary("mosquitto")
    if path is None:
        raise MosquittoNotFoundError(f"mosquitto not found: {INSTALL_HINT}")
    return path


def find_nats_server() -> str:
    """Return the path of the ``nats-server`` binary.

    Raises:
        NatsServerNotFoundError: it is neither on ``$PATH`` nor in ``/usr/sbin``.
    """
    path = _find_binary("nats-server")
    if path is None:
        raise NatsServerNotFoundError(f"nats-server not found: {NATS_INSTALL_HINT}")
    return path


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


class _PortInUseError(Exception):
    """Another process took one of the chosen ports between choosing and binding."""


# ---------------------------------------------------------------------------------------------
# NATS server with its MQTT gateway
# ---------------------------------------------------------------------------------------------


class NatsServerError(RuntimeError):
    """The NATS server could not be started (or restarted); the message carries its log."""


class NatsServerNotFoundError(NatsServerError):
    """The ``nats-server`` binary is not installed."""


#: The line nats-server logs once every listener (MQTT included) is open.
_NATS_READY: Final = "Server is ready"


class NatsServer(_ServerProcess):
    """A real NATS server with its MQTT gateway on free loopback ports, with its own config.

    NATS's MQTT gateway is a useful second opinion next to Mosquitto, and a strict one: it
    speaks MQTT 3.1.1 only (an MQTT 5 CONNECT gets a 3.1.1 CONNACK with return code 1, an
    MQTT 3.1 one is closed without an answer), grants QoS 2 subscriptions as QoS 1, closes the
    connection on a QoS 2 PUBLISH and on a topic name containing ``.`` or a space, and refuses
    (SUBACK 0x80) such a topic filter. It needs JetStream (sessions, retained messages and
    QoS 1 messages live there) and a server name; both are configured here.

    The configuration file, log and JetStream store live in a private temporary directory that
    :meth:`close` (or leaving the ``with`` block) removes. Ports (the NATS client port and the
    MQTT port) are chosen on the first :meth:`start` and kept by :meth:`restart`; the JetStream
    store survives it too, so kept sessions (``clean=False``) and retained messages do.

    With ``cluster_name`` the server is one node of a NATS cluster: it also listens for routes
    on a third port (:attr:`cluster_port`), connects to ``routes``, and runs JetStream in
    clustered mode.

    Args:
        server_name: NATS's ``server_name`` (JetStream requires one; unique in a cluster).
        max_memory_store: JetStream's memory limit, in NATS units (``"256MB"``).
        max_file_store: JetStream's disk limit for the private store directory (``"1GB"``).
        debug: log debug and protocol trace lines (every MQTT packet) as well.
        mqtt_config: lines inserted verbatim into the ``mqtt { ... }`` block (for example
            ``'ack_wait: "5s"'`` or ``"max_ack_pending: 100"``).
        extra_config: appended verbatim at the top level of the generated configuration.
        cluster_name: the NATS cluster to form or join; None (the default): a standalone server.
        cluster_port: the route port to try first (a free one is chosen when None or taken);
            needs ``cluster_name``.
        routes: the other nodes' route URLs (``nats-route://127.0.0.1:<port>``); read at every
            start, so a change applies from the next start (or restart) on.
        executable: the nats-server binary; found on ``$PATH`` or in ``/usr/sbin`` by default.
        startup_timeout: seconds to wait for the server to accept MQTT connections.
    """

    _what = "nats-server"
    _dir_prefix = "mqttkit-nats-"
    _error = NatsServerError

    def __init__(
        self,
        *,
        server_name: str = "mqttkit-test",
        max_memory_store: str = "256MB",
        max_file_store: str = "1GB",
        debug: bool = False,
        mqtt_config: str = "",
        extra_config: str = "",
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
        executable: str | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        if cluster_name is None and (cluster_port is not None or routes):
            raise ValueError("cluster_port and routes need a cluster_name")
        self.server_name = server_name
        self.max_memory_store = max_memory_store
        self.max_file_store = max_file_store
        self.debug = debug
        self.mqtt_config = mqtt_config
        self.extra_config = extra_config
        self.cluster_name = cluster_name
        self.routes = list(routes)
        self.executable = executable
        self.startup_timeout = startup_timeout

        self._preferred_cluster_port = cluster_port
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

    @property
    def cluster_port(self) -> int:
        """The route port (needs ``cluster_name``); before the first start, the preferred one."""
        if self.cluster_name is None:
            raise RuntimeError("this NATS server is not a cluster node (no cluster_name)")
        port = self._ports.get("cluster", self._preferred_cluster_port)
        if port is None:
            raise RuntimeError("the NATS server has not been started yet")
        return port

    @property
    def route_url(self) -> str:
        """``nats-route://127.0.0.1:<cluster_port>``: what the other nodes list in ``routes``."""
        return f"nats-route://{LOOPBACK}:{self.cluster_port}"

    def _port(self, name: str) -> int:
        try:
            return self._ports[name]
        except KeyError:
            raise RuntimeError("the NATS server has not been started yet") from None

    @property
    def mqtt_port(self) -> int:
        """The MQTT (TCP) port of the gateway."""
        return self._port("mqtt")

    @property
    def port(self) -> int:
        """The same as :attr:`mqtt_port`, so code written for a Mosquitto broker works."""
        return self.mqtt_port

    @property
    def client_port(self) -> int:
        """The NATS protocol port (for NATS clients; MQTT clients use :attr:`mqtt_port`)."""
        return self._port("client")

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<mqtt_port>``."""
        return f"mqtt://{LOOPBACK}:{self.mqtt_port}"

    @property
    def nats_url(self) -> str:
        """``nats://127.0.0.1:<client_port>``."""
        return f"nats://{LOOPBACK}:{self.client_port}"

    @property
    def directory(self) -> Path:
        """The private directory holding the configuration, log and JetStream store."""
        return self._workdir()

    @property
    def config_path(self) -> Path:
        """The generated ``nats-server.conf``."""
        return self._workdir() / "nats-server.conf"

    @property
    def log_path(self) -> Path:
        """The server's log (its stdout and stderr)."""
        return self._workdir() / "nats-server.log"

    @property
    def store_dir(self) -> Path:
        """JetStream's store directory (MQTT sessions, retained and QoS 1 messages)."""
        return self._workdir() / "jetstream"

    @property
    def pid(self) -> int | None:
        """The process id while the server runs, else None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        """Return the server's log so far, also after :meth:`close`."""
        if self._dir is None:
            return self._final_log
        with contextlib.suppress(FileNotFoundError):
            return (self._dir / "nats-server.log").read_text(encoding="utf-8", errors="replace")
        return ""

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> NatsServer:
        """Start the server and wait until its MQTT gateway accepts TCP connections.

        Returns:
            self, so that ``server = NatsServer().start()`` reads well.

        Raises:
            NatsServerNotFoundError: the binary is missing.
            NatsServerError: the server exited or did not listen in time; the message has its
                log and configuration.
        """
        if self.running:
            raise RuntimeError("the NATS server is already running")
        executable = self.executable or find_nats_server()
        if not os.access(executable, os.X_OK):
            raise NatsServerNotFoundError(
                f"nats-server not found at {executable}: {NATS_INSTALL_HINT}"
            )
        self._workdir(create=True)
        self._start_on_ports(executable)
        return self

    def __repr__(self) -> str:
        state = f"mqtt_port={self._ports.get('mqtt')}" if self._ports else "not started"
        if self.cluster_name is not None:
            state = f"{self.server_name!r} {state}"
        return f"<NatsServer {state} running={self.running}>"

    # -- internals -------------------------------------------------------------------------------

    def _choose_ports(self) -> dict[str, int]:
        # Hold every socket until all are chosen, so the ports differ from each other (and
        # from the preferred route port, which is held too while it is free).
        names = ["client", "mqtt"] if self.cluster_name is None else ["cluster", "client", "mqtt"]
        socks = []
        try:
            for name in names:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                if name == "cluster" and self._preferred_cluster_port is not None:
                    with contextlib.suppress(OSError):
                        sock.bind((LOOPBACK, self._preferred_cluster_port))
                        continue
                sock.bind((LOOPBACK, 0))
            return {name: s.getsockname()[1] for name, s in zip(names, socks, strict=True)}
        finally:
            for sock in socks:
                sock.close()

    def _config_text(self) -> str:
        # Strings are written as JSON strings: NATS's configuration format accepts them.
        client_listen = f"{LOOPBACK}:{self._ports['client']}"
        mqtt_listen = f"{LOOPBACK}:{self._ports['mqtt']}"
        lines = [
            "# Generated by mqttkit.testing for one test server.",
            f"server_name: {json.dumps(self.server_name)}",
            f"listen: {json.dumps(client_listen)}",
            "jetstream {",
            # NATS keeps its data in a "jetstream" directory below store_dir.
            f"  store_dir: {json.dumps(str(self._workdir()))}",
            f"  max_memory_store: {self.max_memory_store}",
            f"  max_file_store: {self.max_file_store}",
            "}",
            "mqtt {",
            f"  listen: {json.dumps(mqtt_listen)}",
            *(f"  {line}" for line in self.mqtt_config.splitlines()),
            "}",
        ]
        if self.cluster_name is not None:
            cluster_listen = f"{LOOPBACK}:{self._ports['cluster']}"
            lines += [
                "cluster {",
                f"  name: {json.dumps(self.cluster_name)}",
                f"  listen: {json.dumps(cluster_listen)}",
                f"  routes: {json.dumps(self.routes)}",
                "}",
            ]
        if self.debug:
            lines += ["debug: true", "trace: true"]
        if self.extra_config:
            lines += ["", "# extra_config", self.extra_config]
        return "\n".join(lines) + "\n"

    def _launch(self, executable: str) -> None:
        log_path = self.log_path
        log_path.touch()  # a restart appends: the log tells the whole story
        offset = log_path.stat().st_size
        self._output = log_path.open("ab")
        proc = subprocess.Popen(
            [executable, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=self._output,
            cwd=self._workdir(),
            # Its own session: a Ctrl-C in the terminal reaches pytest, which then stops us.
            start_new_session=True,
        )
        self._proc = proc
        _LIVE.add(self)
        expected = [
            f"Listening for MQTT clients on mqtt://{LOOPBACK}:{self.mqtt_port}",
            _NATS_READY,
        ]
        if self.cluster_name is not None:
            # The route port opens after "Server is ready"; a server that cannot bind it exits.
            expected.append(f"Listening for route connections on {LOOPBACK}:{self.cluster_port}")
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.005
        # Bounded poll: at most startup_timeout seconds, checking every few milliseconds.
        # Ready means: the log says the MQTT listener is open and the server is ready (the
        # MQTT port opens before the client port, so a port that accepts is not enough: the
        # server may still die on the next bind; a cluster node also needs its route port),
        # and the MQTT port accepts.
        for _ in range(100_000):
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                pass
            else:
                self._proc = None
                self._close_output()
                _LIVE.discard(self)
                new_log = self._log_since(offset)
                if "address already in use" in new_log:
                    raise _PortInUseError
                self._raise_startup_error(
                    f"nats-server exited with status {proc.returncode} during startup", new_log
                )
            new_log = self._log_since(offset)
            if all(line in new_log for line in expected) and _port_accepts(
                LOOPBACK, self.mqtt_port
            ):
                return
            if time.monotonic() > deadline:
                break
            delay = min(delay * 2, 0.05)
        new_log = self._log_since(offset)
        self.kill()
        self._raise_startup_error(
            f"nats-server did not accept MQTT connections within {self.startup_timeout} s",
            new_log,
        )

    def _log_since(self, offset: int) -> str:
        """What this run wrote to the log (earlier runs' lines excluded)."""
        with contextlib.suppress(FileNotFoundError), self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
        return ""

    def _raise_startup_error(self, message: str, log: str) -> NoReturn:
        config = self.config_path.read_text(encoding="utf-8")
        raise NatsServerError(
            f"{message}\n--- nats-server output ---\n{log.strip()}\n"
            f"--- {self.config_path} ---\n{config}"
        )


# ---------------------------------------------------------------------------------------------
# pytest plugin
# ---------------------------------------------------------------------------------------------

#: The fixtures that need Mosquitto; tests using them get the ``mosquitto`` marker.
MOSQUITTO_FIXTURES: Final = frozenset({"mosquitto", "mosquitto_factory", "mosquitto_auth"})

#: The fixtures that need a NATS server; tests using them get the ``nats`` marker.
NATS_FIXTURES: Final = frozenset({"nats_server", "nats_server_factory"})

_Server = TypeVar("_Server", MosquittoBroker, NatsServer)

if importlib.util.find_spec("pytest") is not None:
    import pytest

    def pytest_configure(config: pytest.Config) -> None:
        """Register the ``mosquitto`` and ``nats`` markers (for projects using this plugin)."""
        config.addinivalue_line(
            "markers", "mosquitto: needs a real Mosquitto broker (started by the test suite)"
        )
        config.addinivalue_line(
            "markers", "nats: needs a real NATS server's MQTT gateway (started by the test suite)"
        )

    def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
        """Mark every test that uses a broker fixture, so ``-m 'not mosquitto'`` works."""
        for item in items:
            names = set(getattr(item, "fixturenames", ()))
            if MOSQUITTO_FIXTURES & names:
                item.add_marker(pytest.mark.mosquitto)
            if NATS_FIXTURES & names:
                item.add_marker(pytest.mark.nats)

    def _start_or_fail(broker: _Server) -> _Server:
        try:
            return broker.start()
        except (MosquittoNotFoundError, NatsServerNotFoundError) as exc:
            # A missing broker is a broken test environment: fail loudly, never skip.
            broker.close()
            pytest.fail(str(exc), pytrace=False)
        except BaseException:
            broker.close()
            raise

    @pytest.fixture
    def mosquitto() -> Iterator[MosquittoBroker]:
        """A fresh Mosquitto broker for this test (anonymous, no persistence)."""
        broker = _start_or_fail(MosquittoBroker())
        try:
            yield broker
        finally:
            broker.close()

    @pytest.fixture
    def mosquitto_factory() -> Iterator[Callable[..., MosquittoBroker]]:
        """A function taking :class:`MosquittoBroker` keyword arguments, returning it started.

        Every broker it started is stopped, and its directory removed, when the test ends.
        """
        started: list[MosquittoBroker] = []

        def factory(**kwargs: Any) -> MosquittoBroker:
            broker = MosquittoBroker(**kwargs)
            started.append(broker)
            return _start_or_fail(broker)

        try:
            yield factory
        finally:
            for broker in reversed(started):
                broker.close()

    @pytest.fixture
    def mosquitto_auth() -> Iterator[MosquittoBroker]:
        """A broker with one user, ``alice`` / ``secret``, and anonymous access off."""
        broker = _start_or_fail(MosquittoBroker(users={"alice": "secret"}))
        try:
            yield broker
        finally:
            broker.close()

    @pytest.fixture(scope="session")
    def nats_server() -> Iterator[NatsServer]:
        """One NATS server (MQTT gateway) shared by the whole test session.

        Shared: do not stop, kill or restart it (use ``nats_server_factory`` for that), and use
        topics and client ids of your own, since other tests' sessions live in it too.
        """
        server = _start_or_fail(NatsServer())
        try:
            yield server
        finally:
            server.close()

    @pytest.fixture
    def nats_server_factory() -> Iterator[Callable[..., NatsServer]]:
        """A function taking :class:`NatsServer` keyword arguments, returning it started.

        Every server it started is stopped, and its directory removed, when the test ends.
        """
        started: list[NatsServer] = []

        def factory(**kwargs: Any) -> NatsServer:
            server = NatsServer(**kwargs)
            started.append(server)
            return _start_or_fail(server)

        try:
            yield factory
        finally:
            for server in reversed(started):
                server.close()


# ---------------------------------------------------------------------------------------------
# Command line: run a command against a throw-away broker
# ---------------------------------------------------------------------------------------------


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
