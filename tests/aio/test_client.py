"""The asyncio client: connect/close, publish at each QoS, subscribe, the message iterator,
connection failures, TLS and Unix socket transports."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time

import pytest

import mqttkit
from mqttkit.aio import Client
from mqttkit.aio.engine import WRITE_DELAY
from mqttkit.protocol.packets import Disconnect, PubAck, Publish
from mqttkit.testing import MosquittoBroker
from tests.support.fake_broker import FakeBroker, FakeConnection


def run(coro, timeout: float = 20.0):
    """Run a coroutine on a fresh loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_round_trip_each_qos(mosquitto: MosquittoBroker) -> None:
    async def main() -> list[tuple[str, bytes, int]]:
        async with Client(mosquitto.url) as client:
            granted = await client.subscribe({"aio/0": 0, "aio/1": 1, "aio/2": 2})
            assert [(g.topic, g.qos) for g in granted] == [("aio/0", 0), ("aio/1", 1), ("aio/2", 2)]
            for qos in (0, 1, 2):
                assert await client.publish(f"aio/{qos}", f"q{qos}", qos=qos) == 0
            got = []
            async for message in client.messages():
                got.append((message.topic, message.payload, message.qos))
                if len(got) == 3:
                    break
            return got

    assert run(main()) == [("aio/0", b"q0", 0), ("aio/1", b"q1", 1), ("aio/2", b"q2", 2)]


def test_mqtt5_properties_round_trip(mosquitto: MosquittoBroker) -> None:
    async def main() -> Publish:
        async with Client(mosquitto.url, protocol_version=5) as client:
            await client.subscribe("v5/t", qos=1)
            props = mqttkit.Properties(
                content_type="text/plain", user_property=(("k", "v"),), message_expiry_interval=60
            )
            await client.publish("v5/t", "hi", qos=1, properties=props)
            async for message in client.messages():
                return message
        raise AssertionError("no message")

    message = run(main())
    assert message.payload == b"hi"
    assert message.properties.content_type == "text/plain"
    assert message.properties.user_property == (("k", "v"),)
    assert 0 < (message.properties.message_expiry_interval or 0) <= 60


def _serve_one(broker: FakeBroker) -> tuple[threading.Thread, list[FakeConnection]]:
    """Accept one connection and answer its CONNECT, on a thread (the loop must not block)."""
    accepted: list[FakeConnection] = []

    def serve() -> None:
        conn = broker.accept()
        conn.handshake()
        accepted.append(conn)

    thread = threading.Thread(target=serve)
    thread.start()
    return thread, accepted


def test_publish_resolves_only_after_puback() -> None:
    with FakeBroker() as broker:
        server, accepted = _serve_one(broker)

        async def main() -> None:
            async with Client(broker.url, reconnect_period=0) as client:
                await asyncio.to_thread(server.join, 5)
                conn = accepted[0]
                task = asyncio.ensure_future(client.publish("t", "x", qos=1))
                packet = await asyncio.to_thread(conn.expect, Publish)
                await asyncio.to_thread(conn.expect_silence, 0.2)
                assert not task.done()
                await asyncio.to_thread(conn.send, PubAck(packet.packet_id))
                assert await task == 0

        run(main())


def test_qos0_written_at_once_returns_a_done_future_else_one_that_waits() -> None:
    with FakeBroker() as broker:
        server, accepted = _serve_one(broker)

        async def main() -> None:
            async with Client(broker.url, reconnect_period=0.2) as client:
                await asyncio.to_thread(server.join, 5)
                conn = accepted[0]
                sent = client.publish("t", "now", qos=0)
                assert sent.done()
                assert sent.result() == 0
                assert (await asyncio.to_thread(conn.expect, Publish)).payload == b"now"
                # Connection gone: the message waits for the next one, and so does its future.
                await asyncio.to_thread(conn.close)
                for _ in range(100):
                    if not client.connected:
                        break
                    await asyncio.sleep(0.01)
                assert not client.connected
                queued = client.publish("t", "later", qos=0)
                assert not queued.done()
                second = await asyncio.to_thread(broker.accept)
                await asyncio.to_thread(second.handshake)
                assert (await asyncio.to_thread(second.expect, Publish)).payload == b"later"
                assert await asyncio.wait_for(queued, 5) == 0

        run(main())


