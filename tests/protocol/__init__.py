"""Tests of the sans-IO core (mqttkit.protocol): wire vectors, round trips, fuzzing, topics."""
