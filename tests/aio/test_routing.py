"""Topic routing on the asyncio front, against Mosquitto: several ``messages(filter)`` loops
at once, each with its own filter; a message goes to every loop whose filter matches and is
acknowledged once the last has taken it; unmatched messages go to the unfiltered loop; a
filtered loop that ends hands what it did not take to the others."""

from __future__ import annotations

import asyncio

import pytest

import mqttkit
from mqttkit.aio import Client
from mqttkit.testing import MosquittoBroker


def run(coro, timeout: float = 20.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def take(iterator, count: int) -> list[str]:
    got = []
    async for message in iterator:
        got.append(message.topic)
        if len(got) == count:
            break
    return got


def test_filtered_loops_each_get_their_matches_and_the_rest_goes_unfiltered(
    mosquitto: MosquittoBroker,
) -> None:
    async def main() -> tuple[list[str], list[str], list[str], list[str]]:
        async with Client(mosquitto.url) as client:
            temps = client.messages("sensors/+/temp")
            sensors = client.messages("sensors/#")
            alarms = client.messages("$share/g/alarms/#")
            rest = client.messages()
            await client.subscribe("#", qos=1)
            for topic in ("sensors/a/temp", "sensors/b/hum", "alarms/x", "other/y"):
                await client.publish(topic, "v", qos=1)
            return await asyncio.gather(
                take(temps, 1), take(sensors, 2), take(alarms, 1), take(rest, 1)
            )

    temps, sensors, alarms, rest = run(main())
    assert temps == ["sensors/a/temp"]
    assert sensors == ["sensors/a/temp", "sensors/b/hum"]
    assert alarms == ["alarms/x"]
    assert rest == ["other/y"]


def test_a_message_two_loops_share_is_acknowledged_once_both_took_it(
    mosquitto_factory,
) -> None:
    """QoS 1 with the broker's window at 1: the second message comes only after the first is
    acknowledged, which needs both loops to have taken it (and asked for the next)."""
    broker = mosquitto_factory(max_inflight_messages=1)

    async def main() -> None:
        async with Client(broker.url) as client:
            first = client.messages("j/#")
            second = client.messages("j/+")
            await client.subscribe("j/#", qos=1)
            await client.publish("j/1", "a", qos=1)
            await client.publish("j/2", "b", qos=1)
            assert (await anext(first)).topic == "j/1"
            pending = asyncio.ensure_future(anext(first))  # acknowledges first's share
            done, _ = await asyncio.wait({pending}, timeout=0.5)
            assert not done, "j/2 came before the second loop took j/1"
            assert (await anext(second)).topic == "j/1"
            assert (await anext(second)).topic == "j/2"  # its share: now j/1 is acknowledged
            assert (await asyncio.wait_for(pending, 5)).topic == "j/2"

    run(main())


def test_leftovers_of_an_ended_filtered_loop_go_to_the_unfiltered_loop(
    mosquitto: MosquittoBroker,
) -> None:
    async def main() -> list[str]:
        async with Client(mosquitto.url) as client:
            filtered = client.messages("l/#")
            await client.subscribe("l/#", qos=1)
            for i in range(3):
                await client.publish(f"l/{i}", "x", qos=1)
            assert await take(filtered, 1) == ["l/0"]
            await filtered.aclose()  # l/1 and l/2 were queued for it
            return await take(client.messages(), 2)

    assert run(main()) == ["l/1", "l/2"]


def test_a_bad_filter_raises_at_once(mosquitto: MosquittoBroker) -> None:
    async def main() -> None:
        async with Client(mosquitto.url) as client:
            with pytest.raises(mqttkit.InvalidTopicError):
                client.messages("a/#/b")
            with pytest.raises(ValueError, match="max_buffered"):
                client.messages("a/#", max_buffered=0)

    run(main())


def test_filtered_loops_end_when_the_client_closes(mosquitto: MosquittoBroker) -> None:
    async def main() -> list[str]:
        client = Client(mosquitto.url)
        await client.connect()
        loop_task = asyncio.create_task(take(client.messages("never/#"), 1))
        await asyncio.sleep(0.05)
        await client.close()
        return await asyncio.wait_for(loop_task, 5)

    assert run(main()) == []