def test_incoming_qos1_acknowledged_after_loop_body() -> None:
    with FakeBroker() as broker:
        server, accepted = _serve_one(broker)

        async def main() -> None:
            async with Client(broker.url, reconnect_period=0) as client:
                await asyncio.to_thread(server.join, 5)
                conn = accepted[0]
                await asyncio.to_thread(conn.send, Publish("in/t", b"1", qos=1, packet_id=5))
                await asyncio.to_thread(conn.send, Publish("in/t", b"2", qos=1, packet_id=6))
                seen = []
                async for message in client.messages():
                    seen.append(message.packet_id)
                    if message.packet_id == 5:
                        # Inside the loop body for message 5: nothing acknowledged yet.
                        await asyncio.to_thread(conn.expect_silence, 0.3)
                    else:
                        ack = await asyncio.to_thread(conn.expect, PubAck)
                        assert ack.packet_id == 5
                        break
                # Leaving the loop acknowledges the last message.
                ack = await asyncio.to_thread(conn.expect, PubAck)
                assert ack.packet_id == 6
                assert seen == [5, 6]

        run(main())


def test_close_waits_for_outstanding_acks_then_disconnects() -> None:
    with FakeBroker() as broker:
        server, accepted = _serve_one(broker)

        async def main() -> None:
            client = Client(broker.url, reconnect_period=0)
            await client.connect()
            await asyncio.to_thread(server.join, 5)
            conn = accepted[0]
            publish = asyncio.ensure_future(client.publish("t", "x", qos=1))
            packet = await asyncio.to_thread(conn.expect, Publish)
            closing = asyncio.ensure_future(client.close())
            await asyncio.to_thread(conn.expect_silence, 0.3)  # no DISCONNECT before the ack
            assert not closing.done()
            await asyncio.to_thread(conn.send, PubAck(packet.packet_id))
            await asyncio.to_thread(conn.expect, Disconnect)
            await closing
            assert await publish == 0

        run(main())


def test_first_connect_failures_raise(mosquitto_auth: MosquittoBroker) -> None:
    async def refused() -> None:
        await Client(mosquitto_auth.url, username="alice", password="nope").connect()

    with pytest.raises(mqttkit.ConnectionRefusedError) as info:
        run(refused())
    assert info.value.reason_code in (4, 5)

    async def nothing_there() -> None:
        with FakeBroker() as broker:
            port = broker.port
        await Client(f"mqtt://127.0.0.1:{port}").connect()

    with pytest.raises(mqttkit.ServerNotFoundError):
        run(nothing_there())

    async def no_such_host() -> None:
        await Client("mqtt://no-such-host.invalid").connect()

    with pytest.raises(mqttkit.HostNotFoundError):
        run(no_such_host())


def test_operations_before_connect_raise() -> None:
    async def main() -> None:
        client = Client("mqtt://127.0.0.1:1")
        with pytest.raises(mqttkit.ClientClosedError, match="connect"):
            await client.publish("t", "x")

    run(main())


def test_tls_verified_with_ca(mosquitto_factory, tls_files) -> None:
    _, files, _ = tls_files
    broker = mosquitto_factory(tls=files)

    async def main() -> None:
        async with Client(broker.tls_url, cafile=str(files.cafile)) as client:
            await client.subscribe("tls/t")
            await client.publish("tls/t", "secret", qos=1)
            async for message in client.messages():
                assert message.payload == b"secret"
                break

    run(main())


def test_tls_rejects_unknown_ca_and_wrong_host(mosquitto_factory, tls_files) -> None:
    _, files, _ = tls_files
    broker = mosquitto_factory(tls=files)

    async def unknown_ca() -> None:
        await Client(broker.tls_url).connect()  # system CAs do not know our test CA

    with pytest.raises(mqttkit.TLSError, match="certificate"):
        run(unknown_ca())

    async def wrong_host() -> None:
        await Client(
            broker.tls_url, cafile=str(files.cafile), server_hostname="not-the-broker.test"
        ).connect()

    with pytest.raises(mqttkit.TLSError, match=r"not-the-broker\.test|hostname"):
        run(wrong_host())

    async def insecure() -> None:
        async with Client(broker.tls_url, insecure=True) as client:
            assert client.connected

    run(insecure())


