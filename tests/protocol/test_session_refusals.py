"""The session facing a server that says no: a message the server closes the connection on, an
MQTT 5 CONNECT answered the MQTT 3.1.1 way, the fall back to 3.1.1, and the publishing thread's
store record (record_publish) meeting the session that runs elsewhere."""

from __future__ import annotations

import pytest

from mqttkit.protocol.errors import (
    ConnectionLostError,
    ConnectionRefusedError,
    InvalidArgumentError,
    PublishError,
    QueueFullError,
    ServerDisconnectError,
)
from mqttkit.protocol.packets import (
    MQTT_3_1_1,
    MQTT_5,
    ConnAck,
    Disconnect,
    Properties,
    PubAck,
    Publish,
)
from mqttkit.protocol.session import (
    MAX_STRIKES,
    STRIKE_WINDOW,
    ClientSession,
    ConnectionClosing,
    ConnectionRefused,
    PublishCompleted,
    SessionConfig,
    State,
    prepare_publish,
    record_publish,
)
from mqttkit.protocol.store import MemoryStore

from .session_helpers import Conversation, names

LEVELS = pytest.mark.parametrize("level", [4, 5])


def _refused_each_time(c: Conversation, times: int) -> list[Publish]:
    """The server closes the connection right after the client (re)sends its PUBLISH."""
    resent: list[Publish] = []
    for _ in range(times):
        c.lose()  # end of stream, by the server
        c.connect()
        c.send(ConnAck(True, 0))
        resent += [p for p in c.sent() if isinstance(p, Publish)]
    return resent


def _completed(c: Conversation) -> list[PublishCompleted]:
    return [e for e in c.events() if isinstance(e, PublishCompleted)]


# -- a message the server closes the connection on -------------------------------------------


@LEVELS
def test_a_message_the_server_closes_on_three_times_fails_and_the_next_goes(level: int) -> None:
    c = Conversation(level, clean_start=False)
    c.handshake()
    c.publish("a.b", b"refused", 2, token="bad")
    c.publish("ok", b"fine", 1, token="good")
    first = [p for p in c.sent() if isinstance(p, Publish)]
    assert [p.topic for p in first] == ["a.b", "ok"]
    resent = _refused_each_time(c, MAX_STRIKES - 1)
    # Resent (DUP) after each of the first two closes, with the message after it.
    assert [p.topic for p in resent] == ["a.b", "ok"] * (MAX_STRIKES - 1)
    assert all(p.dup for p in resent)
    assert _completed(c) == []
    c.lose()  # the third close right after it
    events = _completed(c)
    assert len(events) == 1
    failed = events[0]
    assert failed.token == "bad"
    assert isinstance(failed.error, PublishError)
    assert "closed the connection each time this message was sent" in str(failed.error)
    assert "'a.b'" in str(failed.error)
    assert c.session.inflight == 1  # it left the session; the QoS 1 message stays
    c.connect()
    c.send(ConnAck(True, 0))
    again = [p for p in c.sent() if isinstance(p, Publish)]
    assert [p.topic for p in again] == ["ok"]
    c.send(PubAck(again[0].packet_id))  # type: ignore[arg-type]
    assert _completed(c) == [PublishCompleted("good", None, 0)]


def test_the_failed_message_leaves_the_store() -> None:
    store = MemoryStore()
    c = Conversation(4, clean_start=False, outgoing_store=store)
    c.handshake()
    c.publish("big", b"x" * 100, 1, token="t")
    c.sent()
    assert len(store) == 1
    _refused_each_time(c, MAX_STRIKES - 1)
    c.lose()
    assert len(_completed(c)) == 1
    assert len(store) == 0  # a restart must not load it again


def test_the_close_reports_the_message_it_came_right_after() -> None:
    c = Conversation(4, clean_start=False)
    c.handshake()
    c.publish("a.b", b"x", 2)
    packet_id = c.sent()[0].packet_id  # type: ignore[attr-defined]
    c.lose()
    error = c.session.error
    assert isinstance(error, ConnectionLostError)
    assert str(error).startswith("the server closed the connection")
    assert f"right after PUBLISH id {packet_id} (QoS 2, topic 'a.b'" in str(error)


