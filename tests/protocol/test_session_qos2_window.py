"""ClientSession conversations: with MQTT 3.x a full QoS 2 window holds QoS 1 messages back too.

Found by the fault suite (tests/fault, RELIABILITY.md): in a stream alternating QoS 1 and QoS 2,
every 40th message was lost without any fault. With 20 QoS 2 messages awaiting PUBREL on its
side (its window, ``max_inflight_messages``), Mosquitto refuses any further QoS 1/2 PUBLISH with
0x97 Quota exceeded, which MQTT 3.1.1 cannot carry: the client got a plain PUBACK for a message
the broker had dropped. The session let a QoS 1 PUBLISH go while its QoS 2 window was full.
"""

from __future__ import annotations

from mqttkit.protocol.packets import PubAck, PubComp, Publish, PubRec, PubRel

from .session_helpers import Conversation


def test_qos1_waits_while_the_qos2_window_is_full() -> None:
    c = Conversation(4, max_inflight_qos2=2)
    c.handshake()
    c.publish("a", b"A", 2)
    c.publish("b", b"B", 2)
    c.publish("c", b"C", 1)
    assert [p.payload for p in c.sent()] == [b"A", b"B"]  # type: ignore[attr-defined]
    c.send(PubRec(1))
    assert c.sent() == [PubRel(1)]  # A still holds its slot until PUBCOMP
    c.send(PubComp(1))
    assert c.sent() == [Publish("c", b"C", 1, packet_id=3)]
    c.send(PubAck(3), PubRec(2), PubComp(2))
    assert c.session.pending == 0


def test_qos1_alone_is_not_limited_by_the_qos2_window() -> None:
    c = Conversation(4, max_inflight_qos2=2)
    c.handshake()
    for i in range(5):
        c.publish("a", bytes([i]), 1)
    assert [p.packet_id for p in c.sent()] == [1, 2, 3, 4, 5]  # type: ignore[attr-defined]


def test_mqtt5_window_is_the_receive_maximum_for_both() -> None:
    c = Conversation(5)  # no QoS 2 window of its own: the broker's Receive Maximum counts both
    c.handshake()
    for i in range(30):
        c.publish("a", bytes([i]), 2 - i % 2)
    assert len(c.sent()) == 30
