"""Connection state on the asyncio front, against Mosquitto: ``connection_events()`` yields
Connected (CONNACK, server), Disconnected (the cause) and Reconnecting (attempt, backoff) as a
broker restarts; ``reconnect()`` drops the connection and connects again at once; the
``connected`` property follows; the loops end when the client closes."""

from __future__ import annotations

import asyncio

import mqttkit
from mqttkit.aio import Client, Connected, Disconnected, Reconnecting
from mqttkit.testing import MosquittoBroker


def run(coro, timeout: float = 30.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_an_outage_and_its_recovery_as_events(mosquitto_factory) -> None:
    broker: MosquittoBroker = mosquitto_factory()

    async def main() -> list[object]:
        client = Client(broker.url, reconnect_period=0.2, keepalive=1)
        await client.connect()
        events = client.connection_events()
        seen: list[object] = []
        broker.stop()
        restarted = False
        async for event in events:
            seen.append(event)
            if isinstance(event, Reconnecting) and event.attempt == 2 and not restarted:
                broker.start()
                restarted = True
            if isinstance(event, Connected):
                break
        assert client.connected
        await client.close()
        return seen

    seen = run(main())
    assert isinstance(seen[0], Disconnected)
    assert isinstance(seen[0].error, mqttkit.MQTTConnectionError)
    assert isinstance(seen[1], Reconnecting)
    assert seen[1].attempt == 1
    assert seen[1].delay > 0  # one server: the backoff came first
    attempts = [e.attempt for e in seen if isinstance(e, Reconnecting)]
    assert attempts == list(range(1, len(attempts) + 1))
    failed = [e for e in seen[1:] if isinstance(e, Disconnected)]
    assert all(isinstance(e.error, mqttkit.ServerNotFoundError) for e in failed)
    last = seen[-1]
    assert isinstance(last, Connected)
    assert last.connack.reason_code == 0
    assert last.server == mqttkit.Server("127.0.0.1", broker.port)


def test_reconnect_drops_and_reconnects_at_once(mosquitto: MosquittoBroker) -> None:
    async def main() -> list[type]:
        async with Client(mosquitto.url, reconnect_period=30) as client:
            events = client.connection_events()
            client.reconnect()  # a 30 s backoff would fail the test's timeout
            kinds = []
            async for event in events:
                kinds.append(type(event))
                if isinstance(event, Connected):
                    break
            assert client.connected
            return kinds

    assert run(main(), timeout=10) == [Disconnected, Reconnecting, Connected]


def test_the_event_loops_end_when_the_client_closes(mosquitto: MosquittoBroker) -> None:
    async def main() -> list[object]:
        client = Client(mosquitto.url)
        await client.connect()
        loops = [asyncio.create_task(collect(client.connection_events())) for _ in range(2)]
        await asyncio.sleep(0.05)
        await client.close()
        assert not client.connected
        first, second = await asyncio.wait_for(asyncio.gather(*loops), 5)
        assert first == second
        return first

    async def collect(events) -> list[object]:
        return [event async for event in events]

    assert run(main()) == [Disconnected(None)]  # a graceful close: no error
