"""A server list with the asyncio client: ``connect()`` goes on to the next server when one
fails (it raises only when every server failed), ``client.server`` names the server, and a
client whose server dies lands on the next one and goes on receiving."""

from __future__ import annotations

import asyncio
import time

import pytest

import mqttkit
from mqttkit.aio import Client
from mqttkit.testing import MosquittoBroker, free_port


def run(coro, timeout: float = 20.0):
    """Run a coroutine on a fresh loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_connect_skips_a_dead_server_and_says_where_it_is(mosquitto: MosquittoBroker) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"

    async def main() -> tuple[mqttkit.Server, mqttkit.Server, int]:
        client = Client(servers=[dead, mosquitto.url], reconnect_period=5)
        before = client.server
        async with client:
            await client.subscribe("aio-servers/t", qos=1)
            await client.publish("aio-servers/t", "x", qos=1)
            async for message in client.messages():
                return before, client.server, message.qos
        raise AssertionError("no message")

    before, where, qos = run(main())
    assert before == mqttkit.Server("127.0.0.1", int(dead.rsplit(":", 1)[1]))
    assert where == mqttkit.Server("127.0.0.1", mosquitto.port)
    assert qos == 1


def test_connect_raises_at_once_when_every_server_failed() -> None:
    ports = [free_port(), free_port()]

    async def main() -> None:
        client = Client(servers=[("127.0.0.1", p) for p in ports], reconnect_period=5)
        await client.connect()

    started = time.monotonic()
    with pytest.raises(mqttkit.ServerNotFoundError) as info:
        run(main())
    assert time.monotonic() - started < 2.0  # no backoff between the two
    assert str(ports[1]) in str(info.value)  # the last server's error


def test_the_message_loop_goes_on_after_a_failover(
    mosquitto_factory,
) -> None:
    first, second = mosquitto_factory(), mosquitto_factory()

    async def main() -> tuple[mqttkit.Server, bytes]:
        async with Client(
            servers=[first.url, second.url], keepalive=1, reconnect_period=5
        ) as client:
            await client.subscribe("aio-failover/#", qos=1)
            await asyncio.sleep(1.1)  # a connection that lasted
            first.kill()
            async with Client(second.url) as publisher:
                payload = b""
                for _ in range(50):  # until the resubscription is in (bounded: 5 s)
                    await publisher.publish("aio-failover/t", "after", qos=1)
                    try:
                        async with asyncio.timeout(0.1):
                            async for message in client.messages():
                                payload = message.payload
                                break
                    except TimeoutError:
                        continue
                    break
            return client.server, payload

    where, payload = run(main())
    assert where == mqttkit.Server("127.0.0.1", second.port)
    assert payload == b"after"
