"""The NodeMCU ``mqtt`` API (seed 001), against scripted fake brokers: every connection failure
reason from its real condition, the callback of each call and when it fires, events, return
values, argument errors, ``max_message_length`` / ``overflow`` and autoreconnect.

The same API against a real Mosquitto (the example, Last Will, TLS, sessions, retained
messages, broker restart) is in ``test_nodemcu_broker.py``.
"""

from __future__ import annotations

import inspect
import threading
import time
from pathlib import Path

import pytest

import mqttkit
from mqttkit import nodemcu
from mqttkit.protocol.codec import encode_packet
from mqttkit.protocol.packets import (
    Connect,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from mqttkit.testing import MosquittoBroker, free_port
from tests.conftest import NodeMCUClients
from tests.support.fake_broker import FakeBroker, FakeConnection, unresponsive_listener
from tests.support.recorder import Recorder

ROOT = Path(__file__).resolve().parents[1]

#: Every event of the API.
EVENTS = tuple(sorted(nodemcu.EVENTS))

#: Longer than any backoff before a first reconnect attempt (0.5 to 1 s with a 1 s period).
NO_RECONNECT_WINDOW = 1.5


def connect_fake(
    make_nodemcu: NodeMCUClients,
    broker: FakeBroker,
    *numbers: int,
    clientid: str = "nodemcu-fake",
    max_message_length: int = 0,
) -> tuple[nodemcu.Client, Recorder, FakeConnection]:
    """A NodeMCU client connected to ``broker``, with every event and its per-connect
    callbacks recorded (``on_connected``, ``on_failed``)."""
    m = make_nodemcu(clientid, 60, None, None, 1, max_message_length)
    rec = Recorder(m, EVENTS)
    started = m.connect(
        broker.host,
        broker.port,
        *(numbers or (0, 0)),
        rec.listener("on_connected"),
        rec.listener("on_failed"),
    )
    assert started is True
    conn = broker.accept()
    conn.handshake()
    rec.wait_for("connect")
    return m, rec, conn


def marker(conn: FakeConnection, rec: Recorder, text: str) -> None:
    """Send a QoS 0 message and wait until the client delivered it: everything the broker
    sent before it has been handled too (the client handles its input in order)."""
    before = len(rec.messages)
    conn.send(Publish("marker", text.encode()))
    got = rec.wait_messages(before + 1)
    assert got[-1][1:] == ("marker", text.encode())


def wait_stopped(make_nodemcu: NodeMCUClients) -> None:
    """Wait until the latest core client has stopped: its dispatch thread ended, so every
    event it had has been delivered (and the process could exit)."""
    thread = make_nodemcu.core._dispatcher.thread
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive(), "the client did not stop"


# ---------------------------------------------------------------------------------------------
# Connection failures: each reason from the condition it names
# ---------------------------------------------------------------------------------------------


def start_failing(
    make_nodemcu: NodeMCUClients, host: str, port: int, *numbers: int, **kwargs: object
) -> tuple[nodemcu.Client, Recorder]:
    m = make_nodemcu("nodemcu-fail", 60)
    rec = Recorder(m, EVENTS)
    started = m.connect(
        host, port, *numbers, rec.listener("on_connected"), rec.listener("on_failed"), **kwargs
    )
    assert started is True
    return m, rec


def failure_reason(make_nodemcu: NodeMCUClients, m: nodemcu.Client, rec: Recorder) -> int:
    """The reason given to ``on_failed`` and to ``connfail`` (the same, client first), after
    which the client stops: no connect, no offline, nothing more."""
    client, reason = rec.wait_for("on_failed")
    assert client is m
    assert rec.wait_for("connfail") == (m, reason)
    wait_stopped(make_nodemcu)
    assert rec.names() == ["on_failed", "connfail"]
    assert not m.connected
    assert isinstance(m.error, mqttkit.MQTTError)
    return reason


def test_nothing_listening_is_server_not_found(make_nodemcu) -> None:
    m, rec = start_failing(make_nodemcu, "127.0.0.1", free_port())
    assert failure_reason(make_nodemcu, m, rec) == nodemcu.CONN_FAIL_SERVER_NOT_FOUND == -5
    assert isinstance(m.error, mqttkit.ServerNotFoundError)


def test_unresolvable_host_is_dns(make_nodemcu) -> None:
    m, rec = start_failing(make_nodemcu, "no-such-broker.invalid", 1883)
    assert failure_reason(make_nodemcu, m, rec) == nodemcu.CONN_FAIL_DNS == -3
    assert isinstance(m.error, mqttkit.HostNotFoundError)


def test_silent_server_is_timeout_receiving(make_nodemcu, monkeypatch) -> None:
    # The module constant is the default of every connect(); tests may lower it.
    monkeypatch.setattr(nodemcu, "CONNECT_TIMEOUT", 0.5)
    with FakeBroker(silent=True) as broker:
        started = time.monotonic()
        m, rec = start_failing(make_nodemcu, broker.host, broker.port, 0, 1)
        assert failure_reason(make_nodemcu, m, rec) == nodemcu.CONN_FAIL_TIMEOUT_RECEIVING == -2
        assert 0.5 <= time.monotonic() - started < 3.0
        assert isinstance(m.error, mqttkit.ConnectTimeoutError)
        assert m.error.stage == "receiving"
        # autoreconnect=1, but the very first connection failed: no second attempt.
        with pytest.raises(AssertionError):
            broker.wait_connections(2, timeout=NO_RECONNECT_WINDOW)


def test_unaccepted_connection_is_timeout_sending(make_nodemcu) -> None:
    with unresponsive_listener() as (host, port):
        started = time.monotonic()
        m, rec = start_failing(make_nodemcu, host, port, connect_timeout=0.5)
        assert failure_reason(make_nodemcu, m, rec) == nodemcu.CONN_FAIL_TIMEOUT_SENDING == -1
        assert 0.5 <= time.monotonic() - started < 3.0
    assert isinstance(m.error, mqttkit.ConnectTimeoutError)
    assert m.error.stage == "sending"


def test_other_packet_than_connack_is_not_a_connack(make_nodemcu) -> None:
    with FakeBroker() as broker:
        m, rec = start_failing(make_nodemcu, broker.host, broker.port, 0, 1)
        conn = broker.accept()
        conn.expect(Connect)
        conn.send(SubAck(1, (0,)))
        assert failure_reason(make_nodemcu, m, rec) == nodemcu.CONN_FAIL_NOT_A_CONNACK_MSG == -4
        assert isinstance(m.error, mqttkit.ProtocolError)
        with pytest.raises(AssertionError):
            broker.wait_connections(2, timeout=NO_RECONNECT_WINDOW)


def test_server_hanging_up_before_connack_is_not_a_connack(make_nodemcu) -> None:
    with FakeBroker() as broker:
        m, rec = start_failing(make_nodemcu, broker.host, broker.port)
        conn = broker.accept()
        conn.expect(Connect)
        conn.close()
        assert failure_reason(make_nodemcu, m, rec) == nodemcu.CONN_FAIL_NOT_A_CONNACK_MSG
        assert isinstance(m.error, mqttkit.ConnectionLostError)


@pytest.mark.parametrize(
    ("code", "constant"),
    [
        (1, "CONNACK_REFUSED_PROTOCOL_VER"),
        (2, "CONNACK_REFUSED_ID_REJECTED"),
        (3, "CONNACK_REFUSED_SERVER_UNAVAILABLE"),
        (4, "CONNACK_REFUSED_BAD_USER_OR_PASS"),
        (5, "CONNACK_REFUSED_NOT_AUTHORIZED"),
    ],
)
def test_connack_refusal_gives_its_code(make_nodemcu, code: int, constant: str) -> None:
    with FakeBroker() as broker:
        m, rec = start_failing(make_nodemcu, broker.host, broker.port, 0, 1)
        broker.accept().handshake(reason_code=code)
        assert failure_reason(make_nodemcu, m, rec) == getattr(nodemcu, constant) == code
        assert isinstance(m.error, mqttkit.ConnectionRefusedError)
        if code == 3:
            # "Server unavailable" is worth a retry for the core client; the NodeMCU rule
            # (no reconnect after a failed first connection) still holds.
            with pytest.raises(AssertionError):
                broker.wait_connections(2, timeout=NO_RECONNECT_WINDOW)


def test_wrong_password_on_mosquitto_is_refused(
    mosquitto_auth: MosquittoBroker, make_nodemcu
) -> None:
    m = make_nodemcu("nodemcu-auth", 60, "alice", "wrong")
    rec = Recorder(m, EVENTS)
    m.connect(mosquitto_auth.host, mosquitto_auth.port, 0, 1, None, rec.listener("on_failed"))
    assert failure_reason(make_nodemcu, m, rec) in (
        nodemcu.CONNACK_REFUSED_BAD_USER_OR_PASS,
        nodemcu.CONNACK_REFUSED_NOT_AUTHORIZED,
    )
    assert "wrong" not in str(m.error)
    good = make_nodemcu("nodemcu-auth-ok", 60, "alice", "secret")
    rec_good = Recorder(good, ("connect", "connfail"))
    assert good.connect(mosquitto_auth.host, mosquitto_auth.port) is True
    assert rec_good.wait_for("connect") == (good,)


def test_connect_again_after_a_failure(make_nodemcu) -> None:
    m, rec = start_failing(make_nodemcu, "127.0.0.1", free_port())
    assert failure_reason(make_nodemcu, m, rec) == nodemcu.CONN_FAIL_SERVER_NOT_FOUND
    with FakeBroker() as broker:
        assert m.connect(broker.host, broker.port, rec.listener("on_connected")) is True
        broker.accept().handshake()
        assert rec.wait_for("on_connected") == (m,)
        assert rec.wait_for("connect") == (m,)
        assert m.error is None


# ---------------------------------------------------------------------------------------------
# Publish, subscribe, unsubscribe: each call's callback, when it fires, events
# ---------------------------------------------------------------------------------------------


def test_publish_qos0_callback_once_written(make_nodemcu) -> None:
    with FakeBroker() as broker:
        m, rec, conn = connect_fake(make_nodemcu, broker)
        assert m.publish("flow/q0", "zero", 0, 0, rec.listener("sent")) is True
        assert rec.wait_for("sent") == (m,)
        assert rec.wait_for("puback") == (m,)  # the firmware fires puback for QoS 0 too
        publish = conn.expect(Publish)
        assert (publish.topic, publish.payload, publish.qos, publish.retain) == (
            "flow/q0",
            b"zero",
            0,
            False,
        )


def test_publish_qos1_callback_after_puback(make_nodemcu) -> None:
    with FakeBroker() as broker:
        m, rec, conn = connect_fake(make_nodemcu, broker)
        assert m.publish("flow/q1", b"one", 1, 1, rec.listener("sent")) is True
        publish = conn.expect(Publish)
        assert (publish.topic, publish.payload, publish.qos, publish.retain) == (
            "flow/q1",
            b"one",
            1,
            True,
        )
        marker(conn, rec, "PUBACK withheld")
        assert rec.count("sent") == 0
        assert rec.count("puback") == 0
        conn.send(PubAck(publish.packet_id))
        assert rec.wait_for("sent") == (m,)
        assert rec.wait_for("puback") == (m,)


def test_publish_qos2_callback_after_pubcomp(make_nodemcu) -> None:
    with FakeBroker() as broker:
        m, rec, conn = connect_fake(make_nodemcu, broker)
        assert m.publish("flow/q2", "two", 2, True, rec.listener("sent")) is True
        publish = conn.expect(Publish)
        assert (publish.qos, publish.retain) == (2, True)
        conn.send(PubRec(publish.packet_id))
        assert conn.expect(PubRel).packet_id == publish.packet_id
        marker(conn, rec, "PUBCOMP withheld")
        assert rec.count("sent") == 0
        assert rec.count("puback") == 0
        conn.send(PubComp(publish.packet_id))
        assert rec.wait_for("sent") == (m,)
        assert rec.wait_for("puback") == (m,)


def test_each_publish_gets_its_own_callback(make_nodemcu) -> None:
    with FakeBroker() as broker:
        m, rec, conn = connect_fake(make_nodemcu, broker)
        assert m.publish("own/a", "a", 1, 0, rec.listener("sent a")) is True
        assert m.publish("own/b", "b", 1, 0, rec.listener("sent b")) is True
        first, second = conn.expect(Publish), conn.expect(Publish)
        assert (first.topic, second.topic) == ("own/a", "own/b")
        conn.send(PubAck(second.packet_id))  # the broker acknowledges b first
        assert rec.wait_for("sent b") == (m,)
        marker(conn, rec, "a still unacknowledged")
        assert rec.count("sent a") == 0
        conn.send(PubAck(first.packet_id))
        assert rec.wait_for("sent a") == (m,)
        marker(conn, rec, "all done")
        assert (rec.count("sent a"), rec.count("sent b"), rec.count("puback")) == (1, 1, 2)


def test_each_subscribe_and_unsubscribe_gets_its_own_callback(make_nodemcu) -> None:
    with FakeBroker() as broker:
        m, rec, conn = connect_fake(make_nodemcu, broker)
        assert m.subscribe("own/x", 1, rec.listener("subscribed x")) is True
        assert m.subscribe({"own/y": 2}, rec.listener("subscribed y")) is True
        sub_x, sub_y = conn.expect(Subscribe), conn.expect(Subscribe)
        assert [(s.topic_filter, s.qos) for s in sub_x.subscriptions] == [("own/x", 1)]
        assert [(s.topic_filter, s.qos) for s in sub_y.subscriptions] == [("own/y", 2)]
        conn.send(SubAck(sub_y.packet_id, (2,)))
        assert rec.wait_for("subscribed y") == (m,)
        marker(conn, rec, "x still unacknowledged")
        assert rec.count("subscribed x") == 0
        conn.send(SubAck(sub_x.packet_id, (1,)))
        assert rec.wait_for("subscribed x") == (m,)
        assert rec.wait_for("suback", 2) == (m,)

        assert m.unsubscribe("own/x", rec.listener("unsubscribed x")) is True
        assert m.unsubscribe({"own/y": "anything"}, rec.listener("unsubscribed y")) is True
        unsub_x, unsub_y = conn.expect(Unsubscribe), conn.expect(Unsubscribe)
        assert (unsub_x.topic_filters, unsub_y.topic_filters) == (("own/x",), ("own/y",))
        conn.send(UnsubAck(unsub_y.packet_id))
        assert rec.wait_for("unsubscribed y") == (m,)
        marker(conn, rec, "x still subscribed")
        assert rec.count("unsubscribed x") == 0
        conn.send(UnsubAck(unsub_x.packet_id))
        assert rec.wait_for("unsubscribed x") == (m,)
        assert rec.wait_for("unsuback", 2) == (m,)
        marker(conn, rec, "all done")
        counts = [rec.count(n) for n in ("subscribed x", "subscribed y", "suback")]
        counts += [rec.count(n) for n in ("unsubscribed x", "unsubscribed y", "unsuback")]
        assert counts == [1, 1, 2, 1, 1, 2]


def test_callbacks_run_on_the_dispatch_thread_client_first(make_nodemcu) -> None:
    threads: list[str] = []
    with FakeBroker() as broker:
        m, rec, conn = connect_fake(make_nodemcu, broker)

        def on_message(client: nodemcu.Client, topic: str, data: bytes) -> None:
            threads.append(threading.current_thread().name)
            rec.listener("message")(client, topic, data)

        m.on("message", on_message)
        marker(conn, rec, "which thread?")
    assert rec.log[0] == ("on_connected", (m,))
    assert rec.log[1] == ("connect", (m,))
    assert threads == [make_nodemcu.core._dispatcher.thread.name]
    assert threads[0].startswith("mqttkit-dispatch-nodemcu-fake")


def test_callbacks_may_take_fewer_arguments_as_in_lua(make_nodemcu) -> None:
    got: list[object] = []
    with FakeBroker() as broker:
        m, _, conn = connect_fake(make_nodemcu, broker)
        m.on("message", got.append)  # gets the client only
        assert m.publish("few", "x", 0, 0, lambda: got.append("sent")) is True
        conn.expect(Publish)
        conn.send(Publish("few", b"y"))
        done = threading.Event()
        m.on("puback", done.set)  # gets nothing
        assert m.publish("few", "z", 1, 0) is True
        conn.send(PubAck(conn.expect(Publish).packet_id))
        assert done.wait(5)
    assert got == ["sent", m]


def test_a_raising_callback_does_not_stop_the_client(make_nodemcu, caplog) -> None:
    with FakeBroker() as broker:
        m, rec, conn = connect_fake(make_nodemcu, broker)

        def boom(client: nodemcu.Client) -> None:
            raise RuntimeError("user bug")

        assert m.publish("boom", "x", 0, 0, boom) is True
        conn.expect(Publish)
        marker(conn, rec, "still alive")
        assert m.connected
    assert "user bug" in caplog.text


# ---------------------------------------------------------------------------------------------
# Return values and argument errors
# ---------------------------------------------------------------------------------------------


def test_operations_return_false_when_not_connected(make_nodemcu) -> None:
    m = make_nodemcu("nodemcu-idle", 60)
    started = time.monotonic()
    assert m.publish("t", "x", 1, 0) is False
    assert m.subscribe("t", 1) is False
    assert m.subscribe({"t": 1}) is False
    assert m.unsubscribe("t") is False
    assert m.close() is False
    assert time.monotonic() - started < 1.0  # no waiting, no hang
    with FakeBroker() as broker:
        rec = Recorder(m, EVENTS)
        assert m.connect(broker.host, broker.port) is True
        assert m.connect(broker.host, broker.port) is False  # already connecting
        conn = broker.accept()
        conn.handshake()
        rec.wait_for("connect")
        assert m.connect(broker.host, broker.port) is False  # already connected
        assert m.connected
        assert m.publish("t", "last words", 1, 0, rec.listener("sent")) is True
        assert m.close() is True
        # What was published before close() goes out, and its PUBACK is waited for (an
        # accepted message is not dropped, unlike the firmware), then DISCONNECT.
        last = conn.expect(Publish)
        assert last.payload == b"last words"
        conn.send(PubAck(last.packet_id))
        conn.expect(mqttkit.Disconnect)  # a clean close: the broker discards the Last Will
        rec.wait_for("sent")
        assert m.close() is False  # nothing left to close
        assert not m.connected
        started = time.monotonic()
        assert m.publish("t", "x", 1, 0) is False
        assert m.subscribe("t", 1) is False
        assert m.unsubscribe("t") is False
        assert time.monotonic() - started < 1.0
        wait_stopped(make_nodemcu)
        assert "offline" not in rec.names()  # as the firmware: no offline after close()
        assert rec.count("sent") == 1  # its callback fired once, on its PUBACK
        # connect() again after close() works, on a new connection.
        assert m.connect(broker.host, broker.port) is True
        broker.accept().handshake()
        rec.wait_for("connect", 2)
        assert m.publish("t", "again", 0, 0) is True


def test_close_while_connecting_stops_the_attempt(make_nodemcu) -> None:
    with FakeBroker(silent=True) as broker:
        m, rec = start_failing(make_nodemcu, broker.host, broker.port, 0, 1)
        broker.accept()
        assert m.close() is True
        wait_stopped(make_nodemcu)
        assert rec.names() == []  # neither connfail nor offline: the user stopped it


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: nodemcu.Client(42, 60), "clientid"),
        (lambda: nodemcu.Client("id", -1), "keepalive"),
        (lambda: nodemcu.Client("id", 65536), "keepalive"),
        (lambda: nodemcu.Client("id", "60"), "keepalive"),
        (lambda: nodemcu.Client("id", 60, None, "pw"), "username"),
        (lambda: nodemcu.Client("id", 60, None, None, 2), "cleansession"),
        (lambda: nodemcu.Client("id", 60, None, None, 1, -1), "max_message_length"),
    ],
)
def test_client_argument_errors_raise(call, match: str) -> None:
    with pytest.raises(mqttkit.InvalidArgumentError, match=match):
        call()


