"""Manual acknowledgement (``manual_ack=True``), against Mosquitto and the scripted broker, on
both fronts: nothing is acknowledged until ``message.ack()``; an early ack waits for the
earlier ones (MQTT's order); acks from another thread work; a message never acknowledged is
sent again after a reconnect; MQTT 5 reason codes reach the broker; bad codes raise."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

import mqttkit
from mqttkit.aio import Client as AsyncClient
from mqttkit.protocol.packets import MQTT_5, PubAck, Publish, PubRec
from tests.support.fake_broker import FakeBroker, FakeConnection
from tests.support.recorder import Recorder

Factory = Callable[..., mqttkit.Client]


def test_acks_wait_for_the_application_and_leave_in_arrival_order(make_client: Factory) -> None:
    acks: list[PubAck] = []
    ready = threading.Event()
    finished = threading.Event()

    def broker_side(conn: FakeConnection) -> None:
        conn.handshake()
        for pid in (1, 2, 3):
            conn.send(Publish(f"t/{pid}", b"x", qos=1, packet_id=pid))
        conn.expect_silence(0.3)  # the listeners have returned: still no PUBACK
        ready.set()
        finished.wait(5)
        for _ in range(3):
            acks.append(conn.expect(PubAck))

    with FakeBroker(broker_side) as broker:
        client = make_client(url=broker.url, manual_ack=True)
        rec = Recorder(client, ("connect", "message"))
        messages = [packet for _, _, packet in rec.wait_messages(3)]
        assert all(isinstance(m, mqttkit.AckableMessage) for m in messages)
        assert ready.wait(5)
        # Acknowledged out of order, the last from another thread: PUBACKs leave in order.
        messages[2].ack()
        thread = threading.Thread(target=messages[0].ack)
        messages[1].ack()
        messages[1].ack()  # twice: only the first counts
        thread.start()
        thread.join(5)
        finished.set()
        broker.wait_handlers()
    assert [a.packet_id for a in acks] == [1, 2, 3]


def test_a_message_not_acknowledged_is_resent_and_its_ack_answers_the_resend(
    make_client: Factory,
) -> None:
    """Unacknowledged when the connection drops: the broker sends it again (kept session);
    the client, which still holds it, does not deliver it twice, and the application's ack()
    answers the resend on the new connection."""
    resent = threading.Event()
    answered = threading.Event()
    count = iter(range(100))

    def broker_side(conn: FakeConnection) -> None:
        if next(count) == 0:
            conn.handshake()
            conn.send(Publish("t/once", b"x", qos=1, packet_id=7))
            conn.expect_silence(0.3)  # not acknowledged
            conn.abort()
        else:
            conn.handshake(session_present=True)
            conn.send(Publish("t/once", b"x", qos=1, dup=True, packet_id=7))
            resent.set()
            assert conn.expect(PubAck).packet_id == 7
            answered.set()

    with FakeBroker(broker_side) as broker:
        client = make_client(
            url=broker.url, manual_ack=True, clean=False, client_id="m", reconnect_period=0.05
        )
        rec = Recorder(client, ("connect", "message"))
        message = rec.wait_messages(1)[0][2]
        rec.wait_for("connect", count=2)
        assert resent.wait(5)
        assert not answered.wait(0.3)  # nothing acknowledges it but the application
        message.ack()
        assert answered.wait(5)
        assert len(rec.messages) == 1  # delivered once


def test_mqtt5_reason_codes_reach_the_broker(make_client: Factory) -> None:
    got: list[PubAck] = []

    def broker_side(conn: FakeConnection) -> None:
        conn.handshake()
        conn.send(Publish("t/bad", b"x", qos=1, packet_id=1))
        got.append(conn.expect(PubAck))

    with FakeBroker(broker_side) as broker:
        client = make_client(url=broker.url, manual_ack=True, protocol_version=MQTT_5)
        rec = Recorder(client, ("connect", "message"))
        message = rec.wait_messages(1)[0][2]
        with pytest.raises(mqttkit.InvalidArgumentError, match="not a PUBACK/PUBREC reason"):
            message.ack(0x05)
        message.ack(0x99)  # payload format invalid
        broker.wait_handlers()
    assert got[0].reason_code == 0x99


def test_a_reason_code_needs_mqtt5(make_client: Factory) -> None:
    def broker_side(conn: FakeConnection) -> None:
        conn.handshake()
        conn.send(Publish("t", b"x", qos=1, packet_id=1))
        assert conn.expect(PubAck).packet_id == 1

    with FakeBroker(broker_side) as broker:
        client = make_client(url=broker.url, manual_ack=True)
        message = Recorder(client, ("connect", "message")).wait_messages(1)[0][2]
        with pytest.raises(mqttkit.InvalidArgumentError, match="protocol_version=5"):
            message.ack(0x80)
        message.ack()
        broker.wait_handlers()


def test_asyncio_manual_ack_from_another_task() -> None:
    acked = threading.Event()

    def broker_side(conn: FakeConnection) -> None:
        conn.handshake()
        conn.send(Publish("t", b"x", qos=2, packet_id=4))
        conn.expect_silence(0.3)  # the loop asked for the next message: still nothing
        assert conn.expect(PubRec).packet_id == 4
        acked.set()

    async def main(url: str) -> None:
        async with AsyncClient(url, manual_ack=True) as client:
            handed: asyncio.Queue[mqttkit.AckableMessage] = asyncio.Queue()

            async def worker() -> None:
                message = await handed.get()
                await asyncio.sleep(0.5)  # stored in a database...
                message.ack()

            task = asyncio.create_task(worker())
            async for message in client.messages():
                assert isinstance(message, mqttkit.AckableMessage)
                await handed.put(message)
                break
            await task
            assert await asyncio.to_thread(acked.wait, 5)

    with FakeBroker(broker_side) as broker:
        asyncio.run(asyncio.wait_for(main(broker.url), 15))
        broker.wait_handlers()
