"""One-shot helpers: publish a reading, read it back, publish a batch; each call connects,
does its work and closes. Set MQTT_URL to use another broker than mqtt://localhost.
"""

import os

import mqttkit

url = os.environ.get("MQTT_URL", "mqtt://localhost")

mqttkit.publish_single(url, "greenhouse/temperature", "21.5", qos=1, retain=True)

message = mqttkit.subscribe_simple(url, "greenhouse/#", timeout=10)
print(message.topic, message.payload.decode())

mqttkit.publish_multiple(
    [
        {"topic": "greenhouse/humidity", "payload": "64", "qos": 1},
        ("greenhouse/temperature", "", 1, True),  # an empty retained message clears it
    ],
    url,
)