def test_method_argument_errors_raise_connected_or_not(make_nodemcu) -> None:
    m = make_nodemcu("nodemcu-args", 60)
    errors = mqttkit.InvalidArgumentError

    port = free_port()  # nothing listens there: no connection can start by mistake

    def check_all() -> None:
        with pytest.raises(errors, match="event"):
            m.on("disconnect", lambda client: None)
        with pytest.raises(errors, match="function"):
            m.on("message", "not a function")
        with pytest.raises(mqttkit.InvalidQoSError):
            m.publish("t", "x", 3, 0)
        with pytest.raises(errors, match="retain"):
            m.publish("t", "x", 0, 2)
        with pytest.raises(mqttkit.InvalidTopicError):
            m.publish("t/#", "x", 0, 0)
        with pytest.raises(mqttkit.PayloadTypeError):
            m.publish("t", 42, 0, 0)
        with pytest.raises(errors, match="function"):
            m.publish("t", "x", 0, 0, "not a function")
        with pytest.raises(mqttkit.InvalidQoSError):
            m.subscribe("t", 3)
        with pytest.raises(mqttkit.InvalidQoSError):
            m.subscribe({"a": 0, "b": 5})
        with pytest.raises(errors, match="function"):
            m.subscribe("t", lambda client: None)  # qos missing before the function
        with pytest.raises(errors, match="table"):
            m.subscribe({"t": 1}, 1)
        with pytest.raises(mqttkit.InvalidTopicError):
            m.subscribe("a/#/b", 0)
        with pytest.raises(errors):
            m.unsubscribe(42)
        with pytest.raises(errors, match="function"):
            m.unsubscribe("t", 42)
        with pytest.raises(errors, match="secure"):
            m.connect("127.0.0.1", port, 2)
        with pytest.raises(errors, match="autoreconnect"):
            m.connect("127.0.0.1", port, 0, 5)
        with pytest.raises(errors, match="port"):
            m.connect("127.0.0.1", str(port))
        with pytest.raises(errors, match="before the callbacks"):
            m.connect("127.0.0.1", lambda client: None, port)
        with pytest.raises(errors):
            m.lwt("will/+", "x")
        with pytest.raises(errors):
            m.lwt("will", "x", 3)

    check_all()  # not connected: argument errors still raise, before "not connected"
    with FakeBroker() as broker:
        rec = Recorder(m, ("connect",))  # before connect(): the event may come at once
        assert m.connect(broker.host, broker.port) is True
        broker.accept().handshake()
        rec.wait_for("connect")
        check_all()
        assert m.connected


