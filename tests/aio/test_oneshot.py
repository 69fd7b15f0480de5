"""The asyncio one-shot helpers (``mqttkit.aio.publish_single``, ``publish_multiple``,
``subscribe_simple``) against Mosquitto, and against a scripted broker for what Mosquitto
will not do (refuse a filter, hold back an acknowledgement, refuse a reconnect)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mqttkit
from mqttkit.aio import Client, publish_multiple, publish_single, subscribe_simple
from mqttkit.protocol.packets import Disconnect, Publish, SubAck, Subscribe
from mqttkit.testing import MosquittoBroker, free_port
from tests.support.fake_broker import FakeBroker, FakeConnection
from tests.support.proxy import FaultProxy

ROOT = Path(__file__).resolve().parents[2]


def run(coro, timeout: float = 20.0):
    """Run a coroutine on a fresh loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def collect(client: Client, count: int) -> list[Publish]:
    got = []
    async for message in client.messages():
        got.append(message)
        if len(got) == count:
            break
    return got


# -- publishing ---------------------------------------------------------------------------------


def test_publish_single_at_each_qos_arrives(mosquitto: MosquittoBroker) -> None:
    async def main() -> tuple[list[int], list[tuple[str, bytes, int]]]:
        async with Client(mosquitto.url) as sub:
            await sub.subscribe("one/#", qos=2)
            results = [
                await publish_single(mosquitto.url, f"one/{qos}", f"q{qos}", qos=qos)
                for qos in (0, 1, 2)
            ]
            got = await collect(sub, 3)
            return results, sorted((m.topic, m.payload, m.qos) for m in got)

    results, got = run(main())
    assert results == [0, 0, 0]
    assert got == [("one/0", b"q0", 0), ("one/1", b"q1", 1), ("one/2", b"q2", 2)]


def test_publish_multiple_takes_dicts_and_tuples_and_keeps_their_order(
    mosquitto: MosquittoBroker,
) -> None:
    # MQTT orders messages per QoS; Mosquitto holds a QoS 2 message until PUBREL, so the
    # QoS 2 one goes last here to keep the delivery order the publishing order.
    messages = [
        {"topic": "multi/a", "payload": "1", "qos": 1},
        ("multi/b", b"2", 1),
        ("multi/c",),  # paho's shortest form: an empty payload
        {"topic": "multi/d", "payload": None, "qos": 0, "retain": False},
        ["multi/e", bytearray(b"5"), 1, False, None],
        ("multi/f", "6", 2),
    ]

    async def main() -> tuple[list[int], list[tuple[str, bytes]]]:
        async with Client(mosquitto.url) as sub:
            await sub.subscribe("multi/#", qos=2)
            results = await publish_multiple(messages, mosquitto.url)
            got = await collect(sub, 6)
            return results, [(m.topic, m.payload) for m in got]

    results, got = run(main())
    assert results == [0] * 6
    assert got == [
        ("multi/a", b"1"),
        ("multi/b", b"2"),
        ("multi/c", b""),
        ("multi/d", b""),
        ("multi/e", b"5"),
        ("multi/f", b"6"),
    ]


def test_a_refused_message_raises_once_the_others_are_done(
    mosquitto_factory, tmp_path: Path
) -> None:
    # MQTT 5: Mosquitto answers a publish its ACL forbids with PUBACK 0x87.
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite open/#\ntopic read locked/#\n")
    broker = mosquitto_factory(extra_config=f"acl_file {acl}")
    messages = [("open/a", "1", 1), ("locked/x", "2", 1), ("open/b", "3", 1)]

    async def main() -> list[tuple[str, bytes]]:
        async with Client(broker.url) as sub:
            await sub.subscribe("open/#", qos=1)
            with pytest.raises(mqttkit.PublishError) as info:
                await publish_multiple(messages, broker.url, protocol_version=5)
            assert info.value.reason_code == 0x87
            with pytest.raises(mqttkit.PublishError):
                await publish_single(broker.url, "locked/y", "z", qos=1, protocol_version=5)
            return [(m.topic, m.payload) for m in await collect(sub, 2)]

    assert run(main()) == [("open/a", b"1"), ("open/b", b"3")]


def test_a_message_over_the_broker_s_limit_fails_and_the_others_go(mosquitto_factory) -> None:
    # MQTT 5: Mosquitto announces its Maximum Packet Size; a message over it is refused at once
    # (nothing sent), the rest of the list still goes, then the helper raises.
    broker = mosquitto_factory(extra_config="max_packet_size 200")
    messages = [("big/a", "1", 1), ("big/b", "x" * 300, 1), ("big/c", "3", 1)]

    async def main() -> list[tuple[str, bytes]]:
        async with Client(broker.url) as sub:
            await sub.subscribe("big/#", qos=1)
            with pytest.raises(mqttkit.PacketTooLargeError):
                await publish_multiple(messages, broker.url, protocol_version=5)
            return [(m.topic, m.payload) for m in await collect(sub, 2)]

    assert run(main()) == [("big/a", b"1"), ("big/c", b"3")]


