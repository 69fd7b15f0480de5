"""Delivery guarantees through a real Mosquitto: volume at each QoS, QoS 2 exactly once across
cuts at every step of the flow (both directions), dead-link detection, many threads."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

import mqttkit
from mqttkit.protocol.packets import PacketType
from mqttkit.testing import MosquittoBroker
from tests.support.proxy import FaultProxy
from tests.support.recorder import Recorder

N = 1000


def _subscriber(make_client, url: str, topic: str, qos: int, **kwargs) -> Recorder:
    client = make_client(url=url, **kwargs)
    rec = Recorder(client, ("connect", "message"))
    rec.client = client
    rec.wait_for("connect")
    client.subscribe(topic, qos=qos).result(5)
    return rec


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_thousand_messages_none_lost(mosquitto: MosquittoBroker, make_client, qos: int) -> None:
    rec = _subscriber(make_client, mosquitto.url, "volume/t", qos)
    publisher = make_client(url=mosquitto.url)
    handles = [publisher.publish("volume/t", str(i), qos=qos) for i in range(N)]
    for handle in handles:
        assert handle.result(10) == 0
    got = rec.wait_messages(N, timeout=20)
    payloads = [int(m[1]) for m in got]
    assert payloads == list(range(N))  # all, once, in order


def _wait_quiet_and_count(rec: Recorder, expected: int) -> Counter[bytes]:
    rec.wait_messages(expected, timeout=30)
    return Counter(m[1] for m in rec.messages)


FLOW_STEPS_OUT = [
    ("c2s", PacketType.PUBLISH),
    ("s2c", PacketType.PUBREC),
    ("c2s", PacketType.PUBREL),
    ("s2c", PacketType.PUBCOMP),
]


@pytest.mark.parametrize(("direction", "step"), FLOW_STEPS_OUT, ids=str)
def test_qos2_outgoing_exactly_once_when_cut_after_each_step(
    mosquitto: MosquittoBroker, make_client, direction: str, step: PacketType
) -> None:
    count = 30
    rec = _subscriber(make_client, mosquitto.url, "cut/out", 2)
    with FaultProxy(mosquitto.host, mosquitto.port) as proxy:
        rule = proxy.cut_after(direction, step, count=7)
        publisher = make_client(
            url=proxy.url, client_id="qos2-out", clean=False, reconnect_period=0.05
        )
        pub_rec = Recorder(publisher)
        handles = [publisher.publish("cut/out", f"m{i}", qos=2) for i in range(count)]
        cut = rule.wait(10)
        for handle in handles:
            assert handle.result(20) == 0
        assert pub_rec.count("connect") >= 2, "the cut did not cause a reconnect"
        got = _wait_quiet_and_count(rec, count)
        assert got == Counter(f"m{i}".encode() for i in range(count))
        # Every PUBLISH sent again after the cut carries DUP and its original packet id.
        publishes = proxy.records("c2s", PacketType.PUBLISH)
        first_seen: dict[int, int] = {}
        for record in publishes:
            packet_id = record.packet.packet_id
            if packet_id in first_seen and record.time > cut.time:
                assert record.dup, f"resent PUBLISH {packet_id} without DUP"
            first_seen.setdefault(packet_id, 0)
        if step == PacketType.PUBLISH:
            resent = [r for r in publishes if r.time > cut.time and r.dup]
            assert resent, "the cut PUBLISH was not resent"
            assert cut.packet.packet_id in {r.packet.packet_id for r in resent}


FLOW_STEPS_IN = [
    ("s2c", PacketType.PUBLISH),
    ("c2s", PacketType.PUBREC),
    ("s2c", PacketType.PUBREL),
    ("c2s", PacketType.PUBCOMP),
]


@pytest.mark.parametrize(("direction", "step"), FLOW_STEPS_IN, ids=str)
def test_qos2_incoming_exactly_once_when_cut_after_each_step(
    mosquitto: MosquittoBroker, make_client, direction: str, step: PacketType
) -> None:
    count = 30
    with FaultProxy(mosquitto.host, mosquitto.port) as proxy:
        rec = _subscriber(
            make_client,
            proxy.url,
            "cut/in",
            2,
            client_id="qos2-in",
            clean=False,
            reconnect_period=0.05,
        )
        rule = proxy.cut_after(direction, step, count=7)
        publisher = make_client(url=mosquitto.url)
        for i in range(count):
            publisher.publish("cut/in", f"m{i}", qos=2).result(10)
        rule.wait(10)
        got = _wait_quiet_and_count(rec, count)
        # Let the resent flows settle: the session's in-flight QoS 2 state drains to zero.
        rec.wait_until(lambda: rec.count_locked("connect") >= 2, 10, "the reconnect")
        deadline = time.monotonic() + 10
        client_session = rec.client._engine.session
        while client_session.unacknowledged or client_session._received_qos2:
            assert time.monotonic() < deadline, "QoS 2 flows never completed"
            time.sleep(0.01)
        assert Counter(m[1] for m in rec.messages) == Counter(
            f"m{i}".encode() for i in range(count)
        ), got
        if step == PacketType.PUBLISH:
            dups = [r for r in proxy.records("s2c", PacketType.PUBLISH) if r.dup]
            assert dups, "the broker did not resend with DUP (no redelivery exercised)"


def test_dead_link_noticed_within_one_and_a_half_keepalive(
    mosquitto: MosquittoBroker, make_client
) -> None:
    keepalive = 2
    with FaultProxy(mosquitto.host, mosquitto.port) as proxy:
        client = make_client(url=proxy.url, keepalive=keepalive, reconnect_period=0.05)
        rec = Recorder(client)
        rec.wait_for("connect")
        proxy.blackhole()
        started = time.monotonic()
        error = rec.wait_for("error", timeout=keepalive * 3)[0]
        elapsed = time.monotonic() - started
        assert isinstance(error, mqttkit.KeepaliveTimeoutError)
        assert elapsed <= keepalive * 1.5 + 0.3, f"noticed after {elapsed:.2f} s"
        proxy.restore()
        rec.wait_for("connect", count=2, timeout=10)
        assert client.publish("alive/again", "x", qos=1).result(5) == 0


def test_eight_threads_publishing_on_one_client(mosquitto: MosquittoBroker, make_client) -> None:
    threads, per_thread = 8, 1000
    rec = _subscriber(make_client, mosquitto.url, "threads/#", 1)
    client = make_client(url=mosquitto.url)
    Recorder(client, ("connect",)).wait_for("connect")
    failures: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        try:
            start.wait(5)
            handles = [client.publish(f"threads/{n}", f"{n}:{i}", qos=1) for i in range(per_thread)]
            for handle in handles:
                handle.result(30)
        except BaseException as exc:  # reported below
            failures.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert not failures, failures
    got = rec.wait_messages(threads * per_thread, timeout=30)
    counts = Counter(m[1] for m in got)
    assert len(counts) == threads * per_thread
    assert set(counts.values()) == {1}
    # Per thread, messages arrive in the order that thread published them.
    for n in range(threads):
        mine = [int(m[1].split(b":")[1]) for m in got if m[0] == f"threads/{n}"]
        assert mine == list(range(per_thread))
