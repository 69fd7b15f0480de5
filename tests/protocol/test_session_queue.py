"""The outgoing queue's bounds: max_queued, max_queued_bytes and the three queue policies."""

from __future__ import annotations

import pytest

from mqttkit.protocol.errors import QueueFullError
from mqttkit.protocol.packets import Publish
from mqttkit.protocol.session import MessageDropped, PublishCompleted, prepare_publish
from tests.protocol.session_helpers import Conversation, RecordingStore


def offline(**config: object) -> Conversation:
    """A session that never connected: everything published waits in the queue."""
    return Conversation(4, **config)


def test_reject_raises_and_queues_nothing() -> None:
    c = offline(max_queued=2)
    c.publish("t", b"1", 1, token=1)
    c.publish("t", b"2", 1, token=2)
    with pytest.raises(QueueFullError, match="max_queued=2") as info:
        c.publish("t", b"3", 1, token=3)
    assert "queue_policy" in str(info.value)
    assert c.session.queued == 2
    c.handshake()
    assert [p.payload for p in c.sent() if isinstance(p, Publish)] == [b"1", b"2"]


def test_max_queued_bytes_counts_payload_bytes() -> None:
    c = offline(max_queued_bytes=10)
    c.publish("t", b"12345", 0)
    c.publish("t", b"67890", 0)
    with pytest.raises(QueueFullError, match="max_queued_bytes=10"):
        c.publish("t", b"x", 0)
    c.handshake()  # sent: the bytes leave the queue and make room again
    c.publish("t", b"0123456789", 0)  # connected: goes out at once
    assert [p.payload for p in c.sent() if isinstance(p, Publish)][-1] == b"0123456789"


def test_drop_oldest_drops_the_oldest_waiting_message() -> None:
    out = RecordingStore("out")
    c = offline(max_queued=2, queue_policy="drop_oldest", outgoing_store=out)
    c.publish("t", b"1", 1, token=1)
    c.publish("t", b"2", 1, token=2)
    c.publish("t", b"3", 1, token=3)
    events = c.events()
    dropped = [e for e in events if isinstance(e, MessageDropped)]
    assert [(d.message.payload, d.policy) for d in dropped] == [(b"1", "drop_oldest")]
    failed = [e for e in events if isinstance(e, PublishCompleted)]
    assert [(f.token, type(f.error)) for f in failed] == [(1, QueueFullError)]
    assert len(out.keys()) == 2  # the dropped message left the store too
    c.handshake()
    assert [p.payload for p in c.sent() if isinstance(p, Publish)] == [b"2", b"3"]


def test_drop_newest_drops_the_new_message() -> None:
    c = offline(max_queued=1, queue_policy="drop_newest")
    c.publish("t", b"1", 1, token=1)
    c.publish("t", b"2", 1, token=2)
    events = c.events()
    assert [e.message.payload for e in events if isinstance(e, MessageDropped)] == [b"2"]
    assert [e.token for e in events if isinstance(e, PublishCompleted)] == [2]
    c.handshake()
    assert [p.payload for p in c.sent() if isinstance(p, Publish)] == [b"1"]


def test_drop_oldest_keeps_subscribe_requests() -> None:
    c = offline(max_queued=2, queue_policy="drop_oldest")
    c.subscribe("s")
    c.publish("t", b"1", 0)
    c.publish("t", b"2", 0)
    assert [e.message.payload for e in c.events() if isinstance(e, MessageDropped)] == [b"1"]
    c.handshake()
    sent = c.sent()
    assert type(sent[0]).__name__ == "Subscribe"
    assert [p.payload for p in sent if isinstance(p, Publish)] == [b"2"]


def test_queue_bounds_hold_behind_a_full_window_too() -> None:
    c = Conversation(4, max_inflight=1, max_queued=1)
    c.handshake()
    session = c.session
    session.publish(prepare_publish("t", b"a", 1), c.now)  # in flight
    session.publish(prepare_publish("t", b"b", 1), c.now)  # waits for the window
    with pytest.raises(QueueFullError):
        session.publish(prepare_publish("t", b"c", 1), c.now)