def test_a_missing_acknowledgement_times_out_and_closes_the_connection() -> None:
    def hold_back(conn: FakeConnection) -> None:
        conn.handshake()
        conn.expect(Publish)  # no PUBACK
        assert conn.closed(timeout=5)

    with FakeBroker(hold_back) as broker:
        started = time.monotonic()
        with pytest.raises(mqttkit.OperationTimeoutError) as info:
            run(publish_single(broker.url, "t", "x", qos=1, timeout=0.3))
        assert time.monotonic() - started < 3
        assert "waiting for the acknowledgements" in str(info.value)
        assert isinstance(info.value, TimeoutError)
        broker.wait_handlers()


# -- subscribing --------------------------------------------------------------------------------


def test_subscribe_simple_returns_one_message_or_a_list(mosquitto: MosquittoBroker) -> None:
    async def main() -> tuple[Publish | list[Publish], Publish | list[Publish]]:
        await publish_multiple([(f"kept/{i}", f"v{i}", 1, True) for i in range(3)], mosquitto.url)
        many = await subscribe_simple(mosquitto.url, "kept/#", 3, qos=1, timeout=5)
        one = await subscribe_simple(mosquitto.url, {"kept/1": 1}, timeout=5)
        return many, one

    many, one = run(main())
    assert isinstance(many, list)
    assert sorted((m.topic, m.payload, m.retain) for m in many) == [
        ("kept/0", b"v0", True),
        ("kept/1", b"v1", True),
        ("kept/2", b"v2", True),
    ]
    assert isinstance(one, Publish)
    assert (one.topic, one.payload, one.qos, one.retain) == ("kept/1", b"v1", 1, True)


@pytest.mark.parametrize("version", [4, 5])
def test_retained_false_leaves_retained_messages_out(
    mosquitto: MosquittoBroker, version: int
) -> None:
    # A retained message waits on the topic; with retained=False the helper returns the next
    # new one. The subscriber goes through a proxy, so the test publishes once its SUBACK has
    # passed (no guessing), and sees how it subscribed (MQTT 5: Retain Handling 2).
    async def main(proxy: FaultProxy) -> Publish | list[Publish]:
        await publish_single(mosquitto.url, "news/today", "old", qos=1, retain=True)
        waiting = asyncio.ensure_future(
            subscribe_simple(
                proxy.url, "news/#", retained=False, timeout=10, protocol_version=version
            )
        )
        await asyncio.to_thread(proxy.wait_for_packet, "s2c", SubAck)
        await publish_single(mosquitto.url, "news/today", "new", qos=1)
        return await waiting

    with FaultProxy(mosquitto.host, mosquitto.port) as proxy:
        message = run(main(proxy))
        (subscribe,) = [p for p in proxy.connections[0].packets("c2s") if isinstance(p, Subscribe)]
    assert isinstance(message, Publish)
    assert (message.payload, message.retain) == (b"new", False)
    assert subscribe.subscriptions[0].retain_handling == (2 if version == 5 else 0)


def test_subscribe_simple_times_out_with_how_many_came(mosquitto: MosquittoBroker) -> None:
    run(publish_single(mosquitto.url, "few/1", "only one", retain=True))
    started = time.monotonic()
    with pytest.raises(mqttkit.OperationTimeoutError) as info:
        run(subscribe_simple(mosquitto.url, "few/#", 2, timeout=0.3))
    assert 0.3 <= time.monotonic() - started < 3
    assert "1 of 2 message(s) within timeout=0.3 s (waiting for messages" in str(info.value)
    assert isinstance(info.value, TimeoutError)


def test_a_refused_filter_raises_subscribe_error() -> None:
    def refuse_one(conn: FakeConnection) -> None:
        conn.handshake()
        subscribe = conn.expect(Subscribe)
        conn.send(SubAck(subscribe.packet_id, (0, 0x80)))
        assert conn.closed(timeout=5)

    with FakeBroker(refuse_one) as broker:
        with pytest.raises(mqttkit.SubscribeError, match=r"refused the filter\(s\) \['b/#'\]"):
            run(subscribe_simple(broker.url, ["a/#", "b/#"], timeout=5))
        broker.wait_handlers()


def test_a_client_stopped_while_waiting_raises_the_cause() -> None:
    # Connected and subscribed, the connection drops; the reconnect is refused for good: the
    # helper raises that refusal, not a timeout.
    accepted: list[FakeConnection] = []

    def serve(conn: FakeConnection) -> None:
        accepted.append(conn)
        if len(accepted) == 1:
            conn.handshake()
            subscribe = conn.expect(Subscribe)
            conn.send(SubAck(subscribe.packet_id, (0,)))
            conn.abort()
        else:
            conn.handshake(reason_code=5)  # not authorized

    with FakeBroker(serve) as broker:
        with pytest.raises(mqttkit.ConnectRefusedError) as info:
            run(subscribe_simple(broker.url, "t", timeout=10, reconnect_period=0.05))
        assert info.value.reason_code == 5
        broker.wait_handlers()
        assert len(accepted) == 2


