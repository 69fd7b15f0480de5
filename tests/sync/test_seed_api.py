"""The seed-000 API (node.lua ``mqtt``) against a real Mosquitto: the example, the events,
and one test per seed option that observes its effect."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import mqttkit
from mqttkit.protocol.packets import PingReq, PubAck, Publish
from mqttkit.testing import MosquittoBroker
from tests.support.fake_broker import FakeBroker
from tests.support.recorder import Recorder

ROOT = Path(__file__).resolve().parents[2]


def test_hello_example_prints_and_exits_by_itself(mosquitto: MosquittoBroker) -> None:
    env = {**os.environ, "MQTT_URL": mosquitto.url}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "hello.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello mqtt\n"
    assert time.monotonic() - started < 5
    source = (ROOT / "examples" / "hello.py").read_text()
    assert "sleep" not in source
    assert "loop" not in source


def test_listener_registered_after_connect_gets_first_connect(make_client) -> None:
    # The broker answers CONNACK before the listener exists: the hold rule delivers it anyway.
    with FakeBroker() as broker:
        client = make_client(url=broker.url)
        conn = broker.accept()
        conn.handshake()
        deadline = time.monotonic() + 5
        while not client.connected:  # bounded: until the CONNACK has been processed
            assert time.monotonic() < deadline, "client never processed CONNACK"
            time.sleep(0.01)
        got = threading.Event()
        seen: list[object] = []

        @client.on("connect")
        def on_connect(connack: mqttkit.ConnAck) -> None:
            seen.append(connack)
            got.set()

        assert got.wait(5), "the first connect event was lost"
        assert isinstance(seen[0], mqttkit.ConnAck)
        # A second listener registered later does not get it again (normal Node semantics).
        late: list[object] = []
        client.on("connect", late.append)
        client.close().wait(5)
        assert late == []


def test_message_event_held_until_first_listener(mosquitto: MosquittoBroker, make_client) -> None:
    client = make_client(url=mosquitto.url)
    rec = Recorder(client, ("connect",))
    rec.wait_for("connect")
    client.subscribe("held/#").result(5)
    client.publish("held/a", "first", qos=1).result(5)
    client.publish("held/a", "second", qos=1).result(5)
    got: list[bytes] = []
    done = threading.Event()

    def on_message(topic: str, message: bytes) -> None:
        got.append(message)
        if len(got) == 2:
            done.set()

    client.on("message", on_message)
    assert done.wait(5)
    assert got == [b"first", b"second"]


def test_events_of_a_normal_session(mosquitto: MosquittoBroker, make_client) -> None:
    client = make_client(url=mosquitto.url)
    rec = Recorder(client)
    connack = rec.wait_for("connect")[0]
    assert isinstance(connack, mqttkit.ConnAck)
    assert connack.reason_code == 0
    closed = threading.Event()
    client.close(callback=closed.set)
    assert closed.wait(5)
    rec.wait_for("end")
    assert rec.names() == ["connect", "close", "end"]
    assert [args for name, args in rec.log if name != "connect"] == [(), ()]


def test_client_id_second_client_takes_over_session(
    mosquitto: MosquittoBroker, make_client
) -> None:
    first = make_client(url=mosquitto.url, client_id="same-id", clean=False, reconnect_period=0)
    rec1 = Recorder(first)
    rec1.wait_for("connect")
    first.subscribe("takeover/t", qos=1).result(5)
    second = make_client({"clientId": "same-id", "clean": False}, url=mosquitto.url)
    rec2 = Recorder(second)
    connack = rec2.wait_for("connect")[0]
    assert connack.session_present is True  # it has the first client's session
    rec1.wait_for("close")  # and the broker dropped the first connection
    assert first.connected is False
    second.publish("takeover/t", "to the session", qos=1).result(5)
    rec2.attach(second, ("message",))
    assert rec2.wait_messages(1)[0][1] == b"to the session"


def test_keepalive_sends_pingreq_when_idle(mosquitto: MosquittoBroker, make_client) -> None:
    pings = threading.Event()
    client = make_client(url=mosquitto.url, keepalive=1)
    client.on("packetsend", lambda packet: isinstance(packet, PingReq) and pings.set())
    assert pings.wait(4), "no PINGREQ within 4 s with keepalive=1"


def test_keepalive_zero_sends_no_pingreq() -> None:
    with FakeBroker() as broker:
        client = mqttkit.connect(broker.url, {"keepalive": 0})
        try:
            conn = broker.accept()
            connect = conn.handshake()
            assert connect.keepalive == 0
            conn.expect_silence(2.5)  # a keepalive of 1-2 s would have pinged by now
        finally:
            client.close(force=True).wait(5)


def test_clean_false_receives_messages_sent_while_away(
    mosquitto: MosquittoBroker, make_client
) -> None:
    options = {"clientId": "persistent", "clean": False}
    client = make_client(options, url=mosquitto.url)
    rec = Recorder(client, ("connect",))
    rec.wait_for("connect")
    client.subscribe("away/t", qos=1).result(5)
    client.close().result(5)

    publisher = make_client(url=mosquitto.url)
    for i in range(5):
        publisher.publish("away/t", f"m{i}", qos=1).result(5)

    again = make_client(options, url=mosquitto.url)
    rec2 = Recorder(again, ("connect", "message"))
    assert rec2.wait_for("connect")[0].session_present is True
    got = rec2.wait_messages(5)
    assert [m[1] for m in got] == [f"m{i}".encode() for i in range(5)]


def test_clean_true_gets_nothing_from_before(mosquitto: MosquittoBroker, make_client) -> None:
    client = make_client(url=mosquitto.url, client_id="volatile")
    Recorder(client, ("connect",)).wait_for("connect")
    client.subscribe("gone/t", qos=1).result(5)
    client.close().result(5)
    publisher = make_client(url=mosquitto.url)
    publisher.publish("gone/t", "lost on purpose", qos=1).result(5)
    again = make_client(url=mosquitto.url, client_id="volatile")
    rec = Recorder(again, ("connect",))
    assert rec.wait_for("connect")[0].session_present is False


def test_connect_timeout_gives_error_after_the_timeout(make_client) -> None:
    with FakeBroker(silent=True) as broker:
        started = time.monotonic()
        client = make_client({"connectTimeout": 500, "reconnectPeriod": 0}, url=broker.url)
        rec = Recorder(client)
        error = rec.wait_for("error", timeout=5)[0]
        elapsed = time.monotonic() - started
    assert isinstance(error, mqttkit.ConnectTimeoutError)
    assert error.stage == "receiving"
    assert 0.5 <= elapsed < 2.0
    assert "connect_timeout=0.5" in str(error)


def test_hostname_port_protocol_options(mosquitto: MosquittoBroker, make_client) -> None:
    client = make_client({"hostname": mosquitto.host, "port": mosquitto.port, "protocol": "mqtt"})
    assert Recorder(client).wait_for("connect")[0].reason_code == 0
    assert client.options.url == mosquitto.url


def test_username_password_good(mosquitto_auth: MosquittoBroker, make_client) -> None:
    client = make_client({"username": "alice", "password": "secret"}, url=mosquitto_auth.url)
    assert Recorder(client).wait_for("connect")[0].reason_code == 0


def test_username_password_in_url(mosquitto_auth: MosquittoBroker, make_client) -> None:
    url = f"mqtt://alice:secret@{mosquitto_auth.host}:{mosquitto_auth.port}"
    client = make_client(url=url)
    assert Recorder(client).wait_for("connect")[0].reason_code == 0
    assert "secret" not in repr(client.options)


def test_bad_password_gives_error_and_no_reconnect_storm(
    mosquitto_auth: MosquittoBroker, make_client
) -> None:
    client = make_client(
        {"username": "alice", "password": "wrong", "reconnectPeriod": 50}, url=mosquitto_auth.url
    )
    rec = Recorder(client)
    error = rec.wait_for("error")[0]
    assert isinstance(error, mqttkit.ConnectionRefusedError)
    assert error.reason_code in (4, 5)
    assert error.permanent
    assert "wrong" not in str(error)
    # The client stops: its dispatch thread ends, no reconnect follows.
    client._dispatcher.thread.join(5)
    assert not client._dispatcher.thread.is_alive()
    assert rec.count("reconnect") == 0
    assert rec.names() == ["error", "close", "offline"]


def test_reconnect_period_restores_connection_and_subscriptions(
    mosquitto: MosquittoBroker, make_client
) -> None:
    client = make_client({"reconnectPeriod": 100}, url=mosquitto.url)
    rec = Recorder(client, ("connect", "reconnect", "close", "offline"))
    rec.wait_for("connect")
    client.subscribe("restored/#", qos=1).result(5)
    mosquitto.restart()
    rec.wait_for("connect", count=2, timeout=15)
    names = rec.names()
    assert names[:3] == ["connect", "close", "offline"]
    assert names[-2:] == ["reconnect", "connect"]
    assert names.count("offline") == 1  # once per outage
    # The seed's events without arguments get none; connect gets the CONNACK (and, beyond
    # the seed, the server it is on).
    for name, args in rec.log:
        if name == "connect":
            assert len(args) == 2
            assert isinstance(args[0], mqttkit.ConnAck)
            assert args[1] == mqttkit.Server("127.0.0.1", mosquitto.port)
        else:
            assert args == (), (name, args)
    rec.attach(client, ("message",))
    publisher = make_client(url=mosquitto.url)
    publisher.publish("restored/x", "after restart", qos=1).result(5)
    assert rec.wait_messages(1)[0][1] == b"after restart"


def test_reconnect_period_zero_disables_reconnect(mosquitto: MosquittoBroker, make_client) -> None:
    client = make_client({"reconnectPeriod": 0}, url=mosquitto.url)
    rec = Recorder(client)
    rec.wait_for("connect")
    mosquitto.stop()
    rec.wait_for("offline")
    client._dispatcher.thread.join(5)
    assert not client._dispatcher.thread.is_alive()
    # The server closed the connection: the user hears it, with that cause.
    assert rec.names() == ["connect", "error", "close", "offline"]
    error = rec.wait_for("error")[0]
    assert isinstance(error, mqttkit.ConnectionLostError)
    assert "closed the connection" in str(error)


class RecordingStore(mqttkit.MemoryStore):
    """A user's own store: records the calls the client makes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def put(self, key: int, value: bytes) -> None:
        with self.lock:
            self.calls.append(("put", key))
        super().put(key, value)

    def delete(self, key: int) -> None:
        with self.lock:
            self.calls.append(("delete", key))
        super().delete(key)


