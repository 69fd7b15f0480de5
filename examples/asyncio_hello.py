"""The seed example with the asyncio client: subscribe, publish, receive, close.

Set MQTT_URL to use another broker than mqtt://localhost.
"""

import asyncio
import os

from mqttkit.aio import Client


async def main() -> None:
    async with Client(os.environ.get("MQTT_URL", "mqtt://localhost")) as client:
        await client.subscribe("presence", qos=1)
        await client.publish("presence", "Hello mqtt", qos=1)
        async for message in client.messages():
            print(message.payload.decode())
            break


asyncio.run(main())