def test_tls_with_ssl_context(mosquitto_factory, tls_files) -> None:
    ca, files, _ = tls_files
    broker = mosquitto_factory(tls=files)
    context = ssl.create_default_context()
    ca.configure_trust(context)

    async def main() -> None:
        async with Client(broker.tls_url, ssl_context=context) as client:
            assert client.connected

    run(main())


def test_unix_socket_transport(mosquitto_factory) -> None:
    broker = mosquitto_factory(unix_socket=True)

    async def main() -> bytes:
        async with Client(f"unix://{broker.unix_path}") as client:
            await client.subscribe("unix/t")
            await client.publish("unix/t", "over a unix socket")
            async for message in client.messages():
                return message.payload
        raise AssertionError("no message")

    assert run(main()) == b"over a unix socket"


def test_reconnects_in_background_after_first_connect(mosquitto: MosquittoBroker) -> None:
    async def main() -> bytes:
        async with Client(mosquitto.url, reconnect_period=0.05, client_id="aio-re") as client:
            await client.subscribe("re/t", qos=1)
            await asyncio.to_thread(mosquitto.restart)
            # Published while the client may still be reconnecting: queued, then sent.
            await client.publish("re/t", "after restart", qos=1)
            async for message in client.messages():
                return message.payload
        raise AssertionError("no message")

    assert run(main()) == b"after restart"


def test_flush_waits_for_every_outstanding_flow() -> None:
    with FakeBroker() as broker:
        server, accepted = _serve_one(broker)

        async def main() -> None:
            async with Client(broker.url, reconnect_period=0) as client:
                await asyncio.to_thread(server.join, 5)
                conn = accepted[0]
                await client.flush()  # nothing outstanding: returns at once
                futures = [client.publish("t", str(i), qos=1) for i in range(3)]
                packets = [await asyncio.to_thread(conn.expect, Publish) for _ in range(3)]
                flushing = asyncio.ensure_future(client.flush())
                for packet in packets[:2]:
                    await asyncio.to_thread(conn.send, PubAck(packet.packet_id))
                await asyncio.to_thread(conn.expect_silence, 0.2)
                assert not flushing.done()  # one acknowledgement still missing
                await asyncio.to_thread(conn.send, PubAck(packets[2].packet_id))
                await asyncio.wait_for(flushing, 5)
                assert all(f.done() for f in futures)

        run(main())


def test_a_burst_that_does_not_yield_streams_out_while_it_runs() -> None:
    # A publishing loop that never awaits: once a whole batch (256 KB) is encoded it is written
    # at once, so the broker is receiving while the loop is still running. Checked by reading
    # from the broker while the event loop is still blocked in the loop: with writes deferred
    # to the next loop iteration, nothing would have been sent yet.
    with FakeBroker() as broker:
        server, accepted = _serve_one(broker)

        async def main() -> None:
            async with Client(broker.url, reconnect_period=0) as client:
                await asyncio.to_thread(server.join, 5)
                conn = accepted[0]
                payload = b"p" * 1000
                for _i in range(300):  # about 300 KB: one whole batch and a bit
                    client.publish("burst/t", payload)
                first = conn.expect(Publish, timeout=5)  # blocks the loop: no write can follow
                assert first.topic == "burst/t"
                assert first.payload == payload
                await client.flush()
                for _ in range(299):
                    await asyncio.to_thread(conn.expect, Publish)

        run(main())


def test_a_slow_burst_that_does_not_yield_streams_out_after_write_delay() -> None:
    # Small messages published by a loop that never awaits but takes its time (here, sleeping
    # between messages; in practice, many clients publishing in turn, or work between
    # publishes): the output is written once the oldest of it has waited WRITE_DELAY, not
    # only when 256 KB are ready or the loop yields. Checked, as above, by reading from the
    # broker while the event loop is still blocked.
    with FakeBroker() as broker:
        server, accepted = _serve_one(broker)

        async def main() -> None:
            async with Client(broker.url, reconnect_period=0) as client:
                await asyncio.to_thread(server.join, 5)
                conn = accepted[0]
                client.publish("slow/t", b"first")
                time.sleep(WRITE_DELAY * 3)  # blocks the loop: only a write-through can send
                client.publish("slow/t", b"second")
                first = conn.expect(Publish, timeout=5)  # the loop is still blocked here
                assert first.payload == b"first"
                await client.flush()
                assert (await asyncio.to_thread(conn.expect, Publish)).payload == b"second"

        run(main())


