"""Tests of the durable stores (mqttkit.stores): contract, durability, sharing, crash and resume."""