def test_a_close_with_nothing_in_flight_is_reported_too() -> None:
    c = Conversation(4)
    c.handshake()
    c.lose()
    assert isinstance(c.session.error, ConnectionLostError)
    assert str(c.session.error) == "the server closed the connection"


def test_our_own_disconnect_is_no_error() -> None:
    c = Conversation(4)
    c.handshake()
    c.session.disconnect(c.now)
    c.sent()
    c.lose()
    assert c.session.error is None


def test_progress_past_the_message_clears_it() -> None:
    # The server acknowledged a message sent after it: the close is not this message's doing.
    c = Conversation(4, clean_start=False)
    c.handshake()
    c.publish("slow", b"1", 1, token="slow")
    c.publish("next", b"2", 1, token="next")
    ids = [p.packet_id for p in c.sent()]  # type: ignore[attr-defined]
    for _ in range(MAX_STRIKES + 2):
        c.send(PubAck(ids[1]))  # the later one is acknowledged before each close
        c.lose()
        c.connect()
        c.send(ConnAck(True, 0))
        c.publish("next", b"2", 1)
        ids = [p.packet_id for p in c.sent() if isinstance(p, Publish)]
        ids = [i for i in ids if i is not None]
        if len(ids) < 2:
            break
    assert not any(
        isinstance(e, PublishCompleted) and e.error is not None for e in c.all_events + c.events()
    )
    assert c.session.inflight >= 1  # "slow" is still in flight, not failed


def test_a_close_long_after_the_send_is_the_network_not_a_refusal() -> None:
    c = Conversation(4, clean_start=False)
    c.handshake()
    c.publish("t", b"x", 1, token="t")
    c.sent()
    for _ in range(MAX_STRIKES + 2):
        c.advance(STRIKE_WINDOW + 1)
        c.lose()
        c.connect()
        c.send(ConnAck(True, 0))
        assert [p.topic for p in c.sent() if isinstance(p, Publish)] == ["t"]
    assert _completed(c) == []
    assert c.session.inflight == 1


def test_strikes_need_connections_in_a_row() -> None:
    # Two quick closes, a slow one (the network, not the message), two quick ones again: never
    # three in a row, so the message stays and completes.
    c = Conversation(4, clean_start=False)
    c.handshake()
    c.publish("t", b"x", 1, token="first")
    c.sent()
    _refused_each_time(c, MAX_STRIKES - 1)
    c.advance(STRIKE_WINDOW + 1)
    c.lose()
    c.connect()
    c.send(ConnAck(True, 0))
    c.sent()
    _refused_each_time(c, MAX_STRIKES - 1)
    assert _completed(c) == []
    (resent,) = [p for p in c.all_sent[-1:] if isinstance(p, Publish)]
    c.send(PubAck(resent.packet_id))  # type: ignore[arg-type]
    assert _completed(c) == [PublishCompleted("first", None, 0)]


def test_a_server_disconnect_counts_as_a_close_on_the_message() -> None:
    c = Conversation(5, clean_start=False)
    c.handshake()
    c.publish("big", b"x", 1, token="t")
    c.sent()
    for _ in range(MAX_STRIKES):
        c.send(Disconnect(0x95))  # packet too large
        assert isinstance(c.session.error, ServerDisconnectError)
        c.lose()
        if c.session.inflight == 0:
            break
        c.connect()
        c.send(ConnAck(True, 0))
        c.sent()
    failed = [e for e in c.events() if isinstance(e, PublishCompleted)]
    assert len(failed) == 1
    assert isinstance(failed[0].error, PublishError)


# -- an MQTT 5 CONNECT answered the MQTT 3.1.1 way ----------------------------------------------


def test_mqtt5_refused_with_a_311_connack_is_a_permanent_version_refusal() -> None:
    c = Conversation(5)
    c.connect()
    c.send_bytes(b"\x20\x02\x00\x01")  # what NATS 2.9 answers
    events = c.events()
    assert names(events) == ["ConnectionRefused", "ConnectionClosing"]
    refused = events[0]
    assert isinstance(refused, ConnectionRefused)
    error = refused.error
    assert isinstance(error, ConnectionRefusedError)
    assert (error.reason_code, error.protocol_version) == (1, MQTT_3_1_1)
    assert error.permanent
    assert error.unsupported_version
    assert "does not speak MQTT 5" in str(error)
    assert "protocol_version=4" in str(error)
    assert "protocol_fallback" in str(error)
    assert isinstance(events[1], ConnectionClosing)
    assert events[1].error is error
    assert c.sent() == []  # no DISCONNECT to a server that does not speak 5


