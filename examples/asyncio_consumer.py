"""A long-running asyncio consumer: topic routing with one loop per concern, the connection's
ups and downs as events, and a close with an MQTT 5 reason code.

It handles readings and alarms in two loops, logs every outage and reconnection, and stops
after STOP_AFTER messages (a real consumer would run until cancelled). Set MQTT_URL to use
another broker than mqtt://localhost.
"""

import asyncio
import os

from mqttkit.aio import Client, Connected, Disconnected, Reconnecting

STOP_AFTER = 3


async def readings(client: Client, done: asyncio.Event) -> None:
    count = 0
    async for message in client.messages("sensors/+/temp"):
        print(f"reading {message.topic} {message.payload.decode()}")
        count += 1
        if count == STOP_AFTER - 1:
            break
    done.set()


async def alarms(client: Client) -> None:
    async for message in client.messages("alarms/#"):
        print(f"ALARM {message.topic} {message.payload.decode()}")
        break


async def watch(client: Client) -> None:
    async for event in client.connection_events():
        if isinstance(event, Connected):
            print(f"connected to {event.server.url}")
        elif isinstance(event, Disconnected):
            print(f"disconnected: {event.error or 'closed'}")
        elif isinstance(event, Reconnecting):
            print(f"reconnecting (attempt {event.attempt}, waited {event.delay:.1f} s)")


async def main() -> None:
    url = os.environ.get("MQTT_URL", "mqtt://localhost")
    async with Client(url, protocol_version=5) as client:
        watcher = asyncio.create_task(watch(client))
        done = asyncio.Event()
        tasks = [asyncio.create_task(readings(client, done)), asyncio.create_task(alarms(client))]
        await client.subscribe({"sensors/#": 1, "alarms/#": 1})
        await client.publish("sensors/kitchen/temp", "21.5", qos=1)
        await client.publish("alarms/door", "open", qos=1)
        await client.publish("sensors/hall/temp", "19.0", qos=1)
        await asyncio.gather(*tasks)
        await client.close(reason_code=0, properties={"reason_string": "done"})
        await watcher


asyncio.run(main())
