"""Test-only networking tools: a scripted fake broker, raw MQTT sockets, a fault-injecting proxy.

Nothing here is part of mqttkit's public API. The real-broker helper (Mosquitto on a free port)
is public and lives in :mod:`mqttkit.testing`.
"""
