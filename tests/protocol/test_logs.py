"""The one-line packet summaries of DEBUG records (mosquitto_sub -d style), and the client log
adapter: never a payload, a password or authentication data."""

from __future__ import annotations

import logging

import pytest

from mqttkit.protocol.logs import ClientLog, describe
from mqttkit.protocol.packets import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    Properties,
    PubAck,
    Publish,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)


@pytest.mark.parametrize(
    ("packet", "text"),
    [
        (
            Publish("a/b", b"hello", qos=1, packet_id=3, dup=True),
            "PUBLISH (d1, q1, r0, m3, 'a/b', ... (5 bytes))",
        ),
        (Publish("t", b"", retain=True), "PUBLISH (d0, q0, r1, m0, 't', ... (0 bytes))"),
        (PubAck(3), "PUBACK (Mid: 3, RC: 0)"),
        (PubRel(9, 0x92), "PUBREL (Mid: 9, RC: 146)"),
        (
            Subscribe(1, (Subscription("a/#", 1), Subscription("b", 0))),
            "SUBSCRIBE (Mid: 1, Topic: a/#, QoS: 1, Topic: b, QoS: 0)",
        ),
        (SubAck(1, (1, 0x80)), "SUBACK (Mid: 1, RC: [1, 128])"),
        (Unsubscribe(2, ("a", "b")), "UNSUBSCRIBE (Mid: 2, a, b)"),
        (UnsubAck(2), "UNSUBACK (Mid: 2, RC: [])"),
        (ConnAck(True, 0), "CONNACK (session present 1, RC: 0)"),
        (
            ConnAck(False, 0x87, Properties(reason_string="no")),
            "CONNACK (session present 0, RC: 135, 'no')",
        ),
        (Disconnect(0x8E), "DISCONNECT (RC: 142)"),
        (PingReq(), "PINGREQ"),
    ],
)
def test_describe(packet: object, text: str) -> None:
    assert describe(packet) == text  # type: ignore[arg-type]


def test_describe_leaves_secrets_out() -> None:
    connect = Connect(
        "dev-1",
        5,
        True,
        30,
        "alice",
        b"s3cret",
        Will("lwt", b"will-payload"),
        Properties(authentication_method="SCRAM", authentication_data=b"auth-data"),
    )
    text = describe(connect)
    assert (
        text
        == "CONNECT (v5, c1, k30, client id 'dev-1', username 'alice', password ***, will 'lwt')"
    )
    auth = describe(Auth(0x18, Properties(authentication_data=b"auth-data")))
    assert auth == "AUTH (RC: 24)"
    for secret in ("s3cret", "will-payload", "auth-data"):
        assert secret not in text + auth


def test_client_log_names_the_client(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mqttkit")
    ids = ["first"]
    log = ClientLog(lambda: ids[-1])
    log.info("hello %s", "world", extra={"other": 1})
    ids.append("assigned")  # an MQTT 5 server assigned one: later records carry it
    log.warning("again")
    first, second = caplog.records
    assert (first.name, first.getMessage(), first.client_id) == (  # type: ignore[attr-defined]
        "mqttkit.client",
        "[first] hello world",
        "first",
    )
    assert first.other == 1  # type: ignore[attr-defined]
    assert (second.getMessage(), second.client_id) == ("[assigned] again", "assigned")  # type: ignore[attr-defined]
    log.debug("not built")  # DEBUG off: the adapter does no work
    assert len(caplog.records) == 2
