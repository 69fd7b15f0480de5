"""mqttkit: an MQTT 3.1.1 / 5.0 client for Python."""

__version__ = "0.1.0.dev0"
