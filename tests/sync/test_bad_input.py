"""Bad input, both ways: misuse of the API raises a named error at once, sends nothing and leaves
the client usable; bad bytes from the broker give an ``error`` event and a clean reconnect."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import mqttkit
from mqttkit.protocol.codec import encode_packet
from mqttkit.protocol.packets import PubAck, PubComp, Publish, PubRec, PubRel
from tests.support.fake_broker import FakeBroker
from tests.support.recorder import Recorder

# -- misuse -------------------------------------------------------------------------------------

BAD_PUBLISH = [
    ("a/#", "x", {}, mqttkit.InvalidTopicError, "wildcard"),
    ("a/+/b", "x", {}, mqttkit.InvalidTopicError, "wildcard"),
    ("", "x", {}, mqttkit.InvalidTopicError, "empty"),
    ("t" * 65_536, "x", {}, mqttkit.InvalidTopicError, "65,535"),
    ("a\x00b", "x", {}, mqttkit.InvalidTopicError, "null"),
    ("a\ud800", "x", {}, mqttkit.InvalidTopicError, "surrogate"),
    (b"bytes-topic", "x", {}, mqttkit.InvalidTopicError, "str"),
    ("ok", "x", {"qos": 3}, mqttkit.InvalidQoSError, "0, 1 or 2"),
    ("ok", "x", {"qos": -1}, mqttkit.InvalidQoSError, "0, 1 or 2"),
    ("ok", 42, {}, mqttkit.PayloadTypeError, "int"),
    ("ok", None, {}, mqttkit.PayloadTypeError, "NoneType"),
    ("ok", {"a": 1}, {}, mqttkit.PayloadTypeError, "dict"),
    ("ok", "x", {"qoss": 1}, mqttkit.UnknownOptionError, "qoss"),
]

BAD_FILTERS = [
    ("a/#/b", "'#' must be the last level"),
    ("a+", "'+' must occupy a whole level"),
    ("#x", "'#' must be the last level"),
    ("", "empty"),
    ("$share/g", "needs a filter"),
]


@pytest.fixture
def idle_client(make_client):
    """A client connected to a fake broker that records every packet the client sends."""
    with FakeBroker() as broker:
        client = make_client(url=broker.url)
        conn = broker.accept()
        conn.handshake()
        Recorder(client, ("connect",)).wait_for("connect")
        yield client, conn


@pytest.mark.parametrize(("topic", "payload", "opts", "error", "words"), BAD_PUBLISH)
def test_bad_publish_raises_sends_nothing_and_client_stays_usable(
    idle_client, topic: Any, payload: Any, opts: dict[str, Any], error: type, words: str
) -> None:
    client, conn = idle_client
    with pytest.raises(error, match=words.replace("+", r"\+")) as info:
        client.publish(topic, payload, opts)
    assert isinstance(info.value, mqttkit.MQTTError)
    assert isinstance(info.value, ValueError | TypeError)
    # Nothing was sent: the next packet the broker sees is the valid publish below.
    client.publish("still/usable", "yes", qos=1)
    packet = conn.expect(Publish)
    assert packet.topic == "still/usable"


@pytest.mark.parametrize(("topic_filter", "words"), BAD_FILTERS)
def test_bad_filters_raise(idle_client, topic_filter: str, words: str) -> None:
    client, conn = idle_client
    with pytest.raises(mqttkit.InvalidTopicError, match=words.replace("+", r"\+")):
        client.subscribe(topic_filter)
    with pytest.raises(mqttkit.InvalidTopicError):
        client.unsubscribe(topic_filter)
    client.publish("still/usable", "yes")
    assert conn.expect(Publish).topic == "still/usable"


def test_subscribe_qos_3_raises(idle_client) -> None:
    client, _ = idle_client
    with pytest.raises(mqttkit.InvalidQoSError):
        client.subscribe("a", {"qos": 3})
    with pytest.raises(mqttkit.InvalidQoSError):
        client.subscribe({"a": 0, "b": 3})


@pytest.mark.parametrize(
    ("url", "options", "error", "words"),
    [
        ("http://localhost", None, mqttkit.InvalidOptionError, "unsupported URL scheme"),
        ("mqtt://localhost:0", None, mqttkit.InvalidOptionError, "port"),
        ("mqtt://localhost:70000", None, mqttkit.InvalidOptionError, "port"),
        (None, {"port": 0}, mqttkit.InvalidOptionError, "port"),
        (None, {"port": 65_536}, mqttkit.InvalidOptionError, "port"),
        (None, {"keepalive": -1}, mqttkit.InvalidOptionError, "keepalive"),
        (None, {"keepalive": 65_536}, mqttkit.InvalidOptionError, "keepalive"),
        (None, {"clientID": "x"}, mqttkit.UnknownOptionError, "clientId"),
        (None, {"reconnect_periodd": 1}, mqttkit.UnknownOptionError, "reconnect_period"),
        (None, {"protocolVersion": 6}, mqttkit.InvalidOptionError, "protocol_version"),
        (None, {"connectTimeout": -5}, mqttkit.InvalidOptionError, "connect_timeout"),
        (None, {"will": {"topic": "w/#"}}, mqttkit.InvalidTopicError, "wildcard"),
    ],
)
def test_bad_options_raise_named_errors(
    url: str | None, options: dict[str, Any] | None, error: type, words: str
) -> None:
    with pytest.raises(error, match=words):
        mqttkit.Client(options, url=url)


def test_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="client_idd"):
        mqttkit.Client(client_idd="x")


# -- bad bytes from the broker -----------------------------------------------------------------

BAD_BYTES = {
    "remaining length too short": b"\x40\x01\x00",
    "remaining length too long": b"\x40\x03\x00\x01\x00",
    "reserved flags set": b"\x41\x02\x00\x01",
    "invalid UTF-8 topic": b"\x30\x05\x00\x02\xff\xfex",
    "SUBSCRIBE from a server": b"\x82\x06\x00\x01\x00\x01a\x00",
    "PINGREQ from a server": b"\xc0\x00",
    "second CONNACK": b"\x20\x02\x00\x00",
    "remaining length of five bytes": b"\x30\xff\xff\xff\xff\x01",
}


@pytest.mark.parametrize("name", list(BAD_BYTES))
def test_bad_bytes_from_broker_give_error_and_clean_reconnect(
    make_client, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    caplog.set_level(logging.WARNING)
    with FakeBroker() as broker:
        client = make_client(url=broker.url, client_id="victim", clean=False, reconnect_period=0.05)
        rec = Recorder(client, ("connect", "error", "close", "reconnect", "message"))
        conn = broker.accept()
        conn.handshake()
        rec.wait_for("connect")
        # A QoS 2 message arrives just before the bad bytes, in the same segment.
        qos2 = Publish("x/t", b"once", qos=2, packet_id=7)
        conn.send_raw(encode_packet(qos2, 4) + BAD_BYTES[name])
        error = rec.wait_for("error")[0]
        assert isinstance(error, mqttkit.ProtocolError), error
        assert conn.closed(5), "the client did not close the bad connection"
        # Clean reconnect; the broker kept the session and resends the QoS 2 PUBLISH.
        conn2 = broker.accept()
        conn2.handshake(session_present=True)
        rec.wait_for("connect", count=2)
        conn2.send(Publish("x/t", b"once", qos=2, dup=True, packet_id=7))
        assert conn2.expect(PubRec).packet_id == 7
        conn2.send(PubRel(7))
        conn2.expect(PubComp)
        assert [m[1] for m in rec.wait_messages(1)] == [b"once"]
        client.publish("after/t", "works", qos=0)
        assert conn2.expect(Publish).payload == b"works"
        assert len(rec.messages) == 1, "the QoS 2 message was delivered twice"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_truncated_packet_then_close_is_an_error(make_client) -> None:
    with FakeBroker() as broker:
        client = make_client(url=broker.url, reconnect_period=0.05)
        rec = Recorder(client, ("connect", "error", "close"))
        conn = broker.accept()
        conn.handshake()
        rec.wait_for("connect")
        conn.send_raw(b"\x30\x0a\x00\x03a/b")  # 10 bytes announced, 5 sent
        conn.close()
        error = rec.wait_for("error")[0]
        assert isinstance(error, mqttkit.MalformedPacketError)
        assert "middle of a packet" in str(error)
        broker.accept().handshake()
        rec.wait_for("connect", count=2)


@pytest.mark.parametrize(
    "ack", [b"\x40\x02\x00\x4d", b"\x70\x02\x00\x4d"], ids=["PUBACK", "PUBCOMP"]
)
def test_late_ack_for_unknown_id_is_ignored_without_reconnect(
    make_client, caplog: pytest.LogCaptureFixture, ack: bytes
) -> None:
    caplog.set_level(logging.INFO, logger="mqttkit")
    with FakeBroker() as broker:
        client = make_client(url=broker.url, reconnect_period=0.05)
        rec = Recorder(client, ("connect", "error", "close"))
        conn = broker.accept()
        conn.handshake()
        rec.wait_for("connect")
        conn.send_raw(ack)
        handle = client.publish("still/here", "x", qos=1)
        packet = conn.expect(Publish)
        assert packet.packet_id is not None
        conn.send(PubAck(packet.packet_id))
        assert handle.result(5) == 0
        assert rec.names() == ["connect"]
        assert "not in flight" in caplog.text
