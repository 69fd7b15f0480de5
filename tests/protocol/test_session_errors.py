"""ClientSession: the receive path never raises, and sending methods raise at once on misuse.

Bad input from the broker becomes one ConnectionClosing carrying a ProtocolError (MQTT 5: and a
DISCONNECT with the reason), never an exception, a lost message or a duplicate. Misuse of a
sending method raises before anything is queued or written.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqttkit.protocol import requests as session_module  # the topic cache lives in requests
from mqttkit.protocol.codec import encode_packet
from mqttkit.protocol.errors import (
    InvalidArgumentError,
    InvalidQoSError,
    InvalidTopicError,
    MalformedPacketError,
    MQTTError,
    PacketTooLargeError,
    PayloadTypeError,
    ProtocolError,
    PublishError,
    QueueFullError,
    ReasonCode,
    ServerDisconnectError,
)
from mqttkit.protocol.packets import (
    MQTT_3_1_1,
    MQTT_5,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
)
from mqttkit.protocol.session import (
    NO_PROPERTIES,
    AuthReceived,
    ConnectionClosing,
    MessageReceived,
    PublishCompleted,
    PublishRequest,
    ServerDisconnected,
    State,
    SubscribeCompleted,
    UnsubscribeCompleted,
    prepare_publish,
)

from .session_helpers import Conversation, RecordingStore, decode_all, names

LEVELS = pytest.mark.parametrize("level", [4, 5])
MALFORMED = ReasonCode.MALFORMED_PACKET
PROTOCOL = ReasonCode.PROTOCOL_ERROR


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text)


# (name, bytes after CONNACK, error class, MQTT 5 reason code). Levels 4 and 5 alike.
BAD_INPUT = [
    ("puback-remaining-length-too-short", "40 01 00", MalformedPacketError, MALFORMED),
    ("pingresp-remaining-length-too-long", "d0 01 00", MalformedPacketError, MALFORMED),
    ("remaining-length-over-four-bytes", "30 ff ff ff ff 01", MalformedPacketError, MALFORMED),
    ("puback-reserved-flags", "41 02 00 01", MalformedPacketError, MALFORMED),
    ("pubrel-reserved-flags-clear", "60 02 00 01", MalformedPacketError, MALFORMED),
    ("suback-reserved-flags", "92 03 00 01 00", MalformedPacketError, MALFORMED),
    ("publish-qos3", "36 05 00 01 74 00 01", MalformedPacketError, MALFORMED),
    ("publish-dup-at-qos0", "38 03 00 01 74", MalformedPacketError, MALFORMED),
    ("publish-invalid-utf8-topic", "30 04 00 02 c3 28", MalformedPacketError, MALFORMED),
    ("publish-topic-with-nul", "30 04 00 02 61 00", MalformedPacketError, MALFORMED),
    ("publish-topic-with-wildcard", "30 05 00 03 61 2f 23", MalformedPacketError, MALFORMED),
    ("publish-packet-id-zero", "32 05 00 01 74 00 00", MalformedPacketError, MALFORMED),
    ("reserved-packet-type-0", "00 00", MalformedPacketError, MALFORMED),
    ("pingreq-from-server", "c0 00", ProtocolError, PROTOCOL),
]

# Packets a server may never send: decoded fine, refused by the session.
CLIENT_ONLY = [
    Connect("intruder"),
    Subscribe(1, (Subscription("a"),)),
    Unsubscribe(1, ("a",)),
    PingReq(),
]


def assert_closed_with(
    c: Conversation, error_class: type[ProtocolError], reason: int
) -> ProtocolError:
    """Exactly one ConnectionClosing, with the error; MQTT 5: DISCONNECT with the reason."""
    events = c.events()
    closing = [e for e in events if isinstance(e, ConnectionClosing)]
    assert len(closing) == 1, events
    assert events[-1] is closing[0]
    error = closing[0].error
    assert isinstance(error, error_class), error
    assert error.reason_code == reason
    assert c.session.error is error
    assert c.session.state is State.CLOSING
    expected = [Disconnect(reason)] if c.v5 else []
    assert c.sent() == expected
    return error


@LEVELS
@pytest.mark.parametrize(
    ("data", "error", "reason"),
    [pytest.param(hexbytes(d), e, r, id=n) for n, d, e, r in BAD_INPUT],
)
def test_bad_input_closes_with_a_protocol_error(
    level: int, data: bytes, error: type[ProtocolError], reason: int
) -> None:
    c = Conversation(level)
    c.handshake()
    c.send_bytes(data)
    assert_closed_with(c, error, reason)
    c.send(Publish("after", b"x"))  # nothing is processed once closing
    assert c.events() == []
    assert c.session.next_deadline() is None


@LEVELS
@pytest.mark.parametrize("packet", CLIENT_ONLY, ids=lambda p: type(p).__name__)
def test_packet_only_a_client_sends_is_a_protocol_error(level: int, packet: object) -> None:
    c = Conversation(level)
    c.handshake()
    c.send(packet)  # type: ignore[arg-type]
    error = assert_closed_with(c, ProtocolError, PROTOCOL)
    assert "only a client" in str(error)


@LEVELS
def test_second_connack_is_a_protocol_error(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    c.send(ConnAck(False, 0))
    assert_closed_with(c, ProtocolError, PROTOCOL)


@LEVELS
@pytest.mark.parametrize(
    "packet",
    [Publish("early", b"x", 1, packet_id=1), PubAck(1), SubAck(1, (0,)), PingReq()],
    ids=lambda p: type(p).__name__,
)
def test_anything_but_connack_first_is_a_protocol_error(level: int, packet: object) -> None:
    c = Conversation(level)
    c.connect()
    c.send(packet)  # type: ignore[arg-type]
    assert_closed_with(c, ProtocolError, PROTOCOL)
    assert not any(isinstance(e, MessageReceived) for e in c.all_events)


def test_v311_server_may_not_send_disconnect() -> None:
    # MQTT 3.1.1 Table 2.1: DISCONNECT goes from client to server only.
    c = Conversation(4)
    c.handshake()
    c.send_bytes(b"\xe0\x00")
    assert_closed_with(c, ProtocolError, PROTOCOL)


def test_v5_server_disconnect_closes_with_its_reason() -> None:
    c = Conversation(5)
    c.handshake()
    packet = Disconnect(ReasonCode.SERVER_SHUTTING_DOWN, Properties(reason_string="bye"))
    c.send(packet)
    events = c.events()
    assert names(events) == ["ServerDisconnected", "ConnectionClosing"]
    assert isinstance(events[0], ServerDisconnected)
    assert events[0].packet == packet
    error = events[1].error  # type: ignore[attr-defined]
    assert isinstance(error, ServerDisconnectError)
    assert error.reason_code == ReasonCode.SERVER_SHUTTING_DOWN
    assert "bye" in str(error)
    assert c.sent() == []  # no DISCONNECT back: the server is closing the connection


@LEVELS
def test_suback_with_the_wrong_number_of_codes_is_a_protocol_error(level: int) -> None:
    # [MQTT-3.9.3-1]: one return code per topic filter.
    c = Conversation(level)
    c.handshake()
    c.subscribe("a", "b")
    c.sent()
    c.send(SubAck(1, (1,)))
    assert_closed_with(c, ProtocolError, PROTOCOL)


@LEVELS
def test_packet_over_our_maximum_size_is_refused_before_it_is_buffered(level: int) -> None:
    c = Conversation(level, max_packet_size=64)
    c.handshake()
    c.send_bytes(encode_packet(Publish("big", b"x" * 100), level)[:10])  # the header is enough
    assert_closed_with(c, ProtocolError, ReasonCode.PACKET_TOO_LARGE)


def test_v5_our_connect_maximum_packet_size_is_enforced() -> None:
    c = Conversation(5, properties=Properties(maximum_packet_size=32))
    c.handshake()
    c.send(Publish("t", b"x" * 20))  # 26 bytes: fine
    assert names(c.events()) == ["MessageReceived"]
    c.send(Publish("t", b"x" * 40))
    assert_closed_with(c, ProtocolError, ReasonCode.PACKET_TOO_LARGE)


@LEVELS
def test_bad_packet_loses_nothing_and_duplicates_no_qos2_message(level: int) -> None:
    c = Conversation(level, clean_start=False)
    c.handshake()
    one = Publish("t", b"one", 1, packet_id=1)
    two = Publish("t", b"two", 2, packet_id=2)
    three = Publish("t", b"three", 1, packet_id=3)
    chunk = encode_packet(one, level) + encode_packet(two, level) + b"\x41\x02\x00\x01"
    c.send_bytes(chunk + encode_packet(three, level))
    events = c.events()
    assert names(events) == ["MessageReceived", "MessageReceived", "ConnectionClosing"]
    first, second = events[0], events[1]
    assert isinstance(first, MessageReceived)
    assert isinstance(second, MessageReceived)
    c.ack(first)
    c.ack(second)
    assert c.sent() == ([Disconnect(MALFORMED)] if level == 5 else [])  # no acks: closing
    # The broker kept the session and resends all three: only `three` is new to us.
    assert c.reconnect(session_present=True) == []
    c.events()
    c.send(
        Publish("t", b"one", 1, False, True, 1),
        Publish("t", b"two", 2, False, True, 2),
        Publish("t", b"three", 1, False, True, 3),
    )
    events = c.events()
    assert [e.message.payload for e in events] == [b"one", b"three"]  # type: ignore[attr-defined]
    for event in events:
        c.ack(event)
    # `one` was acknowledged while closing, so its PUBACK never left: QoS 1 is "at least once"
    # and it comes again. `two` is QoS 2: never again. `three`, cut off by the bad packet, is
    # not lost.
    assert c.sent() == [PubRec(2), PubAck(1), PubAck(3)]
    delivered = [e.message.payload for e in c.all_events if isinstance(e, MessageReceived)]
    assert delivered.count(b"two") == 1
    assert delivered.count(b"three") == 1


@LEVELS
def test_truncated_packet_then_connection_lost(level: int) -> None:
    c = Conversation(level, clean_start=False)
    c.handshake()
    message = Publish("t", b"payload", 2, packet_id=9)
    data = encode_packet(message, level)
    c.send_bytes(data[:-3])
    assert c.events() == []
    c.lose()  # end of stream in the middle of the packet
    assert isinstance(c.session.error, MalformedPacketError)
    assert c.session.state is State.DISCONNECTED
    # The half packet is gone with its connection: the next one starts clean.
    assert c.reconnect(session_present=True) == []
    assert names(c.events()) == ["Connected"]
    c.send(Publish("t", b"payload", 2, False, True, 9))
    assert [e.message.payload for e in c.events()] == [b"payload"]  # type: ignore[attr-defined]


@LEVELS
def test_connection_lost_with_an_error_keeps_that_error(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    c.send_bytes(b"\x30")
    cause = MQTTError("reset by peer")
    c.lose(cause)
    assert c.session.error is cause


@LEVELS
def test_input_cut_anywhere_gives_the_same_conversation(level: int) -> None:
    packets = [
        Publish("a/b", b"x" * 300, 1, packet_id=1),
        Publish("c", b"", 0),
        PubRel(4),
        Publish("d", b"y" * 20, 2, packet_id=2),
    ]
    data = b"".join(encode_packet(p, level) for p in packets)
    for step in (1, 2, 3, 7, 64, len(data)):
        c = Conversation(level)
        c.handshake()
        for start in range(0, len(data), step):
            c.send_bytes(data[start : start + step])
        events = c.events()
        assert [e.message for e in events] == [packets[0], packets[1], packets[3]]  # type: ignore[attr-defined]
        assert c.sent() == [PubComp(4, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND if level == 5 else 0)]


# -- fuzz: arbitrary bytes after a valid CONNACK ------------------------------------------------

#: Events a connected session may emit on input; Connected / ConnectionRefused may not repeat.
ALLOWED_EVENTS = (
    MessageReceived,
    PublishCompleted,
    SubscribeCompleted,
    UnsubscribeCompleted,
    ServerDisconnected,
    AuthReceived,
    ConnectionClosing,
)

SERVER_PACKETS = [
    Publish("t", b"p", 1, packet_id=1),
    Publish("t", b"p", 2, packet_id=2),
    PubAck(1),
    PubRec(2),
    PubRel(2),
    PubComp(2),
    SubAck(3, (1,)),
    UnsubAck(4),
    Disconnect(),
]


#: A chunk of input: random bytes, or valid server packets (by index) with a few bytes flipped.
CHUNK = st.one_of(
    st.binary(max_size=300),
    st.tuples(
        st.lists(st.integers(0, len(SERVER_PACKETS) - 1), max_size=6),
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
    ),
)


def to_bytes(chunk: bytes | tuple[list[int], list[tuple[int, int]]], level: int) -> bytes:
    if isinstance(chunk, bytes):
        return chunk
    indexes, flips = chunk
    out = bytearray(b"".join(encode_packet(SERVER_PACKETS[i], level) for i in indexes))
    for pos, value in flips:
        if out:
            out[pos % len(out)] = value
    return bytes(out)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(level=st.sampled_from([MQTT_3_1_1, MQTT_5]), chunks=st.lists(CHUNK, max_size=4))
def test_receive_data_never_raises(
    level: int, chunks: list[bytes | tuple[list[int], list[tuple[int, int]]]]
) -> None:
    c = Conversation(level, clean_start=True)
    c.handshake()
    c.publish("t", b"1", 1, token="q1")
    c.publish("t", b"2", 2, token="q2")
    c.subscribe("s", token="s")
    c.unsubscribe("u", token="u")
    c.sent()
    for chunk in chunks:
        c.session.receive_data(to_bytes(chunk, level), c.now)
        for packet in decode_all(c.session.data_to_send(), level):
            assert type(packet).__name__ in {"PubAck", "PubRec", "PubRel", "PubComp", "Disconnect"}
    events = c.events()
    for event in events:
        assert isinstance(event, ALLOWED_EVENTS), event
        if isinstance(event, MessageReceived) and event.ack is not None:
            c.ack(event)
    closing = [e for e in events if isinstance(e, ConnectionClosing)]
    assert len(closing) <= 1
    if closing:
        assert events[-1] is closing[0]
        error = closing[0].error
        assert isinstance(error, ProtocolError | ServerDisconnectError), error
        # An internal error of ours would surface as 0x83: the fuzz must never find one.
        assert getattr(error, "reason_code", None) != ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR
        assert c.session.state is State.CLOSING
    else:
        assert c.session.state is State.CONNECTED
    # Each outgoing flow completes at most once.
    tokens = [getattr(e, "token", None) for e in events]
    assert all(tokens.count(t) <= 1 for t in ("q1", "q2", "s", "u"))
    for packet in decode_all(c.session.data_to_send(), level):
        assert type(packet).__name__ in {"PubAck", "PubRec"}


# -- misuse raises at once -----------------------------------------------------------------------


@pytest.mark.parametrize("topic", ["a/+", "a/#", "+", "", "nul\x00", 42, None])
def test_prepare_publish_refuses_a_bad_topic(topic: object) -> None:
    with pytest.raises(InvalidTopicError):
        prepare_publish(topic, b"x")


@pytest.mark.parametrize("qos", [3, -1, True, 1.0, "1", None])
def test_prepare_publish_refuses_a_bad_qos(qos: object) -> None:
    with pytest.raises(InvalidQoSError, match="QoS"):
        prepare_publish("t", b"x", qos)


@pytest.mark.parametrize("payload", [123, 1.5, None, {"a": 1}, ["a"], object()])
def test_prepare_publish_refuses_a_payload_that_is_not_bytes(payload: object) -> None:
    with pytest.raises(PayloadTypeError, match="payload must be"):
        prepare_publish("t", payload)


@pytest.mark.parametrize(
    "payload", ["é", b"\xc3\xa9", bytearray(b"\xc3\xa9"), memoryview(b"\xc3\xa9")]
)
def test_prepare_publish_takes_str_and_bytes_likes(payload: object) -> None:
    assert prepare_publish("t", payload).payload == b"\xc3\xa9"


_SLOTS = (
    "alias_only", "first", "payload", "properties", "properties_bytes", "qos", "retain",
    "topic", "topic_bytes", "topic_field",
)  # fmt: skip


@given(
    topic=st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="+#\x00"),
        min_size=1,
        max_size=40,
    ),
    payload=st.binary(max_size=50),
    qos=st.integers(0, 2),
    retain=st.sampled_from([False, True, 0, 1]),
)
@settings(max_examples=300, deadline=None)
def test_prepare_publish_fast_path_builds_what_the_constructor_builds(
    topic: str, payload: bytes, qos: int, retain: object
) -> None:
    for _ in range(2):  # the second time from the cache of topic fields
        fast = prepare_publish(topic, payload, qos, retain)
        slow = PublishRequest(
            topic, topic.encode(), payload, qos, bool(retain), NO_PROPERTIES, None
        )
        assert {k: getattr(fast, k) for k in _SLOTS} == {k: getattr(slow, k) for k in _SLOTS}


def test_prepare_publish_caches_topics_within_a_bound() -> None:
    with pytest.raises(InvalidTopicError):
        prepare_publish("bad/+", b"x")
    assert "bad/+" not in session_module._TOPIC_FIELDS  # a refused name is not kept
    for i in range(session_module._TOPIC_FIELDS_MAX + 10):
        prepare_publish(f"many/{i}", b"x")
    assert len(session_module._TOPIC_FIELDS) <= session_module._TOPIC_FIELDS_MAX


def test_prepare_publish_refuses_properties_on_311() -> None:
    with pytest.raises(InvalidArgumentError, match="MQTT 5"):
        prepare_publish("t", b"x", 0, False, Properties(content_type="a"), MQTT_3_1_1)


@LEVELS
def test_publish_prepared_for_another_level_is_refused(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    other = prepare_publish("t", b"x", 1, protocol_level=MQTT_5 if level == 4 else MQTT_3_1_1)
    with pytest.raises(InvalidArgumentError):
        c.session.publish(other, c.now)
    assert c.sent() == []
    assert c.session.pending == 0


@LEVELS
def test_queue_full_at_max_queued(level: int) -> None:
    store = RecordingStore("out")
    c = Conversation(level, max_queued=3, outgoing_store=store)
    for n in range(3):
        c.publish("t", bytes([n]), 1)
    with pytest.raises(QueueFullError, match="max_queued=3"):
        c.publish("t", b"over", 1)
    assert c.session.queued == 3
    assert len(store.ops("put")) == 3  # the refused message was never stored
    c.handshake()
    assert [p.payload for p in c.sent()] == [b"\x00", b"\x01", b"\x02"]  # type: ignore[attr-defined]


@LEVELS
def test_queue_full_counts_work_held_by_the_window(level: int) -> None:
    c = Conversation(level, max_queued=1, max_inflight=1)
    c.handshake()
    c.publish("t", b"1", 1)  # in flight
    c.publish("t", b"2", 1)  # queued
    with pytest.raises(QueueFullError):
        c.publish("t", b"3", 0)
    assert len(c.sent()) == 1


def test_v5_packet_too_large_for_the_broker_raises_at_once() -> None:
    c = Conversation(5)
    c.handshake(properties=Properties(maximum_packet_size=40))
    # QoS 1, topic "t": 1 + 1 + (2 + 1 + 2 + 1 + payload) bytes; 40 bytes fit exactly.
    c.publish("t", b"x" * 32, 1)
    [packet] = c.sent()
    assert len(encode_packet(packet, 5)) == 40
    with pytest.raises(PacketTooLargeError, match="Maximum Packet Size"):
        c.publish("t", b"x" * 33, 1)
    assert c.sent() == []
    assert c.session.pending == 1
    c.publish("t", b"", 1)
    assert [p.packet_id for p in c.sent()] == [2]  # type: ignore[attr-defined]  # no id was taken


def test_v5_maximum_qos_and_retain_available_from_connack() -> None:
    c = Conversation(5)
    c.handshake(properties=Properties(maximum_qos=1, retain_available=0))
    with pytest.raises(PublishError) as info:
        c.publish("t", b"x", 2)
    assert info.value.reason_code == ReasonCode.QOS_NOT_SUPPORTED
    with pytest.raises(PublishError) as info:
        c.publish("t", b"x", 0, retain=True)
    assert info.value.reason_code == ReasonCode.RETAIN_NOT_SUPPORTED
    assert c.sent() == []
    c.publish("t", b"x", 1)
    assert names(c.sent()) == ["Publish"]


def test_v5_queued_message_over_the_broker_limits_fails_when_its_turn_comes() -> None:
    store = RecordingStore("out")
    c = Conversation(5, outgoing_store=store)
    c.publish("t", b"q2", 2, token="q2")
    c.publish("t", b"big" * 20, 1, token="big")
    c.publish("t", b"ok", 1, token="ok")
    c.connect()
    c.send(ConnAck(False, 0, Properties(maximum_qos=1, maximum_packet_size=30)))
    [packet] = c.sent()
    assert packet.payload == b"ok"  # type: ignore[attr-defined]
    events = c.events()[1:]  # after Connected
    assert [(e.token, type(e.error).__name__) for e in events] == [  # type: ignore[attr-defined]
        ("q2", "PublishError"),
        ("big", "PacketTooLargeError"),
    ]
    # Refused for good: not left in the store for the next run to resend.
    assert store.keys() == [3]


@pytest.mark.parametrize("maximum", [None, 2])
def test_v5_topic_alias_above_the_broker_maximum_is_refused(maximum: int | None) -> None:
    # [MQTT-3.3.2-9]; no Topic Alias Maximum in CONNACK means 0: no alias at all.
    c = Conversation(5)
    c.handshake(properties=Properties(topic_alias_maximum=maximum))
    if maximum:
        c.publish("a", b"", properties=Properties(topic_alias=maximum))
        [packet] = c.sent()
        assert packet.properties.topic_alias == maximum  # type: ignore[attr-defined]
    with pytest.raises(PublishError) as info:
        c.publish("a", b"", properties=Properties(topic_alias=(maximum or 0) + 1))
    assert info.value.reason_code == ReasonCode.TOPIC_ALIAS_INVALID
    assert c.sent() == []
    assert c.session.pending == 0


@pytest.mark.parametrize("level", [4, 5])
def test_abort_ends_the_connection_with_the_applications_error(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    error = MQTTError("the application gave up")
    c.session.abort(error, ReasonCode.NOT_AUTHORIZED)
    sent = c.sent()
    # MQTT 5 says why in a DISCONNECT; 3.1.1 has no reason to send.
    assert sent == ([Disconnect(ReasonCode.NOT_AUTHORIZED)] if level == 5 else [])
    assert c.events() == [ConnectionClosing(error)]
    assert c.session.error is error
    c.session.abort(MQTTError("again"))  # closing already: nothing more
    assert c.sent() == []
    assert c.events() == []