def test_return_values_of_setup_calls(make_nodemcu) -> None:
    m = make_nodemcu("nodemcu-setup", 60)
    assert m.lwt("will", "bye") is None
    assert m.lwt("will", b"bye", 1, 1) is None
    assert m.on("message", lambda client, topic, data: None) is None
    assert m.on("message", None) is None  # removes it
    for event in nodemcu.EVENTS:
        assert m.on(event, print) is None


# ---------------------------------------------------------------------------------------------
# max_message_length and overflow
# ---------------------------------------------------------------------------------------------


def message_size(topic: str, payload_length: int, qos: int) -> int:
    """The whole PUBLISH as it is on the wire, encoded by the codec."""
    packet = Publish(topic, b"x" * payload_length, qos, packet_id=1 if qos else None)
    return len(encode_packet(packet, 4))


def largest_payload(topic: str, qos: int, limit: int) -> int:
    return max(p for p in range(limit) if message_size(topic, p, qos) <= limit)


@pytest.mark.parametrize(
    ("limit", "topic", "qos"),
    [
        (100, "ovf/t", 0),
        (100, "ovf/t", 1),  # the packet id counts
        (130, "t", 0),  # 130 bytes are not reachable: Remaining Length grows to 2 bytes there
        (300, "ovf/long", 1),
    ],
)
def test_overflow_gets_longer_messages_truncated(
    make_nodemcu, limit: int, topic: str, qos: int
) -> None:
    fits = largest_payload(topic, qos, limit)
    if limit != 130:
        assert message_size(topic, fits, qos) == limit  # exactly at the limit
    with FakeBroker() as broker:
        m, rec, conn = connect_fake(make_nodemcu, broker, max_message_length=limit)
        assert m.max_message_length == limit
        conn.send(Publish(topic, b"a" * fits, qos, packet_id=1 if qos else None))
        if qos:
            assert conn.expect(PubAck).packet_id == 1
        assert rec.wait_messages(1)[0] == (m, topic, b"a" * fits)
        too_long = b"b" * (fits + 1)
        conn.send(Publish(topic, too_long, qos, packet_id=2 if qos else None))
        if qos:
            assert conn.expect(PubAck).packet_id == 2  # acknowledged all the same
        client, got_topic, data = rec.wait_for("overflow")
        assert (client, got_topic) == (m, topic)
        assert data == too_long[:fits]
        assert message_size(topic, len(data), qos) <= limit
        marker(conn, rec, "after")
        assert rec.count("message") == 2  # the first one and the marker: never the long one
        assert rec.count("overflow") == 1


