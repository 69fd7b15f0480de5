"""Regressions found by the fault suite (tests/fault, RELIABILITY.md), through a real Mosquitto.

1. A stream alternating QoS 1 and QoS 2 lost every 40th message without any fault: the QoS 1
   PUBLISH that followed a full QoS 2 window was dropped by Mosquitto after a plain PUBACK (see
   tests/protocol/test_session_qos2_window.py).
2. With a durable incoming store, the blocking client let the application run a whole broker
   window ahead of the stored QoS 2 receipts: listeners ran on the dispatch thread while the
   packet ids were stored later, on the loop thread, behind the store's fsyncs. A subscriber
   killed mid-stream had dozens of QoS 2 messages delivered again whose handlers had long
   returned. Now each receipt is stored before the next listener runs.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import mqttkit
from mqttkit.stores import SQLiteStore
from mqttkit.testing import MosquittoBroker
from tests.support.recorder import Recorder


def test_alternating_qos1_qos2_stream_loses_nothing(
    mosquitto: MosquittoBroker, make_client: Callable[..., mqttkit.Client]
) -> None:
    n = 200
    subscriber = make_client(url=mosquitto.url)
    received = Recorder(subscriber, ("connect", "message"))
    received.wait_for("connect")
    subscriber.subscribe("mixed/#", qos=2).result(5)
    publisher = make_client(url=mosquitto.url)  # MQTT 3.1.1, Mosquitto's window of 20
    handles = [publisher.publish(f"mixed/q{1 + i % 2}", str(i), qos=1 + i % 2) for i in range(n)]
    for handle in handles:
        assert handle.result(10) == 0
    received.wait_messages(n, timeout=10)
    assert Counter(int(m[1]) for m in received.messages) == Counter(range(n))


class SlowStore:
    """A store that is not a MemoryStore (so the client treats it as durable) and whose writes
    take 20 ms, as an fsync can; it counts its puts."""

    def __init__(self) -> None:
        self.data: dict[int, bytes] = {}
        self.puts = 0
        self._lock = threading.Lock()
        self._slow = threading.Event()  # never set: waits on it are the write's duration

    def put(self, key: int, value: bytes) -> None:
        self._slow.wait(0.02)
        with self._lock:
            self.data[key] = value
            self.puts += 1

    def get(self, key: int) -> bytes | None:
        with self._lock:
            return self.data.get(key)

    def delete(self, key: int) -> None:
        with self._lock:
            self.data.pop(key, None)

    def iterate(self) -> Iterator[tuple[int, bytes]]:
        with self._lock:
            return iter(sorted(self.data.items()))

    def close(self) -> None:
        pass


def test_qos2_receipt_is_stored_before_the_next_listener_runs(
    mosquitto: MosquittoBroker, make_client: Callable[..., mqttkit.Client]
) -> None:
    n = 40
    store = SlowStore()
    options = {"client_id": "receipts", "clean": False, "incoming_store": store}
    first = make_client(url=mosquitto.url, **options)
    Recorder(first).wait_for("connect")
    first.subscribe("receipts/t", qos=2).result(5)
    assert first.close().wait(10)
    # The messages wait at the broker, so that they arrive in bursts (its window of 20) and
    # their listeners run back to back.
    publisher = make_client(url=mosquitto.url)
    for i in range(n):
        publisher.publish("receipts/t", str(i), qos=2)
    assert publisher.flush(10)
    handled = 0
    behind: list[tuple[int, int]] = []  # (receipts stored, listeners returned) when behind
    done = threading.Event()

    def on_message(topic: str, message: bytes) -> None:
        nonlocal handled
        if store.puts < handled:
            behind.append((store.puts, handled))
        handled += 1
        if handled == n:
            done.set()

    second = make_client(url=mosquitto.url, connect=False, **options)
    second.on("message", on_message)
    second.connect()
    assert done.wait(20)
    assert not behind, f"listeners ran ahead of the stored receipts: {behind[:5]}"


class _ReleaseLog(SQLiteStore):
    """An SQLiteStore that remembers the keys the client deleted (released by PUBREL, which
    the broker sends only after our PUBREC, itself written after the receipt was committed)."""

    __slots__ = ("released",)

    def __init__(self, path: Path) -> None:
        super().__init__(path, name="in", durability="batched")
        self.released: set[int] = set()

    def delete(self, key: int) -> None:
        self.released.add(key)
        super().delete(key)


def test_qos2_receipt_is_committed_before_the_next_listener_runs_with_a_batching_store(
    tmp_path: Path, mosquitto: MosquittoBroker, make_client: Callable[..., mqttkit.Client]
) -> None:
    # SQLiteStore has begin()/commit(): the loop thread holds its writes for a turn. A receipt
    # must still be committed (seen through another connection to the file) before the next
    # listener runs, or a kill there delivers the message again.
    n = 60
    path = tmp_path / "receipts.db"
    store = _ReleaseLog(path)
    other = SQLiteStore(path, name="in")
    options = {"client_id": "receipts-db", "clean": False, "incoming_store": store}
    first = make_client(url=mosquitto.url, **options)
    Recorder(first).wait_for("connect")
    first.subscribe("receipts-db/t", qos=2).result(5)
    assert first.close().wait(10)
    publisher = make_client(url=mosquitto.url)
    for i in range(n):
        publisher.publish("receipts-db/t", str(i), qos=2)
    assert publisher.flush(10)
    previous: list[int] = []
    missing: list[int] = []
    done = threading.Event()

    def on_message(topic: str, message: bytes, packet: mqttkit.Publish) -> None:
        if previous:
            pid = previous[-1]
            # The store first, then the released set: a release in between is then seen.
            if other.get(pid) is None and pid not in store.released:
                missing.append(pid)
        previous.append(packet.packet_id)  # type: ignore[arg-type]
        if len(previous) == n:
            done.set()

    second = make_client(url=mosquitto.url, connect=False, **options)
    second.on("message", on_message)
    second.connect()
    try:
        assert done.wait(20)
        assert not missing, f"receipts not committed when the next listener ran: {missing[:5]}"
    finally:
        assert second.close().wait(10)
        other.close()
        store.close()
