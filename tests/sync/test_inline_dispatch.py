"""``dispatch="inline"``: the blocking client's listeners and callbacks on the loop thread, in
order, with acknowledgements after each listener, and a clear error instead of a deadlock for a
listener that waits on a client."""

from __future__ import annotations

import threading

import pytest

import mqttkit
from mqttkit.protocol.packets import PubAck, Publish
from mqttkit.testing import MosquittoBroker
from tests.support.fake_broker import FakeBroker

TIMEOUT = 10.0


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_messages_and_events_run_on_the_loop_thread_in_order(
    mosquitto: MosquittoBroker, make_client, qos: int
) -> None:
    seen: list[tuple[str, object, str]] = []
    done = threading.Event()
    client = make_client(url=mosquitto.url, dispatch="inline", connect=False)

    def on_connect(connack: object) -> None:
        seen.append(("connect", None, threading.current_thread().name))

    def on_message(topic: str, payload: bytes) -> None:
        seen.append(("message", int(payload), threading.current_thread().name))
        if int(payload) == 499:
            done.set()

    client.on("connect", on_connect)
    client.on("message", on_message)
    client.connect()
    callbacks: list[str] = []
    client.subscribe(
        "inline/t",
        qos=qos,
        callback=lambda err, granted: callbacks.append(threading.current_thread().name),
    ).result(TIMEOUT)
    publisher = make_client(url=mosquitto.url)
    for i in range(500):
        publisher.publish("inline/t", str(i), qos=qos)
    assert publisher.flush(TIMEOUT)
    assert done.wait(TIMEOUT)
    assert seen[0] == ("connect", None, "mqttkit-loop")
    messages = [s for s in seen if s[0] == "message"]
    assert [m[1] for m in messages] == list(range(500))  # all, once, in order
    assert {m[2] for m in messages} == {"mqttkit-loop"}
    assert callbacks == ["mqttkit-loop"]


def test_waiting_on_a_handle_inside_an_inline_listener_raises() -> None:
    errors: list[BaseException] = []
    finished = threading.Event()
    with FakeBroker() as broker:
        client = mqttkit.Client(url=broker.url, dispatch="inline", reconnect_period=0)

        def on_message(topic: str, payload: bytes) -> None:
            try:
                client.publish("reply/t", b"r", qos=1).wait(1)
            except RuntimeError as exc:
                errors.append(exc)
            try:
                client.flush(1)
            except RuntimeError as exc:
                errors.append(exc)
            finished.set()

        client.on("message", on_message)
        client.connect()
        try:
            conn = broker.accept()
            conn.handshake()
            conn.send(Publish("in/t", b"x", 0))
            assert finished.wait(TIMEOUT)
            # The publish itself was queued and goes out; the client is still usable.
            reply = conn.expect(Publish)
            assert reply.topic == "reply/t"
            conn.send(PubAck(reply.packet_id))
            assert client.publish("after/t", b"y").wait(TIMEOUT)
        finally:
            client.close(force=True).wait(TIMEOUT)
    assert len(errors) == 2
    assert all("dispatch='inline' must not wait on a client" in str(e) for e in errors)


def test_qos1_is_acknowledged_after_the_inline_listener_returns() -> None:
    with FakeBroker() as broker:
        client = mqttkit.Client(url=broker.url, dispatch="inline", reconnect_period=0)
        order: list[str] = []
        received = threading.Event()

        def on_message(topic: str, payload: bytes) -> None:
            order.append("listener")
            received.set()

        client.on("message", on_message)
        client.connect()
        try:
            conn = broker.accept()
            conn.handshake()
            conn.send(Publish("in/t", b"x", 1, packet_id=9))
            ack = conn.expect(PubAck)
            order.append("puback")
            assert ack.packet_id == 9
            assert received.is_set()
        finally:
            client.close(force=True).wait(TIMEOUT)
    assert order == ["listener", "puback"]


def test_dispatch_option_is_checked() -> None:
    with pytest.raises(mqttkit.InvalidOptionError, match="dispatch must be"):
        mqttkit.Client(url="mqtt://127.0.0.1", dispatch="sometimes")
    assert mqttkit.Client(url="mqtt://127.0.0.1").options.dispatch == "thread"
