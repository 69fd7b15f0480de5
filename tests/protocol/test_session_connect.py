"""ClientSession conversations: CONNECT, CONNACK, keepalive, orderly DISCONNECT.

A scripted broker made of bytes (tests/protocol/session_helpers.py); time is passed in.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqttkit.protocol.errors import (
    ConnectionRefusedError,
    KeepaliveTimeoutError,
    ProtocolError,
    ReasonCode,
)
from mqttkit.protocol.packets import (
    NO_PROPERTIES,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    Properties,
    Publish,
    Will,
)
from mqttkit.protocol.session import (
    Connected,
    ConnectionClosing,
    ConnectionRefused,
    MessageReceived,
    PacketReceived,
    PacketSent,
    State,
)

from .session_helpers import Conversation, names

LEVELS = pytest.mark.parametrize("level", [4, 5])


# -- CONNECT -------------------------------------------------------------------------------------


@LEVELS
def test_connect_carries_the_session_config(level: int) -> None:
    will_props = Properties(will_delay_interval=30, content_type="text/plain")
    will = Will("status/dev-7", b"offline", 1, True, will_props if level == 5 else NO_PROPERTIES)
    c = Conversation(
        level,
        client_id="dev-7",
        clean_start=False,
        keepalive=42,
        username="alice",
        password=b"s3cret",
        will=will,
    )
    connect = c.connect()
    assert connect == Connect("dev-7", level, False, 42, "alice", b"s3cret", will)
    assert c.session.state is State.CONNECTING
    assert c.events() == []
    assert c.session.next_deadline() is None  # no keepalive before CONNACK


def test_connect_defaults_clean_start_and_no_credentials() -> None:
    c = Conversation(4, client_id="")
    assert c.connect() == Connect("", 4, True, 10, None, None, None)


def test_v5_connect_carries_the_configured_properties() -> None:
    props = Properties(
        session_expiry_interval=3600,
        receive_maximum=20,
        topic_alias_maximum=8,
        maximum_packet_size=65_536,
        request_problem_information=1,
        user_property=(("site", "lab"), ("site", "roof")),
    )
    c = Conversation(5, properties=props)
    assert c.connect().properties == props


def test_v311_connect_leaves_v5_properties_out() -> None:
    c = Conversation(4, properties=Properties(session_expiry_interval=60))
    assert c.connect().properties == NO_PROPERTIES


def test_connection_made_twice_is_a_bug_of_the_driver() -> None:
    c = Conversation(4)
    c.connect()
    with pytest.raises(RuntimeError, match="CONNECTING"):
        c.session.connection_made(c.now)


# -- CONNACK -------------------------------------------------------------------------------------


@LEVELS
def test_connack_accepted_emits_connected(level: int) -> None:
    c = Conversation(level)
    c.connect()
    connack = ConnAck(False, 0)
    c.send(connack)
    event = c.expect_event(Connected)
    assert event.connack == connack
    assert c.session.connack == connack
    assert c.session.connected
    assert c.session.state is State.CONNECTED
    assert c.sent() == []


@pytest.mark.parametrize("code", [1, 2, 3, 4, 5])
def test_v311_connack_refused(code: int) -> None:
    c = Conversation(4)
    c.publish("queued/while/connecting", b"p", 1, token="t")
    c.connect()
    c.send(ConnAck(False, code))
    events = c.events()
    assert names(events) == ["ConnectionRefused", "ConnectionClosing"]
    refused, closing = events
    assert isinstance(refused, ConnectionRefused)
    assert isinstance(closing, ConnectionClosing)
    assert isinstance(refused.error, ConnectionRefusedError)
    assert refused.error.reason_code == code
    assert refused.error.protocol_version == 4
    assert refused.error.permanent is (code != 3)  # 3: server unavailable, worth a retry
    assert closing.error is refused.error
    assert c.session.error is refused.error
    assert c.session.state is State.CLOSING
    assert c.sent() == []  # no DISCONNECT after a refusal, and the queued PUBLISH stays queued
    assert c.session.queued == 1


@pytest.mark.parametrize(
    "code", [0x80, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97, 0x9C, 0x9F]
)
def test_v5_connack_refused(code: int) -> None:
    c = Conversation(5)
    c.connect()
    c.send(ConnAck(False, code, Properties(reason_string="go away")))
    refused, closing = c.events()
    assert isinstance(refused, ConnectionRefused)
    assert isinstance(closing, ConnectionClosing)
    assert refused.connack.reason_code == code
    assert refused.error.reason_code == code
    assert refused.error.protocol_version == 5
    assert "go away" in str(refused.error)
    assert closing.error is refused.error
    assert c.sent() == []


def test_refused_session_connects_on_the_next_connection() -> None:
    c = Conversation(4)
    c.publish("t", b"p", 1)
    c.connect()
    c.send(ConnAck(False, 3))
    c.events()
    c.lose()
    assert c.session.state is State.DISCONNECTED
    c.handshake()
    [publish] = c.sent()
    assert isinstance(publish, Publish)
    assert publish.packet_id == 1


@LEVELS
def test_session_present_with_clean_start_is_a_protocol_error(level: int) -> None:
    # [MQTT-3.2.2-4]: a client without session state must close on Session Present 1.
    c = Conversation(level, clean_start=True)
    c.publish("t", b"p", 1)
    c.connect()
    c.send(ConnAck(True, 0))
    closing = c.expect_event(ConnectionClosing)
    assert isinstance(closing.error, ProtocolError)
    assert "Session Present" in str(closing.error)
    assert not c.session.connected
    sent = c.sent()
    assert sent == ([Disconnect(ReasonCode.PROTOCOL_ERROR)] if level == 5 else [])


@LEVELS
def test_session_present_without_clean_start_is_accepted(level: int) -> None:
    c = Conversation(level, clean_start=False)
    c.connect()
    c.send(ConnAck(True, 0))
    assert c.expect_event(Connected).connack.session_present


def test_v5_assigned_client_identifier_is_kept_for_the_next_connection() -> None:
    c = Conversation(5, client_id="", clean_start=False)
    c.connect()
    c.send(ConnAck(False, 0, Properties(assigned_client_identifier="auto-42")))
    c.events()
    c.lose()
    assert c.connect().client_id == "auto-42"


# -- keepalive -----------------------------------------------------------------------------------


@LEVELS
def test_pingreq_when_idle_for_keepalive(level: int) -> None:
    c = Conversation(level, keepalive=10, now=100.0)
    c.handshake()
    assert c.session.next_deadline() == 110.0
    c.now = 109.9
    c.timer()
    assert c.sent() == []
    c.now = 110.0
    c.timer()
    assert c.sent() == [PingReq()]
    c.advance(1)
    c.send(PingResp())
    c.run_until(119.9)
    assert c.sent() == []
    c.run_until(120.0)  # 10 s after the last PINGREQ: the next one
    assert c.sent() == [PingReq()]
    assert c.events() == []


@LEVELS
def test_no_keepalive_when_zero(level: int) -> None:
    c = Conversation(level, keepalive=0)
    c.handshake()
    assert c.session.next_deadline() is None
    c.advance(1e6)
    c.timer()
    assert c.sent() == []
    assert c.events() == []


@LEVELS
def test_unanswered_pingreq_closes_within_one_and_a_half_keepalive(level: int) -> None:
    c = Conversation(level, keepalive=10, now=100.0)
    c.handshake()
    c.run_until(114.99)
    assert c.sent() == [PingReq()]
    assert c.events() == []
    c.run_until(115.0)  # 1.5 x keepalive after the last packet received (the CONNACK)
    closing = c.expect_event(ConnectionClosing)
    assert isinstance(closing.error, KeepaliveTimeoutError)
    assert c.session.error is closing.error
    assert c.session.state is State.CLOSING
    assert c.sent() == []  # the link is dead: no DISCONNECT, v5 included
    assert c.session.next_deadline() is None


@LEVELS
def test_any_packet_after_pingreq_proves_the_link_alive(level: int) -> None:
    c = Conversation(level, keepalive=10, now=100.0)
    c.handshake()
    c.run_until(110.0)
    assert c.sent() == [PingReq()]
    c.advance(2)
    c.send(Publish("news", b"n"))
    c.run_until(115.0)
    assert names(c.events()) == ["MessageReceived"]  # and no ConnectionClosing


@LEVELS
def test_traffic_both_ways_postpones_the_ping(level: int) -> None:
    c = Conversation(level, keepalive=10, now=100.0)
    c.handshake()
    c.advance(5)
    c.send(Publish("in", b"1"))
    c.run_until(106.0)
    c.publish("out", b"2")
    assert names(c.sent()) == ["Publish"]
    assert c.session.next_deadline() == 115.0
    c.run_until(114.9)
    assert c.sent() == []
    c.run_until(115.0)
    assert c.sent() == [PingReq()]


@LEVELS
def test_receiving_alone_does_not_postpone_the_ping(level: int) -> None:
    # [MQTT-3.1.2-23]: the client must send something at least every keepalive seconds.
    c = Conversation(level, keepalive=10, now=100.0)
    c.handshake()
    for _ in range(9):
        c.advance(1)
        c.send(Publish("in", b"1"))
    c.run_until(110.0)
    assert c.sent() == [PingReq()]


@LEVELS
def test_sending_alone_does_not_postpone_the_ping(level: int) -> None:
    # Publishing QoS 0 without hearing back says nothing about the link: still probe it.
    c = Conversation(level, keepalive=10, now=100.0)
    c.handshake()
    for _ in range(9):
        c.advance(1)
        c.publish("out", b"1")
    c.sent()
    c.run_until(110.0)
    assert c.sent() == [PingReq()]


def test_v5_server_keep_alive_overrides_ours() -> None:
    # [MQTT-3.2.2-21]: the client uses the Server Keep Alive instead of its own value.
    c = Conversation(5, keepalive=60, now=100.0)
    c.handshake(properties=Properties(server_keep_alive=4))
    assert c.session.next_deadline() == 104.0
    c.run_until(104.0)
    assert c.sent() == [PingReq()]
    c.run_until(106.0)
    assert isinstance(c.expect_event(ConnectionClosing).error, KeepaliveTimeoutError)


def test_v5_server_keep_alive_zero_disables_keepalive() -> None:
    c = Conversation(5, keepalive=60)
    c.handshake(properties=Properties(server_keep_alive=0))
    assert c.session.next_deadline() is None


def test_server_keep_alive_applies_to_one_connection_only() -> None:
    c = Conversation(5, keepalive=60, now=100.0)
    c.handshake(properties=Properties(server_keep_alive=4))
    c.lose()
    c.handshake()
    assert c.session.next_deadline() == 160.0


@settings(max_examples=60, deadline=None)
@given(
    keepalive=st.integers(1, 60),
    traffic=st.lists(
        st.tuples(st.floats(0.01, 30.0), st.sampled_from(["in", "out", "both"])), max_size=30
    ),
    answer=st.booleans(),
)
def test_keepalive_invariants(
    keepalive: int, traffic: list[tuple[float, str]], answer: bool
) -> None:
    """Whatever the traffic: the client never stays silent for more than keepalive; a broker
    that answers PINGREQ is never declared dead; a dead link is found within 1.5 x keepalive of
    the last packet received, and not before half a keepalive of silence."""
    c = Conversation(4, keepalive=keepalive, now=0.0)
    c.handshake()
    last_sent = last_received = 0.0
    closed_at: list[float] = []

    def flush() -> None:
        nonlocal last_sent, last_received
        for packet in c.sent():
            last_sent = c.now
            if isinstance(packet, PingReq) and answer:
                c.send(PingResp())
                last_received = c.now
        for event in c.events():
            assert isinstance(event, ConnectionClosing | MessageReceived), event
            if isinstance(event, ConnectionClosing):
                assert isinstance(event.error, KeepaliveTimeoutError)
                closed_at.append(c.now)
                assert c.now - last_received <= 1.5 * keepalive + 1e-9
                assert c.now - last_received >= 0.5 * keepalive - 1e-9

    def step_to(when: float) -> None:
        # A driver: fire every deadline up to `when`, writing (and answering) as it goes.
        for _ in range(10_000):
            deadline = c.session.next_deadline()
            if deadline is None or deadline > when:
                break
            assert deadline - last_sent <= keepalive + 1e-9
            c.now = max(c.now, deadline)
            c.timer()
            flush()
        c.now = max(c.now, when)

    for delay, direction in traffic:
        step_to(c.now + delay)
        if closed_at:
            break
        if direction in ("out", "both"):
            c.publish("out", b"")
            flush()
        if direction in ("in", "both"):
            c.send(Publish("in", b""))
            last_received = c.now
            flush()
    # From here on the broker sends nothing but (maybe) PINGRESP.
    step_to(c.now + 10 * keepalive)
    if answer:
        assert closed_at == []
    else:
        assert len(closed_at) == 1


# -- orderly end, tracing ------------------------------------------------------------------------


@LEVELS
def test_disconnect_sends_disconnect_and_closes(level: int) -> None:
    c = Conversation(level)
    c.handshake()
    c.session.disconnect(c.now, 0x04 if level == 5 else 0)
    assert c.sent() == [Disconnect(0x04 if level == 5 else 0)]
    assert c.expect_event(ConnectionClosing).error is None
    assert c.session.state is State.CLOSING
    c.send(Publish("late", b"x", 1, packet_id=1))
    assert c.events() == []  # nothing is processed after our DISCONNECT
    c.lose()
    assert c.session.error is None


def test_disconnect_when_not_connected_does_nothing() -> None:
    c = Conversation(4)
    c.session.disconnect(c.now)
    assert c.sent() == []
    assert c.events() == []


def test_trace_packets_reports_both_directions() -> None:
    c = Conversation(4, trace_packets=True)
    c.connect()
    c.send(ConnAck(False, 0))
    c.publish("t", b"p", 1)
    events = c.events()
    assert names(events) == ["PacketSent", "PacketReceived", "Connected", "PacketSent"]
    assert isinstance(events[0], PacketSent)
    assert isinstance(events[0].packet, Connect)
    assert isinstance(events[1], PacketReceived)
    assert events[1].packet == ConnAck(False, 0)
    assert isinstance(events[3], PacketSent)
    assert events[3].packet == Publish("t", b"p", 1, packet_id=1)
