"""A throw-away NATS server with its MQTT gateway: :class:`NatsServer` and its errors.

This module owns one nats-server's configuration (client and MQTT listeners, JetStream, and
optionally a cluster's routes), and knowing when it is ready (its log lines, the MQTT port
accepting). Clusters of these are :mod:`mqttkit.testing.nats_cluster`'s. The process life
cycle is :class:`~mqttkit.testing._process._ServerProcess`'s. It imports nothing of mqttkit
but its own package.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Final, NoReturn

from ._process import _LIVE, LOOPBACK, _find_binary, _port_accepts, _PortInUseError, _ServerProcess

#: How to get the NATS server, quoted by every "not found" error about it.
NATS_INSTALL_HINT: Final = "install it with `apt-get update && apt-get install -y nats-server`"


class NatsServerError(RuntimeError):
    """The NATS server could not be started (or restarted); the message carries its log."""


class NatsServerNotFoundError(NatsServerError):
    """The ``nats-server`` binary is not installed."""


#: The line nats-server logs once every listener (MQTT included) is open.
_NATS_READY: Final = "Server is ready"


def find_nats_server() -> str:
    """Return the path of the ``nats-server`` binary.

    Raises:
        NatsServerNotFoundError: it is neither on ``$PATH`` nor in ``/usr/sbin``.
    """
    path = _find_binary("nats-server")
    if path is None:
        raise NatsServerNotFoundError(f"nats-server not found: {NATS_INSTALL_HINT}")
    return path


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
