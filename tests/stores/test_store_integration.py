"""Session and engine behaviour that durable stores depend on: the queued form stored again
when the broker lost the session, a failing store failing the operation (never hanging it),
graceful close returning once restored flows complete, and the NodeMCU API taking stores.

(These began as failing tests written with SQLiteStore, before the fixes.)
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import mqttkit
from mqttkit.protocol.packets import ConnAck, Properties, Publish
from mqttkit.protocol.store import MemoryStore
from mqttkit.stores import SQLiteStore
from mqttkit.testing import MosquittoBroker, free_port
from tests.protocol.session_helpers import Conversation
from tests.support.recorder import Recorder

from .test_sqlite import wait_until


def test_requeued_messages_are_stored_as_queued_when_the_broker_lost_the_session() -> None:
    """ClientSession._restart requeues unacknowledged messages with packet id 0 in memory but
    leaves their old wire form (old packet id) in the outgoing store. After a crash,
    _restore takes them for messages in flight: they are resent at once with DUP and their old
    ids, past the window (here MQTT 5 Receive Maximum 1, [MQTT-3.3.4-7]); and should the id
    allocator have wrapped onto such a stale id, _restore keeps only one of the two entries in
    _inflight and the other is never sent. Fix: in _restart, put the queued form (packet id 0,
    DUP clear) back into the outgoing store for each requeued PUBLISH.
    """
    out, inc = MemoryStore(), MemoryStore()
    c = Conversation(5, clean_start=False, outgoing_store=out, incoming_store=inc)
    c.handshake()
    for topic in "ABC":
        c.publish(topic, topic.encode(), 1)
    c.sent()
    sent = c.reconnect(session_present=False, properties=Properties(receive_maximum=1))
    assert [(p.topic, p.dup) for p in sent] == [("A", False)]  # type: ignore[attr-defined]
    assert (c.session.inflight, c.session.queued) == (1, 2)
    # The process dies; the next one restores the same state.
    again = Conversation(5, clean_start=False, outgoing_store=out, incoming_store=inc)
    assert (again.session.inflight, again.session.queued) == (1, 2)  # actual: (3, 0)
    again.connect()
    again.send(ConnAck(True, 0, Properties(receive_maximum=1)))
    resent = again.sent()
    assert len([p for p in resent if isinstance(p, Publish)]) == 1  # actual: 3


class _DiskFullStore(MemoryStore):
    def put(self, key: int, value: bytes) -> None:
        raise sqlite3.OperationalError("database or disk is full")


def test_a_store_error_fails_the_publish_instead_of_losing_its_handle(
    mosquitto: MosquittoBroker, make_client: Callable[..., mqttkit.Client]
) -> None:
    """Engine.publish catches only MQTTError around session.publish. A store that raises
    (sqlite3.OperationalError: disk full, or "database is locked" beyond the store's timeout;
    ValueError: a store closed under a running client) escapes into Engine._run_commands, which
    logs it; the handle never completes and the application waits forever. Expected: the
    handle fails with the error (and the session stays consistent). The receive path has the
    same hole in another shape: a failing delete in _finish_publish becomes an "internal error"
    disconnect after the entry left _inflight, so its handle never completes either.
    """
    client = make_client(url=mosquitto.url, outgoing_store=_DiskFullStore())
    Recorder(client).wait_for("connect")
    # A message is accepted once publish() returns, and publish() returns once the store holds
    # it: a store that cannot hold it makes publish() raise, at once, with the cause.
    with pytest.raises(mqttkit.StoreError, match="disk is full") as raised:
        client.publish("t", "m", qos=1)
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    assert client.publish("t", "m", qos=0).wait(5)  # the client goes on


def test_graceful_close_after_a_restart_returns_when_the_resumed_flows_complete(
    tmp_path: Path, mosquitto: MosquittoBroker, make_client: Callable[..., mqttkit.Client]
) -> None:
    """Messages restored from a store have no token, so completing them emits no event, and
    Engine._process_events returns early when there is no event: the drain check at its end
    never runs and a graceful close() waits the whole close_timeout although nothing is
    pending. Fix: run the drain check whatever the events (or after every receive_data).
    """
    incoming, outgoing = SQLiteStore.pair(tmp_path / "s.db", "drain", durability="batched")
    try:
        nowhere = f"mqtt://127.0.0.1:{free_port()}"  # the first run never reaches a broker
        options = {"client_id": "drain", "clean": False, "reconnect_period": 60}
        first = make_client(
            url=nowhere, incoming_store=incoming, outgoing_store=outgoing, **options
        )
        for i in range(2000):
            first.publish("drain/t", f"m{i}", qos=1)
        wait_until(lambda: len(outgoing) == 2000, 20, "the queued messages in the store")
        assert first.close(force=True).wait(10)
        second = make_client(
            url=mosquitto.url,
            incoming_store=incoming,
            outgoing_store=outgoing,
            close_timeout=8,
            **options,
        )
        Recorder(second).wait_for("connect")
        start = time.monotonic()
        assert second.close().wait(15)
        elapsed = time.monotonic() - start
        assert len(outgoing) == 0
        assert elapsed < 4, f"close() took {elapsed:.1f} s (close_timeout is 8 s)"
    finally:
        incoming.close()
        outgoing.close()


def test_nodemcu_client_takes_durable_stores(tmp_path: Path) -> None:
    """The NodeMCU facade builds its sync client itself and has no way to pass stores, so the
    seed-001 API cannot use a durable store. Expected (one possibility): keyword-only
    ``incoming_store`` / ``outgoing_store`` on nodemcu.Client, passed through on connect().
    """
    from mqttkit import nodemcu

    with SQLiteStore.pair(tmp_path / "s.db", "node-1") as (incoming, outgoing):
        client = nodemcu.Client(
            "node-1", 120, cleansession=0, incoming_store=incoming, outgoing_store=outgoing
        )
        assert client.incoming_store is incoming
        assert client.outgoing_store is outgoing
