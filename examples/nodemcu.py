"""The NodeMCU seed's example (the firmware's ``mqtt`` module), in Python.

Connects, subscribes to "/topic", publishes "hello" to it, prints the message it gets back,
closes, and exits by itself: closing ends the client's dispatch thread, the last thread that
keeps the process alive. The broker: MQTT_HOST and MQTT_PORT, or MQTT_URL (mqtt://host:port),
else 127.0.0.1:1883.
"""

import os
from urllib.parse import urlsplit

from mqttkit import nodemcu as mqtt

url = urlsplit(os.environ.get("MQTT_URL", "mqtt://127.0.0.1:1883"))
HOST = os.environ.get("MQTT_HOST") or url.hostname or "127.0.0.1"
PORT = int(os.environ.get("MQTT_PORT") or url.port or 1883)

# init mqtt client without logins, keepalive timer 120 s
m = mqtt.Client("nodemcu-example", 120)

# setup Last Will and Testament (optional)
# Broker will publish a message with qos = 0, retain = 0, data = "offline"
# to topic "/lwt" if client don't send keepalive packet
m.lwt("/lwt", "offline", 0, 0)

m.on("connect", lambda client: print("connected"))
m.on("offline", lambda client: print("offline"))


# on publish message receive event
def on_message(client, topic, data):
    print(topic + ":")
    if data:
        print(data.decode())
    if client.close():
        print("closed")  # you can call m.connect() again


m.on("message", on_message)


def on_connected(client):
    # subscribe topic with qos = 0
    client.subscribe("/topic", 0, lambda client: print("subscribe success"))
    # publish a message with data = hello, QoS = 0, retain = 0
    client.publish("/topic", "hello", 0, 0, lambda client: print("sent"))


m.connect(
    HOST,
    PORT,
    0,
    on_connected,
    lambda client, reason: print("failed reason:", reason),
)
