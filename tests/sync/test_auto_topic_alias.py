"""``auto_topic_alias`` with the blocking client (keyword, and the seed / MQTT.js dict name
``autoAssignTopicAlias``) against Mosquitto, seen by a recording proxy and a subscriber."""

from __future__ import annotations

import pytest

import mqttkit
from mqttkit.protocol.packets import Publish
from mqttkit.testing import MosquittoBroker
from tests.support.proxy import FaultProxy
from tests.support.recorder import Recorder


@pytest.mark.parametrize(
    "option",
    [{"auto_topic_alias": True}, {"options": {"autoAssignTopicAlias": True, "protocolVersion": 5}}],
    ids=["keyword", "seed-dict"],
)
def test_repeated_topics_go_by_alias_and_arrive_on_their_topics(
    mosquitto: MosquittoBroker, make_client, option: dict[str, object]
) -> None:
    sub = make_client(url=mosquitto.url, protocol_version=5)
    rec = Recorder(sub, ("connect", "message"))
    rec.wait_for("connect")
    sub.subscribe("sync-alias/#", qos=1).result(5)
    topics = [f"sync-alias/device-{i}/reading" for i in range(3)]
    with FaultProxy(mosquitto.host, mosquitto.port) as proxy:
        kwargs = dict(option)
        if "options" not in kwargs:
            kwargs["protocol_version"] = 5
        pub = make_client(url=proxy.url, **kwargs)
        handles = [pub.publish(topics[i % 3], str(i), qos=i % 3) for i in range(9)]
        for handle in handles:
            handle.result(5)
        got = rec.wait_messages(9, timeout=10)
        wire = [p for p in proxy.connections[0].packets("c2s") if isinstance(p, Publish)]
    assert sorted((m[0], m[1]) for m in got) == sorted(
        (topics[i % 3], str(i).encode()) for i in range(9)
    )
    assert [(p.topic, p.properties.topic_alias) for p in wire] == [
        (topics[0], 1), (topics[1], 2), (topics[2], 3),
    ] + [("", 1), ("", 2), ("", 3)] * 2  # fmt: skip


def test_auto_topic_alias_needs_mqtt_5() -> None:
    with pytest.raises(
        mqttkit.InvalidOptionError, match="auto_topic_alias needs protocol_version=5"
    ):
        mqttkit.Client(url="mqtt://127.0.0.1:1", auto_topic_alias=True)
    with pytest.raises(
        mqttkit.InvalidOptionError, match="auto_topic_alias needs protocol_version=5"
    ):
        mqttkit.Client({"autoAssignTopicAlias": True}, url="mqtt://127.0.0.1:1")
