"""Regressions the session fuzzer (``tests/fuzz``, ``tools/fuzz.py``) found, as conversations.

MQTT 5: the limits the broker announces in CONNACK bind every packet the client writes on that
connection [MQTT-3.1.2-24] (Maximum Packet Size), [MQTT-3.2.2-11] (Maximum QoS), [MQTT-3.2.2-14]
(Retain Available), including SUBSCRIBE / UNSUBSCRIBE and the messages resent when the session
is resumed. A packet that does not fit is not sent; its operation completes with the error
[MQTT-3.1.2-25], and a refused message leaves the outgoing store.
"""

from __future__ import annotations

from mqttkit.protocol.errors import PacketTooLargeError, PublishError, ReasonCode
from mqttkit.protocol.packets import Properties, PubAck, Publish, PubRec
from mqttkit.protocol.session import PublishCompleted, SubscribeCompleted, UnsubscribeCompleted

from .session_helpers import Conversation, RecordingStore, names


def test_a_subscribe_over_the_brokers_maximum_packet_size_is_not_sent() -> None:
    c = Conversation(5)
    c.handshake(properties=Properties(maximum_packet_size=16))
    c.subscribe("in/#", "in/+/x", token="big")  # 21 bytes
    assert c.sent() == []
    event = c.expect_event(SubscribeCompleted)
    assert event.token == "big"
    assert isinstance(event.error, PacketTooLargeError)
    assert "Maximum Packet Size" in str(event.error)
    assert c.session.pending == 0
    c.subscribe("a", token="small")  # 10 bytes: fits, and gets a packet id as usual
    assert names(c.sent()) == ["Subscribe"]


def test_an_unsubscribe_over_the_brokers_maximum_packet_size_is_not_sent() -> None:
    c = Conversation(5)
    c.handshake(properties=Properties(maximum_packet_size=16))
    c.unsubscribe("a/long/topic/filter", token="u")
    assert c.sent() == []
    event = c.expect_event(UnsubscribeCompleted)
    assert isinstance(event.error, PacketTooLargeError)
    assert c.session.pending == 0


def test_a_resumed_session_does_not_resend_over_the_new_maximum_qos() -> None:
    store = RecordingStore("out")
    c = Conversation(5, clean_start=False, outgoing_store=store)
    c.handshake()
    c.publish("t", b"1", 1, token="q1")
    c.publish("t", b"2", 2, token="q2")
    c.publish("t", b"3", 2, token="released")
    c.sent()
    c.send(PubRec(3))
    assert names(c.sent()) == ["PubRel"]
    resent = c.reconnect(session_present=True, properties=Properties(maximum_qos=1))
    # QoS 1 is resent with DUP; the released QoS 2 flow finishes (PUBREL: no QoS on it); the
    # QoS 2 PUBLISH over the broker's Maximum QoS is not sent.
    assert [(type(p).__name__, getattr(p, "packet_id", None)) for p in resent] == [
        ("Publish", 1),
        ("PubRel", 3),
    ]
    assert isinstance(resent[0], Publish)
    assert resent[0].dup
    events = [e for e in c.events() if isinstance(e, PublishCompleted)]
    assert [e.token for e in events] == ["q2"]
    assert isinstance(events[0].error, PublishError)
    assert events[0].error.reason_code == ReasonCode.QOS_NOT_SUPPORTED
    assert c.session.inflight == 2
    assert len(store.keys()) == 2  # the refused message left the store


def test_a_resumed_session_does_not_resend_over_the_new_maximum_packet_size() -> None:
    c = Conversation(5, clean_start=False)
    c.handshake()
    c.publish("t", b"x" * 40, 1, token="big")
    c.publish("t", b"", 1, token="small")
    c.subscribe("in/#", "in/+/x", token="sub")
    c.sent()
    resent = c.reconnect(session_present=True, properties=Properties(maximum_packet_size=16))
    assert [type(p).__name__ for p in resent] == ["Publish"]
    assert isinstance(resent[0], Publish)
    assert resent[0].payload == b""
    completed = {
        e.token: e.error for e in c.events() if isinstance(e, PublishCompleted | SubscribeCompleted)
    }
    assert set(completed) == {"big", "sub"}
    assert all(isinstance(error, PacketTooLargeError) for error in completed.values())
    assert c.session.pending == 1


def test_within_the_limits_a_resumed_session_resends_everything() -> None:
    c = Conversation(5, clean_start=False)
    c.handshake()
    c.publish("t", b"x", 1, token="q1")
    c.publish("t", b"x", 2, token="q2")
    c.subscribe("in/#", token="sub")
    c.sent()
    resent = c.reconnect(
        session_present=True, properties=Properties(maximum_qos=1, maximum_packet_size=14)
    )
    # QoS 1 PUBLISH of 12 bytes and SUBSCRIBE of 11 fit; only the QoS 2 message is refused.
    assert names(resent) == ["Publish", "Subscribe"]
    assert [e.token for e in c.events() if isinstance(e, PublishCompleted)] == ["q2"]
    c.send(PubAck(1))
    assert [e.token for e in c.events() if isinstance(e, PublishCompleted)] == ["q1"]
