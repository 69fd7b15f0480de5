"""ClientSession and its stores: what is persisted, when, and how a restarted process resumes;
and pause_writing / resume_writing.

A scripted broker made of bytes (tests/protocol/session_helpers.py); time is passed in. A
"restart" is a new ClientSession built over the same store objects, the old one dropped without
any goodbye, as a crash would.
"""

from __future__ import annotations

from typing import Any

import pytest

from mqttkit.protocol.codec import decode
from mqttkit.protocol.packets import (
    ConnAck,
    PingReq,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscribe,
    Subscription,
)
from mqttkit.protocol.session import PublishCompleted
from mqttkit.protocol.store import MemoryStore, Store

from .session_helpers import Conversation, RecordingStore, names

LEVELS = pytest.mark.parametrize("level", [4, 5])


class Stores:
    """An outgoing and an incoming RecordingStore logging into one list, with the wire."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.out = RecordingStore("out", self.calls)
        self.inc = RecordingStore("in", self.calls)

    def conversation(self, level: int, **config: Any) -> Conversation:
        return Conversation(level, outgoing_store=self.out, incoming_store=self.inc, **config)

    def wire(self, c: Conversation) -> list[Any]:
        """Take what the session wrote and log it, so store calls can be ordered against it."""
        packets = c.sent()
        if packets:
            self.calls.append(("wire", c.wire[-1]))
        return packets

    def log(self) -> list[tuple[Any, ...]]:
        calls, self.calls[:] = list(self.calls), []
        return calls


def test_recording_store_is_a_store() -> None:
    assert isinstance(RecordingStore("x"), Store)
    assert isinstance(MemoryStore(), Store)


# -- what is stored, and when --------------------------------------------------------------------


@LEVELS
def test_qos1_is_stored_before_its_bytes_leave_and_deleted_on_puback(level: int) -> None:
    s = Stores()
    c = s.conversation(level)
    c.handshake()
    s.log()
    c.publish("a", b"one", 1)
    s.wire(c)
    [put, wire] = s.log()
    assert put[:3] == ("out", "put", 1)
    assert wire == ("wire", put[3])  # exactly the bytes that went out, stored first
    c.send(PubAck(1))
    assert s.log() == [("out", "delete", 1)]
    assert s.out.keys() == []


@LEVELS
def test_qos2_store_goes_publish_then_pubrel_then_nothing(level: int) -> None:
    s = Stores()
    c = s.conversation(level)
    c.handshake()
    s.log()
    c.publish("a", b"two", 2)
    s.wire(c)
    [put, wire] = s.log()
    assert wire == ("wire", put[3])
    assert decode(put[3], level) == Publish("a", b"two", 2, packet_id=1)
    c.send(PubRec(1))
    s.wire(c)
    [put_rel, wire_rel] = s.log()
    assert put_rel[:3] == ("out", "put", 1)  # same key: the PUBREL replaces the PUBLISH
    assert decode(put_rel[3], level) == PubRel(1)
    assert wire_rel == ("wire", put_rel[3])
    c.send(PubRec(1))  # a repeated PUBREC does not write again
    s.wire(c)
    assert [call[0] for call in s.log()] == ["wire"]
    c.send(PubComp(1))
    assert s.log() == [("out", "delete", 1)]


@LEVELS
def test_qos0_and_subscriptions_are_not_stored(level: int) -> None:
    s = Stores()
    c = s.conversation(level)
    c.handshake()
    c.publish("a", b"zero", 0)
    c.subscribe("s")
    c.unsubscribe("s")
    assert [call for call in s.log() if call[0] != "wire"] == []


@LEVELS
def test_offline_message_is_stored_when_queued_and_again_when_sent(level: int) -> None:
    s = Stores()
    c = s.conversation(level)
    c.publish("a", b"q", 1)
    [queued] = s.log()
    assert queued[:3] == ("out", "put", 1)
    c.handshake()
    s.wire(c)
    [put, wire] = s.log()
    assert put[:3] == ("out", "put", 1)
    assert decode(put[3], level) == Publish("a", b"q", 1, packet_id=1)  # now with its id
    assert wire == ("wire", put[3])


@LEVELS
def test_incoming_qos2_id_is_stored_on_acknowledge_and_deleted_on_pubrel(level: int) -> None:
    s = Stores()
    c = s.conversation(level)
    c.handshake()
    c.send(Publish("t", b"m", 2, packet_id=31), Publish("t", b"m", 1, packet_id=32))
    q2, q1 = c.events()
    assert s.log() == []  # received is not acknowledged: nothing to remember yet
    c.ack(q2)
    s.wire(c)
    assert s.log()[0] == ("in", "put", 31, b"")  # before the PUBREC leaves
    c.ack(q1)  # QoS 1 needs no incoming state
    s.wire(c)
    assert [call[0] for call in s.log()] == ["wire"]
    c.send(PubRel(31))
    s.wire(c)
    assert s.log() == [("in", "delete", 31), ("wire", b"\x70\x02\x00\x1f")]  # then PUBCOMP
    assert s.inc.keys() == []


@LEVELS
def test_session_lost_clears_the_incoming_store(level: int) -> None:
    s = Stores()
    c = s.conversation(level, clean_start=False)
    c.handshake()
    c.send(Publish("t", b"m", 2, packet_id=4))
    c.ack(c.events()[0])
    c.send(Publish("t", b"m", 1, packet_id=5), Publish("t", b"m", 2, packet_id=6))
    c.ack(c.events()[1])  # acknowledged; its PUBREC waits for 5's PUBACK
    assert s.inc.keys() == [4, 6]
    c.reconnect(session_present=False)
    assert s.inc.keys() == []


@LEVELS
def test_qos2_acknowledged_out_of_order_is_not_delivered_again_after_restart(level: int) -> None:
    s = Stores()
    c = s.conversation(level, clean_start=False)
    c.handshake()
    c.send(Publish("t", b"1", 1, packet_id=1), Publish("t", b"2", 2, packet_id=2))
    _, second = c.events()
    c.ack(second)  # the application has it; PUBREC waits behind the first message's PUBACK
    assert c.sent() == []
    assert s.inc.keys() == [2]  # but the fact is recorded at once
    # The process dies. The broker resends both with DUP to the new one.
    c = s.conversation(level, clean_start=False)
    c.connect()
    c.send(ConnAck(True, 0))
    c.events()
    c.send(Publish("t", b"1", 1, False, True, 1), Publish("t", b"2", 2, False, True, 2))
    assert [e.message.payload for e in c.events()] == [b"1"]  # type: ignore[attr-defined]
    assert c.sent() == [PubRec(2)]


# -- restart: a new session over the same stores -------------------------------------------------


def crashed_session(s: Stores, level: int) -> None:
    """A first run that leaves every kind of unfinished state in the stores."""
    c = s.conversation(level, clean_start=False, max_inflight=3)
    c.handshake()
    c.publish("a", b"A", 1, token="A")  # 1: awaits PUBACK
    c.publish("b", b"B", 2, token="B")  # 2: PUBREC'd, awaits PUBCOMP
    c.publish("c", b"C", 2, token="C")  # 3: awaits PUBREC
    c.publish("d", b"D", 1, token="D")  # queued behind the window
    c.send(PubRec(2))
    c.send(Publish("in", b"X", 2, packet_id=7))
    c.ack(c.events()[0])
    assert [(type(p).__name__, getattr(p, "packet_id", 0)) for p in c.sent()] == [
        ("Publish", 1),
        ("Publish", 2),
        ("Publish", 3),
        ("PubRel", 2),
        ("PubRec", 7),
    ]
    # The process dies here: no connection_lost, no DISCONNECT, nothing more.


@LEVELS
def test_restart_with_session_present_finishes_what_the_crashed_run_started(level: int) -> None:
    s = Stores()
    crashed_session(s, level)
    c = s.conversation(level, clean_start=False, max_inflight=3)
    assert (c.session.inflight, c.session.queued) == (3, 1)
    c.connect()
    c.send(ConnAck(True, 0))
    assert c.sent() == [
        Publish("a", b"A", 1, False, True, 1),
        PubRel(2),
        Publish("c", b"C", 2, False, True, 3),
    ]
    assert names(c.events()) == ["Connected"]
    # The broker resends the QoS 2 message we had acknowledged: PUBREC, not a second delivery.
    c.send(Publish("in", b"X", 2, False, True, 7))
    assert c.events() == []
    assert c.sent() == [PubRec(7)]
    c.send(PubRel(7))
    assert c.sent() == [PubComp(7)]
    assert s.inc.keys() == []
    # Finishing the flows frees the window for the message that never left the queue.
    c.send(PubAck(1))
    [d] = c.sent()
    assert isinstance(d, Publish)
    assert (d.payload, d.dup) == (b"D", False)
    assert d.packet_id not in (2, 3)
    c.send(PubComp(2), PubRec(3))
    assert c.sent() == [PubRel(3)]
    c.send(PubComp(3), PubAck(d.packet_id))  # type: ignore[arg-type]
    assert c.events() == []  # the tokens died with the first process
    assert s.out.keys() == []
    assert c.session.pending == 0


@LEVELS
def test_restart_with_session_lost_sends_again_as_new(level: int) -> None:
    s = Stores()
    crashed_session(s, level)
    c = s.conversation(level, clean_start=False, max_inflight=3)
    c.connect()
    c.send(ConnAck(False, 0))
    sent = c.sent()
    # B was PUBREC'd: the broker owned it, so it is done. A, C, D go again, as new.
    assert [(p.payload, p.dup, p.qos) for p in sent] == [  # type: ignore[attr-defined]
        (b"A", False, 1),
        (b"C", False, 2),
        (b"D", False, 1),
    ]
    assert len({p.packet_id for p in sent}) == 3  # type: ignore[attr-defined]
    assert len(s.out.keys()) == 3
    assert s.inc.keys() == []
    c.send(Publish("in", b"X", 2, packet_id=7))  # a new session's message 7 is new
    assert [e.message.payload for e in c.events()[1:]] == [b"X"]  # type: ignore[attr-defined]


@LEVELS
def test_restart_resumes_a_message_that_was_only_queued(level: int) -> None:
    s = Stores()
    first = s.conversation(level, clean_start=False)
    first.publish("offline/topic", b"never sent", 2, retain=True)
    second = s.conversation(level, clean_start=False)
    assert second.session.queued == 1
    second.handshake(session_present=True)
    assert second.sent() == [Publish("offline/topic", b"never sent", 2, True, False, 1)]


@LEVELS
def test_restart_continues_the_sequence_of_store_keys(level: int) -> None:
    s = Stores()
    first = s.conversation(level)
    first.publish("a", b"1", 1)
    first.publish("a", b"2", 1)
    second = s.conversation(level)
    second.publish("a", b"3", 1)
    assert s.out.keys() == [1, 2, 3]  # no key reused: nothing overwritten


@LEVELS
def test_restart_skips_garbage_in_the_outgoing_store(level: int) -> None:
    s = Stores()
    s.out.put(1, b"\x30\x7f")  # truncated PUBLISH
    s.out.put(2, b"\xc0\x00")  # not a PUBLISH or PUBREL
    s.out.put(3, b"")
    c = s.conversation(level)
    assert (c.session.inflight, c.session.queued) == (0, 0)
    c.publish("a", b"", 1)
    assert s.out.keys()[-1] == 4


# -- pause_writing / resume_writing --------------------------------------------------------------


@LEVELS
def test_paused_session_queues_work_but_still_acknowledges(level: int) -> None:
    c = Conversation(level, keepalive=10, now=100.0)
    c.handshake()
    c.publish("a", b"before", 2, token="before")
    c.sent()
    c.session.pause_writing()
    c.publish("b", b"0", 0, token="q0")
    c.publish("b", b"1", 1, token="q1")
    c.subscribe("s")
    assert c.sent() == []
    assert c.session.queued == 3
    assert c.events() == []  # QoS 0 is not complete until written
    # Acknowledgements and keepalive are small and must not wait.
    c.send(PubRec(1), Publish("in", b"m", 1, packet_id=9))
    c.ack(c.events()[0])
    assert c.sent() == [PubRel(1), PubAck(9)]
    c.run_until(111.0)
    assert c.sent() == [PingReq()]
    c.session.resume_writing(c.now)
    assert c.sent() == [
        Publish("b", b"0"),
        Publish("b", b"1", 1, packet_id=2),
        Subscribe(3, (Subscription("s", 1),)),
    ]
    assert c.events() == [PublishCompleted("q0")]


@LEVELS
def test_pause_ends_with_its_connection(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    c.session.pause_writing()
    c.publish("a", b"x", 1)
    c.lose()
    assert names(c.reconnect(session_present=False)) == ["Publish"]  # a new transport
