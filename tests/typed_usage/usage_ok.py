"""Correct uses of the typed API: ``tests/test_typing.py`` runs ``mypy --strict`` on this file
and expects no error. Never run (nothing here connects); every line is for the type checker.

Listeners may take fewer trailing arguments than their event offers, decorators keep the
function's own type, and each operation's handle (or awaitable) has its result type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, assert_type, cast

import mqttkit
import mqttkit.aio
from mqttkit import AckableMessage, ConnAck, Disconnect, Granted, MQTTError, Publish, Server
from mqttkit.protocol.packets import Auth, Packet
from mqttkit.sync.events import EventName


def listeners(client: mqttkit.Client) -> None:
    # message(topic, payload, packet): any number of leading arguments.
    client.on("message", lambda topic, payload, packet: print(topic, payload, packet.qos))
    client.on("message", lambda topic, payload: print(topic, payload.decode()))
    seen: list[str] = []
    client.on("message", seen.append)  # a bound method taking the topic
    client.on("message", lambda: None)
    client.on("message", print)  # a builtin with *args

    @client.on("message")
    def on_message(topic: str, payload: bytes, packet: Publish) -> None:
        print(topic, payload, packet.retain)

    kept: Callable[[str, bytes, Publish], None] = on_message  # the decorator keeps it

    def on_two(topic: str, payload: bytes) -> int:
        return len(payload)  # a listener's return value is ignored: any type will do

    returned: Callable[[str, bytes], int] = client.on("message", on_two)
    print(kept, returned)

    def on_manual(topic: str, payload: bytes, message: AckableMessage) -> None:
        message.ack()  # manual_ack=True

    client.on("message", on_manual)

    def on_wide(topic: object, payload: object, packet: object) -> None:
        """Wider parameter types than the event's are fine."""

    client.on("message", on_wide)

    def on_any(*args: Any) -> None:
        print(args)

    client.on("message", on_any)
    client.on("connect", on_any)
    client.on("end", on_any)

    # connect(connack, server)
    client.on("connect", lambda connack, server: print(connack.session_present, server.url))

    @client.on("connect")
    def on_connect(connack: ConnAck) -> None:
        print(connack.reason_code)

    def on_connect_server(connack: ConnAck, server: Server) -> None:
        print(server.host)

    client.once("connect", on_connect_server)

    # The events without arguments.
    client.on("reconnect", lambda: seen.append("reconnect"))
    client.on("close", lambda: None)
    client.on("offline", lambda: None)
    client.once("end", lambda: None)

    @client.on("close")
    def on_close() -> None:
        print("closed")

    # error(err), disconnect(packet), auth(packet), dropped(packet), packetsend / packetreceive.
    @client.on("error")
    def on_error(err: MQTTError) -> None:
        print(err)

    def on_exception(err: Exception) -> None:
        print(err)

    client.on("error", on_exception)
    client.on("error", lambda err: seen.append(str(err.__cause__)))

    def on_disconnect(packet: Disconnect) -> None:
        print(packet.reason_code)

    client.on("disconnect", on_disconnect)

    def on_auth(packet: Auth) -> None:
        print(packet.reason_code)

    client.on("auth", on_auth)

    def on_dropped(packet: Publish) -> None:
        print(packet.topic)

    client.on("dropped", on_dropped)

    def on_packet(packet: Packet) -> None:
        print(packet)

    client.on("packetsend", on_packet)
    client.on("packetreceive", on_packet)
    client.add_listener("packetreceive", on_packet)

    # off / remove_listener with the listener given to on.
    client.off("message", on_message)
    client.off("error", on_error)
    client.off("close", on_close)
    client.remove_listener("packetsend", on_packet)

    # Routes take message listeners.
    @client.on_message("sensors/+/temp")
    def on_temp(topic: str, payload: bytes) -> None:
        print(topic, float(payload))

    client.on_message("sensors/#", lambda topic, payload, packet: None)
    client.off_message("sensors/+/temp", on_temp)


def dynamic_event_names(client: mqttkit.Client, names: list[str]) -> None:
    """A name only known at run time: cast it; the listener must then suit every event."""

    def log_any(*args: Any) -> None:
        print(args)

    for name in names:
        client.on(cast(EventName, name), log_any)
        client.once(cast(EventName, name), lambda: None)
        client.off(cast(EventName, name), log_any)


def handles(client: mqttkit.Client) -> None:
    assert_type(client.publish("t", "x"), mqttkit.Handle[int])
    code = client.publish("t", b"x", qos=1).result(5)
    assert_type(code, int)
    if isinstance(code, mqttkit.PublishResult):
        print(code.qos)  # a QoS 2 message the broker delivered at QoS 1
    granted = client.subscribe({"a": 1, "b": 2}).result(5)
    assert_type(granted, list[Granted])
    print([(g.topic, g.qos) for g in granted])
    assert_type(client.unsubscribe(["a", "b"]).result(5), tuple[int, ...])
    close = client.close()
    assert_type(close, mqttkit.Handle[None])
    assert_type(close.wait(5), bool)
    assert_type(close.exception(5), BaseException | None)
    assert_type(client.flush(5), bool)


async def asyncio_client(client: mqttkit.aio.Client) -> None:
    assert_type(await client.connect(), ConnAck)
    assert_type(await client.publish("t", b"x", qos=1), int)
    assert_type(await client.subscribe("t"), list[Granted])
    assert_type(await client.unsubscribe("t"), tuple[int, ...])
    assert_type(await client.flush(), None)
    assert_type(await client.close(), None)
    async for message in client.messages("sensors/#"):
        assert_type(message, Publish)