async def restart_and_reconnect(broker: MosquittoBroker, client: Client) -> None:
    """Restart ``broker`` (no persistence: the session is lost) and wait, bounded, until
    ``client`` has connected again."""
    await asyncio.to_thread(broker.restart)
    for _ in range(200):  # bounded: 10 s
        if client.connected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the client did not reconnect within 10 s")


def test_subscription_identifier_survives_a_broker_that_lost_the_session(
    mosquitto_factory,
) -> None:
    # MQTT 5 against a Mosquitto restarted without persistence: the client subscribes again
    # with the Subscription Identifier it used, so messages still carry it.
    broker = mosquitto_factory()

    async def main() -> None:
        async with Client(broker.url, protocol_version=5, reconnect_period=0.05) as client:
            sid = mqttkit.Properties(subscription_identifier=(7,))
            await client.subscribe("sid/t", qos=1, properties=sid)
            messages = client.messages()
            await client.publish("sid/t", b"before", qos=1)
            first = await asyncio.wait_for(anext(messages), 5)
            assert first.properties.subscription_identifier == (7,)
            await restart_and_reconnect(broker, client)
            await client.publish("sid/t", b"after", qos=1)
            second = await asyncio.wait_for(anext(messages), 5)
            assert second.payload == b"after"
            assert second.properties.subscription_identifier == (7,)
            await messages.aclose()

    run(main())


def test_topic_alias_publishing_survives_a_reconnect(mosquitto_factory) -> None:
    # MQTT 5 against Mosquitto: messages by Topic Alias arrive under their topic, also after
    # the broker restarted (a new connection, where the alias must be set again first).
    broker = mosquitto_factory()

    async def main() -> None:
        async with Client(broker.url, protocol_version=5, reconnect_period=0.05) as client:
            alias = mqttkit.Properties(topic_alias=1)
            await client.subscribe("alias/t", qos=1)
            messages = client.messages()
            await client.publish("alias/t", b"1", qos=1, properties=alias)
            await client.publish("", b"2", qos=1, properties=alias)
            got = [await asyncio.wait_for(anext(messages), 5) for _ in range(2)]
            assert [(m.topic, m.payload) for m in got] == [("alias/t", b"1"), ("alias/t", b"2")]
            await restart_and_reconnect(broker, client)
            await client.publish("", b"3", qos=1, properties=alias)
            third = await asyncio.wait_for(anext(messages), 5)
            assert (third.topic, third.payload) == ("alias/t", b"3")
            await messages.aclose()

    run(main())


# -- several tasks iterating messages() at once ------------------------------------------------


async def _take_turns(
    client: Client,
    got: list[bytes],
    seen: list[bytes],
    n: int,
    all_in: asyncio.Event,
    got_ten: asyncio.Event | None = None,
) -> list[bytes]:
    """One of several loops over ``client.messages()``: records each payload in its own
    ``got`` and in the shared ``seen`` (taking a message and recording it happen in one step,
    so ``seen`` is in the order the loops took them), then yields so the loops take turns.
    Sets ``all_in`` once ``seen`` has ``n`` messages, ``got_ten`` once ``got`` has 10."""
    async for message in client.messages():
        got.append(message.payload)
        seen.append(message.payload)
        if len(seen) == n:
            all_in.set()
        if got_ten is not None and len(got) == 10:
            got_ten.set()
        await asyncio.sleep(0)
    return got