def test_a_311_connack_to_a_311_connect_is_decoded_as_usual() -> None:
    c = Conversation(4)
    c.connect()
    c.send_bytes(b"\x20\x02\x00\x05")
    refused = c.events()[0]
    assert isinstance(refused, ConnectionRefused)
    assert refused.error.reason_code == 5
    assert refused.error.protocol_version == MQTT_3_1_1


def test_an_mqtt5_connack_refusing_the_version_is_unsupported_version() -> None:
    c = Conversation(5)
    c.connect()
    c.send(ConnAck(False, 0x84))
    refused = c.events()[0]
    assert isinstance(refused, ConnectionRefused)
    assert refused.error.unsupported_version
    assert refused.error.permanent


def test_fall_back_re_encodes_queued_and_stored_messages_for_311() -> None:
    store = MemoryStore()
    c = Conversation(5, clean_start=False, outgoing_store=store)
    c.publish("plain", b"1", 1, token="plain")
    c.publish("props", b"2", 1, properties=Properties(content_type="text/plain"), token="props")
    c.subscribe("s/#", token="sub")
    c.connect()
    c.send_bytes(b"\x20\x02\x00\x01")
    c.events()
    c.lose()
    c.session.fall_back(MQTT_3_1_1)
    events = c.events()
    assert [(e.token, type(e.error).__name__) for e in events] == [  # type: ignore[attr-defined]
        ("props", "InvalidArgumentError")
    ]
    assert len(store) == 1
    c.level = MQTT_3_1_1
    assert c.connect().protocol_level == MQTT_3_1_1
    c.send(ConnAck(False, 0))
    sent = c.sent()
    assert names(sent) == ["Publish", "Subscribe"]
    assert sent[0].topic == "plain"  # type: ignore[attr-defined]
    # The store holds the 3.1.1 form, decodable at that level.
    (value,) = dict(store.iterate()).values()
    assert value[-1:] == b"1"


def test_fall_back_converts_a_request_prepared_for_mqtt5_in_flight_to_the_session() -> None:
    c = Conversation(5)
    c.session.fall_back(MQTT_3_1_1)
    c.level = MQTT_3_1_1
    late = prepare_publish("t", b"x", 1, protocol_level=MQTT_5)  # prepared before it fell back
    c.session.publish(late, c.now, "late")
    c.connect()
    c.send(ConnAck(False, 0))
    assert [p.topic for p in c.sent()] == ["t"]  # type: ignore[attr-defined]
    needs_5 = prepare_publish("t", b"x", 1, False, Properties(content_type="a"), MQTT_5)
    with pytest.raises(InvalidArgumentError, match="needs MQTT 5"):
        c.session.publish(needs_5, c.now, "needs-5")


# -- the publishing thread records, the session runs elsewhere ------------------------------


def test_a_recorded_message_is_not_stored_twice_and_finishes_under_its_key() -> None:
    store = MemoryStore()
    session = ClientSession(SessionConfig(client_id="c", clean_start=False, outgoing_store=store))
    request = prepare_publish("t", b"x", 1)
    key = session.new_key()
    assert record_publish(store, key, request)
    assert dict(store.iterate()) == {key: b"\x32\x06\x00\x01t\x00\x00x"}
    session.publish(request, 0.0, "tok", key)
    assert session.queued == 1
    assert len(store) == 1
    session.connection_made(0.0)
    session.data_to_send()
    session.receive_data(b"\x20\x02\x00\x00", 0.0)
    sent = session.data_to_send()
    assert sent == b"\x32\x06\x00\x01t\x00\x01x"
    assert store.get(key) == sent  # re-recorded under the same key, now with its id
    session.receive_data(b"\x40\x02\x00\x01", 0.0)
    assert len(store) == 0
    assert [e.token for e in session.events_received() if isinstance(e, PublishCompleted)] == [
        "tok"
    ]


