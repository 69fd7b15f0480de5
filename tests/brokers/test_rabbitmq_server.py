"""Tests of mqttkit.testing.RabbitMQServer and its fixtures: a private RabbitMQ node with the MQTT
plugin, and the facts about RabbitMQ 3.10's MQTT plugin the rest of the suite relies on.

These talk to the node with raw sockets and the codec (one test also runs the public client
through it). Most share the session's ``rabbitmq_server`` and use client ids and topics of
their own; a first start takes about 10 s, so only the two tests that must stop, kill or restart
a node start one of their own.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mqttkit import testing
from mqttkit.protocol.packets import (
    MQTT_3_1_1,
    ConnAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
    Will,
)
from mqttkit.testing import RabbitMQServer, RabbitMQServerError, RabbitMQServerNotFoundError, plugin
from tests.support.fake_broker import PacketSocket, connect_client
from tests.support.recorder import Recorder

pytestmark = pytest.mark.rabbitmq

#: Ports a system-wide RabbitMQ (and Mosquitto) would hold: AMQP, distribution, epmd, MQTT,
#: MQTT over TLS, management.
DEFAULT_PORTS = frozenset({5672, 25672, 4369, 1883, 8883, 15672})


def unique(name: str) -> str:
    """A client id / topic level of this test's own (the session's node is shared)."""
    return f"rmq-{name}-{uuid.uuid4().hex[:8]}"


def frame(first: int, body: bytes) -> bytes:
    """A packet by hand: the first byte, the Remaining Length (variable byte integer), body."""
    length, encoded = len(body), bytearray()
    while True:
        length, digit = divmod(length, 128)
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes([first]) + bytes(encoded) + body


def raw_connect(client_id: bytes, level: int = MQTT_3_1_1, *, clean: bool = True) -> bytes:
    """CONNECT by hand at ``level`` (3: ``MQIsdp``), keepalive 60 s, no will or credentials."""
    name = b"\x00\x06MQIsdp" if level == 3 else b"\x00\x04MQTT"
    variable = name + bytes([level, 0x02 if clean else 0x00, 0, 60])
    if level == 5:
        variable += b"\x00"  # no properties
    return frame(0x10, variable + len(client_id).to_bytes(2, "big") + client_id)


def client(
    server: RabbitMQServer, client_id: str, *, clean: bool = True, will: Will | None = None
) -> PacketSocket:
    """A raw MQTT 3.1.1 connection, CONNACK checked (accepted, no session unless kept)."""
    conn = connect_client(server.host, server.mqtt_port)
    ack = conn.mqtt_connect(client_id, clean_start=clean, will=will)
    assert ack.reason_code == 0
    return conn


def subscribe(conn: PacketSocket, topic_filter: str, qos: int = 1, packet_id: int = 1) -> int:
    """SUBSCRIBE to one filter; return the QoS granted."""
    conn.send(Subscribe(packet_id, (Subscription(topic_filter, qos),)))
    suback = conn.expect(SubAck)
    assert suback.packet_id == packet_id
    (granted,) = suback.reason_codes
    return granted


def publications(conn: PacketSocket, quiet: float = 0.5) -> list[Publish]:
    """Every PUBLISH that arrives until ``quiet`` seconds pass without one (a negative check:
    it waits at least ``quiet``)."""
    received: list[Publish] = []
    for _ in range(1000):
        try:
            packet = conn.recv_packet(timeout=quiet)
        except AssertionError:
            return received
        assert isinstance(packet, Publish), packet
        received.append(packet)
    raise AssertionError("more than 1000 messages")  # pragma: no cover


def process_tree(pid: int) -> set[int]:
    """``pid`` and every process descending from it, from ``/proc`` (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = set(), [pid]
    while todo:
        current = todo.pop()
        tree.add(current)
        todo.extend(children.get(current, ()))
    return tree


def alive(pid: int) -> bool:
    """True while ``pid`` is a process that is not a zombie (a zombie has ended; whoever its
    parent is will reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_all_gone(pids: set[int], timeout: float = 10.0) -> None:
    """Bounded wait until none of ``pids`` runs (the node's helpers end on their own once the
    Erlang VM is gone: they read its pipes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(pid) for pid in pids):
            return
        time.sleep(0.05)
    left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids if alive(pid)}
    raise AssertionError(f"still running after {timeout} s: {left}")


