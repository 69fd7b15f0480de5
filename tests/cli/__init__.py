"""Helpers of the command-line tests (tests/test_cli*.py): running mqttkit and Mosquitto's own
tools side by side against the same broker."""
