"""A server list and MQTT 5 redirection, end to end (blocking client), against real Mosquitto
brokers and the scripted fake broker: the first server that answers wins, a lost server is
left for the next at once (the backoff only after every server failed in a row), what was not
acknowledged is resent on the next server, the ``connect`` event and ``client.server`` say
where the client is, a redirection is followed (and a loop is not), and a refusal from every
server stops the client. The failover of a kept session across a real cluster is in
tests/brokers (a 3-node NATS cluster)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

import mqttkit
from mqttkit.protocol.packets import MQTT_5, Disconnect, Properties, PubAck, Publish
from mqttkit.testing import MosquittoBroker, free_port
from tests.support.fake_broker import FakeBroker, FakeConnection
from tests.support.recorder import SEED_EVENTS, Recorder

Factory = Callable[..., mqttkit.Client]


def server(broker: MosquittoBroker | FakeBroker) -> mqttkit.Server:
    return mqttkit.Server("127.0.0.1", broker.port)


def test_the_first_server_that_answers_is_used_without_waiting_a_backoff(
    mosquitto: MosquittoBroker, make_client: Factory
) -> None:
    dead = ("127.0.0.1", free_port())  # nothing listens there
    # A backoff would wait >= 2.5 s (half of reconnect_period, the jitter's lower bound).
    client = make_client(servers=[dead, mosquitto.url], reconnect_period=5)
    rec = Recorder(client)
    started = time.monotonic()
    connack, where = rec.wait_for("connect", timeout=5)
    assert time.monotonic() - started < 2.0
    assert where == server(mosquitto)
    assert client.server == server(mosquitto)
    assert isinstance(connack, mqttkit.ConnAck)
    # The dead server's failure was reported, once, with its address.
    errors = [args[0] for name, args in rec.log if name == "error"]
    assert len(errors) == 1
    assert isinstance(errors[0], mqttkit.ServerNotFoundError)
    assert str(dead[1]) in str(errors[0])
    assert rec.names()[:4] == ["error", "close", "offline", "reconnect"]


def test_when_its_server_dies_the_client_moves_to_the_next_and_resubscribes(
    mosquitto_factory: Callable[..., MosquittoBroker], make_client: Factory
) -> None:
    first, second = mosquitto_factory(), mosquitto_factory()
    client = make_client(
        servers=[first.url, second.url], reconnect_period=5, keepalive=1, client_id="mover"
    )
    rec = Recorder(client, (*SEED_EVENTS, "message"))
    rec.wait_for("connect")
    client.subscribe("failover/#", qos=1).result(5)
    time.sleep(1.1)  # the connection lasts (>= keepalive): a loss is a loss, not a failure
    killed_at = time.monotonic()
    first.kill()
    _, where = rec.wait_for("connect", count=2, timeout=5)
    assert where == server(second)
    assert time.monotonic() - killed_at < 2.0  # no backoff (it would wait >= 2.5 s)
    assert rec.count("offline") == 1
    # The new broker had no session: the client subscribed again by itself.
    # Its SUBACK may still be on the way: publish until one arrives (bounded: 50 x 0.1 s).
    publisher = make_client(url=second.url)
    for _ in range(50):
        publisher.publish("failover/x", "after", qos=1).result(5)
        time.sleep(0.1)
        if rec.messages:
            break
    assert rec.wait_messages(1)[0][:2] == ("failover/x", b"after")


def test_unacknowledged_messages_are_resent_on_the_next_server_that_has_the_session(
    make_client: Factory,
) -> None:
    """Node A takes a QoS 1 PUBLISH and dies before PUBACK; node B has the session (Session
    Present): the message goes again there, DUP set, same packet id, and completes."""
    got_first = threading.Event()

    def node_a(conn: FakeConnection) -> None:
        conn.handshake()
        conn.expect(Publish)
        got_first.set()
        conn.abort()

    resent: list[Publish] = []

    def node_b(conn: FakeConnection) -> None:
        connect = conn.handshake(session_present=True)
        assert not connect.clean_start
        packet = conn.expect(Publish)
        resent.append(packet)
        conn.send(PubAck(packet.packet_id))
        conn.expect_silence(0.2)

    with FakeBroker(node_a) as a, FakeBroker(node_b) as b:
        client = make_client(servers=[a.url, b.url], clean=False, client_id="resend-on-b")
        handle = client.publish("t/resent", "payload", qos=1)
        assert got_first.wait(5)
        assert handle.result(5) == 0
        assert client.server == server(b)
        (packet,) = resent
        assert packet.dup
        assert packet.topic == "t/resent"
        assert packet.payload == b"payload"
        assert packet.packet_id == 1


def test_when_every_server_fails_the_backoff_comes_after_each_full_round() -> None:
    """Two servers that close every connection at once: both are tried at once, then the
    client waits (reconnect_period 1 s: at least 0.5 s) before the third attempt."""
    attempts: list[float] = []
    lock = threading.Lock()

    def close_at_once(conn: FakeConnection) -> None:
        with lock:
            attempts.append(time.monotonic())
        conn.abort()

    with FakeBroker(close_at_once) as a, FakeBroker(close_at_once) as b:
        client = mqttkit.Client(servers=[a.url, b.url], reconnect_period=1.0)
        try:
            started = time.monotonic()
            client.connect()
            b.wait_connections(1, timeout=5)
            a.wait_connections(1, timeout=5)
            time.sleep(max(0.0, started + 0.4 - time.monotonic()))
            with lock:
                early = [t - started for t in attempts if t - started < 0.45]
            assert len(early) == 2, early  # one round, and no third attempt before 0.5 s
            a.wait_connections(2, timeout=5)  # the next round comes, after the backoff
            with lock:
                assert sorted(attempts)[2] - started >= 0.5
        finally:
            client.close(force=True).wait(5)


def test_a_refusal_from_every_server_stops_the_client(make_client: Factory) -> None:
    def refuse(conn: FakeConnection) -> None:
        conn.handshake(reason_code=5)  # not authorized: permanent

    with FakeBroker(refuse) as a, FakeBroker(refuse) as b:
        client = make_client(servers=[a.url, b.url], reconnect_period=0.05, username="u")
        rec = Recorder(client)
        handle = client.publish("t", "x", qos=1)
        with pytest.raises(mqttkit.ConnectRefusedError) as info:
            handle.result(5)
        assert info.value.permanent
        client._dispatcher.thread.join(5)
        a.wait_connections(1)  # (the list is appended to after the handler starts)
        b.wait_connections(1)
        time.sleep(0.2)  # a third attempt (reconnect_period 0.05) would be in by now
        assert len(a.connections) == 1
        assert len(b.connections) == 1  # each asked once, then the client stopped
        assert rec.names().count("error") == 2


def test_a_connack_redirection_is_followed_and_the_connect_event_names_the_new_server(
    make_client: Factory,
) -> None:
    with FakeBroker(lambda conn: conn.handshake()) as target:
        reference = f"127.0.0.1:{target.port}"

        def redirecting(conn: FakeConnection) -> None:
            conn.handshake(reason_code=0x9C, properties=Properties(server_reference=reference))

        with FakeBroker(redirecting) as first:
            client = make_client(url=first.url, protocol_version=MQTT_5, reconnect_period=5)
            rec = Recorder(client)
            _, where = rec.wait_for("connect", timeout=3)
            assert where == server(target)
            assert client.server == server(target)
            assert "error" not in rec.names()  # followed: nothing went wrong
            assert len(first.connections) == 1


def test_a_disconnect_with_server_moved_sends_every_later_connection_to_the_new_server(
    make_client: Factory,
) -> None:
    moved_to: list[int] = []

    def new_home(conn: FakeConnection) -> None:
        conn.handshake(session_present=False)
        if len(moved_to) == 0:
            moved_to.append(1)
            conn.abort()  # lost: the next attempt must come here again, not to the old one
        else:
            conn.expect_silence(0.3)

    with FakeBroker(new_home) as target:
        reference = f"mqtt://127.0.0.1:{target.port}"

        def old_home(conn: FakeConnection) -> None:
            conn.handshake()
            conn.send(Disconnect(0x9D, Properties(server_reference=reference)))

        with FakeBroker(old_home) as first:
            client = make_client(url=first.url, protocol_version=MQTT_5, reconnect_period=0.05)
            rec = Recorder(client)
            rec.wait_for("connect", count=3, timeout=5)
            assert [args[1] for name, args in rec.log if name == "connect"] == [
                server(first),
                server(target),
                server(target),
            ]
            assert len(first.connections) == 1
            assert client.options.servers == (server(first),)  # the options stay as given
            assert rec.count("disconnect") == 1
            # Following the move reported nothing; the one error is the abort on the new home.
            errors = [args[0] for name, args in rec.log if name == "error"]
            assert [type(e) for e in errors] == [mqttkit.ConnectionLostError], errors


def test_a_redirection_loop_is_reported_and_not_followed_forever(make_client: Factory) -> None:
    ports: dict[str, int] = {}

    def to(name: str) -> Callable[[FakeConnection], None]:
        def redirect(conn: FakeConnection) -> None:
            reference = f"127.0.0.1:{ports[name]}"
            conn.handshake(reason_code=0x9C, properties=Properties(server_reference=reference))

        return redirect

    with FakeBroker(to("b")) as a, FakeBroker(to("a")) as b:
        ports.update(a=a.port, b=b.port)
        client = make_client(url=a.url, protocol_version=MQTT_5, reconnect_period=30)
        rec = Recorder(client)
        error = rec.wait_for("error", timeout=5)[0]
        assert isinstance(error, mqttkit.RedirectError)
        assert "redirection loop" in str(error)
        assert error.server_reference == f"127.0.0.1:{a.port}"
        time.sleep(0.3)  # the backoff (>= 15 s) holds: no third connection meanwhile
        assert (len(a.connections), len(b.connections)) == (1, 1)
        assert not client.connected