def all_ports(server: RabbitMQServer) -> tuple[int, int, int, int]:
    return server.mqtt_port, server.amqp_port, server.dist_port, server.epmd_port


def epmd_names(port: int) -> bytes:
    """Ask the epmd on ``port`` which nodes it knows (NAMES_REQ)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"\x00\x01n")
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)[4:]  # after epmd's own port


# -- the shared node ---------------------------------------------------------------------------


def test_starts_private_on_free_loopback_ports(rabbitmq_server: RabbitMQServer) -> None:
    server = rabbitmq_server
    assert server.running
    assert server.host == "127.0.0.1"
    ports = {server.mqtt_port, server.amqp_port, server.dist_port, server.epmd_port}
    assert len(ports) == 4
    assert not ports & DEFAULT_PORTS
    assert server.port == server.mqtt_port
    assert server.url == f"mqtt://127.0.0.1:{server.mqtt_port}"
    assert server.node_name.startswith("mqttkit-")
    assert server.node_name.endswith("@localhost")
    log = server.log_text()
    assert f"started MQTT TCP listener on 127.0.0.1:{server.mqtt_port}" in log
    assert f"started TCP listener on 127.0.0.1:{server.amqp_port}" in log
    assert "Server startup complete; 1 plugins started." in log
    config = server.config_path.read_text()
    assert f"mqtt.listeners.tcp.1 = 127.0.0.1:{server.mqtt_port}" in config
    # Its own epmd knows its node (and only it), its own cookie and database in its directory.
    assert epmd_names(server.epmd_port) == (
        f"name {server.node_name.split('@')[0]} at port {server.dist_port}\n".encode()
    )
    assert (server.directory / "home" / ".erlang.cookie").is_file()
    assert server.mnesia_dir.is_dir()
    assert server.mnesia_dir.is_relative_to(server.directory)


def test_round_trip_with_the_client(rabbitmq_server: RabbitMQServer, make_client: Any) -> None:
    topic = unique("rt")
    client_ = make_client(url=rabbitmq_server.url, protocol_version=4, client_id=unique("rt"))
    rec = Recorder(client_, ("connect", "error", "message"))
    rec.wait_for("connect")
    granted = client_.subscribe(f"{topic}/#", qos=1).result(5)
    assert [g.qos for g in granted] == [1]
    client_.publish(f"{topic}/a", b"hello rabbit", qos=1).result(5)
    rec.wait_until(lambda: len(rec.messages) >= 1, timeout=5, what="the message back")
    received_topic, payload, *_ = rec.messages[0]
    assert (received_topic, payload) == (f"{topic}/a", b"hello rabbit")
    assert "error" not in rec.names()


def test_qos1_round_trip_raw(rabbitmq_server: RabbitMQServer) -> None:
    topic = unique("raw").encode()
    with client(rabbitmq_server, unique("raw")) as conn:
        conn.send_raw(frame(0x82, b"\x00\x01" + len(topic).to_bytes(2, "big") + topic + b"\x01"))
        assert conn.recv_frame() == b"\x90\x03\x00\x01\x01"  # SUBACK, QoS 1 granted
        conn.send_raw(frame(0x32, len(topic).to_bytes(2, "big") + topic + b"\x00\x07hi"))
        # PUBACK 7, and the message back with the node's own packet id.
        frames = {conn.recv_frame(), conn.recv_frame()}
        back = frame(0x32, len(topic).to_bytes(2, "big") + topic + b"\x00\x01hi")
        assert frames == {b"\x40\x02\x00\x07", back}


def test_mqtt5_connect_is_closed_without_connack(rabbitmq_server: RabbitMQServer) -> None:
    with connect_client(rabbitmq_server.host, rabbitmq_server.mqtt_port) as conn:
        conn.send_raw(raw_connect(b"v5", level=5))
        assert conn.closed()
        assert not conn.received


def test_mqtt31_is_accepted_with_a_long_client_id(rabbitmq_server: RabbitMQServer) -> None:
    with connect_client(rabbitmq_server.host, rabbitmq_server.mqtt_port) as conn:
        conn.send_raw(raw_connect(unique("mqtt-3-1-longer-than-23").encode(), level=3))
        assert conn.recv_frame() == b"\x20\x02\x00\x00"


def test_qos2_is_handled_as_qos1(rabbitmq_server: RabbitMQServer) -> None:
    topic = unique("qos2")
    with client(rabbitmq_server, unique("qos2")) as conn:
        assert subscribe(conn, topic, qos=2) == 1
        conn.send(Publish(topic, b"two", qos=2, packet_id=7))
        # A PUBACK (not a PUBREC), and the message back at QoS 1.
        frames = {conn.recv_frame(), conn.recv_frame()}
        back = frame(0x32, len(topic).to_bytes(2, "big") + topic.encode() + b"\x00\x01two")
        assert frames == {b"\x40\x02\x00\x07", back}
        assert not conn.closed(timeout=0.2)


def test_retained_messages_reach_exact_subscriptions_only(
    rabbitmq_server: RabbitMQServer,
) -> None:
    topic = unique("retained")
    with client(rabbitmq_server, unique("retainer")) as conn:
        conn.send(Publish(f"{topic}/a/b", b"kept", qos=1, retain=True, packet_id=1))
        assert conn.recv_frame() == b"\x40\x02\x00\x01"
    for topic_filter in (f"{topic}/#", f"{topic}/+/b"):
        with client(rabbitmq_server, unique("wildcard")) as conn:
            assert subscribe(conn, topic_filter) == 1
            assert publications(conn) == []
    with client(rabbitmq_server, unique("exact")) as conn:
        assert subscribe(conn, f"{topic}/a/b") == 1
        (message,) = publications(conn)
        assert (message.topic, message.payload, message.retain) == (f"{topic}/a/b", b"kept", True)


def test_dot_separates_topic_levels_as_slash_does(rabbitmq_server: RabbitMQServer) -> None:
    topic = unique("dots")
    with client(rabbitmq_server, unique("dots")) as conn:
        assert subscribe(conn, f"{topic}/+", qos=0, packet_id=1) == 0
        assert subscribe(conn, f"{topic}/x.y", qos=0, packet_id=2) == 0
        conn.send(Publish(f"{topic}/x/y", b"slash"))
        conn.send(Publish(f"{topic}/x.y", b"dot"))
        conn.send(Publish(f"{topic}/x", b"one level"))
        received = [(m.topic, m.payload) for m in publications(conn)]
    # "x.y" is two levels: not matched by "+", matched by "x.y" (= "x/y"), delivered as "x/y".
    assert sorted(received) == [
        (f"{topic}/x", b"one level"),
        (f"{topic}/x/y", b"dot"),
        (f"{topic}/x/y", b"slash"),
    ]


def test_client_ids_have_no_length_limit(rabbitmq_server: RabbitMQServer) -> None:
    host, port = rabbitmq_server.host, rabbitmq_server.mqtt_port
    longest = unique("long").encode().ljust(65535, b"x")
    with connect_client(host, port) as conn:
        conn.send_raw(raw_connect(longest, clean=False))
        assert conn.recv_frame() == b"\x20\x02\x00\x00"
        assert subscribe(conn, unique("long")) == 1  # its durable queue is named after it
        conn.send_raw(b"\xe0\x00")  # DISCONNECT
    with connect_client(host, port) as conn:
        conn.send_raw(raw_connect(longest, clean=True))  # end the kept session
        assert conn.recv_frame() == b"\x20\x02\x00\x00"
    with connect_client(host, port) as conn:
        conn.send_raw(raw_connect(b"", clean=True))
        assert conn.recv_frame() == b"\x20\x02\x00\x00"
    with connect_client(host, port) as conn:
        conn.send_raw(raw_connect(b"", clean=False))
        assert conn.recv_frame() == b"\x20\x02\x00\x02"  # identifier rejected


@pytest.mark.parametrize("ending", ["fin", "rst", "disconnect"])
def test_will_on_a_cut_connection_only(rabbitmq_server: RabbitMQServer, ending: str) -> None:
    topic = unique(f"will-{ending}")
    with client(rabbitmq_server, unique("watcher")) as watcher:
        assert subscribe(watcher, topic, qos=0) == 0
        conn = client(rabbitmq_server, unique("mortal"), will=Will(topic, b"gone"))
        if ending == "fin":
            conn.close()
        elif ending == "rst":
            conn.abort()
        else:
            conn.send_raw(b"\xe0\x00")
            conn.close()
        if ending == "disconnect":
            assert publications(watcher, quiet=1.0) == []
        else:
            will = watcher.expect(Publish)
            assert (will.topic, will.payload) == (topic, b"gone")


def test_kept_session_gets_what_was_published_while_offline(
    rabbitmq_server: RabbitMQServer,
) -> None:
    client_id, topic = unique("kept"), unique("kept")
    with client(rabbitmq_server, client_id, clean=False) as conn:
        assert subscribe(conn, topic) == 1
        conn.send_raw(b"\xe0\x00")
    with client(rabbitmq_server, unique("publisher")) as publisher:
        publisher.send(Publish(topic, b"while away", qos=1, packet_id=1))
        assert publisher.recv_frame() == b"\x40\x02\x00\x01"
    with connect_client(rabbitmq_server.host, rabbitmq_server.mqtt_port) as conn:
        assert conn.mqtt_connect(client_id, clean_start=False) == ConnAck(session_present=True)
        (message,) = publications(conn)
        assert (message.topic, message.payload, message.qos) == (topic, b"while away", 1)
    with client(rabbitmq_server, client_id):  # clean: the session (its queue) goes
        pass


def test_tests_using_the_rabbitmq_fixtures_are_marked(
    rabbitmq_server: RabbitMQServer, request: pytest.FixtureRequest
) -> None:
    assert request.node.get_closest_marker("rabbitmq") is not None
    assert request.node.get_closest_marker("mosquitto") is None


# -- nodes of a test's own ---------------------------------------------------------------------


def test_restart_kill_and_close(
    rabbitmq_server_factory: Callable[..., RabbitMQServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """restart() keeps the ports and the database (a kept session and its queued message);
    kill() is a crash the next start() recovers from; close() leaves no process (the node's
    helpers and its epmd included) and no directory. The caller's RABBITMQ_* variables do not
    reach the node."""
    leaked = unique("leaked")
    monkeypatch.setenv("RABBITMQ_NODENAME", f"{leaked}@localhost")
    monkeypatch.setenv("RABBITMQ_LOGS", f"/tmp/{leaked}.log")
    server = rabbitmq_server_factory()
    assert leaked not in server.log_text()
    assert f"node           : {server.node_name}" in server.log_text()
    ports, directory = all_ports(server), server.directory
    pid, epmd_pid = server.pid, server.epmd_pid
    assert pid is not None
    assert epmd_pid is not None
    processes = process_tree(pid) | {epmd_pid}
    assert len(processes) >= 4  # the script, the Erlang VM, its helpers, epmd

    client_id, topic = unique("survivor"), unique("survivor")
    with client(server, client_id, clean=False) as conn:
        assert subscribe(conn, topic) == 1
        conn.send_raw(b"\xe0\x00")
    with client(server, unique("publisher")) as publisher:
        publisher.send(Publish(topic, b"before the restart", qos=1, packet_id=1))
        assert publisher.recv_frame() == b"\x40\x02\x00\x01"

    server.restart()
    assert all_ports(server) == ports
    assert server.pid not in (None, pid)
    assert server.epmd_pid not in (None, epmd_pid)
    wait_all_gone(processes)
    with connect_client(server.host, server.mqtt_port) as conn:
        assert conn.mqtt_connect(client_id, clean_start=False) == ConnAck(session_present=True)
        (message,) = publications(conn)
        assert (message.topic, message.payload) == (topic, b"before the restart")

    pid = server.pid
    assert pid is not None
    processes = process_tree(pid) | {server.epmd_pid or 0}
    server.kill()
    assert not server.running
    assert server.pid is None
    assert server.epmd_pid is None
    wait_all_gone(processes)
    server.start()
    assert all_ports(server) == ports
    with client(server, unique("after-kill")):
        pass

    pid = server.pid
    assert pid is not None
    processes = process_tree(pid) | {server.epmd_pid or 0}
    server.close()
    wait_all_gone(processes)
    assert not directory.exists()
    assert "SIGTERM received - shutting down" in server.log_text()  # kept in memory


def test_a_taken_port_is_chosen_again(
    rabbitmq_server_factory: Callable[..., RabbitMQServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The distribution port: RabbitMQ reports it differently from a listener's (eaddrinuse),
    # and early, so the retry costs little.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        original = RabbitMQServer._choose_ports
        calls: list[int] = []

        def choose() -> dict[str, int]:
            calls.append(1)
            ports = original()
            return {**ports, "dist": taken} if len(calls) == 1 else ports

        monkeypatch.setattr(RabbitMQServer, "_choose_ports", staticmethod(choose))
        server = rabbitmq_server_factory()
        assert len(calls) == 2
        assert server.dist_port != taken
        assert "could not bind to distribution port" in server.log_text()
        with client(server, unique("retried")):
            pass


# -- failures, without a node ------------------------------------------------------------------


def fake_executable(directory: Path, script: str) -> str:
    path = directory / "fake-rabbitmq-server"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


def test_startup_failure_reports_the_log_and_stops_epmd() -> None:
    server = RabbitMQServer(extra_config="no_such_key = 1")
    try:
        with pytest.raises(RabbitMQServerError, match="no_such_key") as excinfo:
            server.start()
        assert "exited with status" in str(excinfo.value)
        assert not server.running
        assert server.epmd_pid is None
    finally:
        server.close()


def test_a_node_that_never_answers_times_out(tmp_path: Path) -> None:
    server = RabbitMQServer(
        executable=fake_executable(tmp_path, "exec sleep 60"), startup_timeout=0.5
    )
    try:
        with pytest.raises(
            RabbitMQServerError, match=r"did not answer an MQTT CONNECT within 0\.5 s"
        ):
            server.start()
        assert not server.running
        assert server.epmd_pid is None
    finally:
        server.close()


def test_missing_rabbitmq_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(
        testing._process._FALLBACK_PATHS, "rabbitmq-server", (str(tmp_path / "rabbitmq-server"),)
    )
    hint = "install it with `apt-get update && apt-get install -y rabbitmq-server`"
    with pytest.raises(RabbitMQServerNotFoundError) as excinfo:
        testing.find_rabbitmq_server()
    assert str(excinfo.value) == f"rabbitmq-server not found: {hint}"
    with pytest.raises(RabbitMQServerNotFoundError, match="apt-get install -y rabbitmq-server"):
        RabbitMQServer().start()
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y rabbitmq-server"):
        plugin._start_or_fail(RabbitMQServer())
    # Erlang's epmd comes with it.
    monkeypatch.setitem(testing._process._FALLBACK_PATHS, "epmd", (str(tmp_path / "epmd"),))
    server = RabbitMQServer(executable=fake_executable(tmp_path, "exit 1"))
    with pytest.raises(RabbitMQServerNotFoundError, match=r"epmd .* not found: install it"):
        server.start()


def test_debians_wrapper_script_is_passed_over(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # /usr/sbin/rabbitmq-server on Debian/Ubuntu switches to the rabbitmq user or refuses.
    (tmp_path / "sbin").mkdir()
    wrapper = tmp_path / "rabbitmq-script-wrapper"
    fake_executable(tmp_path, "exit 1")
    (tmp_path / "fake-rabbitmq-server").rename(wrapper)
    (tmp_path / "sbin" / "rabbitmq-server").symlink_to(wrapper)
    real = fake_executable(tmp_path, "exit 1")
    monkeypatch.setenv("PATH", str(tmp_path / "sbin"))
    monkeypatch.setitem(testing._process._FALLBACK_PATHS, "rabbitmq-server", (real,))
    assert testing.find_rabbitmq_server() == real
