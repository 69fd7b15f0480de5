"""MQTT 5 close with a reason code and properties, against Mosquitto, on both fronts and in the
seed's ``end([force], [options], [callback])`` form: 0x04 "disconnect with Will message" makes
the broker publish the Will, a plain close does not, and a session expiry in DISCONNECT ends a
kept session; what DISCONNECT cannot carry raises at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

import mqttkit
from mqttkit.aio import Client as AsyncClient
from mqttkit.protocol.packets import MQTT_5, Disconnect
from mqttkit.testing import MosquittoBroker
from tests.support.recorder import Recorder

Factory = Callable[..., mqttkit.Client]
WILL = {"topic": "close-reason/will", "payload": "gone", "qos": 1}


def watcher(make_client: Factory, url: str) -> Recorder:
    client = make_client(url=url)
    rec = Recorder(client, ("connect", "message"))
    rec.wait_for("connect")
    client.subscribe("close-reason/#", qos=1).result(5)
    return rec


def connected(make_client: Factory, url: str, **kwargs) -> tuple[mqttkit.Client, Recorder]:
    client = make_client(url=url, protocol_version=MQTT_5, **kwargs)
    rec = Recorder(client, ("connect", "packetsend"))
    rec.wait_for("connect")
    return client, rec


def sent_disconnect(rec: Recorder) -> Disconnect:
    """The DISCONNECT the client sent (its packetsend event may trail the close handle)."""

    def found() -> list[Disconnect]:
        return [a[0] for n, a in rec.log if n == "packetsend" and isinstance(a[0], Disconnect)]

    rec.wait_until(lambda: bool(found()), timeout=5, what="a DISCONNECT sent")
    return found()[0]


def test_disconnect_with_will_message_publishes_the_will(
    mosquitto: MosquittoBroker, make_client: Factory
) -> None:
    seen = watcher(make_client, mosquitto.url)
    client, rec = connected(make_client, mosquitto.url, will=WILL)
    assert client.close(reason_code=0x04).wait(5)
    assert sent_disconnect(rec).reason_code == 0x04
    topic, payload, _ = seen.wait_messages(1)[0]
    assert (topic, payload) == ("close-reason/will", b"gone")


def test_a_plain_close_publishes_no_will(mosquitto: MosquittoBroker, make_client: Factory) -> None:
    seen = watcher(make_client, mosquitto.url)
    client, rec = connected(make_client, mosquitto.url, will=WILL)
    assert client.close().wait(5)
    assert sent_disconnect(rec).reason_code == 0
    # A marker published after the close arrives; a Will, had there been one, came before it.
    marker = make_client(url=mosquitto.url)
    marker.publish("close-reason/marker", "m", qos=1).result(5)
    assert [t for t, _, _ in seen.wait_messages(1)] == ["close-reason/marker"]


@pytest.mark.parametrize(
    "close",
    [
        lambda c, cb: c.close({"reasonCode": 4}, cb),
        lambda c, cb: c.close(False, {"reasonCode": 4}, cb),
        lambda c, cb: c.end({"reasonCode": 4, "properties": {"reasonString": "bye"}}, cb),
    ],
    ids=["end(options, cb)", "end(force, options, cb)", "end with properties"],
)
def test_the_seed_form_takes_reason_code_and_properties(
    mosquitto: MosquittoBroker, make_client: Factory, close
) -> None:
    seen = watcher(make_client, mosquitto.url)
    client, rec = connected(make_client, mosquitto.url, will=WILL)
    closed = threading.Event()
    close(client, lambda *args: closed.set())
    assert closed.wait(5)
    assert sent_disconnect(rec).reason_code == 0x04
    assert seen.wait_messages(1)[0][1] == b"gone"


def test_a_session_expiry_in_disconnect_ends_the_kept_session(
    mosquitto: MosquittoBroker, make_client: Factory
) -> None:
    props = {"session_expiry_interval": 300}
    first, _ = connected(make_client, mosquitto.url, client_id="expiring", clean=False,
                         properties=props)  # fmt: skip
    assert first.close().wait(5)  # kept for 300 s
    second, rec = connected(make_client, mosquitto.url, client_id="expiring", clean=False,
                            properties=props)  # fmt: skip
    assert rec.wait_for("connect")[0].session_present
    assert second.close(properties={"session_expiry_interval": 0}).wait(5)  # now it ends
    assert sent_disconnect(rec).properties.session_expiry_interval == 0
    _, rec3 = connected(make_client, mosquitto.url, client_id="expiring", clean=False,
                            properties=props)  # fmt: skip
    assert not rec3.wait_for("connect")[0].session_present


@pytest.mark.parametrize(
    ("kwargs", "client_kwargs", "says"),
    [
        ({"reason_code": 4}, {"protocol_version": 4}, "need protocol_version=5"),
        ({"properties": {"reason_string": "x"}}, {"protocol_version": 4}, "protocol_version=5"),
        ({"reason_code": 0x05}, {"protocol_version": 5}, "not a reason code a client may send"),
        ({"reason_code": True}, {"protocol_version": 5}, "must be an int"),
        ({"properties": {"server_reference": "x"}}, {"protocol_version": 5}, "does not carry"),
        ({"properties": {"nonsense": 1}}, {"protocol_version": 5}, "unknown MQTT 5 property"),
        ({"properties": {"session_expiry_interval": 9}}, {"protocol_version": 5}, "3.14.2-2"),
    ],
)
def test_what_disconnect_cannot_carry_raises_at_once(kwargs, client_kwargs, says) -> None:
    client = mqttkit.Client(**client_kwargs)
    with pytest.raises(mqttkit.InvalidArgumentError, match=says):
        client.close(**kwargs)
    with pytest.raises(mqttkit.InvalidArgumentError, match=says):
        asyncio.run(AsyncClient(**client_kwargs).close(**kwargs))
    client.close(force=True).wait(5)


def test_asyncio_close_with_will_message(mosquitto: MosquittoBroker, make_client: Factory) -> None:
    seen = watcher(make_client, mosquitto.url)

    async def main() -> None:
        client = AsyncClient(mosquitto.url, protocol_version=MQTT_5, will=WILL)
        await client.connect()
        await client.close(reason_code=0x04, properties={"reason_string": "maintenance"})

    started = time.monotonic()
    asyncio.run(asyncio.wait_for(main(), 10))
    assert time.monotonic() - started < 5
    assert seen.wait_messages(1)[0][:2] == ("close-reason/will", b"gone")
