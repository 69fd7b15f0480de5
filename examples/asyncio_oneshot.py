"""The one-shot helpers with asyncio: publish a reading, read it back, publish a batch.

Set MQTT_URL to use another broker than mqtt://localhost.
"""

import asyncio
import os

from mqttkit import aio


async def main() -> None:
    url = os.environ.get("MQTT_URL", "mqtt://localhost")
    await aio.publish_single(url, "greenhouse/temperature", "21.5", qos=1, retain=True)
    message = await aio.subscribe_simple(url, "greenhouse/#", timeout=10)
    print(message.topic, message.payload.decode())
    await aio.publish_multiple(
        [
            {"topic": "greenhouse/humidity", "payload": "64", "qos": 1},
            ("greenhouse/temperature", "", 1, True),  # an empty retained message clears it
        ],
        url,
    )


asyncio.run(main())