def test_custom_stores_are_used(mosquitto: MosquittoBroker, make_client) -> None:
    incoming, outgoing = RecordingStore(), RecordingStore()
    client = make_client({"incomingStore": incoming, "outgoingStore": outgoing}, url=mosquitto.url)
    rec = Recorder(client, ("connect", "message"))
    rec.wait_for("connect")
    client.subscribe("store/t", qos=2).result(5)
    client.publish("store/t", "q1", qos=1).result(5)
    client.publish("store/t", "q2", qos=2).result(5)
    rec.wait_messages(2)
    deadline = time.monotonic() + 5
    while len(incoming) or not incoming.calls:  # until PUBREL released the QoS 2 id
        assert time.monotonic() < deadline
        time.sleep(0.01)
    out_ops = [op for op, _ in outgoing.calls]
    # QoS 1: put (accepted: the publishing thread stores it before publish() returns), put
    # (sent, with its packet id), delete. QoS 2: the same, plus put (PUBREL form).
    assert out_ops == ["put", "put", "delete", "put", "put", "put", "delete"]
    assert len(outgoing) == 0
    assert [op for op, _ in incoming.calls] == ["put", "delete"]


def test_callback_option_receives_messages(mosquitto: MosquittoBroker, make_client) -> None:
    got: list[tuple[str, bytes]] = []
    done = threading.Event()

    def callback(topic: str, message: bytes) -> None:
        got.append((topic, message))
        done.set()

    client = make_client({"callback": callback}, url=mosquitto.url)
    client.subscribe("cb/t").result(5)
    client.publish("cb/t", b"\x00\xffbinary").result(5)
    assert done.wait(5)
    assert got == [("cb/t", b"\x00\xffbinary")]


