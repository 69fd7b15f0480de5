"""Shared subscriptions (MQTT 5 ``$share/<group>/<filter>``, section 4.8.2) spread one topic's
messages across consumers: against Mosquitto, three consumers of one group see each message
exactly once in total, and each gets a share; a consumer that leaves hands its share to the
others."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

import mqttkit
from mqttkit.protocol.packets import MQTT_3_1_1, MQTT_5
from mqttkit.testing import MosquittoBroker
from tests.support.recorder import Recorder

Factory = Callable[..., mqttkit.Client]


def consumers(
    make_client: Factory, url: str, count: int, level: int
) -> list[tuple[mqttkit.Client, Recorder]]:
    made = []
    for i in range(count):
        client = make_client(url=url, client_id=f"worker-{i}", protocol_version=level)
        rec = Recorder(client, ("connect", "message"))
        rec.wait_for("connect")
        assert [g.qos for g in client.subscribe("$share/workers/jobs/#", qos=1).result(5)] == [1]
        made.append((client, rec))
    return made


@pytest.mark.parametrize("level", [MQTT_5, MQTT_3_1_1], ids=["mqtt5", "mqtt311"])
def test_three_consumers_see_each_message_once_in_total(
    mosquitto: MosquittoBroker, make_client: Factory, level: int
) -> None:
    workers = consumers(make_client, mosquitto.url, 3, level)
    publisher = make_client(url=mosquitto.url)
    handles = [publisher.publish(f"jobs/{i % 7}", str(i), qos=1) for i in range(300)]
    for handle in handles:
        handle.result(10)
    recorders = [rec for _, rec in workers]
    # Wait (bounded) until 300 arrived in total: all 300, each once, none twice.
    recorders[0].wait_until(
        lambda: sum(len(r.messages) for r in recorders) >= 300, timeout=15, what="300 in total"
    )
    seen = Counter(int(payload) for r in recorders for _, payload, _ in r.messages)
    assert sorted(seen) == list(range(300))
    assert set(seen.values()) == {1}  # each once, in total
    assert all(len(r.messages) > 0 for r in recorders)  # the load was spread


def test_a_consumer_that_leaves_hands_its_share_to_the_others(
    mosquitto: MosquittoBroker, make_client: Factory
) -> None:
    workers = consumers(make_client, mosquitto.url, 3, MQTT_5)
    leaving, _ = workers.pop()
    assert leaving.close().wait(5)
    publisher = make_client(url=mosquitto.url)
    for i in range(60):
        publisher.publish("jobs/x", str(i), qos=1).result(5)
    recorders = [rec for _, rec in workers]
    recorders[0].wait_until(
        lambda: sum(len(r.messages) for r in recorders) >= 60, timeout=15, what="60 in total"
    )
    seen = Counter(int(payload) for r in recorders for _, payload, _ in r.messages)
    assert sorted(seen) == list(range(60))
    assert set(seen.values()) == {1}