def test_the_client_s_stop_error_says_why_it_stopped() -> None:
    # What subscribe_simple raises when its client stops for good: Client.stop_error.
    accepted: list[FakeConnection] = []

    def serve(conn: FakeConnection) -> None:
        accepted.append(conn)
        if len(accepted) == 1:
            conn.handshake()
            conn.abort()
        else:
            conn.handshake(reason_code=5)

    async def main() -> tuple[object, object, list[Publish]]:
        client = Client(broker.url, reconnect_period=0.05)
        await client.connect()
        before = client.stop_error
        got = [message async for message in client.messages()]  # ends when it stops
        after = client.stop_error
        await client.close()
        return before, after, got

    with FakeBroker(serve) as broker:
        before, after, got = run(main())
        broker.wait_handlers()
    assert before is None
    assert got == []
    assert isinstance(after, mqttkit.ConnectRefusedError)
    assert after.reason_code == 5


def test_cancelling_a_helper_closes_its_connection(mosquitto: MosquittoBroker) -> None:
    async def main(proxy: FaultProxy) -> None:
        waiting = asyncio.ensure_future(subscribe_simple(proxy.url, "quiet/#"))
        await asyncio.to_thread(proxy.wait_for_packet, "s2c", SubAck)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    with FaultProxy(mosquitto.host, mosquitto.port) as proxy:
        run(main(proxy))
        assert proxy.connections[0].wait_closed()
        assert type(proxy.connections[0].packets("c2s")[-1]) is Disconnect


# -- failures at once ---------------------------------------------------------------------------


def test_a_refused_login_fails_at_once_without_retrying(mosquitto_auth: MosquittoBroker) -> None:
    url = f"mqtt://alice:wrong@{mosquitto_auth.host}:{mosquitto_auth.port}"
    for call in (
        publish_single(url, "t", "x", timeout=30),
        publish_multiple([("t", "x")], url, timeout=30),
        subscribe_simple(url, "t", timeout=30),
    ):
        started = time.monotonic()
        with pytest.raises(mqttkit.ConnectRefusedError) as info:
            run(call)
        assert time.monotonic() - started < 5
        assert info.value.reason_code == 5  # MQTT 3.1.1: not authorized


def test_one_connection_attempt_only() -> None:
    # Even a refusal that a client would retry ("server unavailable") ends the helper at once.
    with FakeBroker(lambda conn: conn.handshake(reason_code=3)) as broker:
        with pytest.raises(mqttkit.ConnectRefusedError) as info:
            run(publish_single(broker.url, "t", "x"))
        assert info.value.reason_code == 3
        broker.wait_handlers()
        assert len(broker.connections) == 1


def test_a_dead_port_fails_at_once_with_the_cause() -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    for call in (publish_single(url, "t", "x"), subscribe_simple(url, "t", timeout=30)):
        started = time.monotonic()
        with pytest.raises(mqttkit.ServerNotFoundError):
            run(call)
        assert time.monotonic() - started < 5


def test_bad_input_raises_before_connecting() -> None:
    # Nothing listens at this URL: an argument error must come before any connection attempt.
    url = f"mqtt://127.0.0.1:{free_port()}"
    cases = [
        (publish_single(url, "a/#", "x"), mqttkit.InvalidTopicError, "wildcard"),
        (publish_single(url, "t", 12), mqttkit.PayloadTypeError, "payload must be"),
        (publish_single(url, "t", "x", qos=3), mqttkit.InvalidQoSError, "QoS must be"),
        (publish_single(url, "t", "x", timeout=0), mqttkit.InvalidArgumentError, "timeout"),
        (publish_single(url, "t", "x", qos_level=1), mqttkit.UnknownOptionError, "qos_level"),
        (publish_multiple("t", url), mqttkit.InvalidArgumentError, "messages must be a list"),
        (publish_multiple([("t", "x"), ("t", "x", 7)], url), mqttkit.InvalidQoSError, "QoS"),
        (publish_multiple([{"payload": "x"}], url), mqttkit.InvalidArgumentError, "no 'topic'"),
        (publish_multiple([{"topic": "t", "q": 1}], url), mqttkit.InvalidArgumentError, "'q'"),
        (publish_multiple([42], url), mqttkit.InvalidArgumentError, "message 0 must be"),
        (subscribe_simple(url, "a/#/b"), mqttkit.InvalidTopicError, "#"),
        (subscribe_simple(url, "t", 0), mqttkit.InvalidArgumentError, "count must be"),
        (subscribe_simple(url, "t", retained=None), mqttkit.InvalidArgumentError, "retained"),
    ]
    for call, error, text in cases:
        with pytest.raises(error, match=text):
            run(call)


def test_the_example_runs_and_is_the_one_in_the_docs(mosquitto: MosquittoBroker) -> None:
    example = ROOT / "examples" / "asyncio_oneshot.py"
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
    assert f"```python\n{code}```" in (ROOT / "docs" / "asyncio.md").read_text(encoding="utf-8")