def test_publish_callback_after_flow_and_handles(mosquitto: MosquittoBroker, make_client) -> None:
    client = make_client(url=mosquitto.url)
    results: list[object] = []
    done = threading.Event()

    def callback(err: object) -> None:
        results.append(err)
        if len(results) == 3:
            done.set()

    handles = [client.publish("cb/h", "x", {"qos": q}, callback) for q in (0, 1, 2)]
    assert done.wait(5)
    assert results == [None, None, None]
    assert all(h.done() and h.result() == 0 for h in handles)
    granted: list[object] = []
    sub_done = threading.Event()
    client.subscribe(
        {"cb/a": 0, "cb/b": 1, "cb/c": 2},
        lambda err, g: (granted.extend([err, g]), sub_done.set()),
    )
    assert sub_done.wait(5)
    assert granted[0] is None
    assert [(g.topic, g.qos) for g in granted[1]] == [("cb/a", 0), ("cb/b", 1), ("cb/c", 2)]
    unsub: list[object] = []
    unsub_done = threading.Event()
    client.unsubscribe(["cb/a", "cb/b"], lambda err: (unsub.append(err), unsub_done.set()))
    assert unsub_done.wait(5)
    assert unsub == [None]
    assert client.unsubscribe("cb/c").result(5) == ()  # MQTT 3.1.1: UNSUBACK has no codes


@pytest.mark.parametrize("version", [3, 4, 5])
def test_protocol_versions_round_trip(
    mosquitto: MosquittoBroker, make_client, version: int
) -> None:
    client = make_client(url=mosquitto.url, protocol_version=version)
    rec = Recorder(client, ("connect", "message"))
    rec.wait_for("connect")
    client.subscribe("v/t", qos=2).result(5)
    for qos in (0, 1, 2):
        client.publish("v/t", f"v{version}q{qos}", qos=qos).result(5)
    got = rec.wait_messages(3)
    assert sorted(m[1] for m in got) == [f"v{version}q{q}".encode() for q in (0, 1, 2)]


def test_flush_blocks_until_every_flow_completed(make_client) -> None:
    with FakeBroker() as broker:
        client = make_client(url=broker.url, reconnect_period=0)
        conn = broker.accept()
        conn.handshake()
        Recorder(client, ("connect",)).wait_for("connect")
        assert client.flush(5)
        handles = [client.publish("t", str(i), qos=1) for i in range(3)]
        packets = [conn.expect(Publish) for _ in range(3)]
        assert not client.flush(0.2)  # no acknowledgement yet
        for packet in packets:
            conn.send(PubAck(packet.packet_id))
        assert client.flush(5)
        assert all(h.done() for h in handles)