def test_keys_never_repeat_across_sessions_sharing_the_counter() -> None:
    store = MemoryStore()
    store.put(41, b"\x32\x06\x00\x01t\x00\x00x")  # left by an earlier run
    first = ClientSession(SessionConfig(outgoing_store=store))
    keys = {first.new_key() for _ in range(5)}
    assert min(keys) > 41
    second = ClientSession(SessionConfig(outgoing_store=store), new_key=first.new_key)
    assert second.new_key() > max(keys)


def test_a_record_the_session_loaded_at_start_takes_the_late_publish_call() -> None:
    # The publishing thread stored the message; a new session (connect() after close())
    # loaded it from the store before the publish call reached it: one message, not two.
    store = MemoryStore()
    request = prepare_publish("t", b"x", 1)
    record_publish(store, 7, request)
    session = ClientSession(SessionConfig(outgoing_store=store))
    assert session.queued == 1
    session.publish(request, 0.0, "tok", 7)
    assert session.queued == 1
    session.connection_made(0.0)
    session.data_to_send()
    session.receive_data(b"\x20\x02\x00\x00", 0.0)
    assert session.data_to_send().count(b"\x00\x01t") == 1
    session.receive_data(b"\x40\x02\x00\x01", 0.0)
    assert [e.token for e in session.events_received() if isinstance(e, PublishCompleted)] == [
        "tok"
    ]


def test_a_recorded_message_the_session_refuses_is_deleted_from_the_store() -> None:
    store = MemoryStore()
    config = SessionConfig(outgoing_store=store, max_queued=1)
    session = ClientSession(config)
    session.publish(prepare_publish("t", b"1", 1), 0.0)  # fills the queue (offline)
    request = prepare_publish("t", b"2", 1)
    key = session.new_key()
    record_publish(store, key, request)
    assert len(store) == 2
    with pytest.raises(QueueFullError):
        session.publish(request, 0.0, "tok", key)
    assert store.get(key) is None
    assert len(store) == 1


def test_record_publish_leaves_a_message_by_alias_alone_to_the_session() -> None:
    store = MemoryStore()
    request = prepare_publish("", b"x", 1, False, Properties(topic_alias=3), MQTT_5)
    assert not record_publish(store, 1, request)
    assert len(store) == 0


def test_admission_error_counts_what_is_on_its_way() -> None:
    session = ClientSession(SessionConfig(max_queued=3))
    for _ in range(2):
        session.publish(prepare_publish("t", b"x", 1), 0.0)
    assert session.admission_error(1, 0, 0) is None
    error = session.admission_error(1, 1, 0)
    assert isinstance(error, QueueFullError)
    assert "3 messages" in str(error)
    dropping = ClientSession(SessionConfig(max_queued=1, queue_policy="drop_oldest"))
    dropping.publish(prepare_publish("t", b"x", 1), 0.0)
    assert dropping.admission_error(1, 5, 0) is None  # the policy drops instead


# -- Topic Alias -------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", [0, 65_536, -1])
def test_topic_alias_out_of_range_raises_at_once(alias: int) -> None:
    with pytest.raises(InvalidArgumentError, match=r"MQTT-3\.3\.2-8"):
        prepare_publish("t", b"x", 0, False, Properties(topic_alias=alias), MQTT_5)


def test_topic_alias_above_the_brokers_maximum_raises_before_it_is_queued() -> None:
    c = Conversation(5)
    c.handshake(properties=Properties(topic_alias_maximum=2))
    ok = prepare_publish("t", b"x", 0, False, Properties(topic_alias=2), MQTT_5)
    c.session.check_topic_alias(ok)
    over = prepare_publish("t", b"x", 0, False, Properties(topic_alias=3), MQTT_5)
    with pytest.raises(PublishError, match="Topic Alias Maximum 2"):
        c.session.check_topic_alias(over)
    assert c.session.state is State.CONNECTED


def test_a_311_shaped_connack_accepting_an_mqtt5_connect_is_malformed() -> None:
    # Found by tools/fuzz.py --seed 20261205: return code 0 in the 3.1.1 shape is no version
    # refusal but a malformed MQTT 5 CONNACK (no properties): closed with 0x81.
    c = Conversation(5)
    c.connect()
    c.send_bytes(b"\x20\x02\x00\x00")
    assert not any(isinstance(e, ConnectionRefused) for e in c.events())
    assert c.session.state is not State.CONNECTED
    assert [p.reason_code for p in c.sent() if isinstance(p, Disconnect)] == [0x81]
