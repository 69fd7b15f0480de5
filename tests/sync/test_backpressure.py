"""Bounded memory with slow applications: a slow handler never costs the connection, QoS 1/2
wait unacknowledged (the broker holds the rest), QoS 0 beyond ``max_buffered`` is dropped with
a ``dropped`` event, and the outgoing queue follows ``queue_policy``."""

from __future__ import annotations

import asyncio
import threading

import mqttkit
from mqttkit.aio import Client as AioClient
from mqttkit.testing import MosquittoBroker
from tests.support.recorder import Recorder


def test_slow_handler_does_not_cost_the_connection(mosquitto: MosquittoBroker, make_client) -> None:
    # Mosquitto drops a client silent for 1.5 x keepalive (1.5 s): the handler blocks 3.5 s.
    client = make_client(url=mosquitto.url, keepalive=1)
    rec = Recorder(client, ("connect", "close", "error", "offline"))
    rec.wait_for("connect")
    client.subscribe("slow/t", qos=1).result(5)
    released = threading.Event()
    got: list[bytes] = []

    def handler(topic: str, message: bytes) -> None:
        got.append(message)
        if message == b"first":
            released.wait(3.5)  # the slow application

    client.on("message", handler)
    client.publish("slow/t", "first", qos=1).result(5)
    client.publish("slow/t", "second", qos=1).result(5)
    rec.wait_until(lambda: len(got) == 2, 10, "both messages")
    assert rec.names() == ["connect"], "the connection was lost during the slow handler"
    assert client.publish("slow/t", "third", qos=1).result(5) == 0
    rec.wait_until(lambda: len(got) == 3, 5, "the third message")


def test_qos1_waits_for_the_handler_and_nothing_is_dropped(
    mosquitto: MosquittoBroker, make_client
) -> None:
    n = 60
    client = make_client(url=mosquitto.url, max_buffered=5)
    rec = Recorder(client, ("connect", "dropped"))
    rec.wait_for("connect")
    client.subscribe("bp/t", qos=1).result(5)
    gate = threading.Event()
    got: list[bytes] = []
    done = threading.Event()

    def handler(topic: str, message: bytes) -> None:
        gate.wait(5)
        got.append(message)
        if len(got) == n:
            done.set()

    client.on("message", handler)
    publisher = make_client(url=mosquitto.url)
    for i in range(n):
        publisher.publish("bp/t", str(i), qos=1)
    assert publisher.flush(10)
    session, listener = client._engine.session, client._loop_listener
    rec.wait_until(lambda: listener.shipped >= 20, 10, "the broker's window of messages")
    # The handler is blocked on the first one: every message in the client is unacknowledged,
    # so the broker keeps the rest (Mosquitto's window: 20).
    assert session.unacknowledged == listener.shipped - listener.handled
    assert listener.shipped < n
    gate.set()
    assert done.wait(20)
    assert got == [str(i).encode() for i in range(n)]  # all, once, in order, none dropped
    assert rec.count("dropped") == 0


def test_qos0_beyond_max_buffered_is_dropped_with_an_event(
    mosquitto: MosquittoBroker, make_client
) -> None:
    n = 200
    client = make_client(url=mosquitto.url, max_buffered=10)
    rec = Recorder(client, ("connect",))
    rec.wait_for("connect")
    client.subscribe("drop/t", qos=0).result(5)
    gate = threading.Event()
    got: list[bytes] = []
    dropped: list[mqttkit.Publish] = []
    client.on("dropped", dropped.append)

    def handler(topic: str, message: bytes) -> None:
        gate.wait(5)
        got.append(message)

    client.on("message", handler)
    publisher = make_client(url=mosquitto.url)
    for i in range(n):
        publisher.publish("drop/t", str(i), qos=0)
    assert publisher.flush(10)
    # Everything has reached the client (it counts its drops on the loop thread).
    rec.wait_until(lambda: client._loop_listener._dropped + 11 >= n, 10, "the drops")
    gate.set()  # the dispatch thread, and with it the dropped events, go on
    rec.wait_until(lambda: len(got) + len(dropped) == n, 10, "every message accounted for")
    assert len(got) <= 11  # max_buffered, plus the one in the blocked handler
    assert all(isinstance(m, mqttkit.Publish) and m.topic == "drop/t" for m in dropped)
    seen = sorted([int(m) for m in got] + [int(m.payload) for m in dropped])
    assert seen == list(range(n))  # each message either handled or reported dropped


def test_outgoing_queue_policy_drop_newest_fires_dropped(make_client) -> None:
    client = make_client(
        url="mqtt://127.0.0.1:9", connect=False, max_queued=1, queue_policy="drop_newest"
    )
    dropped: list[mqttkit.Publish] = []
    done = threading.Event()
    client.on("dropped", lambda message: (dropped.append(message), done.set()))
    first = client.publish("q/t", "kept", qos=1)
    second = client.publish("q/t", "dropped", qos=1)
    assert isinstance(second.exception(5), mqttkit.QueueFullError)
    assert done.wait(5)
    assert [m.payload for m in dropped] == [b"dropped"]
    assert not first.done()


def test_aio_consumer_behind_drops_qos0_only(mosquitto: MosquittoBroker) -> None:
    async def main() -> tuple[int, int, list[bytes]]:
        async with AioClient(mosquitto.url, max_buffered=5) as client:
            await client.subscribe({"aio0/t": 0, "aio1/t": 1})
            async with AioClient(mosquitto.url) as publisher:
                for i in range(50):
                    publisher.publish("aio0/t", str(i), qos=0)
                for i in range(30):
                    publisher.publish("aio1/t", str(i), qos=1)
                await publisher.flush()
            qos1: list[bytes] = []
            qos0 = 0
            async for message in client.messages():  # only now does the consumer start
                if message.qos:
                    qos1.append(message.payload)
                else:
                    qos0 += 1
                if len(qos1) == 30:
                    break
            return qos0, client.dropped, qos1

    qos0, dropped, qos1 = asyncio.run(asyncio.wait_for(main(), 30))
    assert qos1 == [str(i).encode() for i in range(30)]  # every QoS 1 message, in order
    assert dropped > 0
    assert qos0 + dropped == 50
