"""ClientSession conversations: incoming QoS 0/1/2, acknowledgement order, exactly-once,
MQTT 5 topic aliases and Receive Maximum.

A scripted broker made of bytes (tests/protocol/session_helpers.py); time is passed in.
"""

from __future__ import annotations

import logging

import pytest

from mqttkit.protocol.errors import ProtocolError, ReasonCode
from mqttkit.protocol.packets import (
    Disconnect,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
)
from mqttkit.protocol.session import MessageReceived, State

from .session_helpers import Conversation, names

LEVELS = pytest.mark.parametrize("level", [4, 5])


def received(c: Conversation) -> list[MessageReceived]:
    events = c.events()
    assert all(isinstance(e, MessageReceived) for e in events), events
    return events  # type: ignore[return-value]


# -- QoS 0/1/2 -----------------------------------------------------------------------------------


@LEVELS
def test_qos0_is_delivered_without_ack(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    message = Publish("a/b", b"zero", 0, True)
    c.send(message)
    [event] = received(c)
    assert event.message == message
    assert event.ack is None
    assert c.sent() == []


@LEVELS
@pytest.mark.parametrize(("qos", "answer"), [(1, PubAck), (2, PubRec)])
def test_ack_goes_out_only_after_acknowledge(
    level: int, qos: int, answer: type[PubAck | PubRec]
) -> None:
    c = Conversation(level)
    c.handshake()
    message = Publish("a/b", b"data", qos, False, False, 42)
    c.send(message)
    [event] = received(c)
    assert event.message == message
    assert event.ack is not None
    assert (event.ack.packet_id, event.ack.qos) == (42, qos)
    assert c.sent() == []  # nothing acknowledged that the application has not received
    assert c.session.unacknowledged == 1
    c.ack(event)
    assert c.sent() == [answer(42)]
    c.ack(event)  # twice: still one acknowledgement
    assert c.sent() == []
    assert c.session.unacknowledged == 0


@LEVELS
def test_acks_go_out_in_arrival_order_whatever_the_acknowledge_order(level: int) -> None:
    # [MQTT-4.6.0-2], [MQTT-4.6.0-3]: PUBACK / PUBREC in the order the PUBLISH arrived.
    c = Conversation(level)
    c.handshake()
    c.send(
        Publish("t", b"1", 1, packet_id=11),
        Publish("t", b"2", 2, packet_id=12),
        Publish("t", b"0", 0),
        Publish("t", b"3", 1, packet_id=13),
        Publish("t", b"4", 2, packet_id=14),
    )
    events = received(c)
    assert [e.message.payload for e in events] == [b"1", b"2", b"0", b"3", b"4"]
    first, second, _, third, fourth = events
    c.ack(fourth)
    c.ack(second)
    assert c.sent() == []  # the first is still with the application
    c.ack(first)
    assert c.sent() == [PubAck(11), PubRec(12)]
    c.ack(third)
    assert c.sent() == [PubAck(13), PubRec(14)]


@LEVELS
def test_qos2_exactly_once(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    c.send(Publish("t", b"once", 2, packet_id=5))
    [event] = received(c)
    c.ack(event)
    assert c.sent() == [PubRec(5)]
    # [MQTT-4.3.3-10]: until PUBREL, a resent PUBLISH is answered with PUBREC, not delivered.
    c.send(Publish("t", b"once", 2, False, True, 5))
    assert c.events() == []
    assert c.sent() == [PubRec(5)]
    c.send(Publish("t", b"once", 2, False, False, 5))  # even without DUP
    assert c.events() == []
    assert c.sent() == [PubRec(5)]
    # [MQTT-4.3.3-11]: PUBREL -> PUBCOMP, and the identifier is released.
    c.send(PubRel(5))
    assert c.sent() == [PubComp(5)]
    # [MQTT-4.3.3-12]: after PUBCOMP, the same identifier is a new message.
    c.send(Publish("t", b"next", 2, packet_id=5))
    assert [e.message.payload for e in received(c)] == [b"next"]


@LEVELS
@pytest.mark.parametrize("qos", [1, 2])
def test_duplicate_while_unacknowledged_is_not_delivered_twice(level: int, qos: int) -> None:
    c = Conversation(level)
    c.handshake()
    c.send(Publish("t", b"m", qos, packet_id=8))
    [event] = received(c)
    c.send(Publish("t", b"m", qos, False, True, 8))
    assert c.events() == []
    assert c.sent() == []
    c.ack(event)
    assert c.sent() == [PubAck(8) if qos == 1 else PubRec(8)]


@LEVELS
def test_pubrel_for_an_unknown_id_is_completed(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    c.send(PubRel(77))
    expected = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND if level == 5 else 0
    assert c.sent() == [PubComp(77, expected)]
    assert c.events() == []
    assert c.session.state is State.CONNECTED


@LEVELS
def test_pubrel_twice_completes_twice_and_delivers_nothing(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    c.send(Publish("t", b"m", 2, packet_id=3))
    c.ack(received(c)[0])
    c.sent()
    c.send(PubRel(3), PubRel(3))
    not_found = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND if level == 5 else 0
    assert c.sent() == [PubComp(3), PubComp(3, not_found)]
    assert c.events() == []


# -- across reconnects ---------------------------------------------------------------------------


@LEVELS
def test_session_present_keeps_incoming_state(level: int) -> None:
    c = Conversation(level, clean_start=False)
    c.handshake()
    c.send(Publish("t", b"q2", 2, packet_id=1), Publish("t", b"q1", 1, packet_id=2))
    q2, q1 = received(c)
    c.ack(q2)
    assert c.sent() == [PubRec(1)]
    assert c.reconnect(session_present=True) == []
    assert names(c.events()) == ["Connected"]
    # The broker resends what we did not acknowledge, and PUBREL for what we did.
    c.send(Publish("t", b"q1", 1, False, True, 2), Publish("t", b"q2", 2, False, True, 1))
    assert c.events() == []  # neither is delivered again
    assert c.sent() == [PubRec(1)]
    c.ack(q1)  # acknowledged on the new connection
    assert c.sent() == [PubAck(2)]
    c.send(PubRel(1))
    assert c.sent() == [PubComp(1)]


@LEVELS
def test_acknowledge_while_disconnected_sends_nothing_and_keeps_qos2_state(level: int) -> None:
    c = Conversation(level, clean_start=False)
    c.handshake()
    c.send(Publish("t", b"q2", 2, packet_id=1))
    [event] = received(c)
    c.lose()
    c.ack(event)
    assert c.reconnect(session_present=True) == []
    c.events()
    c.send(Publish("t", b"q2", 2, False, True, 1))
    assert c.events() == []  # the application has it: not again
    assert c.sent() == [PubRec(1)]


@LEVELS
def test_session_lost_drops_incoming_state(level: int) -> None:
    c = Conversation(level, clean_start=False)
    c.handshake()
    c.send(Publish("t", b"old2", 2, packet_id=1), Publish("t", b"old1", 1, packet_id=2))
    q2, q1 = received(c)
    c.ack(q2)
    c.sent()
    c.reconnect(session_present=False)
    c.events()
    c.ack(q1)  # about the old session: the new one has no such identifier
    assert c.sent() == []
    c.send(Publish("t", b"new", 2, packet_id=1))  # a new message, same identifier
    [event] = received(c)
    assert event.message.payload == b"new"
    c.ack(event)
    assert c.sent() == [PubRec(1)]
    assert c.session.unacknowledged == 0


# -- MQTT 5 topic aliases ------------------------------------------------------------------------


def alias(topic: str, number: int, payload: bytes = b"") -> Publish:
    return Publish(topic, payload, properties=Properties(topic_alias=number))


def closing_error(c: Conversation) -> ProtocolError:
    events = c.events()
    assert names(events)[-1] == "ConnectionClosing", events
    error = events[-1].error  # type: ignore[attr-defined]
    assert isinstance(error, ProtocolError)
    return error


def test_v5_topic_alias_set_then_used() -> None:
    c = Conversation(5, properties=Properties(topic_alias_maximum=5))
    c.handshake()
    c.send(alias("sensors/1/temp", 1, b"20"), alias("", 1, b"21"))
    c.send(alias("sensors/2/temp", 1, b"7"), alias("", 1, b"8"), alias("", 1, b"9"))
    topics = [(e.message.topic, e.message.payload) for e in received(c)]
    assert topics == [
        ("sensors/1/temp", b"20"),
        ("sensors/1/temp", b"21"),
        ("sensors/2/temp", b"7"),  # an alias can be bound again
        ("sensors/2/temp", b"8"),
        ("sensors/2/temp", b"9"),
    ]


@pytest.mark.parametrize(
    ("maximum", "packets"),
    [
        (5, [alias("", 2)]),  # used before it was set
        (5, [alias("a", 6)]),  # above our Topic Alias Maximum
        (None, [alias("a", 1)]),  # we accept no alias at all [MQTT-3.3.2-11]
    ],
    ids=["unknown", "above-maximum", "none-allowed"],
)
def test_v5_invalid_topic_alias_is_a_protocol_error(
    maximum: int | None, packets: list[Publish]
) -> None:
    c = Conversation(5, properties=Properties(topic_alias_maximum=maximum))
    c.handshake()
    c.send(*packets)
    error = closing_error(c)
    assert error.reason_code == ReasonCode.TOPIC_ALIAS_INVALID
    assert c.sent() == [Disconnect(ReasonCode.TOPIC_ALIAS_INVALID)]


def test_v5_topic_aliases_do_not_survive_the_connection() -> None:
    # [MQTT-3.3.2-7]: alias mappings belong to one network connection.
    c = Conversation(5, properties=Properties(topic_alias_maximum=5), clean_start=False)
    c.handshake()
    c.send(alias("a", 1))
    c.reconnect(session_present=True)
    c.events()
    c.send(alias("", 1))
    assert closing_error(c).reason_code == ReasonCode.TOPIC_ALIAS_INVALID


# -- MQTT 5 Receive Maximum ----------------------------------------------------------------------


def test_v5_receive_maximum_exceeded_is_tolerated_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # [MQTT-3.3.4-9] binds the broker; section 4.13 lets the client close (SHOULD). mqttkit
    # tolerates it because Mosquitto 2.0 exceeds the client's Receive Maximum once
    # acknowledgements flow (tests/sync/test_backpressure.py shows it).
    c = Conversation(5, properties=Properties(receive_maximum=2))
    c.handshake()
    c.send(Publish("t", b"1", 1, packet_id=1), Publish("t", b"0", 0))
    c.send(Publish("t", b"2", 2, packet_id=2))
    assert len(received(c)) == 3  # QoS 0 does not count
    c.send(Publish("t", b"2", 2, False, True, 2))  # a resend does not count twice
    assert c.events() == []
    with caplog.at_level(logging.WARNING, logger="mqttkit"):
        c.send(Publish("t", b"3", 1, packet_id=3))
        c.send(Publish("t", b"4", 1, packet_id=4))
    assert [e.message.payload for e in received(c)] == [b"3", b"4"]
    assert c.sent() == []  # no DISCONNECT
    assert caplog.text.count("Receive Maximum") == 1  # logged once per connection


def test_v5_receive_maximum_counts_qos2_until_pubrel(caplog: pytest.LogCaptureFixture) -> None:
    c = Conversation(5, properties=Properties(receive_maximum=2))
    c.handshake()
    c.send(Publish("t", b"1", 2, packet_id=1), Publish("t", b"2", 1, packet_id=2))
    first, second = received(c)
    c.ack(first)
    c.ack(second)
    assert c.sent() == [PubRec(1), PubAck(2)]
    with caplog.at_level(logging.WARNING, logger="mqttkit"):
        c.send(Publish("t", b"3", 1, packet_id=3))  # 1 awaits PUBREL: this one fits
        assert "Receive Maximum" not in caplog.text
        c.send(Publish("t", b"4", 1, packet_id=4))  # 1 and 3 are open: over the maximum
        assert "Receive Maximum" in caplog.text


def test_v5_receive_maximum_frees_a_slot_on_pubrel() -> None:
    c = Conversation(5, properties=Properties(receive_maximum=1))
    c.handshake()
    c.send(Publish("t", b"1", 2, packet_id=1))
    c.ack(received(c)[0])
    c.send(PubRel(1))
    assert c.sent() == [PubRec(1), PubComp(1)]
    c.send(Publish("t", b"2", 2, packet_id=2))
    assert [e.message.payload for e in received(c)] == [b"2"]
