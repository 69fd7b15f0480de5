"""The blocking one-shot helpers (``mqttkit.publish_single``, ``publish_multiple``,
``subscribe_simple``) against Mosquitto: round trips, the seed option dict, failures at once
with their cause, the timeout, and the inline-listener rule."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import mqttkit
from mqttkit.protocol.packets import Publish, SubAck
from mqttkit.testing import MosquittoBroker, free_port
from tests.support.proxy import FaultProxy
from tests.support.recorder import Recorder

ROOT = Path(__file__).resolve().parents[2]


def test_publish_single_and_subscribe_simple_round_trip(mosquitto: MosquittoBroker) -> None:
    # subscribe_simple waits in a thread; its SUBACK passing the proxy says it is subscribed.
    with FaultProxy(mosquitto.host, mosquitto.port) as proxy, ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(mqttkit.subscribe_simple, proxy.url, "sync/#", 2, qos=1, timeout=10)
        proxy.wait_for_packet("s2c", SubAck)
        assert mqttkit.publish_single(mosquitto.url, "sync/a", "one", qos=1) == 0
        assert mqttkit.publish_single(mosquitto.url, "sync/b", b"two", qos=2) == 0
        got = waiting.result(15)
    assert isinstance(got, list)
    assert [(m.topic, m.payload, m.qos) for m in got] == [
        ("sync/a", b"one", 1),
        ("sync/b", b"two", 1),
    ]


def test_publish_multiple_and_the_seed_option_dict(mosquitto: MosquittoBroker) -> None:
    seed = {"hostname": mosquitto.host, "port": mosquitto.port, "clientId": "oneshot-seed"}
    results = mqttkit.publish_multiple(
        [{"topic": "seed/a", "payload": "1", "qos": 1, "retain": True}, ("seed/b", "2", 0, True)],
        options=seed,
    )
    assert results == [0, 0]
    got = mqttkit.subscribe_simple(None, "seed/#", 2, options=seed, timeout=5)
    assert isinstance(got, list)
    assert sorted((m.topic, m.payload, m.retain) for m in got) == [
        ("seed/a", b"1", True),
        ("seed/b", b"2", True),
    ]
    one = mqttkit.subscribe_simple(mosquitto.url, "seed/b", timeout=5, protocol_version=5)
    assert isinstance(one, Publish)
    assert one.payload == b"2"


def test_failures_come_at_once_with_their_cause(mosquitto_auth: MosquittoBroker) -> None:
    wrong = f"mqtt://alice:wrong@{mosquitto_auth.host}:{mosquitto_auth.port}"
    dead = f"mqtt://127.0.0.1:{free_port()}"
    for call, error in (
        (lambda: mqttkit.publish_single(wrong, "t", "x", qos=1, timeout=30), "refused"),
        (lambda: mqttkit.publish_multiple([("t", "x")], wrong, timeout=30), "refused"),
        (lambda: mqttkit.subscribe_simple(wrong, "t", timeout=30), "refused"),
        (lambda: mqttkit.publish_single(dead, "t", "x", timeout=30), "dead"),
        (lambda: mqttkit.subscribe_simple(dead, "t"), "dead"),
    ):
        started = time.monotonic()
        expected = (
            mqttkit.ConnectRefusedError if error == "refused" else mqttkit.ServerNotFoundError
        )
        with pytest.raises(expected):
            call()
        assert time.monotonic() - started < 5
    # The right password works, and the client closes (no thread of it is left running).
    right = f"mqtt://alice:secret@{mosquitto_auth.host}:{mosquitto_auth.port}"
    assert mqttkit.publish_single(right, "t", "x", qos=1) == 0


def test_subscribe_simple_times_out(mosquitto: MosquittoBroker) -> None:
    started = time.monotonic()
    with pytest.raises(mqttkit.OperationTimeoutError, match="0 of 1 message"):
        mqttkit.subscribe_simple(mosquitto.url, "nobody/#", timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 3


def test_bad_input_raises_in_the_caller_s_thread() -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"
    with pytest.raises(mqttkit.InvalidTopicError):
        mqttkit.publish_single(dead, "a/+", "x")
    with pytest.raises(mqttkit.InvalidArgumentError, match="timeout"):
        mqttkit.publish_single(dead, "t", "x", timeout="soon")  # type: ignore[arg-type]
    with pytest.raises(mqttkit.UnknownOptionError, match="hostnam"):
        mqttkit.subscribe_simple(None, "t", hostnam="x")


def test_not_from_an_inline_listener(mosquitto: MosquittoBroker, make_client) -> None:
    # Waiting on the loop thread would wait for itself: it raises there instead.
    client = make_client(url=mosquitto.url, dispatch="inline")
    errors: list[BaseException] = []
    done = threading.Event()

    @client.on("connect")
    def on_connect(connack: object) -> None:
        try:
            mqttkit.publish_single(mosquitto.url, "t", "x")
        except RuntimeError as exc:
            errors.append(exc)
        done.set()

    rec = Recorder(client, ("connect",))
    rec.wait_for("connect")
    assert done.wait(5)
    assert len(errors) == 1
    assert "publish_single() on the loop thread" in str(errors[0])


def test_the_example_runs_and_is_the_one_in_the_docs(mosquitto: MosquittoBroker) -> None:
    example = ROOT / "examples" / "oneshot.py"
    for _ in range(2):  # it clears the retained message it leaves, so it runs again the same
        result = subprocess.run(
            [sys.executable, str(example)],
            env={**os.environ, "MQTT_URL": mosquitto.url},
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == "greenhouse/temperature 21.5\n"
    code = example.read_text(encoding="utf-8").split('"""', 2)[2].lstrip("\n")
    assert f"```python\n{code}```" in (ROOT / "docs" / "seed-api.md").read_text(encoding="utf-8")
