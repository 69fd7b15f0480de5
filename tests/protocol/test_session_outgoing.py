"""ClientSession conversations: outgoing QoS 0/1/2, packet identifiers, the in-flight window,
FIFO order, late acknowledgements, and what a reconnect resends.

A scripted broker made of bytes (tests/protocol/session_helpers.py); time is passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from mqttkit.protocol.errors import (
    InvalidArgumentError,
    PublishError,
    ReasonCode,
    SubscribeError,
    UnsubscribeError,
)
from mqttkit.protocol.packets import (
    ConnAck,
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
    Connected,
    PublishCompleted,
    State,
    SubscribeCompleted,
    UnsubscribeCompleted,
    prepare_publish,
)

from .session_helpers import Conversation, names

LEVELS = pytest.mark.parametrize("level", [4, 5])


def ids(packets: Sequence[object]) -> list[int | None]:
    return [getattr(p, "packet_id", None) for p in packets]


# -- QoS 0/1/2 flows -----------------------------------------------------------------------------


@LEVELS
def test_qos0_is_sent_at_once_and_completes_when_written(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    c.publish("a/b", b"zero", 0, retain=True, token="t0")
    assert c.sent() == [Publish("a/b", b"zero", 0, True, False, None)]
    assert c.events() == [PublishCompleted("t0")]
    assert c.session.pending == 0


def test_publish_now_sends_qos0_at_once_with_no_completion_event() -> None:
    c = Conversation(4)
    c.handshake()
    assert c.session.publish_now(prepare_publish("a/b", b"zero", 0, True), c.now) is True
    assert c.sent() == [Publish("a/b", b"zero", 0, True, False, None)]
    assert c.events() == []  # done: the caller completes it
    assert c.session.pending == 0


def test_publish_now_declines_what_cannot_go_at_once_and_changes_nothing() -> None:
    c = Conversation(4, max_inflight=1)
    request = prepare_publish("a/b", b"zero", 0)
    assert c.session.publish_now(request, c.now) is False  # not connected yet
    c.handshake()
    assert c.session.publish_now(prepare_publish("a/b", b"one", 1), c.now) is False  # QoS 1
    c.publish("a/b", b"first", 1, token="t1")  # in flight: the window of 1 is full
    c.publish("a/b", b"second", 1, token="t2")  # queued
    c.sent()
    # A QoS 0 message must not overtake the queued one: publish() queues it behind.
    assert c.session.publish_now(request, c.now) is False
    assert c.sent() == []
    assert c.events() == []
    c.publish("a/b", b"zero", 0, token="t0")
    c.send(PubAck(1))
    assert [p.payload for p in c.sent() if isinstance(p, Publish)] == [b"second", b"zero"]


def test_publish_now_declines_mqtt5_and_traced_sessions() -> None:
    c = Conversation(5)
    c.handshake()
    request = prepare_publish("a/b", b"zero", 0, protocol_level=5)
    assert c.session.publish_now(request, c.now) is False
    c = Conversation(4, trace_packets=True)
    c.connect()
    c.send(ConnAck(False, 0))
    c.events()
    assert c.session.publish_now(prepare_publish("a/b", b"zero", 0), c.now) is True
    assert [type(e).__name__ for e in c.events()] == ["PacketSent"]


@LEVELS
def test_qos1_completes_on_puback(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    c.publish("a/b", b"one", 1, token="t1")
    assert c.sent() == [Publish("a/b", b"one", 1, False, False, 1)]
    assert c.events() == []
    assert c.session.inflight == 1
    c.send(PubAck(1))
    assert c.events() == [PublishCompleted("t1", None, 0)]
    assert c.session.inflight == 0
    assert c.sent() == []


@LEVELS
def test_qos2_completes_on_pubcomp_after_pubrel(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    c.publish("a/b", b"two", 2, token="t2")
    assert c.sent() == [Publish("a/b", b"two", 2, False, False, 1)]
    c.send(PubRec(1))
    assert c.sent() == [PubRel(1)]
    assert c.events() == []  # not done until PUBCOMP
    c.send(PubRec(1))  # a resent PUBREC is answered again
    assert c.sent() == [PubRel(1)]
    c.send(PubComp(1))
    assert c.events() == [PublishCompleted("t2", None, 0)]
    assert c.session.inflight == 0


def test_v5_puback_success_codes_complete_without_error() -> None:
    c = Conversation(5)
    c.handshake()
    c.publish("a", b"1", 1, token="t")
    c.sent()
    c.send(PubAck(1, ReasonCode.NO_MATCHING_SUBSCRIBERS))
    assert c.events() == [PublishCompleted("t", None, 0x10)]


@pytest.mark.parametrize("ack", [PubAck, PubRec])
def test_v5_failure_reason_ends_the_flow_with_publish_error(ack: type[PubAck | PubRec]) -> None:
    c = Conversation(5)
    c.handshake()
    qos = 1 if ack is PubAck else 2
    c.publish("a", b"1", qos, token="t")
    c.sent()
    c.send(ack(1, ReasonCode.NOT_AUTHORIZED, Properties(reason_string="no")))
    [event] = c.events()
    assert isinstance(event, PublishCompleted)
    assert event.token == "t"
    assert isinstance(event.error, PublishError)
    assert event.error.reason_code == ReasonCode.NOT_AUTHORIZED
    assert c.sent() == []  # no PUBREL after a failed PUBREC
    assert c.session.inflight == 0
    assert c.session.pending == 0


# -- packet identifiers --------------------------------------------------------------------------


@LEVELS
def test_packet_ids_are_allocated_when_sent_not_when_queued(level: int) -> None:
    c = Conversation(level, clean_start=True)
    c.handshake()
    c.publish("a", b"A", 1)
    c.publish("b", b"B", 1)
    assert ids(c.sent()) == [1, 2]
    c.lose()
    c.publish("c", b"C", 1)  # offline: queued, no identifier yet
    assert c.session.queued == 1
    sent = c.reconnect(session_present=False)
    # A and B go again as new messages, then C: identifiers follow the wire order, so C did
    # not take one while it waited.
    assert [p.payload for p in sent if isinstance(p, Publish)] == [b"A", b"B", b"C"]
    assert ids(sent) == [3, 4, 5]


@LEVELS
def test_packet_ids_are_unique_while_in_flight(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    for n in range(300):
        if n % 3 == 0:
            c.subscribe(f"s/{n}")
        elif n % 3 == 1:
            c.unsubscribe(f"s/{n}")
        else:
            c.publish("p", b"", 1 + n % 2)
    sent = c.sent()
    assert len(sent) == 300
    assert sorted(ids(sent)) == list(range(1, 301))  # type: ignore[type-var]


def test_packet_ids_wrap_to_1_and_skip_ids_in_flight() -> None:
    c = Conversation(4)
    c.handshake()
    c.publish("a", b"A", 1)
    c.publish("b", b"B", 2)
    assert ids(c.sent()) == [1, 2]
    c.send(PubAck(1))  # 1 is free again; 2 stays in flight
    session, request = c.session, prepare_publish("x", b"", 1)
    for expected in range(3, 65_536):  # the fast lane: raw bytes, no decoding
        session.publish(request, c.now)
        data = session.data_to_send()
        assert data[5:7] == expected.to_bytes(2, "big")
        session.receive_data(b"\x40\x02" + data[5:7], c.now)
    assert session.inflight == 1
    c.events()
    c.publish("c", b"C", 1)
    c.publish("d", b"D", 1)
    assert ids(c.sent()) == [1, 3]  # 65,535 wraps to 1; 2 is still in flight, skipped


def test_work_waits_while_every_packet_id_is_in_use() -> None:
    c = Conversation(4)  # max_inflight 65,535 and no Receive Maximum in 3.1.1
    c.handshake()
    c.subscribe("first")  # 1: awaits SUBACK
    session, request = c.session, prepare_publish("x", b"", 1)
    for _ in range(65_534):  # 2..65,535
        session.publish(request, c.now)
    sent = 0
    for _ in range(1000):  # as a driver does: write, then pump() while the session wants to
        sent += len(session.data_to_send())
        if not session.wants_to_send:
            break
        session.pump(c.now)
    assert sent == 65_534 * 7 + 12
    assert session.inflight == 65_534
    c.publish("y", b"Y", 1, token="y")  # no identifier left: both wait, neither raises
    c.subscribe("second", token="second")
    assert c.sent() == []
    assert c.session.queued == 2
    c.send(PubAck(70))
    assert c.sent() == [Publish("y", b"Y", 1, False, False, 70)]
    c.send(SubAck(1, (1,)))
    assert c.sent() == [Subscribe(1, (Subscription("second", 1),))]


# -- the in-flight window ------------------------------------------------------------------------


@LEVELS
def test_window_queues_the_rest_and_sends_as_acks_free_it(level: int) -> None:
    c = Conversation(level, max_inflight=2)
    c.handshake()
    for n in range(5):
        c.publish("w", bytes([n]), 1, token=n)
    assert ids(c.sent()) == [1, 2]
    assert (c.session.inflight, c.session.queued) == (2, 3)
    c.publish("w", b"q0", 0, token="q0")  # QoS 0 keeps its place behind them (FIFO)
    assert c.sent() == []
    c.send(PubAck(2))
    assert [(p.packet_id, p.payload) for p in c.sent()] == [(3, b"\x02")]  # type: ignore[attr-defined]
    c.send(PubAck(1), PubAck(3))
    sent = c.sent()
    assert [p.payload for p in sent] == [b"\x03", b"\x04", b"q0"]  # type: ignore[attr-defined]
    assert ids(sent) == [4, 5, None]  # identifiers go round: 1 and 2 are not reused at once
    assert [e.token for e in c.events()] == [1, 0, 2, "q0"]  # type: ignore[attr-defined]


@LEVELS
def test_qos2_holds_its_window_slot_until_pubcomp(level: int) -> None:
    c = Conversation(level, max_inflight=1)
    c.handshake()
    c.publish("a", b"A", 2)
    c.publish("b", b"B", 1)
    assert ids(c.sent()) == [1]
    c.send(PubRec(1))
    assert c.sent() == [PubRel(1)]  # B still waits
    c.send(PubComp(1))
    assert ids(c.sent()) == [2]


def test_v5_receive_maximum_of_the_broker_limits_the_window() -> None:
    c = Conversation(5, max_inflight=10)
    c.handshake(properties=Properties(receive_maximum=2))
    for _ in range(4):
        c.publish("r", b"", 1)
    assert ids(c.sent()) == [1, 2]
    c.send(PubAck(1))
    assert ids(c.sent()) == [3]


def test_v5_our_max_inflight_wins_when_smaller() -> None:
    c = Conversation(5, max_inflight=1)
    c.handshake(properties=Properties(receive_maximum=100))
    c.publish("r", b"", 1)
    c.publish("r", b"", 1)
    assert ids(c.sent()) == [1]


def test_v5_receive_maximum_is_per_connection() -> None:
    c = Conversation(5, max_inflight=10, clean_start=False)
    c.handshake(properties=Properties(receive_maximum=1))
    c.publish("r", b"", 1)
    c.publish("r", b"", 1)
    assert ids(c.sent()) == [1]
    sent = c.reconnect(session_present=True)  # no Receive Maximum this time: 65,535
    assert [(p.packet_id, p.dup) for p in sent] == [(1, True), (2, False)]  # type: ignore[attr-defined]


# -- FIFO between PUBLISH, SUBSCRIBE, UNSUBSCRIBE ------------------------------------------------


@LEVELS
def test_offline_work_goes_out_in_fifo_order(level: int) -> None:
    c = Conversation(level)
    c.publish("p", b"1", 1)
    c.subscribe("s/#", token="sub")
    c.publish("p", b"2", 0)
    c.unsubscribe("old", token="unsub")
    c.publish("p", b"3", 2)
    c.handshake()
    sent = c.sent()
    assert names(sent) == ["Publish", "Subscribe", "Publish", "Unsubscribe", "Publish"]
    assert ids(sent) == [1, 2, None, 3, 4]


@LEVELS
def test_subscribe_waits_behind_a_publish_held_by_the_window(level: int) -> None:
    c = Conversation(level, max_inflight=1)
    c.handshake()
    c.publish("p", b"1", 1)
    c.publish("p", b"2", 1)
    c.subscribe("s")
    c.unsubscribe("u")
    assert ids(c.sent()) == [1]
    c.send(PubAck(1))
    assert names(c.sent()) == ["Publish", "Subscribe", "Unsubscribe"]


# -- SUBACK / UNSUBACK ---------------------------------------------------------------------------


@LEVELS
def test_suback_completes_and_records_the_subscriptions(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    subs = (Subscription("a/+", 1), Subscription("b/#", 2), Subscription("c", 0))
    c.subscribe(*subs, token="s")
    assert c.sent() == [Subscribe(1, subs)]
    c.send(SubAck(1, (1, 0x80, 0)))
    assert c.events() == [SubscribeCompleted("s", subs, (1, 0x80, 0), None)]
    assert set(c.session.subscriptions) == {"a/+", "c"}  # b/# was refused


@LEVELS
def test_suback_refusing_every_filter_is_an_error(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    c.subscribe("a", token="s")
    c.sent()
    c.send(SubAck(1, (0x80,)))
    [event] = c.events()
    assert isinstance(event, SubscribeCompleted)
    assert isinstance(event.error, SubscribeError)
    assert c.session.subscriptions == {}


@LEVELS
def test_unsuback_completes_and_forgets_the_subscriptions(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    c.subscribe("a", "b")
    c.send(SubAck(1, (1, 1)))
    c.unsubscribe("a", token="u")
    assert c.sent()[-1] == Unsubscribe(2, ("a",))
    codes = (0,) if level == 5 else ()
    c.send(UnsubAck(2, codes))
    assert c.events()[-1] == UnsubscribeCompleted("u", ("a",), codes, None)
    assert set(c.session.subscriptions) == {"b"}


def test_v5_unsuback_failure_is_an_error() -> None:
    c = Conversation(5)
    c.handshake()
    c.unsubscribe("a", token="u")
    c.sent()
    c.send(UnsubAck(1, (ReasonCode.NOT_AUTHORIZED,)))
    [event] = c.events()
    assert isinstance(event, UnsubscribeCompleted)
    assert isinstance(event.error, UnsubscribeError)


# -- late and unknown acknowledgements -----------------------------------------------------------


@LEVELS
@pytest.mark.parametrize("ack", [PubAck(9), PubComp(9), SubAck(9, (0,)), UnsubAck(9)])
def test_ack_for_an_id_not_in_flight_is_ignored_and_logged(
    level: int, ack: object, caplog: pytest.LogCaptureFixture
) -> None:
    if level == 5 and isinstance(ack, UnsubAck):
        ack = UnsubAck(9, (0,))
    c = Conversation(level)
    c.handshake()
    c.publish("a", b"", 1, token="t")
    c.sent()
    with caplog.at_level(logging.INFO, logger="mqttkit"):
        c.send(ack)  # type: ignore[arg-type]
    assert c.events() == []
    assert c.sent() == []
    assert c.session.state is State.CONNECTED
    assert c.session.inflight == 1
    assert any("9" in r.getMessage() for r in caplog.records if r.name == "mqttkit.client")


@LEVELS
def test_wrong_kind_of_ack_does_not_finish_a_flow(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    c.publish("a", b"", 2, token="q2")
    c.publish("b", b"", 1, token="q1")
    c.sent()
    c.send(PubComp(1))  # PUBCOMP before PUBREC
    c.send(PubComp(2))  # PUBCOMP for a QoS 1 message
    assert c.events() == []
    assert c.session.inflight == 2
    assert c.session.state is State.CONNECTED


@LEVELS
def test_puback_for_qos2_completes_it_as_delivered_at_qos1(
    level: int, caplog: pytest.LogCaptureFixture
) -> None:
    # RabbitMQ downgrades QoS 2 to 1 and answers with PUBACK: the flow is over, not stuck.
    c = Conversation(level)
    c.handshake()
    c.publish("a", b"", 2, token="q2")
    c.publish("b", b"", 2, token="q2b")
    c.sent()
    with caplog.at_level(logging.WARNING, logger="mqttkit"):
        c.send(PubAck(1))
        c.send(PubAck(2))
    assert c.events() == [
        PublishCompleted("q2", None, 0, downgraded=True),
        PublishCompleted("q2b", None, 0, downgraded=True),
    ]
    assert c.session.inflight == 0
    assert c.sent() == []  # no PUBREL, nothing resent
    warnings = [r for r in caplog.records if "PUBACK" in r.getMessage()]
    assert len(warnings) == 1  # one warning per session, not per message


@LEVELS
def test_pubrec_for_an_unknown_id_is_released(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    c.send(PubRec(7))
    # Let the broker finish its side; MQTT 5 says the identifier was not found.
    assert c.sent() == [PubRel(7, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND if level == 5 else 0)]
    assert c.events() == []
    assert c.session.state is State.CONNECTED


@LEVELS
def test_late_puback_from_the_old_session_is_ignored(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    c.publish("a", b"A", 1, token="A")
    assert ids(c.sent()) == [1]
    sent = c.reconnect(session_present=False)
    assert ids(sent) == [2]  # sent again as a new message
    assert names(c.events()) == ["Connected"]
    c.send(PubAck(1))  # a straggler about the first copy
    assert c.events() == []
    c.send(PubAck(2))
    assert c.events() == [PublishCompleted("A", None, 0)]


# -- reconnect, session kept ---------------------------------------------------------------------


@LEVELS
def test_session_present_resends_everything_unacknowledged_in_order(level: int) -> None:
    c = Conversation(level, clean_start=False)
    c.handshake()
    c.publish("a", b"A", 1, token="A")  # 1: unacknowledged
    c.publish("b", b"B", 2, token="B")  # 2: PUBREC'd -> PUBREL
    c.subscribe("s", token="S")  # 3: no SUBACK
    c.publish("c", b"C", 2, token="C")  # 4: unacknowledged
    c.unsubscribe("u", token="U")  # 5: no UNSUBACK
    c.publish("d", b"D", 1, token="D")  # 6: acknowledged: not resent
    c.publish("e", b"E", 0, token="E")  # QoS 0: never resent
    assert ids(c.sent()) == [1, 2, 3, 4, 5, 6, None]
    c.send(PubRec(2), PubAck(6))
    assert c.sent() == [PubRel(2)]
    c.events()
    c.lose()
    c.publish("f", b"F", 1, token="F")  # offline: goes after the resends, as new
    sent = c.reconnect(session_present=True)
    assert sent == [
        Publish("a", b"A", 1, False, True, 1),
        PubRel(2),
        Subscribe(3, (Subscription("s", 1),)),
        Publish("c", b"C", 2, False, True, 4),
        Unsubscribe(5, ("u",)),
        Publish("f", b"F", 1, False, False, 7),
    ]
    assert names(c.events()) == ["Connected"]
    c.send(PubAck(1), PubComp(2), SubAck(3, (1,)), PubRec(4))
    assert c.sent() == [PubRel(4)]
    c.send(PubComp(4), UnsubAck(5, (0,) if level == 5 else ()), PubAck(7))
    tokens = [getattr(e, "token", None) for e in c.events()]
    assert tokens == ["A", "B", "S", "C", "U", "F"]
    assert c.session.pending == 0


@LEVELS
def test_session_present_resends_pubrel_in_pubrec_order(level: int) -> None:
    # [MQTT-4.6.0-4]: PUBREL in the order the PUBREC arrived, resends included.
    c = Conversation(level, clean_start=False)
    c.handshake()
    for topic in "abcd":
        c.publish(topic, b"", 2)
    c.sent()
    c.send(PubRec(3), PubRec(1), PubRec(4))
    assert c.sent() == [PubRel(3), PubRel(1), PubRel(4)]
    assert c.reconnect(session_present=True) == [
        PubRel(3),
        Publish("b", b"", 2, False, True, 2),
        PubRel(1),
        PubRel(4),
    ]


@LEVELS
def test_session_present_twice_still_resends_with_dup(level: int) -> None:
    c = Conversation(level, clean_start=False)
    c.handshake()
    c.publish("a", b"A", 1)
    c.sent()
    c.reconnect(session_present=True)
    assert c.reconnect(session_present=True) == [Publish("a", b"A", 1, False, True, 1)]


@LEVELS
def test_session_present_does_not_resubscribe(level: int) -> None:
    c = Conversation(level, clean_start=False)
    c.handshake()
    c.subscribe("s")
    c.send(SubAck(1, (1,)))
    c.sent()
    assert c.reconnect(session_present=True) == []  # the broker kept the subscription


@LEVELS
def test_work_queued_behind_the_window_is_not_resent_as_dup(level: int) -> None:
    c = Conversation(level, clean_start=False, max_inflight=1)
    c.handshake()
    c.publish("a", b"A", 1)
    c.publish("b", b"B", 1)  # never left the queue
    c.sent()
    sent = c.reconnect(session_present=True)
    assert [(p.payload, p.dup) for p in sent] == [(b"A", True)]  # type: ignore[attr-defined]
    c.send(PubAck(1))
    assert c.sent() == [Publish("b", b"B", 1, False, False, 2)]


# -- reconnect, session lost ---------------------------------------------------------------------


@LEVELS
def test_session_lost_sends_unacked_again_as_new_and_resubscribes_first(level: int) -> None:
    c = Conversation(level, clean_start=False)
    c.handshake()
    c.subscribe(Subscription("s/#", 2), Subscription("t", 1))
    c.send(SubAck(1, (2, 1)))
    c.publish("a", b"A", 1, token="A")  # 2
    c.publish("b", b"B", 2, token="B")  # 3: PUBREC'd: the broker owns it
    c.publish("c", b"C", 2, token="C")  # 4
    c.subscribe("u", token="U")  # 5: no SUBACK yet
    c.sent()
    c.send(PubRec(3))
    assert c.sent() == [PubRel(3)]
    c.events()
    c.lose()
    c.connect()
    connack = ConnAck(False, 0)
    c.send(connack)
    sent = c.sent()
    assert sent[0] == Subscribe(6, (Subscription("s/#", 2), Subscription("t", 1)))
    assert sent[1:] == [
        Publish("a", b"A", 1, False, False, 7),
        Publish("c", b"C", 2, False, False, 8),
        Subscribe(9, (Subscription("u", 1),)),
    ]
    events = c.events()
    assert PublishCompleted("B", None, 0) in events
    assert [e.connack for e in events if isinstance(e, Connected)] == [connack]
    c.send(PubAck(7))
    assert c.events() == [PublishCompleted("A", None, 0)]


@LEVELS
def test_clean_start_restores_subscriptions_on_every_connection(level: int) -> None:
    c = Conversation(level, clean_start=True)
    c.handshake()
    c.subscribe("s")
    c.send(SubAck(1, (1,)))
    c.unsubscribe("s")
    c.send(UnsubAck(2, (0,) if level == 5 else ()))
    c.subscribe("t")
    c.send(SubAck(3, (1,)))
    c.sent()
    c.events()
    assert c.reconnect(session_present=False) == [Subscribe(4, (Subscription("t", 1),))]
    assert names(c.events()) == ["Connected"]
    # The restoring SUBSCRIBE has no token; its SUBACK completes quietly with None.
    c.send(SubAck(4, (1,)))
    assert c.events() == [SubscribeCompleted(None, (Subscription("t", 1),), (1,), None)]


def test_a_burst_of_large_messages_leaves_in_bounded_batches() -> None:
    from mqttkit.protocol.session import OUT_LIMIT

    c = Conversation(4)
    c.handshake()
    session = c.session
    payload = b"p" * 100_000
    for _ in range(20):
        session.publish(prepare_publish("big", payload, 1), c.now)
    batches = []
    for _ in range(100):
        batches.append(len(session.data_to_send()))
        if not session.wants_to_send:
            break
        session.pump(c.now)
    # Each batch stops once OUT_LIMIT is reached: at most one message beyond it.
    assert all(size <= OUT_LIMIT + 100_020 for size in batches)
    assert len(batches) > 1
    assert sum(batches) == 20 * (100_000 + 2 + 3 + 2 + 4)  # every message, once
    assert session.inflight == 20
    assert not session.wants_to_send


def test_output_full_once_a_whole_batch_waits() -> None:
    from mqttkit.protocol.session import OUT_LIMIT

    c = Conversation(4)
    c.handshake()
    session = c.session
    payload = b"q" * 10_000
    for _ in range(25):  # 250 KB: short of a batch
        session.publish(prepare_publish("t", payload, 0), c.now)
    assert not session.output_full
    session.publish(prepare_publish("t", payload, 0), c.now)
    session.publish(prepare_publish("t", payload, 0), c.now)
    assert session.output_full  # the driver should write now
    assert len(session.data_to_send()) >= OUT_LIMIT
    assert not session.output_full


def test_the_private_default_store_records_a_message_once_it_is_sent() -> None:
    # The store a session makes for itself is read by nobody else: a queued message is not
    # encoded into it while it waits, only once it is sent (under its packet id); after a lost
    # connection it leaves the store again until it is resent. A store the application passes
    # records queued messages as well (a restart must find them).
    from mqttkit.protocol.store import MemoryStore, is_private

    private = Conversation(4, max_inflight=1, clean_start=False)
    own = Conversation(4, max_inflight=1, clean_start=False, outgoing_store=MemoryStore())
    assert is_private(private.config.outgoing_store)
    assert not is_private(own.config.outgoing_store)
    for c in (private, own):
        c.handshake()
        c.publish("a", b"1", 1, token="a")
        c.publish("b", b"2", 1, token="b")  # waits behind the window of 1
    assert [k for k, _ in private.config.outgoing_store.iterate()] == [1]
    assert [k for k, _ in own.config.outgoing_store.iterate()] == [1, 2]
    for c in (private, own):
        assert c.sent() == [Publish("a", b"1", 1, False, False, 1)]
        c.send(PubAck(1))
        assert c.sent() == [Publish("b", b"2", 1, False, False, 2)]
        stored = dict(c.config.outgoing_store.iterate())
        assert list(stored) == [2]
        assert stored[2] == b"\x32\x06\x00\x01b\x00\x022"  # the PUBLISH under id 2
        c.publish("c", b"3", 1, token="c")  # waits behind "b"
        c.session.connection_lost(c.now)
    assert [k for k, _ in private.config.outgoing_store.iterate()] == [2]
    assert [k for k, _ in own.config.outgoing_store.iterate()] == [2, 3]
    for c in (private, own):
        # The broker lost the session: "b" is queued again and sent under a new id.
        c.session.connection_made(c.now)
        c.sent()
        c.send(ConnAck(False, 0))
        assert c.sent() == [Publish("b", b"2", 1, False, False, 3)]  # a new id, no DUP
    assert [k for k, _ in private.config.outgoing_store.iterate()] == [2]
    assert [k for k, _ in own.config.outgoing_store.iterate()] == [2, 3]


def test_a_lost_session_restores_subscriptions_with_their_properties() -> None:
    # MQTT 5: a filter subscribed with a Subscription Identifier (or user properties) is
    # subscribed again with them, or the broker's messages would come back without the
    # identifier the application dispatches on. One SUBSCRIBE per distinct set of properties.
    from mqttkit.protocol.session import prepare_subscribe

    c = Conversation(5, clean_start=False)
    c.handshake()
    seven = Properties(subscription_identifier=(7,))
    nine = Properties(subscription_identifier=(9,), user_property=(("k", "v"),))
    session = c.session
    session.subscribe(prepare_subscribe((Subscription("a/#", 1),), seven, 5), c.now, "a")
    session.subscribe(prepare_subscribe((Subscription("plain", 0),), None, 5), c.now, "p")
    session.subscribe(prepare_subscribe((Subscription("b", 2),), nine, 5), c.now, "b")
    session.subscribe(prepare_subscribe((Subscription("a2", 1),), seven, 5), c.now, "a2")
    session.subscribe(prepare_subscribe((Subscription("gone", 1),), nine, 5), c.now, "g")
    for packet_id in (1, 2, 3, 4, 5):
        c.send(SubAck(packet_id, (1,)))
    c.unsubscribe("gone")
    c.send(UnsubAck(6, (0,)))
    # "plain" subscribed again without properties drops the ones it never had; "b" again with
    # other properties keeps the newest.
    session.subscribe(prepare_subscribe((Subscription("b", 2),), seven, 5), c.now, "b2")
    c.send(SubAck(7, (2,)))
    c.events()
    assert c.reconnect(session_present=False) == [
        Subscribe(8, (Subscription("a/#", 1), Subscription("b", 2), Subscription("a2", 1)), seven),
        Subscribe(9, (Subscription("plain", 0),)),
    ]
    c.send(SubAck(8, (1, 2, 1)))
    c.send(SubAck(9, (0,)))
    # A broker that kept the session needs nothing again.
    assert c.reconnect(session_present=True) == []


# -- outgoing Topic Aliases (MQTT 5) ------------------------------------------------------------

ALIAS_MAX = Properties(topic_alias_maximum=5)


def aliased(n: int) -> Properties:
    return Properties(topic_alias=n)


def test_an_alias_goes_without_its_topic_once_set_on_the_connection() -> None:
    c = Conversation(5)
    c.handshake(properties=ALIAS_MAX)
    c.publish("long/topic/name", b"1", properties=aliased(1))
    c.publish("", b"2", properties=aliased(1))
    c.publish("", b"3", 1, properties=aliased(1), token="q1")
    assert c.sent() == [
        Publish("long/topic/name", b"1", properties=aliased(1)),
        Publish("", b"2", properties=aliased(1)),
        Publish("", b"3", 1, packet_id=1, properties=aliased(1)),
    ]
    # The store keeps the message with its topic: a resend elsewhere must carry it.
    (stored,) = [v for _, v in c.config.outgoing_store.iterate()]
    assert b"long/topic/name" in stored


def test_an_alias_without_a_topic_yet_is_refused() -> None:
    c = Conversation(5)
    c.handshake(properties=ALIAS_MAX)
    with pytest.raises(InvalidArgumentError, match="topic alias 2 has no topic yet"):
        c.publish("", b"x", properties=aliased(2))
    assert c.sent() == []


def test_aliases_are_set_again_on_each_new_connection() -> None:
    # Mappings never carry over to another connection: after a reconnect an in-flight message
    # is resent with its topic (which sets the alias again), and otherwise the first message
    # by alias carries its topic.
    c = Conversation(5, clean_start=False)
    c.handshake(properties=ALIAS_MAX)
    c.publish("t/a", b"1", properties=aliased(1))
    c.publish("", b"2", 1, properties=aliased(1), token="q1")
    assert c.sent()[1] == Publish("", b"2", 1, packet_id=1, properties=aliased(1))
    c.lose()
    c.connect()
    c.send(ConnAck(True, 0, ALIAS_MAX))
    c.publish("", b"3", properties=aliased(1))
    assert c.sent() == [
        Publish("t/a", b"2", 1, dup=True, packet_id=1, properties=aliased(1)),
        Publish("", b"3", properties=aliased(1)),
    ]
    c.send(PubAck(1))
    c.lose()
    c.connect()
    c.send(ConnAck(True, 0, ALIAS_MAX))
    c.publish("", b"4", properties=aliased(1))
    c.publish("", b"5", properties=aliased(1))
    assert c.sent() == [
        Publish("t/a", b"4", properties=aliased(1)),
        Publish("", b"5", properties=aliased(1)),
    ]


def test_a_remapped_alias_keeps_each_message_on_its_own_topic() -> None:
    # Messages queued behind the window resolve their alias when published, not when sent.
    c = Conversation(5, max_inflight=1)
    c.handshake(properties=ALIAS_MAX)
    c.publish("one", b"1", 1, properties=aliased(1), token="a")
    c.publish("", b"2", 1, properties=aliased(1), token="b")
    c.publish("two", b"3", 1, properties=aliased(1), token="c")
    c.publish("", b"4", 1, properties=aliased(1), token="d")
    sent = c.sent()
    for packet_id in (1, 2, 3, 4):
        c.send(PubAck(packet_id))
        sent += c.sent()
    assert sent == [
        Publish("one", b"1", 1, packet_id=1, properties=aliased(1)),
        Publish("", b"2", 1, packet_id=2, properties=aliased(1)),
        Publish("two", b"3", 1, packet_id=3, properties=aliased(1)),
        Publish("", b"4", 1, packet_id=4, properties=aliased(1)),
    ]
