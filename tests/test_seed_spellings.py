"""Every seed spelling works or says what to write instead: seed option names that are Python
identifiers with one meaning are keywords too, camelCase keywords name the snake_case keyword
and its unit (never the rejected name), an unknown event name raises with a hint, and the
NodeMCU ``connect()`` takes its callbacks by name."""

from __future__ import annotations

import pytest

import mqttkit
from mqttkit import nodemcu
from mqttkit.testing import MosquittoBroker, free_port
from tests.support.recorder import Recorder


@pytest.mark.parametrize(
    ("keyword", "value", "field", "expected"),
    [
        ("hostname", "broker.example", "host", "broker.example"),
        ("protocol", "mqtts", "transport", "tls"),
        ("servername", "cert.example", "server_hostname", "cert.example"),
    ],
)
def test_seed_names_that_are_identifiers_are_keywords(keyword, value, field, expected) -> None:
    client = mqttkit.Client(**{keyword: value})
    assert getattr(client.options, field) == expected


def test_the_seed_example_of_hostname_and_port_as_keywords(mosquitto: MosquittoBroker) -> None:
    client = mqttkit.Client(hostname="127.0.0.1", port=mosquitto.port, protocol="mqtt")
    try:
        client.connect()
        Recorder(client, ("connect",)).wait_for("connect")
    finally:
        client.close(force=True).wait(5)


@pytest.mark.parametrize(
    ("keyword", "says"),
    [
        ("clientId", "as a keyword it is client_id="),
        ("connectTimeout", "connect_timeout= (in seconds, not milliseconds)"),
        ("reconnectPeriod", "reconnect_period= (in seconds, not milliseconds)"),
        ("rejectUnauthorized", "insecure= (its opposite"),
        ("protocolVersion", "protocol_version="),
        ("outgoingStore", "outgoing_store="),
    ],
)
def test_camel_case_keywords_name_the_keyword_to_use(keyword: str, says: str) -> None:
    with pytest.raises(mqttkit.UnknownOptionError) as info:
        mqttkit.Client(**{keyword: 1})
    message = str(info.value)
    assert says in message
    assert "did you mean" not in message  # never a suggestion of the rejected name itself
    assert isinstance(info.value, TypeError)
    # The same name in the options dict is what the seed writes, and works.
    if keyword == "clientId":
        assert mqttkit.Client({"clientId": "x"}).options.client_id == "x"


def test_a_typo_suggests_the_right_name_and_never_itself() -> None:
    with pytest.raises(mqttkit.UnknownOptionError, match="did you mean 'hostname'"):
        mqttkit.Client(hostnme="h")
    with pytest.raises(mqttkit.UnknownOptionError, match="did you mean 'client_id'"):
        mqttkit.Client(client_di="h")


@pytest.mark.parametrize("name", ["mesage", "connected", "Message", "packet_send"])
def test_an_unknown_event_name_raises_with_a_hint(name: str) -> None:
    client = mqttkit.Client()
    with pytest.raises(mqttkit.InvalidArgumentError) as info:
        client.on(name, lambda *args: None)
    assert "the events are" in str(info.value)
    with pytest.raises(mqttkit.InvalidArgumentError):
        client.once(name, lambda *args: None)
    with pytest.raises(mqttkit.InvalidArgumentError):
        client.on(name)(lambda *args: None)  # as a decorator


def test_the_hint_names_the_event_meant() -> None:
    with pytest.raises(mqttkit.InvalidArgumentError, match="did you mean 'message'"):
        mqttkit.Client().on("mesage", print)


def test_a_plain_event_emitter_still_takes_any_name() -> None:
    emitter = mqttkit.EventEmitter()
    got = []
    emitter.on("anything", got.append)
    emitter.emit("anything", 1)
    assert got == [1]


def test_nodemcu_connect_takes_its_callbacks_by_name(
    mosquitto: MosquittoBroker, make_nodemcu
) -> None:
    m = nodemcu.Client("spelling-by-name", 60)
    make_nodemcu.clients.append(m)
    rec = Recorder()
    assert m.connect(
        "127.0.0.1",
        mosquitto.port,
        on_connected=rec.listener("on_connected"),
        on_failed=rec.listener("on_failed"),
    )
    assert rec.wait_for("on_connected") == (m,)
    dead = nodemcu.Client("spelling-dead", 60)
    make_nodemcu.clients.append(dead)
    assert dead.connect("127.0.0.1", free_port(), on_failed=rec.listener("on_failed"))
    client, reason = rec.wait_for("on_failed")
    assert client is dead
    assert reason == nodemcu.CONN_FAIL_SERVER_NOT_FOUND


def test_nodemcu_callbacks_both_by_position_and_by_name_are_refused() -> None:
    m = nodemcu.Client("spelling-both", 60)
    with pytest.raises(mqttkit.InvalidArgumentError, match="both by position and by name"):
        m.connect("127.0.0.1", 1883, 0, 0, print, on_connected=print)
