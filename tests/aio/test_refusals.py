"""Permanent refusals with the asyncio client, against real servers: Mosquitto refusing a
password, NATS's MQTT gateway refusing MQTT 5, Mosquitto with a certificate no system trusts.

What the user is promised: ``await client.connect()`` raises the refusal at once; a publish made
while it was connecting fails with that cause, and so does one made after it (raised, or a
future already failed); with ``protocol_fallback=True`` MQTT 5 falls back to 3.1.1."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import trustme

import mqttkit
from mqttkit.aio import Client
from mqttkit.testing import MosquittoBroker, NatsServer, TLSFiles


def run(coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def unique(name: str) -> str:
    """A client id / topic level of this test's own (the NATS server is shared)."""
    return f"refusals-aio-{name}-{uuid.uuid4().hex[:8]}"


async def refused_connect(
    client: Client, error_type: type[BaseException]
) -> tuple[BaseException, asyncio.Future[int]]:
    """Start ``connect()``, publish (QoS 1) while it connects, and check that ``connect()``
    raises ``error_type`` within 1 s; return the error and the publish's future."""
    started = time.monotonic()
    connecting = asyncio.create_task(client.connect())
    await asyncio.sleep(0)  # one loop turn: connect() has started the engine (no wait on time)
    assert not connecting.done()
    before = client.publish("refused/t", "before", qos=1)
    with pytest.raises(error_type) as excinfo:
        await asyncio.wait_for(connecting, 5)
    assert time.monotonic() - started < 1.0
    return excinfo.value, before


async def assert_failed_with(future: asyncio.Future[int], error: BaseException) -> None:
    """``future`` fails with ``error``'s type and text, at once."""
    with pytest.raises(type(error)) as excinfo:
        await asyncio.wait_for(future, 1.0)
    assert str(excinfo.value) == str(error)


async def assert_publish_fails_at_once(client: Client, error: BaseException) -> None:
    """A publish made after the refusal raises it, or returns a future already failed with it."""
    called = time.monotonic()
    raised: BaseException | None = None
    future: asyncio.Future[int] | None = None
    try:
        future = client.publish("refused/t", "after", qos=1)
    except mqttkit.MQTTError as exc:
        raised = exc
    if future is not None:
        assert future.done(), "the publish after a permanent refusal did not fail at once"
        await assert_failed_with(future, error)
    else:
        assert type(raised) is type(error), repr(raised)
        assert str(raised) == str(error)
    assert time.monotonic() - called < 1.0


def test_wrong_password_connect_raises_at_once_and_publishes_fail_with_it(
    mosquitto_auth: MosquittoBroker,
) -> None:
    url = f"mqtt://alice:wrong@{mosquitto_auth.host}:{mosquitto_auth.port}"

    async def main() -> None:
        client = Client(url, reconnect_period=0.05)
        try:
            error, before = await refused_connect(client, mqttkit.ConnectionRefusedError)
            assert isinstance(error, mqttkit.ConnectionRefusedError)
            assert error.reason_code in (4, 5)
            assert error.permanent
            assert "wrong" not in str(error)
            await assert_failed_with(before, error)
            await assert_publish_fails_at_once(client, error)
        finally:
            await client.close(force=True)

    run(main())


def test_connect_alone_raises_the_refusal_at_once(mosquitto_auth: MosquittoBroker) -> None:
    url = f"mqtt://alice:wrong@{mosquitto_auth.host}:{mosquitto_auth.port}"

    async def main() -> None:
        client = Client(url)
        started = time.monotonic()
        with pytest.raises(mqttkit.ConnectionRefusedError):
            await client.connect()
        assert time.monotonic() - started < 1.0

    run(main())


def test_nats_refuses_mqtt5_and_publishes_fail_with_it(nats_server: NatsServer) -> None:
    async def main() -> None:
        client = Client(
            nats_server.url, client_id=unique("v5"), protocol_version=5, reconnect_period=0.05
        )
        try:
            error, before = await refused_connect(client, mqttkit.ConnectionRefusedError)
            assert isinstance(error, mqttkit.ConnectionRefusedError)
            assert error.permanent
            assert error.unsupported_version
            assert "MQTT 5" in str(error), str(error)
            await assert_failed_with(before, error)
            await assert_publish_fails_at_once(client, error)
        finally:
            await client.close(force=True)

    run(main())


def test_nats_mqtt5_with_protocol_fallback_connects_at_311(nats_server: NatsServer) -> None:
    prefix = unique("fallback")

    async def main() -> None:
        async with Client(
            nats_server.url,
            client_id=unique("fallback"),
            protocol_version=5,
            protocol_fallback=True,
        ) as client:
            assert client.connected
            assert client.protocol_version == 4
            await client.subscribe(f"{prefix}/#", qos=1)
            assert await client.publish(f"{prefix}/t", "round trip", qos=1) == 0
            async for message in client.messages():
                assert (message.topic, message.payload) == (f"{prefix}/t", b"round trip")
                break

    run(main())


def test_untrusted_certificate_fails_connect_and_publishes(
    mosquitto_factory: Callable[..., MosquittoBroker],
    tls_files: tuple[trustme.CA, TLSFiles, Path],
) -> None:
    _, files, _ = tls_files
    broker = mosquitto_factory(tls=files)

    async def main() -> None:
        client = Client(broker.tls_url, reconnect_period=0.05)  # the system's trust only
        try:
            error, before = await refused_connect(client, mqttkit.CertificateVerifyError)
            assert isinstance(error, mqttkit.CertificateVerifyError)
            assert error.permanent
            await assert_failed_with(before, error)
            await assert_publish_fails_at_once(client, error)
        finally:
            await client.close(force=True)

    run(main())


def test_async_with_exit_during_an_outage_sends_what_was_queued(mosquitto_factory) -> None:
    # The graceful close at the end of `async with`, while the client is between connections:
    # it waits (within close_timeout) for the connection, sends, and waits for the PUBACKs.
    broker = mosquitto_factory()

    async def main() -> list[int]:
        async with Client(broker.url, reconnect_period=0.05, reconnect_max=0.2) as client:
            await asyncio.to_thread(broker.stop)
            for _ in range(200):  # bounded: the loss is noticed at once (end of stream)
                if not client.connected:
                    break
                await asyncio.sleep(0.01)
            assert not client.connected
            futures = [client.publish("outage/t", str(i), qos=1) for i in range(100)]
            restart = asyncio.create_task(asyncio.to_thread(broker.start))
            # __aexit__ runs the graceful close now, with the broker still coming back.
        await restart
        return [f.result() for f in futures]

    assert run(main()) == [0] * 100
