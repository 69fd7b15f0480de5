"""A throw-away NATS cluster: :class:`NatsCluster`, nodes whose MQTT sessions survive a death.

This module owns building a cluster of :class:`~mqttkit.testing.nats.NatsServer` nodes (route
ports known to every node before any starts, the MQTT streams replicated) and knowing when it
is ready: a JetStream meta leader in every node's log, then every gateway accepting a kept
session, probed with MQTT CONNECTs encoded by hand here (this package imports nothing of
mqttkit, the codec included).
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import socket
import time
from typing import Final, Self

from ._process import LOOPBACK, _free_ports
from .nats import (
    NATS_INSTALL_HINT,
    NatsServer,
    NatsServerError,
    NatsServerNotFoundError,
    find_nats_server,
)

#: What a cluster node logs once the JetStream meta group has a leader (itself or another).
_NATS_META_LEADER: Final = re.compile(
    r"Self is new JetStream cluster metadata leader|JetStream cluster new metadata leader"
)

#: The longest one readiness probe waits for its CONNACK: the gateway gives up on a JetStream
#: request after 4 s and then closes the connection, so a probe hardly ever waits that long.
_PROBE_TIMEOUT: Final = 5.0


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
