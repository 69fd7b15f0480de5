"""Tests of mqttkit.testing.NatsCluster: three NATS servers as one cluster, the MQTT gateway on
every node, the MQTT streams replicated on all three.

The key scenario: a kept session (clean session off, a QoS 1 subscription) outlives the death
of the node it was connected to, and the messages published meanwhile on another node reach it
on a third node. The conversations are raw MQTT through the codec (``PacketSocket``), so every
CONNACK flag is seen; one test runs the public client across two nodes. Every wait is bounded.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mqttkit.protocol.packets import ConnAck, PubAck, Publish, SubAck, Subscribe, Subscription
from mqttkit.testing import (
    NatsCluster,
    NatsServer,
    NatsServerError,
    NatsServerNotFoundError,
    plugin,
)
from tests.support.fake_broker import PacketSocket, connect_client
from tests.support.recorder import Recorder

#: How long a step may wait for JetStream's elections after a node's death (seen: up to ~9 s).
FAILOVER_TIMEOUT = 20.0


def jetstream_request(server: NatsServer, subject: str) -> dict[str, Any]:
    """One JetStream API request over the NATS protocol (raw: no NATS client library here)."""
    with socket.create_connection((server.host, server.client_port), timeout=5) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"INFO ")
        sock.sendall(
            b'CONNECT {"verbose":false}\r\nSUB _INBOX.t 1\r\n'
            + f"PUB {subject} _INBOX.t 0\r\n\r\n".encode()
        )
        for _ in range(100):  # PINGs and +OKs may come first
            line = reader.readline()
            assert line, "the NATS server closed the connection"
            if line.startswith(b"PING"):
                sock.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG "):
                size = int(line.split()[-1])
                reply: dict[str, Any] = json.loads(reader.read(size + 2)[:size])
                return reply
        raise AssertionError(f"no reply to {subject}")


def connect_with_retry(
    server: NatsServer, client_id: str, *, clean: bool, timeout: float = FAILOVER_TIMEOUT
) -> tuple[PacketSocket, ConnAck]:
    """CONNECT until the gateway answers CONNACK 0: during an election it closes the connection
    after 4 s without a CONNACK. Bounded by ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    failures: list[str] = []
    for _ in range(100):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        client = connect_client(server.host, server.mqtt_port)
        try:
            ack = client.mqtt_connect(client_id, clean_start=clean, timeout=min(remaining, 6.0))
        except AssertionError as exc:  # closed without a CONNACK, or none in time
            client.close()
            failures.append(str(exc))
            time.sleep(0.1)
            continue
        if ack.reason_code == 0:
            return client, ack
        client.close()
        failures.append(f"CONNACK {ack.reason_code}")
    raise AssertionError(f"{client_id!r} could not connect to {server!r}: {failures}")


def publish_all(
    server: NatsServer, topic: str, payloads: list[bytes], timeout: float = FAILOVER_TIMEOUT
) -> None:
    """Publish at QoS 1 until every payload is acknowledged, reconnecting (and resending the
    unacknowledged one: QoS 1 allows a duplicate) when the gateway drops the connection."""
    deadline = time.monotonic() + timeout
    unacked = list(payloads)
    packet_id = 0
    for _ in range(100):
        if not unacked:
            return
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"not acknowledged within {timeout} s: {unacked}"
        client, _ack = connect_with_retry(server, "cluster-pub", clean=True, timeout=remaining)
        with client:
            try:
                while unacked:
                    packet_id += 1
                    client.send(Publish(topic, unacked[0], qos=1, packet_id=packet_id))
                    wait = min(deadline - time.monotonic(), 6.0)
                    assert client.expect(PubAck, timeout=wait).packet_id == packet_id
                    unacked.pop(0)
            except AssertionError:
                time.sleep(0.1)  # dropped during an election: reconnect and resend
    assert not unacked, f"not acknowledged: {unacked}"


def receive_payloads(client: PacketSocket, expected: set[bytes], timeout: float) -> set[bytes]:
    """Acknowledge PUBLISHes until every expected payload came (duplicates allowed)."""
    deadline = time.monotonic() + timeout
    got: set[bytes] = set()
    for _ in range(1000):
        if expected <= got:
            break
        packet = client.expect(Publish, timeout=max(deadline - time.monotonic(), 0.01))
        assert packet.qos == 1
        assert packet.packet_id is not None
        client.send(PubAck(packet.packet_id))
        got.add(packet.payload)
    return got


def test_cluster_starts_with_replicated_mqtt_streams(nats_cluster: NatsCluster) -> None:
    nodes = nats_cluster.nodes
    assert len(nodes) == 3
    assert nats_cluster.running
    ports = [port for n in nodes for port in (n.mqtt_port, n.client_port, n.cluster_port)]
    assert len(set(ports)) == 9
    assert not {1883, 4222, 6222, 8222} & set(ports)
    assert nats_cluster.urls == [f"mqtt://127.0.0.1:{n.mqtt_port}" for n in nodes]
    assert len({n.server_name for n in nodes}) == 3
    assert len({n.directory for n in nodes}) == 3
    for node in nodes:
        config = node.config_path.read_text()
        assert "stream_replicas: 3" in config
        others = [other.route_url for other in nodes if other is not node]
        assert f"routes: {json.dumps(others)}" in config
    # Every MQTT stream has a leader and two current replicas: one on each node.
    for stream in ("$MQTT_sess", "$MQTT_msgs", "$MQTT_rmsgs"):
        info = jetstream_request(nodes[1], f"$JS.API.STREAM.INFO.{stream}")
        assert info["config"]["num_replicas"] == 3, info
        cluster = info["cluster"]
        peers = {cluster["leader"], *(r["name"] for r in cluster["replicas"])}
        assert peers == {n.server_name for n in nodes}, info