async def _wait_all_acknowledged(client: Client) -> None:
    """Wait, bounded (5 s), until the session holds no unacknowledged incoming message."""
    assert client._engine is not None
    session = client._engine.session
    for _ in range(500):
        if session.unacknowledged == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{session.unacknowledged} messages still unacknowledged after 5 s")


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("loops", [2, 3])
def test_several_loops_share_the_messages(mosquitto: MosquittoBroker, loops: int, qos: int) -> None:
    n = 300

    async def main() -> tuple[list[list[bytes]], list[bytes]]:
        client = Client(mosquitto.url)
        await client.connect()
        try:
            per_loop: list[list[bytes]] = [[] for _ in range(loops)]
            seen: list[bytes] = []
            all_in = asyncio.Event()
            tasks = [
                asyncio.create_task(_take_turns(client, got, seen, n, all_in)) for got in per_loop
            ]
            await client.subscribe("multi/t", qos=qos)  # a round trip: every loop waits by now
            for i in range(n):
                client.publish("multi/t", str(i), qos=qos)
            await client.flush()
            await asyncio.wait_for(all_in.wait(), 10)
            if qos:
                await _wait_all_acknowledged(client)
            await client.close()
            await asyncio.wait_for(asyncio.gather(*tasks), 5)  # closing ends every loop
            return per_loop, seen
        finally:
            await client.close(force=True)

    per_loop, seen = run(main())
    expected = [str(i).encode() for i in range(n)]
    assert seen == expected  # each message exactly once, taken in arrival order
    assert sorted(m for got in per_loop for m in got) == sorted(expected)
    assert all(per_loop)  # waiting loops are woken in turn: every loop had some


def test_closing_ends_every_waiting_loop(mosquitto: MosquittoBroker) -> None:
    async def collect(client: Client) -> list[bytes]:
        return [message.payload async for message in client.messages()]

    async def main() -> list[list[bytes]]:
        client = Client(mosquitto.url)
        await client.connect()
        try:
            tasks = [asyncio.create_task(collect(client)) for _ in range(3)]
            await client.subscribe("multi/none")  # a round trip: every loop waits by now
            assert client._inbox.waiters is not None
            assert len(client._inbox.waiters) == 3
            await client.close()
            return await asyncio.wait_for(asyncio.gather(*tasks), 5)
        finally:
            await client.close(force=True)

    assert run(main()) == [[], [], []]


@pytest.mark.parametrize("qos", [0, 1])
def test_cancelling_one_loop_loses_nothing(mosquitto: MosquittoBroker, qos: int) -> None:
    # At QoS 1 this also checks that the cancelled loop's last message is acknowledged: the
    # session sends acknowledgements in arrival order, so a lost one would hold back all
    # those after it and Mosquitto (20 in flight) would stop sending.
    n = 300

    async def main() -> tuple[list[list[bytes]], list[bytes]]:
        client = Client(mosquitto.url)
        await client.connect()
        try:
            per_loop: list[list[bytes]] = [[] for _ in range(3)]
            seen: list[bytes] = []
            all_in = asyncio.Event()
            got_ten = asyncio.Event()  # loop 0, the one cancelled, has had 10 messages
            tasks = [
                asyncio.create_task(
                    _take_turns(client, got, seen, n, all_in, None if i else got_ten)
                )
                for i, got in enumerate(per_loop)
            ]
            await client.subscribe("multi/cancel", qos=qos)
            for i in range(n):
                client.publish("multi/cancel", str(i), qos=qos)
            await asyncio.wait_for(got_ten.wait(), 10)
            tasks[0].cancel()
            await client.flush()
            await asyncio.wait_for(all_in.wait(), 10)
            if qos:
                await _wait_all_acknowledged(client)
            await client.close()
            with pytest.raises(asyncio.CancelledError):
                await tasks[0]
            await asyncio.wait_for(asyncio.gather(*tasks[1:]), 5)
            return per_loop, seen
        finally:
            await client.close(force=True)

    per_loop, seen = run(main())
    expected = [str(i).encode() for i in range(n)]
    assert seen == expected  # nothing lost, nothing twice
    assert 10 <= len(per_loop[0]) < n
    assert per_loop[1]
    assert per_loop[2]


