"""Topic routing on the blocking front, against Mosquitto: ``client.on_message(filter, fn)``
(also a decorator and under paho's name) sends each message to every matching route, in the
order added, and only unmatched messages to the ``message`` listeners; ``off_message`` removes
routes; ``mqttkit.topic_matches`` is the matcher."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

import mqttkit
from mqttkit.routing import RouteTable
from mqttkit.testing import MosquittoBroker
from tests.support.recorder import Recorder

Factory = Callable[..., mqttkit.Client]


def test_messages_go_to_every_matching_route_and_the_rest_to_message_listeners(
    mosquitto: MosquittoBroker, make_client: Factory
) -> None:
    client = make_client(url=mosquitto.url)
    got: list[tuple[str, str]] = []
    lock = threading.Lock()

    def record(name: str) -> Callable[..., None]:
        def fn(topic: str, payload: bytes) -> None:
            with lock:
                got.append((name, topic))

        return fn

    client.on_message("sensors/+/temp", record("temp"))

    @client.on_message("sensors/#")
    def every_sensor(topic: str, payload: bytes, packet: mqttkit.Message) -> None:
        assert packet.topic == topic
        with lock:
            got.append(("sensors", topic))

    client.message_callback_add("$share/g/alarms/#", record("alarms"))  # by its inner filter
    rec = Recorder(client, ("connect", "message"))
    rec.wait_for("connect")
    client.subscribe("#", qos=1).result(5)
    for topic in ("sensors/a/temp", "sensors/b/hum", "alarms/x", "other/y"):
        client.publish(topic, "v", qos=1).result(5)
    rec.wait_messages(1)  # other/y: the only unrouted one, last
    with lock:
        assert got == [
            ("temp", "sensors/a/temp"),
            ("sensors", "sensors/a/temp"),
            ("sensors", "sensors/b/hum"),
            ("alarms", "alarms/x"),
        ]
    assert [t for t, _, _ in rec.messages] == ["other/y"]


def test_off_message_removes_routes(mosquitto: MosquittoBroker, make_client: Factory) -> None:
    client = make_client(url=mosquitto.url)
    routed: list[str] = []
    fn = client.on_message("r/#", lambda topic, payload: routed.append(topic))
    rec = Recorder(client, ("connect", "message"))
    rec.wait_for("connect")
    client.subscribe("r/#", qos=1).result(5)
    client.publish("r/1", "x", qos=1).result(5)
    rec.wait_until(lambda: routed == ["r/1"], timeout=5, what="r/1 routed")
    assert client.off_message("r/#", fn) == 1
    assert client.message_callback_remove("r/#") == 0
    client.publish("r/2", "x", qos=1).result(5)
    assert [t for t, _, _ in rec.wait_messages(1)] == ["r/2"]
    assert routed == ["r/1"]


def test_a_raising_route_does_not_stop_the_others_nor_the_ack(
    mosquitto: MosquittoBroker, make_client: Factory
) -> None:
    client = make_client(url=mosquitto.url)
    done = threading.Event()

    def broken(topic: str, payload: bytes) -> None:
        raise RuntimeError("boom")

    client.on_message("t/#", broken)
    client.on_message("t/#", lambda *args: done.set())
    Recorder(client, ("connect",)).wait_for("connect")
    client.subscribe("t/#", qos=1).result(5)
    client.publish("t/1", "x", qos=1).result(5)
    assert done.wait(5)


def test_bad_routes_raise_at_once() -> None:
    client = mqttkit.Client()
    with pytest.raises(mqttkit.InvalidTopicError):
        client.on_message("a/#/b", print)
    with pytest.raises(TypeError):
        client.on_message("a/b", "not callable")  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("+/b", "$SYS/b", False),
        ("$share/g/a/+", "a/x", True),
        ("a/b", "a/b/c", False),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert mqttkit.topic_matches(topic_filter, topic) is expected


def test_topic_matches_refuses_a_bad_filter() -> None:
    with pytest.raises(mqttkit.InvalidTopicError):
        mqttkit.topic_matches("a/#/b", "a/x/b")


def test_the_route_cache_is_bounded_and_sees_changes() -> None:
    table: RouteTable[str] = RouteTable()
    table.add("a/+", "one")
    assert table.targets("a/b") == ("one",)
    table.add("a/#", "two")
    assert table.targets("a/b") == ("one", "two")  # the cache was dropped by add()
    for i in range(5000):
        table.targets(f"a/{i}")
    assert len(table._cache) <= 4096
    assert table.remove("a/+") == 1
    assert table.targets("a/b") == ("two",)