def test_default_max_message_length(make_nodemcu) -> None:
    m = make_nodemcu("nodemcu-default", 60)
    assert m.max_message_length == nodemcu.DEFAULT_MAX_MESSAGE_LENGTH == 1024
    assert make_nodemcu("nodemcu-zero", 60, None, None, 1, 0).max_message_length == 1024


# ---------------------------------------------------------------------------------------------
# autoreconnect
# ---------------------------------------------------------------------------------------------


def test_autoreconnect_off_offline_and_no_further_attempt(make_nodemcu) -> None:
    with FakeBroker() as broker:
        m, rec, conn = connect_fake(make_nodemcu, broker, 0, 0)
        conn.abort()
        assert rec.wait_for("offline") == (m,)
        assert not m.connected
        with pytest.raises(AssertionError):
            broker.wait_connections(2, timeout=NO_RECONNECT_WINDOW)
        wait_stopped(make_nodemcu)
        assert rec.names() == ["on_connected", "connect", "offline"]
        assert m.close() is False  # nothing left to close
        assert m.publish("t", "x", 0, 0) is False


def test_autoreconnect_on_reconnects_even_right_after_connack(make_nodemcu) -> None:
    with FakeBroker() as broker:
        m = make_nodemcu("nodemcu-again", 60)
        rec = Recorder(m, EVENTS)
        assert m.connect(broker.host, broker.port, 0, 1, rec.listener("on_connected")) is True
        first = broker.accept()
        first.handshake()
        first.abort()  # the link drops right after CONNACK
        rec.wait_for("offline")
        second = broker.accept()  # reconnect attempt
        second.handshake()
        rec.wait_for("connect", 2)
        assert m.connected
        assert rec.names() == ["on_connected", "connect", "offline", "connect"]
        assert m.publish("t", "back", 0, 0) is True
        assert second.expect(Publish).payload == b"back"


