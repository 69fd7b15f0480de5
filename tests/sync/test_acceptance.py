"""A message is accepted when ``publish()`` has returned, and every accepted message arrives or
fails loudly: the blocking client as users call it (publish in a loop, then close), with and
without a store, and what publish() refuses at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import mqttkit
from mqttkit.stores import SQLiteStore
from mqttkit.testing import MosquittoBroker, free_port
from tests.support.recorder import Recorder

N = 1_000


def _subscriber(
    make_client: Callable[..., mqttkit.Client], url: str, topic: str
) -> tuple[mqttkit.Client, Recorder]:
    sub = make_client(url=url)
    rec = Recorder(sub, ("connect", "message"))
    rec.wait_for("connect")
    sub.subscribe(topic, qos=2).result(5)
    return sub, rec


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_in_a_loop_then_close_delivers_everything(
    mosquitto: MosquittoBroker, make_client: Callable[..., mqttkit.Client], qos: int
) -> None:
    # What mosquitto_pub, paho's publish.single and every script do: connect, publish, close,
    # without waiting for the connection. close() waits for it, sends, waits for the acks.
    _, rec = _subscriber(make_client, mosquitto.url, f"loop/{qos}")
    client = mqttkit.connect(url=mosquitto.url)
    handles = [client.publish(f"loop/{qos}", str(i), qos=qos) for i in range(N)]
    assert client.close().wait(20)
    assert all(h.exception(0) is None for h in handles)
    got = rec.wait_messages(N, timeout=20)
    assert sorted(int(m[1]) for m in got) == list(range(N))


def test_publish_then_close_with_a_durable_store_delivers_everything_and_empties_it(
    tmp_path: Path, mosquitto: MosquittoBroker, make_client: Callable[..., mqttkit.Client]
) -> None:
    _, rec = _subscriber(make_client, mosquitto.url, "durable/#")
    with SQLiteStore.pair(tmp_path / "mqtt.db", "durable-pub", durability="batched") as pair:
        client = mqttkit.connect(
            url=mosquitto.url,
            client_id="durable-pub",
            clean=False,
            incoming_store=pair.incoming,
            outgoing_store=pair.outgoing,
        )
        for i in range(N):
            client.publish(f"durable/{1 + i % 2}", str(i), qos=1 + i % 2)
        assert client.close().wait(20)
        assert len(pair.outgoing) == 0
    got = rec.wait_messages(N, timeout=20)
    assert sorted(int(m[1]) for m in got) == list(range(N))


def test_publish_returns_only_once_the_store_holds_the_message(tmp_path: Path) -> None:
    # No broker at all: the loop thread never sends, yet every returned publish() is in the
    # file, seen through another connection to it (so committed, not just buffered).
    path = tmp_path / "mqtt.db"
    outgoing = SQLiteStore(path, name="out", durability="batched")
    other = SQLiteStore(path, name="out")
    client = mqttkit.connect(
        url=f"mqtt://127.0.0.1:{free_port()}",
        client_id="offline-pub",
        clean=False,
        outgoing_store=outgoing,
        reconnect_period=30,
    )
    try:
        for i in range(50):
            client.publish("t", f"m{i}", qos=1 + i % 2)
            assert len(other) == i + 1
    finally:
        assert client.close(force=True).wait(10)
        other.close()
        outgoing.close()


def test_unfinished_messages_fail_at_the_close_timeout_and_stay_in_the_store(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mqtt.db"
    with SQLiteStore.pair(path, "unreachable") as pair:
        client = mqttkit.connect(
            url=f"mqtt://127.0.0.1:{free_port()}",
            client_id="unreachable",
            clean=False,
            incoming_store=pair.incoming,
            outgoing_store=pair.outgoing,
            close_timeout=0.5,
            reconnect_period=0.05,
        )
        handles = [client.publish("t", str(i), qos=1) for i in range(10)]
        started = time.monotonic()
        assert client.close().wait(10)
        assert 0.4 < time.monotonic() - started < 5
        assert all(isinstance(h.exception(0), mqttkit.ClientClosedError) for h in handles)
        assert len(pair.outgoing) == 10  # the next run sends them


def test_close_before_connect_fails_what_was_published_at_once() -> None:
    client = mqttkit.Client(url=f"mqtt://127.0.0.1:{free_port()}")
    handle = client.publish("t", "x", qos=1)
    assert client.close().wait(5)
    assert isinstance(handle.exception(1), mqttkit.ClientClosedError)


def test_publish_after_close_fails_at_once(
    mosquitto: MosquittoBroker, make_client: Callable[..., mqttkit.Client]
) -> None:
    client = make_client(url=mosquitto.url)
    Recorder(client).wait_for("connect")
    assert client.close().wait(5)
    errors: list[object] = []
    called = threading.Event()

    def callback(err: object) -> None:
        errors.append(err)
        called.set()

    handle = client.publish("t", "x", {"qos": 1}, callback)
    assert handle.done()
    assert isinstance(handle.exception(0), mqttkit.ClientClosedError)
    assert called.wait(5)  # the callback runs too, on the dispatch thread
    assert errors == [handle.exception(0)]


def test_reject_raises_queue_full_from_publish(
    make_client: Callable[..., mqttkit.Client],
) -> None:
    client = make_client(url=f"mqtt://127.0.0.1:{free_port()}", max_queued=10)
    handles = [client.publish("t", str(i), qos=1) for i in range(10)]
    with pytest.raises(mqttkit.QueueFullError, match="max_queued=10"):
        client.publish("t", "one too many", qos=1)
    assert not any(h.done() for h in handles)  # the ten wait for the connection


class _TakenRightAfterRead:
    """The client's engine, except that the loop thread takes every publish on its way right
    after the publishing thread has read ``publishes_taken``: the moment between the front's
    two reads (the queue's length and that counter) that a thread switch can fall into."""

    def __init__(self, engine: object, gate: threading.Event, expected: int) -> None:
        self._engine = engine
        self._gate = gate
        self._expected = expected

    def __getattr__(self, name: str) -> object:
        return getattr(self._engine, name)

    @property
    def publishes_taken(self) -> int:
        taken: int = self._engine.publishes_taken  # type: ignore[attr-defined]
        self._gate.set()  # the loop thread now takes what waited behind the gate
        deadline = time.monotonic() + 5
        while self._engine.publishes_taken < self._expected:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the loop thread did not take the publishes"
            time.sleep(0.001)
        return taken


def test_reject_counts_a_message_taken_between_the_reads_once(
    make_client: Callable[..., mqttkit.Client],
) -> None:
    # max_queued=10, 9 queued: the 10th fits. The loop thread taking the 9 between the front's
    # two reads made them count twice (as on their way and as queued): QueueFullError for a
    # message that fits (a benchmark saw "10168 messages waiting" with 10,000 published).
    client = make_client(url=f"mqtt://127.0.0.1:{free_port()}", max_queued=10)
    gate = threading.Event()
    client._submit(gate.wait, 10)  # the loop thread waits here: publishes pile up behind it
    handles = [client.publish("t", str(i), qos=1) for i in range(9)]
    engine = client._engine
    client._engine = _TakenRightAfterRead(engine, gate, expected=9)  # type: ignore[assignment]
    try:
        handles.append(client.publish("t", "the tenth fits", qos=1))
    finally:
        client._engine = engine
    assert client.flush(0.5) is False  # offline: all ten wait for a connection
    assert engine.session.queued == 10
    with pytest.raises(mqttkit.QueueFullError, match="10 messages"):
        client.publish("t", "the eleventh does not", qos=1)
    assert not any(h.done() for h in handles)


def test_reject_counts_payload_bytes_too(make_client: Callable[..., mqttkit.Client]) -> None:
    client = make_client(url=f"mqtt://127.0.0.1:{free_port()}", max_queued_bytes=1_000)
    client.publish("t", b"x" * 600, qos=1)
    client.flush(0.2)  # the first is in the queue now (nothing to wait for: offline)
    with pytest.raises(mqttkit.QueueFullError, match="max_queued_bytes=1000"):
        client.publish("t", b"y" * 600, qos=1)


def test_empty_client_id_with_a_kept_session_is_refused_for_311() -> None:
    with pytest.raises(mqttkit.InvalidOptionError, match="empty client_id needs clean=True"):
        mqttkit.Client(url="mqtt://127.0.0.1", client_id="", clean=False)
    with pytest.raises(mqttkit.InvalidOptionError, match=r"MQTT 3\.1 needs a client_id"):
        mqttkit.Client(url="mqtt://127.0.0.1", client_id="", protocol_version=3)


def test_empty_mqtt5_client_id_gets_the_server_assigned_one(
    mosquitto: MosquittoBroker, make_client: Callable[..., mqttkit.Client]
) -> None:
    client = make_client(
        url=mosquitto.url,
        client_id="",
        protocol_version=5,
        clean=False,
        properties=mqttkit.Properties(session_expiry_interval=60),
    )
    connack = Recorder(client).wait_for("connect")[0]
    assigned = connack.properties.assigned_client_identifier
    assert assigned
    assert client.client_id == assigned
    assert client.options.client_id == assigned  # used by every later connection
    rec = Recorder(client)
    client.reconnect()
    again = rec.wait_for("connect")[0]
    assert again.session_present  # the same session: reconnected under the assigned id
    assert again.properties.assigned_client_identifier is None


def test_topic_alias_zero_raises_at_once(
    mosquitto: MosquittoBroker, make_client: Callable[..., mqttkit.Client]
) -> None:
    client = make_client(url=mosquitto.url, protocol_version=5)
    Recorder(client).wait_for("connect")
    with pytest.raises(mqttkit.InvalidArgumentError, match=r"topic_alias must be 1\.\.65535"):
        client.publish("t", "x", properties=mqttkit.Properties(topic_alias=0))
    maximum = client._engine.session.connack.properties.topic_alias_maximum or 0  # type: ignore[union-attr]
    with pytest.raises(mqttkit.PublishError, match="Topic Alias Maximum"):
        client.publish("t", "x", properties=mqttkit.Properties(topic_alias=maximum + 1))
    assert client.publish("t", "still fine", qos=1).result(5) < 0x80