def test_a_loop_cancelled_once_woken_passes_its_message_on(mosquitto: MosquittoBroker) -> None:
    # The race the cancel test above may or may not hit, made deterministic: a message wakes
    # the first waiting loop, which is cancelled before it runs; the next loop gets it.
    async def main() -> None:
        async with Client(mosquitto.url) as client:
            first = asyncio.create_task(anext(client.messages()))
            second = asyncio.create_task(anext(client.messages()))
            await client.subscribe("multi/woken")  # a round trip: both loops wait by now
            assert client._inbox.waiters is not None
            assert len(client._inbox.waiters) == 2
            client._inbox.message(Publish("multi/woken", b"one"), None)  # wakes `first`...
            first.cancel()  # ...cancelled before it runs
            assert (await asyncio.wait_for(second, 5)).payload == b"one"
            with pytest.raises(asyncio.CancelledError):
                await first
            assert client._inbox.messages is not None
            assert not client._inbox.messages

    run(main())


def test_acknowledgements_keep_arrival_order_across_loops() -> None:
    # Two loops: the first holds message 5 in its body while the second finishes message 6
    # and asks for the next. PUBACK 6 waits for PUBACK 5, then both go, in arrival order.
    with FakeBroker() as broker:
        server, accepted = _serve_one(broker)

        async def main() -> None:
            async with Client(broker.url, reconnect_period=0) as client:
                await asyncio.to_thread(server.join, 5)
                conn = accepted[0]
                release = asyncio.Event()
                took = {"slow": asyncio.Event(), "quick": asyncio.Event()}
                got: dict[str, list[int | None]] = {"slow": [], "quick": []}

                async def loop(name: str) -> None:
                    async for message in client.messages():
                        got[name].append(message.packet_id)
                        took[name].set()
                        if name == "slow":
                            await release.wait()

                slow = asyncio.create_task(loop("slow"))  # waits first, so is woken first
                quick = asyncio.create_task(loop("quick"))
                await asyncio.to_thread(conn.send, Publish("in/t", b"5", qos=1, packet_id=5))
                await asyncio.to_thread(conn.send, Publish("in/t", b"6", qos=1, packet_id=6))
                await asyncio.wait_for(took["slow"].wait(), 5)
                await asyncio.wait_for(took["quick"].wait(), 5)
                # `quick` has asked for its next message (same step as took.set()): 6 is
                # acknowledged by the application but waits for 5.
                assert got == {"slow": [5], "quick": [6]}
                assert client._engine is not None
                assert client._engine.session.unacknowledged == 2
                await asyncio.to_thread(conn.expect_silence, 0.3)
                release.set()
                assert (await asyncio.to_thread(conn.expect, PubAck)).packet_id == 5
                assert (await asyncio.to_thread(conn.expect, PubAck)).packet_id == 6
                await client.close()
                await asyncio.wait_for(asyncio.gather(slow, quick), 5)

        run(main())


def test_qos1_taken_by_several_loops_is_acknowledged_to_the_broker(
    mosquitto: MosquittoBroker,
) -> None:
    # Every message three loops took is acknowledged: reconnecting to the kept session, the
    # broker resends none of them (it would send them before anything published afterwards).
    n = 200

    async def main() -> bytes:
        options = {"client_id": "multi-ack", "clean": False}
        client = Client(mosquitto.url, **options)
        await client.connect()
        try:
            per_loop: list[list[bytes]] = [[] for _ in range(3)]
            seen: list[bytes] = []
            all_in = asyncio.Event()
            tasks = [
                asyncio.create_task(_take_turns(client, got, seen, n, all_in)) for got in per_loop
            ]
            await client.subscribe("multi/ack", qos=1)
            for i in range(n):
                client.publish("multi/ack", str(i), qos=1)
            await client.flush()
            await asyncio.wait_for(all_in.wait(), 10)
            await _wait_all_acknowledged(client)
            await client.close()
            await asyncio.wait_for(asyncio.gather(*tasks), 5)
        finally:
            await client.close(force=True)
        assert sorted(seen, key=int) == [str(i).encode() for i in range(n)]
        # Mosquitto must have read the whole first connection (PUBACKs, then DISCONNECT)
        # before the second one takes the session over: a takeover drops unread bytes.
        for _ in range(500):  # bounded: 5 s
            if "Client multi-ack disconnected" in mosquitto.log_text():
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("Mosquitto did not log the first connection's DISCONNECT")
        async with Client(mosquitto.url, **options) as again:
            await again.publish("multi/ack", "marker", qos=1)
            messages = again.messages()
            first = await asyncio.wait_for(anext(messages), 5)
            await messages.aclose()
            return first.payload

    assert run(main()) == b"marker"