# ---------------------------------------------------------------------------------------------
# The public surface
# ---------------------------------------------------------------------------------------------


def test_constants_have_the_seed_values() -> None:
    values = [
        nodemcu.CONN_FAIL_SERVER_NOT_FOUND,
        nodemcu.CONN_FAIL_NOT_A_CONNACK_MSG,
        nodemcu.CONN_FAIL_DNS,
        nodemcu.CONN_FAIL_TIMEOUT_RECEIVING,
        nodemcu.CONN_FAIL_TIMEOUT_SENDING,
        nodemcu.CONNACK_ACCEPTED,
        nodemcu.CONNACK_REFUSED_PROTOCOL_VER,
        nodemcu.CONNACK_REFUSED_ID_REJECTED,
        nodemcu.CONNACK_REFUSED_SERVER_UNAVAILABLE,
        nodemcu.CONNACK_REFUSED_BAD_USER_OR_PASS,
        nodemcu.CONNACK_REFUSED_NOT_AUTHORIZED,
    ]
    assert values == list(range(-5, 6))
    seed = {"connect", "message", "offline"}
    later = {"connfail", "suback", "unsuback", "puback", "overflow"}
    assert seed | later == nodemcu.EVENTS


def test_public_names_exist_and_are_documented() -> None:
    assert len(set(nodemcu.__all__)) == len(nodemcu.__all__)
    for name in nodemcu.__all__:
        obj = getattr(nodemcu, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name
    for name, method in inspect.getmembers(nodemcu.Client, inspect.isfunction):
        if not name.startswith("_"):
            assert inspect.getdoc(method), f"Client.{name}"


def test_docs_cover_every_name_event_and_difference() -> None:
    doc = (ROOT / "docs" / "nodemcu.md").read_text(encoding="utf-8")
    for name in nodemcu.__all__:
        assert f"`{name}`" in doc or f"mqtt.{name}" in doc, name
    for event in nodemcu.EVENTS:
        assert f'"{event}"' in doc, event
    for method in ("lwt", "on", "connect", "publish", "subscribe", "unsubscribe", "close"):
        assert f"`{method}(" in doc or f".{method}(" in doc, method
    assert "docs/nodemcu.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "mqttkit.nodemcu" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
