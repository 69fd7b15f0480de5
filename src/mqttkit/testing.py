"""Test helpers: throw-away brokers on free loopback ports, and pytest fixtures.

This module owns starting, restarting and stopping real Mosquitto brokers for tests and
benchmarks: it writes each broker's configuration (listeners, authentication, TLS, WebSocket,
persistence, limits, logging) into a private temporary directory, picks free ports on
127.0.0.1 (never 1883), waits until the broker accepts connections and reports its log when it
does not. :class:`NatsServer` does the same for a second, very different broker: a NATS server
with its MQTT gateway (MQTT 3.1.1 only, QoS 0/1, JetStream-backed sessions), and
:class:`NatsCluster` runs several of them as one cluster whose sessions survive a node's death,
and :class:`RabbitMQServer` runs a third broker: a RabbitMQ node with its MQTT plugin (MQTT 3.1
and 3.1.1, QoS 0/1, sessions as durable queues), private down to its own ``epmd`` and Erlang
cookie. It also registers the fixtures ``mosquitto``, ``mosquitto_factory``,
``mosquitto_auth``, ``nats_server``, ``nats_server_factory``, ``nats_cluster``,
``nats_cluster_factory``, ``rabbitmq_server`` and ``rabbitmq_server_factory`` as a pytest
plugin (entry point ``pytest11``).

It must import wherever pytest runs, with or without Mosquitto, NATS or RabbitMQ installed, and
it must not import the rest of mqttkit: a broken client must not break the tools that test it.
pytest itself is optional: without it the fixtures are simply not defined. A test that needs a
broker and cannot find it *fails* with the install command; it never skips.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib.util
import json
import os
import re
import secrets
import selectors
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
    "RABBITMQ_INSTALL_HINT",
    "MosquittoBroker",
    "MosquittoError",
    "MosquittoNotFoundError",
    "NatsCluster",
    "NatsServer",
    "NatsServerError",
    "NatsServerNotFoundError",
    "RabbitMQServer",
    "RabbitMQServerError",
    "RabbitMQServerNotFoundError",
    "TLSFiles",
    "find_mosquitto",
    "find_nats_server",
    "find_rabbitmq_server",
    "free_port",
]

#: How to get Mosquitto, quoted by every "not found" error.
INSTALL_HINT: Final = "install it with `apt-get update && apt-get install -y mosquitto`"

#: How to get the NATS server, quoted by every "not found" error about it.
NATS_INSTALL_HINT: Final = "install it with `apt-get update && apt-get install -y nats-server`"

#: How to get RabbitMQ (with Erlang and its MQTT plugin), quoted by every "not found" error
#: about it.
RABBITMQ_INSTALL_HINT: Final = (
    "install it with `apt-get update && apt-get install -y rabbitmq-server`"
)

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

    With ``cluster_name`` the server is one node of a NATS cluster (see :class:`NatsCluster`,
    which builds whole clusters): it also listens for routes on a third port
    (:attr:`cluster_port`), connects to ``routes``, and runs JetStream in clustered mode.

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
# RabbitMQ with its MQTT plugin
# ---------------------------------------------------------------------------------------------


class RabbitMQServerError(RuntimeError):
    """RabbitMQ could not be started (or restarted); the message carries its log."""


class RabbitMQServerNotFoundError(RabbitMQServerError):
    """The ``rabbitmq-server`` script (or Erlang's ``epmd``, which comes with it) is missing."""


def find_rabbitmq_server() -> str:
    """Return the path of the ``rabbitmq-server`` script that runs a node in the foreground.

    Debian/Ubuntu's ``/usr/sbin/rabbitmq-server`` is a wrapper that switches to the ``rabbitmq``
    user (as root) or refuses to run (as anyone else); the script it wraps,
    ``/usr/lib/rabbitmq/bin/rabbitmq-server``, is the one used.

    Raises:
        RabbitMQServerNotFoundError: it is neither on ``$PATH`` nor in ``/usr/lib/rabbitmq/bin``.
    """
    for candidate in (shutil.which("rabbitmq-server"), *_FALLBACK_PATHS["rabbitmq-server"]):
        if (
            candidate
            and os.access(candidate, os.X_OK)
            and Path(candidate).resolve().name != "rabbitmq-script-wrapper"
        ):
            return candidate
    raise RabbitMQServerNotFoundError(f"rabbitmq-server not found: {RABBITMQ_INSTALL_HINT}")


def _find_epmd() -> str:
    path = _find_binary("epmd")
    if path is None:
        raise RabbitMQServerNotFoundError(
            f"epmd (Erlang, which RabbitMQ runs on) not found: {RABBITMQ_INSTALL_HINT}"
        )
    return path


#: The environment variables RabbitMQ gets from ours; every other one is left out, so that
#: neither the caller's ``RABBITMQ_*`` / ``ERL_*`` variables nor the unprefixed names RabbitMQ
#: also reads (``NODENAME``, ``CONFIG_FILE``, ``LOGS``...) reach the test server.
_RABBITMQ_PASSED_ENV: Final = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ", "USER")

#: The line RabbitMQ logs once it has booted (all listeners open, all plugins started).
_RABBITMQ_READY: Final = "Server startup complete"

#: What RabbitMQ logs when one of its ports is taken: a listener's (AMQP, MQTT), the
#: distribution's.
_RABBITMQ_PORT_TAKEN: Final = ("eaddrinuse", "could not bind to distribution port")

#: A bare MQTT 3.1.1 CONNECT: clean session, keepalive 60 s, client id ``mqttkit-probe``.
_PROBE_CONNECT: Final = b"\x10\x19\x00\x04MQTT\x04\x02\x00\x3c\x00\x0dmqttkit-probe"


def _answers_connect(host: str, port: int, timeout: float) -> bool:
    """True when an MQTT 3.1.1 CONNECT to ``host:port`` gets a CONNACK (of any return code)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_PROBE_CONNECT)
            if sock.recv(4)[:1] != b"\x20":
                return False
            sock.sendall(b"\xe0\x00")  # DISCONNECT
            return True
    except OSError:
        return False


class RabbitMQServer(_ServerProcess):
    """A real RabbitMQ node with its MQTT plugin on free loopback ports, private in everything.

    RabbitMQ 3.10's MQTT plugin is a third opinion, lenient where NATS is strict and different
    from both (observed with raw sockets, pinned by ``tests/brokers/test_rabbitmq_server.py``):

    - an MQTT 5 CONNECT is closed without a CONNACK; MQTT 3.1 (``MQIsdp``) and 3.1.1 are
      accepted, 3.1 with client ids longer than 23 characters too. Client ids have no length
      limit short of the packet's (65535 bytes is accepted, ``clean=False`` included); an
      empty one is accepted with a clean session and refused (return code 2) without;
    - a QoS 2 PUBLISH is answered with a PUBACK (it is handled as QoS 1), a QoS 2 subscription
      is granted as QoS 1, and messages are delivered at QoS 1 at most;
    - a retained message is delivered to a later subscription to its exact topic, never to one
      with a wildcard (``+`` or ``#``);
    - ``/`` and ``.`` both separate topic levels (topics become AMQP routing keys): a PUBLISH
      to ``a/x.y`` is delivered as ``a/x/y``, matches ``a/x/y`` and ``a/x.y`` but not ``a/+``;
    - the will is published when the connection is cut (FIN or RST without DISCONNECT), and not
      after a DISCONNECT;
    - a kept session (``clean=False``) is a durable queue: the CONNACK says session present,
      QoS 1 messages published while it is offline are delivered on reconnection (one left
      unacknowledged comes again, with DUP set); sessions, their queued messages and retained
      messages survive a restart.

    Everything is its own: the node name (``mqttkit-<random>@localhost``), ``$HOME`` (so its
    own Erlang cookie), an ``epmd`` of its own on a private port (started here, as a child with
    a PID of ours, before the node), the AMQP, Erlang distribution and MQTT ports (all bound to
    127.0.0.1), the generated ``rabbitmq.conf``, an empty ``rabbitmq-env.conf`` in place of
    ``/etc/rabbitmq/rabbitmq-env.conf``, the enabled-plugins file (``[rabbitmq_mqtt].``), the
    Mnesia database and the log, all in a private temporary directory that :meth:`close` (or
    leaving the ``with`` block) removes. The node gets a minimal environment (``PATH``, locale)
    plus its own variables, so neither a system-wide RabbitMQ (its ports 5672, 25672, 4369, its
    ``/var/lib/rabbitmq``) nor the caller's ``RABBITMQ_*`` variables come into play.

    Ports are chosen on the first :meth:`start` and kept by :meth:`restart`, and so is the
    Mnesia directory: kept sessions (``clean=False``, a durable queue each) and retained
    messages survive it. A first start takes about 10 s (the MQTT plugin waits about 5 s for
    cluster peers before it elects itself leader of its client-id registry), a restart (stop
    and start) about 4 s: share one server where you can (the ``rabbitmq_server`` fixture).

    Args:
        debug: log at debug level (every MQTT connection's details) instead of info.
        extra_config: appended verbatim to the generated ``rabbitmq.conf`` (new-style
            ``key = value`` lines, for example ``"mqtt.prefetch = 1"``).
        executable: the ``rabbitmq-server`` script; found on ``$PATH`` or in
            ``/usr/lib/rabbitmq/bin`` by default (see :func:`find_rabbitmq_server`).
        epmd_executable: Erlang's ``epmd``; found on ``$PATH`` by default.
        startup_timeout: seconds to wait for the node to answer an MQTT CONNECT.
    """

    _what = "rabbitmq-server"
    _dir_prefix = "mqttkit-rabbitmq-"
    _error = RabbitMQServerError

    def __init__(
        self,
        *,
        debug: bool = False,
        extra_config: str = "",
        executable: str | None = None,
        epmd_executable: str | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.debug = debug
        self.extra_config = extra_config
        self.executable = executable
        self.epmd_executable = epmd_executable
        self.startup_timeout = startup_timeout
        #: The Erlang node name, unique to this server (its Mnesia directory is named after it).
        self.node_name = f"mqttkit-{secrets.token_hex(4)}@localhost"

        self._dir: Path | None = None
        self._ports: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        self._epmd_path = ""
        self._final_log = ""

    # -- properties ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address every listener is bound to: ``127.0.0.1``."""
        return LOOPBACK

    def _port(self, name: str) -> int:
        try:
            return self._ports[name]
        except KeyError:
            raise RuntimeError("the RabbitMQ server has not been started yet") from None

    @property
    def mqtt_port(self) -> int:
        """The MQTT (TCP) port of the ``rabbitmq_mqtt`` plugin."""
        return self._port("mqtt")

    @property
    def port(self) -> int:
        """The same as :attr:`mqtt_port`, so code written for a Mosquitto broker works."""
        return self.mqtt_port

    @property
    def amqp_port(self) -> int:
        """The AMQP 0-9-1 port (user ``guest``, password ``guest``, virtual host ``/``)."""
        return self._port("amqp")

    @property
    def dist_port(self) -> int:
        """The Erlang distribution port (on 127.0.0.1, registered with :attr:`epmd_port`)."""
        return self._port("dist")

    @property
    def epmd_port(self) -> int:
        """The port of this server's own ``epmd`` (Erlang's port mapper)."""
        return self._port("epmd")

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<mqtt_port>``."""
        return f"mqtt://{LOOPBACK}:{self.mqtt_port}"

    @property
    def directory(self) -> Path:
        """The private directory holding the configuration, log, ``$HOME`` and Mnesia."""
        return self._workdir()

    @property
    def config_path(self) -> Path:
        """The generated ``rabbitmq.conf``."""
        return self._workdir() / "rabbitmq.conf"

    @property
    def log_path(self) -> Path:
        """The node's log (RabbitMQ logs to its standard output, written here with stderr)."""
        return self._workdir() / "rabbitmq.log"

    @property
    def mnesia_dir(self) -> Path:
        """The node's database directory (queues, kept sessions, retained messages)."""
        return self._workdir() / "mnesia" / self.node_name

    @property
    def pid(self) -> int | None:
        """The process id of the ``rabbitmq-server`` script while it runs, else None.

        The Erlang node is its child, in the process group this PID leads.
        """
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def epmd_pid(self) -> int | None:
        """The process id of this server's own ``epmd`` while it runs, else None."""
        epmd = self._epmd
        return epmd.pid if epmd is not None and epmd.poll() is None else None

    @property
    def running(self) -> bool:
        """True while the ``rabbitmq-server`` process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        """Return the node's log so far, also after :meth:`close`."""
        if self._dir is None:
            return self._final_log
        with contextlib.suppress(FileNotFoundError):
            return (self._dir / "rabbitmq.log").read_text(encoding="utf-8", errors="replace")
        return ""

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> RabbitMQServer:
        """Start ``epmd`` and the node, and wait until the node answers an MQTT CONNECT.

        Returns:
            self, so that ``server = RabbitMQServer().start()`` reads well.

        Raises:
            RabbitMQServerNotFoundError: ``rabbitmq-server`` or ``epmd`` is missing.
            RabbitMQServerError: the node exited or did not answer in time; the message has its
                log and configuration.
        """
        if self.running:
            raise RuntimeError("the RabbitMQ server is already running")
        executable = self.executable or find_rabbitmq_server()
        if not os.access(executable, os.X_OK):
            raise RabbitMQServerNotFoundError(
                f"rabbitmq-server not found at {executable}: {RABBITMQ_INSTALL_HINT}"
            )
        self._epmd_path = self.epmd_executable or _find_epmd()
        self._workdir(create=True)
        self._start_on_ports(executable)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node by its PID: SIGTERM (a graceful shutdown, about 2 s), wait up to
        ``timeout`` seconds, then SIGKILL to its whole process group; then stop its ``epmd``.

        The temporary directory stays (so :meth:`restart` and :meth:`log_text` work);
        :meth:`close` removes it. Does nothing when the server is not running.
        """
        proc = self._proc
        if proc is not None:
            if proc.returncode is None:
                # The script passes SIGTERM on to the node and waits for it to finish.
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                if not _exits_within(proc, timeout):
                    _kill_group(proc)
            _kill_group(proc)  # anything of the node's left behind (none when the script ended)
            proc.wait(timeout=10)
            self._proc = None
        self._stop_epmd(timeout)
        self._close_output()
        _LIVE.discard(self)

    def kill(self) -> None:
        """Kill the node with SIGKILL (its whole process group: a crash, no shutdown), and
        its ``epmd``. Mnesia recovers on the next start."""
        proc = self._proc
        if proc is not None:
            _kill_group(proc)
            proc.wait(timeout=10)
            self._proc = None
        self._stop_epmd(timeout=0)
        self._close_output()
        _LIVE.discard(self)

    def restart(self, timeout: float = 30.0) -> None:
        """Stop (gracefully) and start again on the same ports, with the same node name and
        Mnesia directory: kept sessions and retained messages survive.

        Raises:
            RabbitMQServerError: it did not come back (a port taken meanwhile...).
        """
        self.stop(timeout)
        self.start()

    def __repr__(self) -> str:
        state = f"mqtt_port={self._ports.get('mqtt')}" if self._ports else "not started"
        return f"<RabbitMQServer {self.node_name} {state} running={self.running}>"

    # -- internals -------------------------------------------------------------------------------

    @staticmethod
    def _choose_ports() -> dict[str, int]:
        names = ("epmd", "amqp", "dist", "mqtt")
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

    def _config_text(self) -> str:
        level = "debug" if self.debug else "info"
        lines = [
            "# Generated by mqttkit.testing for one test server.",
            f"listeners.tcp.1 = {LOOPBACK}:{self._ports['amqp']}",
            f"mqtt.listeners.tcp.1 = {LOOPBACK}:{self._ports['mqtt']}",
            "mqtt.allow_anonymous = true",
            "mqtt.default_user = guest",
            "mqtt.default_pass = guest",
            "mqtt.vhost = /",
            # guest may log in from anywhere (only loopback listeners exist anyway).
            "loopback_users = none",
            # Everything to standard output, which goes to log_path: start() waits for lines
            # logged at info level.
            "log.file = false",
            "log.console = true",
            f"log.console.level = {level}",
        ]
        if self.extra_config:
            lines += ["", "# extra_config", self.extra_config]
        return "\n".join(lines) + "\n"

    def _environment(self) -> dict[str, str]:
        workdir = self._workdir()
        env = {name: os.environ[name] for name in _RABBITMQ_PASSED_ENV if name in os.environ}
        env.setdefault("PATH", os.defpath)
        env.update(
            {
                "HOME": str(workdir / "home"),  # its own ~/.erlang.cookie
                "ERL_EPMD_ADDRESS": LOOPBACK,
                "ERL_EPMD_PORT": str(self._ports["epmd"]),
                "ERL_CRASH_DUMP": str(workdir / "erl_crash.dump"),
                # Read instead of /etc/rabbitmq/rabbitmq-env.conf (which could set anything).
                "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),
                "RABBITMQ_NODENAME": self.node_name,
                "RABBITMQ_USE_LONGNAME": "false",
                "RABBITMQ_DIST_PORT": str(self._ports["dist"]),
                "RABBITMQ_CONFIG_FILE": str(self.config_path),
                "RABBITMQ_CONFIG_FILES": str(workdir / "conf.d"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(workdir / "advanced.config"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
                "RABBITMQ_PLUGINS_EXPAND_DIR": str(workdir / "plugins-expand"),
                "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
                "RABBITMQ_LOG_BASE": str(workdir / "log"),
                "RABBITMQ_LOGS": "-",
                "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
                # Our own epmd is already running: the node must not start another one (it
                # would outlive the node). The distribution listens on loopback only.
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                    "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"
                ),
            }
        )
        return env

    def _launch(self, executable: str) -> None:
        workdir = self._workdir()
        for name in ("home", "mnesia", "log", "plugins-expand"):
            (workdir / name).mkdir(exist_ok=True)
        (workdir / "rabbitmq-env.conf").write_text(
            "# Generated by mqttkit.testing: empty, read instead of the system-wide one.\n",
            encoding="utf-8",
        )
        (workdir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n", encoding="utf-8")
        log_path = self.log_path
        log_path.touch()  # a restart appends: the log tells the whole story
        offset = log_path.stat().st_size
        deadline = time.monotonic() + self.startup_timeout
        self._start_epmd(deadline)
        self._output = log_path.open("ab")
        try:
            proc = subprocess.Popen(
                [executable],
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=self._output,
                stderr=self._output,
                cwd=workdir,
                # Its own session and process group (the group stop() and kill() can sweep);
                # a Ctrl-C in the terminal reaches pytest, which then stops us.
                start_new_session=True,
            )
        except BaseException:
            self.kill()  # its epmd
            raise
        self._proc = proc
        _LIVE.add(self)
        listening = f"started MQTT TCP listener on {LOOPBACK}:{self.mqtt_port}"
        delay = 0.05
        # Bounded poll: at most startup_timeout seconds. Ready means: the log says the MQTT
        # listener is open (on our port: another process's listener there would answer the
        # probe while the node is still booting) and the boot is complete, and an MQTT CONNECT
        # gets its CONNACK.
        for _ in range(100_000):
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                pass
            else:
                new_log = self._log_since(offset)
                self.kill()  # its epmd
                if any(sign in new_log for sign in _RABBITMQ_PORT_TAKEN):
                    raise _PortInUseError
                self._raise_startup_error(
                    f"rabbitmq-server exited with status {proc.returncode} during startup",
                    new_log,
                )
            new_log = self._log_since(offset)
            if (
                listening in new_log
                and _RABBITMQ_READY in new_log
                and _answers_connect(LOOPBACK, self.mqtt_port, timeout=2.0)
            ):
                if self.epmd_pid is None:
                    # Our epmd found its port taken after all (by another epmd, which the node
                    # then registered with): start again on other ports.
                    self.kill()
                    raise _PortInUseError
                return
            if time.monotonic() > deadline:
                break
            delay = min(delay * 2, 0.2)
        new_log = self._log_since(offset)
        self.kill()
        self._raise_startup_error(
            f"rabbitmq-server did not answer an MQTT CONNECT within {self.startup_timeout} s",
            new_log,
        )

    def _start_epmd(self, deadline: float) -> None:
        """Start this server's own epmd in the foreground (a child we own by its PID) and wait
        until it listens."""
        port = self._ports["epmd"]
        epmd_log = self._workdir() / "epmd.log"
        with epmd_log.open("ab") as output:
            offset = output.tell()
            epmd = subprocess.Popen(
                # -d: a line when it starts (and when it finds its port taken).
                [self._epmd_path, "-port", str(port), "-address", LOOPBACK, "-d"],
                env={"PATH": os.environ.get("PATH", os.defpath)},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                cwd=self._workdir(),
                start_new_session=True,
            )
        self._epmd = epmd
        _LIVE.add(self)
        delay = 0.005
        for _ in range(100_000):
            try:
                epmd.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                pass
            else:
                self._epmd = None
                with epmd_log.open("rb") as f:
                    f.seek(offset)
                    output_text = f.read().decode(errors="replace").strip()
                if "already" in output_text or _port_accepts(LOOPBACK, port):
                    raise _PortInUseError
                raise RabbitMQServerError(
                    f"epmd exited with status {epmd.returncode} on port {port}:\n{output_text}"
                )
            if _port_accepts(LOOPBACK, port):
                return
            if time.monotonic() > deadline:
                break
            delay = min(delay * 2, 0.05)
        self._stop_epmd(timeout=0)
        raise RabbitMQServerError(f"epmd did not listen on port {port} in time")

    def _stop_epmd(self, timeout: float) -> None:
        epmd = self._epmd
        if epmd is None:
            return
        if epmd.poll() is None:
            if timeout > 0:
                epmd.terminate()
                try:
                    epmd.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    epmd.kill()
            else:
                epmd.kill()
        epmd.wait(timeout=10)
        self._epmd = None

    def _log_since(self, offset: int) -> str:
        """What this run wrote to the log (earlier runs' lines excluded)."""
        with contextlib.suppress(FileNotFoundError), self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
        return ""

    def _raise_startup_error(self, message: str, log: str) -> NoReturn:
        config = self.config_path.read_text(encoding="utf-8")
        raise RabbitMQServerError(
            f"{message}\n--- rabbitmq-server output ---\n{log.strip()}\n"
            f"--- {self.config_path} ---\n{config}"
        )


def _exits_within(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``proc`` to exit, without reaping it: its PID, and
    so its process group's id, stays reserved for :func:`_kill_group`."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while proc.returncode is None:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL every process in the group ``proc`` leads (started with a session of its own)."""
    if proc.returncode is not None:
        return  # reaped: its PID (the group's id) may belong to someone else by now
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# A cluster of NATS servers, the MQTT gateway on each node
# ---------------------------------------------------------------------------------------------

#: What a cluster node logs once the JetStream meta group has a leader (itself or another).
_NATS_META_LEADER: Final = re.compile(
    r"Self is new JetStream cluster metadata leader|JetStream cluster new metadata leader"
)

#: The longest one readiness probe waits for its CONNACK: the gateway gives up on a JetStream
#: request after 4 s and then closes the connection, so a probe hardly ever waits that long.
_PROBE_TIMEOUT: Final = 5.0


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


def _kept_session_connect(client_id: str) -> bytes:
    """An MQTT 3.1.1 CONNECT, encoded by hand (this module imports nothing of mqttkit): clean
    session off, keepalive 60 s."""
    ident = client_id.encode()
    body = b"\x00\x04MQTT\x04\x00\x00\x3c" + len(ident).to_bytes(2, "big") + ident
    if len(body) > 127:
        raise ValueError(f"client id too long for a probe: {client_id!r}")
    return bytes([0x10, len(body)]) + body


def _connack_codes(targets: dict[int, str], timeout: float) -> dict[int, int | None]:
    """Send a CONNECT (clean session off) to every MQTT port of ``targets`` (port -> client id)
    at once, and return each port's CONNACK return code: None when the port refused the
    connection, closed it or did not answer within ``timeout`` seconds. An accepted session is
    ended with a DISCONNECT; it stays in the broker (kept session, no subscriptions)."""
    codes: dict[int, int | None] = dict.fromkeys(targets)
    received = dict.fromkeys(targets, b"")
    deadline = time.monotonic() + timeout
    socks: dict[int, socket.socket] = {}
    try:
        with selectors.DefaultSelector() as selector:
            for port, client_id in targets.items():
                try:
                    sock = socket.create_connection((LOOPBACK, port), timeout=min(timeout, 1.0))
                except OSError:
                    continue
                socks[port] = sock
                try:
                    sock.sendall(_kept_session_connect(client_id))
                except OSError:
                    continue
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ, port)
            # Bounded: it ends by time, or once every port answered or closed.
            for _ in range(100_000):
                remaining = deadline - time.monotonic()
                if not selector.get_map() or remaining <= 0:
                    break
                for key, _events in selector.select(remaining):
                    port = key.data
                    sock = socks[port]
                    try:
                        data = sock.recv(4 - len(received[port]))
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    received[port] += data
                    if data and len(received[port]) < 4:
                        continue
                    selector.unregister(sock)
                    frame = received[port]
                    if len(frame) == 4 and frame[:2] == b"\x20\x02":  # CONNACK
                        codes[port] = frame[3]
                    if codes[port] == 0:
                        with contextlib.suppress(OSError):
                            sock.send(b"\xe0\x00")  # DISCONNECT
    finally:
        for sock in socks.values():
            sock.close()
    return codes


class NatsCluster:
    """A cluster of real NATS servers on free loopback ports, each with its MQTT gateway, and
    JetStream in clustered mode: the MQTT sessions, QoS 1 messages and retained messages live
    in streams replicated on ``stream_replicas`` nodes (all three of the default cluster), so
    one node's death loses neither sessions nor JetStream's quorum.

    The nodes are :class:`NatsServer` objects (:attr:`nodes`), each with its own directory,
    ports (client, MQTT, routes), ``server_name`` and JetStream store; each routes to all the
    others. Kill, stop and start them one by one: ``node.start()`` after ``node.kill()`` brings
    the node back on the same ports with its store, and it rejoins the cluster. Use
    :meth:`wait_ready` after that before counting on its MQTT gateway.

    Facts about nats-server 2.9.10 this class relies on (measured on a loaded test machine,
    pinned by ``tests/brokers/test_nats_cluster.py``):

    * Each node needs a unique ``server_name``, the same cluster ``name``, a route port and
      ``routes`` to the others (nats-server refuses clustered JetStream without routes, hence
      at least 2 nodes), and a JetStream store of its own.
    * ``mqtt { stream_replicas: 3 }`` is needed: without it the gateway chose R2 (from the
      servers it saw at that moment), and R2 loses its quorum with one node. The consumers
      (one per kept QoS 1 subscription) inherit the stream's replicas (``consumer_replicas``
      and ``consumer_memory_storage`` are accepted too; not set here).
    * The first MQTT CONNECT creates the streams through the JetStream meta leader. Sent before
      one is elected (0.2-0.6 s after the start), the request is lost: the gateway waits 4 s
      (its fixed JetStream timeout), logs "unable to connect: ... timeout", and closes the
      connection without a CONNACK. :meth:`start` therefore waits for the meta leader in every
      node's log, then connects to the first node alone (it creates the three R3 streams,
      elections included: 1.4-2.2 s), then to the others together (each creates its own R3
      consumer of the retained messages: 0.4-0.8 s). First connects on all nodes at once race,
      and one of them usually fails after 4 s. The whole start takes 2.4-3.6 s.
    * A node's SIGKILL costs each R3 group it led (stream or consumer) an election of about
      4-8 s. Meanwhile a QoS 1 PUBLISH to be stored in a leaderless stream gets no PUBACK: the
      gateway waits 4 s, then closes the publisher's connection (reconnect and resend: 8.2 s
      after the kill when ``$MQTT_msgs`` was led by the dead node, else at once); a CONNECT
      needing a leaderless stream fails the same way. A kept session resumes on another node
      as soon as ``$MQTT_sess`` has a leader (at once; 8.2 s when the dead node led it):
      CONNACK with session present, its subscriptions restored, and the messages stored
      meanwhile delivered once its consumer has a leader (4.5-8.2 s after the kill).
    * A node restarted after a SIGKILL rejoins on its ports with its store; its gateway
      accepted sessions 0.1-12.5 s later (elections still running fail CONNECTs after 4 s
      each): :meth:`wait_ready` waits for it.
    * Session takeover works across nodes: a CONNECT with a client id connected on another
      node makes that node close the old connection at once ("Closing because a remote
      connection has started with the same client ID").

    Args:
        size: the number of nodes.
        cluster_name: NATS's cluster name; the nodes are named ``<cluster_name>-<index>``.
        stream_replicas: replicas of the MQTT streams; default ``min(size, 3)``.
        debug: log debug and protocol trace lines on every node.
        mqtt_config: lines added to every node's ``mqtt { ... }`` block (after
            ``stream_replicas``).
        extra_config: appended verbatim at the top level of every node's configuration.
        executable: the nats-server binary; found on ``$PATH`` or in ``/usr/sbin`` by default.
        startup_timeout: seconds :meth:`start` may take, elections included.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        cluster_name: str = "mqttkit",
        stream_replicas: int | None = None,
        debug: bool = False,
        mqtt_config: str = "",
        extra_config: str = "",
        executable: str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if size < 2:
            # nats-server refuses clustered JetStream without routes to another node.
            raise ValueError(f"a NATS cluster needs at least 2 nodes, not {size}")
        replicas = min(size, 3) if stream_replicas is None else stream_replicas
        if not 1 <= replicas <= size:
            raise ValueError(f"stream_replicas must be between 1 and the size ({size})")
        self.cluster_name = cluster_name
        self.stream_replicas = replicas
        self.executable = executable
        self.startup_timeout = startup_timeout
        # The route ports are chosen now, all at once (so they differ), for every node to know
        # the others' before any starts; a node finding its own taken at start takes another,
        # and the nodes started before it learn that one when it connects to them.
        self.nodes: list[NatsServer] = [
            NatsServer(
                server_name=f"{cluster_name}-{index}",
                cluster_name=cluster_name,
                cluster_port=port,
                debug=debug,
                mqtt_config="\n".join(filter(None, [f"stream_replicas: {replicas}", mqtt_config])),
                extra_config=extra_config,
                executable=executable,
                startup_timeout=startup_timeout,
            )
            for index, port in enumerate(_free_ports(size))
        ]
        self._set_routes()

    @property
    def urls(self) -> list[str]:
        """Every node's ``mqtt://127.0.0.1:<mqtt_port>``, in node order."""
        return [node.url for node in self.nodes]

    @property
    def running(self) -> bool:
        """True while every node's process is alive."""
        return all(node.running for node in self.nodes)

    def start(self) -> NatsCluster:
        """Start every node and wait until each one's MQTT gateway accepts a kept session
        (CONNACK 0 to a CONNECT with clean session off), JetStream elections included.

        Returns:
            self, so that ``cluster = NatsCluster().start()`` reads well.

        Raises:
            NatsServerNotFoundError: the binary is missing.
            NatsServerError: a node did not start, or the cluster was not ready within
                ``startup_timeout`` seconds; the message has the nodes' logs. The nodes
                started are stopped again.
        """
        if any(node.running for node in self.nodes):
            raise RuntimeError("the NATS cluster is (partly) running already")
        executable = self.executable or find_nats_server()
        if not os.access(executable, os.X_OK):
            raise NatsServerNotFoundError(
                f"nats-server not found at {executable}: {NATS_INSTALL_HINT}"
            )
        deadline = time.monotonic() + self.startup_timeout
        offsets = [self._log_size(node) for node in self.nodes]
        try:
            for node in self.nodes:
                self._set_routes()  # a node started before may have taken another port
                node.start()
            self._set_routes()  # for later restarts
            self._wait_for_meta_leader(offsets, deadline)
            self._wait_sessions(max(deadline - time.monotonic(), 0.0), one_first=True)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until every running node's MQTT gateway accepts a kept session (CONNACK 0 to a
        CONNECT with clean session off and the client id ``mqttkit-ready-<node name>``).

        Call it after restarting a node (it took 0.1-12.5 s after a SIGKILL), or after
        killing one if the next steps must not meet the sessions stream's election (a QoS 1
        PUBLISH may still meet another stream's).

        Args:
            timeout: seconds; ``startup_timeout`` by default.

        Raises:
            NatsServerError: a node did not accept in time; the message has the logs of the
                nodes that did not.
        """
        self._wait_sessions(self.startup_timeout if timeout is None else timeout, one_first=False)

    def _wait_sessions(self, timeout: float, *, one_first: bool) -> None:
        pending = {node.mqtt_port: node for node in self.nodes if node.running}
        deadline = time.monotonic() + timeout
        answered = not one_first
        # Bounded: it ends by time (every probe waits at most _PROBE_TIMEOUT).
        for _ in range(10_000):
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0:
                break
            # With one_first the first probe goes to one node alone: on a new cluster it creates
            # the MQTT streams, and concurrent first connects race (one usually fails).
            ports = list(pending) if answered else list(pending)[:1]
            targets = {port: f"mqttkit-ready-{pending[port].server_name}" for port in ports}
            for port, code in _connack_codes(targets, min(remaining, _PROBE_TIMEOUT)).items():
                if code == 0:
                    answered = True
                    del pending[port]
            if pending:
                time.sleep(min(0.05, max(deadline - time.monotonic(), 0.0)))
        if pending:
            logs = "\n".join(
                f"--- {node.server_name} (mqtt port {port}) ---\n{self._log_tail(node)}"
                for port, node in pending.items()
            )
            raise NatsServerError(
                f"the NATS cluster's MQTT gateway did not accept a session within {timeout} s "
                f"on {', '.join(node.server_name for node in pending.values())}\n{logs}"
            )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every node by its PID (SIGTERM to all at once, then as :meth:`NatsServer.stop`);
        the directories stay."""
        for node in self.nodes:
            pid = node.pid
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)  # our unreaped child: the PID is still its
        for node in self.nodes:
            node.stop(timeout)

    def close(self) -> None:
        """Stop every node and remove their directories (the logs are kept in memory)."""
        self.stop()
        for node in self.nodes:
            node.close()

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        states = ", ".join(repr(node) for node in self.nodes)
        return f"<NatsCluster {self.cluster_name!r} [{states}]>"

    # -- internals -------------------------------------------------------------------------------

    def _set_routes(self) -> None:
        for node in self.nodes:
            node.routes = [other.route_url for other in self.nodes if other is not node]

    @staticmethod
    def _log_size(node: NatsServer) -> int:
        try:
            return node.log_path.stat().st_size
        except (RuntimeError, FileNotFoundError):  # not started yet, or closed
            return 0

    @staticmethod
    def _log_tail(node: NatsServer, lines: int = 40) -> str:
        return "\n".join(node.log_text().splitlines()[-lines:])

    def _wait_for_meta_leader(self, offsets: list[int], deadline: float) -> None:
        waiting = dict(zip(self.nodes, offsets, strict=True))
        # Bounded poll: until the deadline, every few milliseconds.
        for _ in range(100_000):
            for node, offset in list(waiting.items()):
                with node.log_path.open("rb") as f:
                    f.seek(offset)
                    if _NATS_META_LEADER.search(f.read().decode(errors="replace")):
                        del waiting[node]
            if not waiting or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if waiting:
            logs = "\n".join(
                f"--- {node.server_name} ---\n{self._log_tail(node)}" for node in waiting
            )
            raise NatsServerError(
                f"the NATS cluster elected no JetStream meta leader within "
                f"{self.startup_timeout} s\n{logs}"
            )


# ---------------------------------------------------------------------------------------------
# pytest plugin
# ---------------------------------------------------------------------------------------------

#: The fixtures that need Mosquitto; tests using them get the ``mosquitto`` marker.
MOSQUITTO_FIXTURES: Final = frozenset({"mosquitto", "mosquitto_factory", "mosquitto_auth"})

#: The fixtures that need a NATS server; tests using them get the ``nats`` marker.
NATS_FIXTURES: Final = frozenset(
    {"nats_server", "nats_server_factory", "nats_cluster", "nats_cluster_factory"}
)

#: The fixtures that need RabbitMQ; tests using them get the ``rabbitmq`` marker.
RABBITMQ_FIXTURES: Final = frozenset({"rabbitmq_server", "rabbitmq_server_factory"})

_Server = TypeVar("_Server", MosquittoBroker, NatsServer, NatsCluster, RabbitMQServer)

if importlib.util.find_spec("pytest") is not None:
    import pytest

    def pytest_configure(config: pytest.Config) -> None:
        """Register the ``mosquitto``, ``nats`` and ``rabbitmq`` markers (for projects using
        this plugin)."""
        config.addinivalue_line(
            "markers", "mosquitto: needs a real Mosquitto broker (started by the test suite)"
        )
        config.addinivalue_line(
            "markers", "nats: needs a real NATS server's MQTT gateway (started by the test suite)"
        )
        config.addinivalue_line(
            "markers",
            "rabbitmq: needs a real RabbitMQ with rabbitmq_mqtt (started by the test suite)",
        )

    def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
        """Mark every test that uses a broker fixture, so ``-m 'not mosquitto'`` works."""
        for item in items:
            names = set(getattr(item, "fixturenames", ()))
            if MOSQUITTO_FIXTURES & names:
                item.add_marker(pytest.mark.mosquitto)
            if NATS_FIXTURES & names:
                item.add_marker(pytest.mark.nats)
            if RABBITMQ_FIXTURES & names:
                item.add_marker(pytest.mark.rabbitmq)

    def _start_or_fail(broker: _Server) -> _Server:
        try:
            return broker.start()
        except (
            MosquittoNotFoundError,
            NatsServerNotFoundError,
            RabbitMQServerNotFoundError,
        ) as exc:
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

    @pytest.fixture(scope="session")
    def rabbitmq_server() -> Iterator[RabbitMQServer]:
        """One RabbitMQ node (MQTT plugin) shared by the whole test session; starting one takes
        about 10 s.

        Shared: never stop, kill or restart it (use ``rabbitmq_server_factory`` for that), and
        use topics and client ids of your own, since other tests' sessions and retained
        messages live in it too.
        """
        server = _start_or_fail(RabbitMQServer())
        try:
            yield server
        finally:
            server.close()

    @pytest.fixture
    def rabbitmq_server_factory() -> Iterator[Callable[..., RabbitMQServer]]:
        """A function taking :class:`RabbitMQServer` keyword arguments, returning it started
        (about 10 s each: only for tests that stop, kill or restart their server).

        Every server it started is stopped, and its directory removed, when the test ends.
        """
        started: list[RabbitMQServer] = []

        def factory(**kwargs: Any) -> RabbitMQServer:
            server = RabbitMQServer(**kwargs)
            started.append(server)
            return _start_or_fail(server)

        try:
            yield factory
        finally:
            for server in reversed(started):
                server.close()

    @pytest.fixture
    def nats_cluster() -> Iterator[NatsCluster]:
        """A fresh 3-node NATS cluster for this test, the MQTT gateway on every node and the
        MQTT streams replicated on all three (:class:`NatsCluster`); it takes 2-4 s to start.

        Per test, not shared: kill, stop and restart its nodes at will.
        """
        cluster = _start_or_fail(NatsCluster())
        try:
            yield cluster
        finally:
            cluster.close()

    @pytest.fixture
    def nats_cluster_factory() -> Iterator[Callable[..., NatsCluster]]:
        """A function taking :class:`NatsCluster` keyword arguments, returning it started.

        Every cluster it started is stopped, and its directories removed, when the test ends.
        """
        started: list[NatsCluster] = []

        def factory(**kwargs: Any) -> NatsCluster:
            cluster = NatsCluster(**kwargs)
            started.append(cluster)
            return _start_or_fail(cluster)

        try:
            yield factory
        finally:
            for cluster in reversed(started):
                cluster.close()


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
