"""The seed's example (node.lua `mqtt` module), in Python.

Publishes "Hello mqtt" to the topic "presence", receives it back through its own subscription,
prints it and closes. Set MQTT_URL to use another broker than mqtt://localhost.
"""

import os

import mqttkit as mqtt

client = mqtt.connect(os.environ.get("MQTT_URL", "mqtt://localhost"))


@client.on("connect")
def on_connect(connack):
    client.subscribe("presence")
    client.publish("presence", "Hello mqtt")


@client.on("message")
def on_message(topic, message):
    print(message.decode())
    client.close()
