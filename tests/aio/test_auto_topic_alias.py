"""``auto_topic_alias`` with the asyncio client against Mosquitto (whose ``max_topic_alias``
default is 10): what the client wrote, seen by a recording proxy, and what a subscriber got."""

from __future__ import annotations

import asyncio

import pytest

import mqttkit
from mqttkit.aio import Client
from mqttkit.protocol.packets import PubAck, Publish
from mqttkit.testing import MosquittoBroker
from tests.support.proxy import FaultProxy


def run(coro, timeout: float = 20.0):
    """Run a coroutine on a fresh loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def topic(i: int) -> str:
    return f"alias/room-{i:02d}/sensor/temperature"


async def receive(client: Client, count: int) -> list[tuple[str, bytes]]:
    got = []
    async for message in client.messages():
        got.append((message.topic, message.payload))
        if len(got) == count:
            break
    return got


async def receive_distinct(client: Client, count: int) -> list[tuple[str, bytes]]:
    """Messages until ``count`` distinct ones came (QoS 1 may deliver one twice)."""
    got: list[tuple[str, bytes]] = []
    async for message in client.messages():
        got.append((message.topic, message.payload))
        if len(set(got)) == count or len(got) > 2 * count:
            break
    return got


def published(proxy: FaultProxy, connection: int = 0) -> list[Publish]:
    """The PUBLISH packets the client wrote on one connection through ``proxy``."""
    return [p for p in proxy.connections[connection].packets("c2s") if isinstance(p, Publish)]


def test_messages_go_by_alias_up_to_the_maximum_and_arrive_on_their_topics(
    mosquitto: MosquittoBroker,
) -> None:
    # 12 topics over Mosquitto's 10 aliases, three rounds, each QoS: every message arrives on
    # its own topic; the first 10 topics go by alias alone after their first message.
    sent = [(topic(i), f"{r}:{i}".encode(), r) for r in range(3) for i in range(12)]

    async def main(proxy: FaultProxy) -> list[tuple[str, bytes]]:
        async with Client(mosquitto.url, protocol_version=5) as sub:
            await sub.subscribe("alias/#", qos=2)
            async with Client(proxy.url, protocol_version=5, auto_topic_alias=True) as pub:
                for name, payload, qos in sent:
                    await pub.publish(name, payload, qos=qos)
            return await receive(sub, len(sent))

    with FaultProxy(mosquitto.host, mosquitto.port) as proxy:
        got = run(main(proxy))
        wire = published(proxy)
    assert sorted(got) == sorted((name, payload) for name, payload, _ in sent)
    aliases = [(p.topic, p.properties.topic_alias) for p in wire]
    assert aliases[:12] == [(topic(i), i + 1) for i in range(10)] + [(topic(10), None)] + [
        (topic(11), None)
    ]
    assert aliases[12:] == 2 * ([("", i + 1) for i in range(10)] + [(topic(10), None)] + [
        (topic(11), None)
    ])  # fmt: skip


def test_aliases_start_over_after_a_reconnect_and_a_resend_carries_its_topic(
    mosquitto: MosquittoBroker,
) -> None:
    # A QoS 1 message sent by alias alone loses its PUBACK to a cut connection: after the
    # reconnect (session kept) it is resent with DUP and its full topic, and the next message
    # by alias sets the alias again. Mosquitto would close the connection on an alias the new
    # connection never set (0x94), so arriving on the right topic is the proof.
    async def main(proxy: FaultProxy) -> list[tuple[str, bytes]]:
        async with Client(mosquitto.url, protocol_version=5) as sub:
            await sub.subscribe("alias/#", qos=1)
            pub = Client(
                proxy.url,
                protocol_version=5,
                auto_topic_alias=True,
                clean=False,
                client_id="alias-resend",
                properties=mqttkit.Properties(session_expiry_interval=60),
                reconnect_period=0.05,
            )
            async with pub:
                await pub.publish(topic(1), b"first", qos=1)
                # The next PUBACK (that of "second") is not forwarded; the connection is cut.
                cut = proxy.cut_after("s2c", PubAck, 1, before=True)
                second = pub.publish(topic(1), b"second", qos=1)
                await asyncio.to_thread(cut.wait)
                await second  # resent on the new connection and acknowledged there
                await pub.publish(topic(1), b"third", qos=1)
                await pub.publish(topic(1), b"fourth", qos=1)
            return await receive_distinct(sub, 4)

    with FaultProxy(mosquitto.host, mosquitto.port) as proxy:
        got = run(main(proxy))
        first, second = published(proxy, 0), published(proxy, 1)
    assert [(p.topic, p.payload, p.properties.topic_alias) for p in first] == [
        (topic(1), b"first", 1),
        ("", b"second", 1),
    ]
    assert [(p.topic, p.payload, p.dup, p.properties.topic_alias) for p in second] == [
        (topic(1), b"second", True, None),
        (topic(1), b"third", False, 1),
        ("", b"fourth", False, 1),
    ]
    assert got[0] == (topic(1), b"first")
    assert set(got) == {(topic(1), p) for p in (b"first", b"second", b"third", b"fourth")}


def test_auto_topic_alias_needs_mqtt_5() -> None:
    with pytest.raises(mqttkit.InvalidOptionError, match="needs protocol_version=5"):
        Client("mqtt://127.0.0.1:1", auto_topic_alias=True)
    with pytest.raises(mqttkit.InvalidOptionError, match="True or False"):
        Client("mqtt://127.0.0.1:1", protocol_version=5, auto_topic_alias="yes")