def test_qos1_message_published_on_one_node_reaches_a_subscriber_on_another(
    nats_cluster: NatsCluster, make_client: Callable[..., Any]
) -> None:
    subscriber = make_client(url=nats_cluster.urls[1], protocol_version=4, client_id="x-sub")
    rec = Recorder(subscriber, ("connect", "error", "message"))
    rec.wait_for("connect")
    assert [g.qos for g in subscriber.subscribe("cross/#", qos=1).result(5)] == [1]
    publisher = make_client(url=nats_cluster.urls[0], protocol_version=4, client_id="x-pub")
    publisher.publish("cross/a", b"from node 0", qos=1).result(5)
    rec.wait_until(lambda: len(rec.messages) >= 1, timeout=5, what="the message on node 1")
    topic, payload, *_ = rec.messages[0]
    assert (topic, payload) == ("cross/a", b"from node 0")
    assert "error" not in rec.names()


def test_a_client_id_connecting_on_another_node_takes_the_session_over(
    nats_cluster: NatsCluster,
) -> None:
    _node0, node1, node2 = nats_cluster.nodes
    first, ack = connect_with_retry(node1, "twin", clean=False, timeout=5)
    assert not ack.session_present
    with first:
        second, ack = connect_with_retry(node2, "twin", clean=False, timeout=5)
        with second:
            assert ack.session_present
            # The gateway on node 1 hears of it through the cluster and closes the old one.
            assert first.closed(timeout=5)
            assert not second.closed(timeout=0.2)
    assert "a remote connection has started with the same client ID" in node1.log_text()


def test_kept_session_survives_the_death_of_its_node(nats_cluster: NatsCluster) -> None:
    node0, node1, node2 = nats_cluster.nodes
    ports0 = (node0.mqtt_port, node0.client_port, node0.cluster_port)
    subscriber, ack = connect_with_retry(node0, "survivor", clean=False, timeout=5)
    assert not ack.session_present
    with subscriber:
        subscriber.send(Subscribe(1, (Subscription("failover/t", qos=1),)))
        assert subscriber.expect(SubAck).reason_codes == (1,)

        node0.kill()  # SIGKILL: the subscriber's connection just drops
        killed = time.monotonic()
    assert not node0.running

    payloads = [b"m0", b"m1", b"m2"]
    publish_all(node1, "failover/t", payloads)
    published = time.monotonic() - killed

    resumed, ack = connect_with_retry(node2, "survivor", clean=False)
    connack = time.monotonic() - killed
    with resumed:
        assert ack.session_present
        got = receive_payloads(resumed, set(payloads), FAILOVER_TIMEOUT)
        delivered = time.monotonic() - killed
        assert got == set(payloads)
        print(
            f"\nnode 0 killed -> 3 QoS 1 messages acknowledged on node 1: {published:.2f} s, "
            f"CONNACK (session present) on node 2: {connack:.2f} s, "
            f"messages delivered: {delivered:.2f} s"
        )

        # Node 0 comes back on its ports with its store, rejoins, and serves the cluster: a
        # message published through it reaches the resumed session on node 2.
        assert (node0.directory / "jetstream").is_dir()
        restarted = time.monotonic()
        node0.start()
        nats_cluster.wait_ready()
        assert (node0.mqtt_port, node0.client_port, node0.cluster_port) == ports0
        publish_all(node0, "failover/t", [b"via node 0"])
        assert receive_payloads(resumed, {b"via node 0"}, FAILOVER_TIMEOUT) == {b"via node 0"}
        print(f"node 0 restarted and relayed a message: {time.monotonic() - restarted:.2f} s")


def test_a_route_port_taken_meanwhile_is_replaced() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        # A lone node with a route to nowhere: enough to start (clustered JetStream needs one).
        server = NatsServer(
            cluster_name="solo", cluster_port=taken, routes=["nats-route://127.0.0.1:9"]
        )
        with server:
            assert server.cluster_port != taken
            assert f"Listening for route connections on 127.0.0.1:{server.cluster_port}" in (
                server.log_text()
            )


def test_a_node_that_fails_to_start_stops_the_cluster_with_its_log() -> None:
    cluster = NatsCluster(extra_config="no_such_option: 1")
    try:
        with pytest.raises(NatsServerError, match="no_such_option"):
            cluster.start()
        assert not any(node.running for node in cluster.nodes)
    finally:
        cluster.close()


def test_a_missing_nats_server_names_the_install_command(tmp_path: Path) -> None:
    cluster = NatsCluster(executable=str(tmp_path / "nats-server"))
    with pytest.raises(NatsServerNotFoundError, match="apt-get install -y nats-server"):
        cluster.start()
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y nats-server"):
        plugin._start_or_fail(cluster)
    assert not any(node.running for node in cluster.nodes)


def test_cluster_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 2 nodes"):
        NatsCluster(size=1)
    with pytest.raises(ValueError, match="stream_replicas"):
        NatsCluster(size=2, stream_replicas=3)
    with pytest.raises(ValueError, match="need a cluster_name"):
        NatsServer(routes=["nats-route://127.0.0.1:9"])
    assert NatsCluster(size=5).stream_replicas == 3


def test_tests_using_the_cluster_fixtures_are_marked(
    nats_cluster_factory: Callable[..., NatsCluster], request: pytest.FixtureRequest
) -> None:
    assert request.node.get_closest_marker("nats") is not None  # the factory starts nothing
