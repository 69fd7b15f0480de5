"""MQTT 5 enhanced authentication: the ``authenticate`` step function answers the broker's AUTH
challenges while connecting and during re-authentication, on both fronts (fake broker)."""

from __future__ import annotations

import asyncio
import threading

import pytest

import mqttkit
from mqttkit.aio import Client
from mqttkit.protocol.packets import Auth, ConnAck, Connect, Disconnect, Properties
from tests.support.fake_broker import FakeBroker

TIMEOUT = 5.0
METHOD = "TEST-CHALLENGE"


def step(packet: Auth) -> Properties:
    """A toy mechanism: answer each challenge with 'response-' + the challenge."""
    data = packet.properties.authentication_data or b""
    return Properties(authentication_method=METHOD, authentication_data=b"response-" + data)


def start_properties() -> Properties:
    return Properties(authentication_method=METHOD, authentication_data=b"hello")


def run(coro, timeout: float = 20.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def challenge(conn, data: bytes) -> Auth:
    """Send AUTH (continue) with ``data``; return the client's answer."""
    conn.send(Auth(0x18, Properties(authentication_method=METHOD, authentication_data=data)))
    return conn.expect(Auth)


def test_connect_with_a_two_step_exchange_asyncio() -> None:
    seen: dict[str, object] = {}

    def broker_side(broker: FakeBroker) -> None:
        conn = broker.accept()
        connect = conn.expect(Connect)
        seen["connect"] = connect.properties
        seen["answers"] = [challenge(conn, b"c1"), challenge(conn, b"c2")]
        conn.send(ConnAck(False, 0, Properties(authentication_method=METHOD)))
        conn.expect(Disconnect)

    with FakeBroker() as broker:
        thread = threading.Thread(target=broker_side, args=(broker,), daemon=True)
        thread.start()

        async def main() -> None:
            client = Client(
                broker.url,
                protocol_version=5,
                reconnect_period=0,
                properties=start_properties(),
                authenticate=step,
            )
            connack = await client.connect()
            assert connack.reason_code == 0
            await client.close(force=True)

        run(main())
        thread.join(TIMEOUT)
    connect_props = seen["connect"]
    assert isinstance(connect_props, Properties)
    assert connect_props.authentication_method == METHOD
    assert connect_props.authentication_data == b"hello"
    answers = seen["answers"]
    assert isinstance(answers, list)
    assert [(a.reason_code, a.properties.authentication_data) for a in answers] == [
        (0x18, b"response-c1"),
        (0x18, b"response-c2"),
    ]
    assert all(a.properties.authentication_method == METHOD for a in answers)


def test_a_failing_step_function_ends_the_connection_with_its_error() -> None:
    def refuse(packet: Auth) -> Properties:
        raise ValueError("no such user")

    def broker_side(broker: FakeBroker, out: list[object]) -> None:
        conn = broker.accept()
        conn.expect(Connect)
        conn.send(Auth(0x18, Properties(authentication_method=METHOD, authentication_data=b"c")))
        out.append(conn.expect(Disconnect))

    with FakeBroker() as broker:
        out: list[object] = []
        thread = threading.Thread(target=broker_side, args=(broker, out), daemon=True)
        thread.start()

        async def main() -> None:
            client = Client(
                broker.url,
                protocol_version=5,
                reconnect_period=0,
                properties=start_properties(),
                authenticate=refuse,
            )
            with pytest.raises(mqttkit.MQTTConnectionError, match="no such user"):
                await client.connect()

        run(main())
        thread.join(TIMEOUT)
    assert out[0].reason_code == 0x87  # type: ignore[attr-defined]  # not authorized


def test_reauthentication_from_the_blocking_front() -> None:
    with FakeBroker() as broker:
        client = mqttkit.Client(
            url=broker.url,
            protocol_version=5,
            reconnect_period=0,
            properties=start_properties(),
            authenticate=step,
        )
        auth_events: list[Auth] = []
        connected = threading.Event()
        client.on("connect", lambda connack: connected.set())
        client.on("auth", auth_events.append)
        client.connect()
        try:
            conn = broker.accept()
            conn.handshake()
            assert connected.wait(TIMEOUT)
            client.reauthenticate(
                Properties(authentication_method=METHOD, authentication_data=b"again")
            )
            start = conn.expect(Auth)
            assert start.reason_code == 0x19  # re-authenticate
            assert start.properties.authentication_data == b"again"
            answer = challenge(conn, b"c3")
            assert answer.properties.authentication_data == b"response-c3"
            conn.send(Auth(0x00, Properties(authentication_method=METHOD)))  # success
            conn.expect_silence(0.2)  # success needs no answer
            assert [a.reason_code for a in auth_events] == [0x18, 0x00]
            assert client.connected
        finally:
            client.close(force=True).wait(TIMEOUT)


def test_authentication_arguments_are_checked() -> None:
    with pytest.raises(mqttkit.InvalidOptionError, match="needs MQTT 5"):
        mqttkit.Client(url="mqtt://127.0.0.1", authenticate=step)
    with pytest.raises(mqttkit.InvalidOptionError, match="must be a function"):
        mqttkit.Client(url="mqtt://127.0.0.1", protocol_version=5, authenticate="yes")
    client = mqttkit.Client(url="mqtt://127.0.0.1", protocol_version=5)
    with pytest.raises(mqttkit.InvalidArgumentError, match="authentication_method"):
        client.reauthenticate(Properties(authentication_data=b"x"))
    with pytest.raises(mqttkit.InvalidArgumentError, match="Properties"):
        client.reauthenticate({"authentication_method": METHOD})
    v4 = mqttkit.Client(url="mqtt://127.0.0.1")
    with pytest.raises(mqttkit.InvalidArgumentError, match="MQTT 5"):
        v4.reauthenticate(start_properties())

    with pytest.raises(mqttkit.ClientClosedError, match="connect"):
        Client("mqtt://127.0.0.1", protocol_version=5).reauthenticate(start_properties())
