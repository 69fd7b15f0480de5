"""Topic routing with the blocking client: one function per kind of message.

Set MQTT_URL to use another broker than mqtt://localhost.
"""

import os
import threading

import mqttkit

client = mqttkit.connect(os.environ.get("MQTT_URL", "mqtt://localhost"))
done = threading.Event()


@client.on_message("sensors/+/temp")
def on_temperature(topic, payload):
    print(f"temperature {topic}: {payload.decode()}")


@client.on_message("alarms/#")
def on_alarm(topic, payload):
    print(f"ALARM {topic}: {payload.decode()}")
    done.set()


@client.on("message")
def on_anything_else(topic, payload):
    print(f"other {topic}")


client.subscribe({"sensors/#": 1, "alarms/#": 1, "misc/#": 1}).wait(5)
client.publish("sensors/kitchen/temp", "21.5", qos=1)
client.publish("misc/x", "?", qos=1)
client.publish("alarms/door", "open", qos=1)
done.wait(5)
client.close().wait(5)
