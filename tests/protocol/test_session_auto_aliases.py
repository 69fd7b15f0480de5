"""ClientSession conversations: automatic outgoing Topic Aliases (``auto_topic_alias``, MQTT 5).

What goes on the wire, connection by connection: the first message of a topic carries its name
and alias, later ones the alias alone, up to the broker's Topic Alias Maximum; the replacement
policy at its exact boundary; a new connection starts over; a resend carries its full topic; an
alias the application sets itself wins. A scripted broker made of bytes; time is passed in.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqttkit.protocol import codec
from mqttkit.protocol.aliases import IDLE_FACTOR, MIN_TOPIC_BYTES, AutoAliases
from mqttkit.protocol.errors import PublishError
from mqttkit.protocol.packets import (
    MQTT_5,
    ConnAck,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
)
from mqttkit.protocol.session import PublishCompleted, prepare_publish

from .session_helpers import Conversation

A, B, C, D = "sensors/a/temp", "sensors/b/temp", "sensors/c/temp", "sensors/d/temp"


def maximum(n: int | None) -> Properties:
    """CONNACK properties announcing Topic Alias Maximum ``n``."""
    return Properties(topic_alias_maximum=n)


def by_alias(n: int) -> Properties:
    return Properties(topic_alias=n)


def connected(n: int | None = 10, **config: object) -> Conversation:
    """An MQTT 5 session with auto_topic_alias, connected to a broker allowing ``n`` aliases."""
    c = Conversation(5, auto_topic_alias=True, **config)
    c.handshake(properties=maximum(n))
    return c


def wire(c: Conversation) -> list[tuple[str, int | None]]:
    """(topic field, Topic Alias) of each PUBLISH the session wrote since the last call."""
    return [(p.topic, p.properties.topic_alias) for p in c.sent() if isinstance(p, Publish)]


def test_first_use_carries_topic_and_alias_later_uses_the_alias_alone() -> None:
    c = connected()
    c.publish(A, b"1")
    c.publish(A, b"2", 1, token="q1")
    c.publish(B, b"3", 2, token="q2")
    c.publish(A, b"4", 2, retain=True)
    c.publish(B, b"5")
    assert c.sent() == [
        Publish(A, b"1", properties=by_alias(1)),
        Publish("", b"2", 1, packet_id=1, properties=by_alias(1)),
        Publish(B, b"3", 2, packet_id=2, properties=by_alias(2)),
        Publish("", b"4", 2, True, packet_id=3, properties=by_alias(1)),
        Publish("", b"5", properties=by_alias(2)),
    ]
    # The flows complete as usual; the stored forms keep their topics and no alias.
    stored = [codec.decode_stored(v, MQTT_5) for _, v in c.config.outgoing_store.iterate()]
    assert [(p.topic, p.properties.topic_alias) for p in stored] == [
        (A, None),
        (B, None),
        (A, None),
    ]
    c.send(PubAck(1), PubRec(2), PubRec(3))
    assert [type(p) for p in c.sent()] == [PubRel, PubRel]
    c.send(PubComp(2), PubComp(3))
    assert [e.token for e in c.events() if isinstance(e, PublishCompleted)] == ["q1", "q2"]


@pytest.mark.parametrize("announced", [None, 0])
def test_no_alias_when_the_broker_allows_none(announced: int | None) -> None:
    # Topic Alias Maximum absent or 0: the broker accepts no alias (MQTT 5.0, 3.2.2.3.8).
    c = connected(announced)
    for payload in (b"1", b"2", b"3"):
        c.publish(A, payload, 1)
    assert wire(c) == [(A, None)] * 3


def test_off_by_default_and_with_mqtt_3() -> None:
    c = Conversation(5)
    c.handshake(properties=maximum(10))
    c.publish(A, b"1")
    c.publish(A, b"2")
    assert wire(c) == [(A, None), (A, None)]
    v3 = Conversation(4, auto_topic_alias=True)
    v3.handshake()
    v3.publish(A, b"1")
    v3.publish(A, b"2")
    assert [p.topic for p in v3.sent()] == [A, A]  # type: ignore[attr-defined]


def test_never_above_the_broker_maximum() -> None:
    # [MQTT-3.3.2-9]: 2 aliases, 3 topics in turn: the third always goes in full.
    c = connected(2)
    for _ in range(3):
        for topic in (A, B, C):
            c.publish(topic, b"x")
    assert wire(c) == [
        (A, 1), (B, 2), (C, None),
        ("", 1), ("", 2), (C, None),
        ("", 1), ("", 2), (C, None),
    ]  # fmt: skip


def test_an_alias_passes_to_a_new_topic_only_once_idle() -> None:
    # The boundary of the policy: with 2 aliases an alias is idle after 2 x IDLE_FACTOR
    # publishes without it. Each publish through the table counts, whether aliased or not.
    c = connected(2)
    idle = 2 * IDLE_FACTOR
    c.publish(A, b"x")  # publish 1: A gets alias 1
    for _ in range(idle - 2):
        c.publish(B, b"x")  # publishes 2 .. idle - 1: B gets alias 2 and keeps using it
    c.publish(C, b"x")  # publish idle: A unused for idle - 1 publishes: C goes in full
    assert wire(c)[-1] == (C, None)
    c.publish(C, b"x")  # publish idle + 1: A idle for idle publishes: C takes alias 1
    c.publish(C, b"x")
    c.publish(A, b"x")  # A lost its alias; B (the least recently used now) is not idle
    c.publish(B, b"x")
    assert wire(c) == [(C, 1), ("", 1), (A, None), ("", 2)]


def test_a_cycle_longer_than_the_aliases_keeps_them_on_the_first_topics() -> None:
    # Plain LRU would re-map an alias on every message here (3 bytes more than no alias).
    c = connected(2)
    for _ in range(50):
        for topic in (A, B, C):
            c.publish(topic, b"x")
    sent = wire(c)
    assert sent[:3] == [(A, 1), (B, 2), (C, None)]
    assert set(sent[3:]) == {("", 1), ("", 2), (C, None)}


def test_aliases_start_over_on_every_new_connection() -> None:
    # [MQTT-3.3.2-7]: no mapping carries over; the new CONNACK's maximum applies.
    c = connected(10, clean_start=False)
    c.publish(A, b"1")
    c.publish(B, b"2")
    c.publish(A, b"3")
    assert wire(c) == [(A, 1), (B, 2), ("", 1)]
    c.lose()
    c.connect()
    c.send(ConnAck(True, 0, maximum(1)))
    c.publish(B, b"4")
    c.publish(A, b"5")
    c.publish(B, b"6")
    assert wire(c) == [(B, 1), (A, None), ("", 1)]
    c.lose()
    c.connect()
    c.send(ConnAck(True, 0))  # no maximum this time: no alias at all
    c.publish(B, b"7")
    assert wire(c) == [(B, None)]


def test_a_resent_message_carries_its_full_topic() -> None:
    # Sent by alias alone; after a reconnect (session kept) it is resent with DUP, its full
    # topic and no alias, since the old connection's mapping is gone. The first new message
    # on that topic sets the alias again on the new connection.
    c = connected(10, clean_start=False)
    c.publish(A, b"1", 1)
    c.publish(A, b"2", 2)
    assert wire(c) == [(A, 1), ("", 1)]
    assert c.reconnect(session_present=True, properties=maximum(10)) == [
        Publish(A, b"1", 1, dup=True, packet_id=1),
        Publish(A, b"2", 2, dup=True, packet_id=2),
    ]
    c.publish(A, b"3")
    c.publish(A, b"4")
    assert wire(c) == [(A, 1), ("", 1)]


def test_a_message_requeued_after_a_lost_session_gets_the_new_connection_s_alias() -> None:
    c = connected(10, clean_start=False)
    c.publish(A, b"1")
    c.publish(A, b"2", 1)
    assert wire(c) == [(A, 1), ("", 1)]
    # Sent again as a new message (no DUP): the new connection's first use of A.
    assert c.reconnect(session_present=False, properties=maximum(10)) == [
        Publish(A, b"2", 1, packet_id=2, properties=by_alias(1)),
    ]


def test_messages_queued_offline_go_by_alias_once_connected() -> None:
    c = Conversation(5, auto_topic_alias=True)
    for i in range(3):
        c.publish(A, b"%d" % i, i % 2)
    c.handshake(properties=maximum(10))
    assert wire(c) == [(A, 1), ("", 1), ("", 1)]


def test_the_application_s_own_alias_wins() -> None:
    # The application sets alias 1 while the table has A on it: the number is the
    # application's for the rest of the connection, A gets another, and new topics skip it.
    c = connected(3)
    c.publish(A, b"1")
    c.publish(B, b"2")
    assert wire(c) == [(A, 1), (B, 2)]
    c.publish(D, b"3", properties=by_alias(1))
    c.publish("", b"4", properties=by_alias(1))
    c.publish(A, b"5")
    c.publish(C, b"6")
    c.publish(A, b"7")
    c.publish(B, b"8")
    assert wire(c) == [(D, 1), ("", 1), (A, 3), (C, None), ("", 3), ("", 2)]
    # A number the application took before the table got to it is skipped too.
    c = connected(3)
    c.publish(D, b"1", properties=by_alias(2))
    c.publish(A, b"2")
    c.publish(B, b"3")
    c.publish(C, b"4")
    assert wire(c) == [(D, 2), (A, 1), (B, 3), (C, None)]


def test_the_application_s_resent_alias_is_reserved_on_the_new_connection() -> None:
    c = connected(2, clean_start=False)
    c.publish(D, b"1", 1, properties=by_alias(1))
    assert wire(c) == [(D, 1)]
    # Resent with its topic and alias 1, which sets it on the new connection: A skips it.
    assert c.reconnect(session_present=True, properties=maximum(2)) == [
        Publish(D, b"1", 1, dup=True, packet_id=1, properties=by_alias(1)),
    ]
    c.publish(A, b"2")
    c.publish(B, b"3")
    assert wire(c) == [(A, 2), (B, None)]


def test_short_topics_keep_their_name() -> None:
    # By alias a topic of fewer than MIN_TOPIC_BYTES bytes would be no shorter.
    short, long_enough = "a" * (MIN_TOPIC_BYTES - 1), "b" * MIN_TOPIC_BYTES
    c = connected()
    for topic in (short, long_enough, short, long_enough):
        c.publish(topic, b"x")
    assert wire(c) == [(short, None), (long_enough, 1), (short, None), ("", 1)]


def test_the_alias_joins_the_message_s_own_properties() -> None:
    props = Properties(content_type="text/plain", user_property=(("k", "v" * 200),))
    c = connected()
    c.publish(A, b"1", properties=props)
    c.publish(A, b"2", 1, properties=props)
    with_alias = Properties(
        content_type="text/plain", user_property=(("k", "v" * 200),), topic_alias=1
    )
    assert c.sent() == [
        Publish(A, b"1", properties=with_alias),
        Publish("", b"2", 1, packet_id=1, properties=with_alias),
    ]


def test_no_alias_that_would_exceed_the_broker_maximum_packet_size() -> None:
    # A PUBLISH of exactly the broker's Maximum Packet Size may go [MQTT-3.2.2-15]; its first
    # message by alias would be 3 bytes larger, so it goes in full, every time.
    size = len(codec.encode_packet(Publish(A, b"x" * 20, properties=Properties()), MQTT_5))
    c = Conversation(5, auto_topic_alias=True)
    c.handshake(properties=Properties(topic_alias_maximum=10, maximum_packet_size=size))
    c.publish(A, b"x" * 20)
    c.publish(A, b"x" * 20)
    c.publish(B, b"x")
    c.publish(B, b"x")
    assert wire(c) == [(A, None), (A, None), (B, 1), ("", 1)]


def test_the_table_is_bounded() -> None:
    # A broker may allow 65,535 aliases; the table holds at most MAX_AUTO_ALIASES topics.
    table = AutoAliases(65_535, codec.MAX_PACKET_SIZE)
    for i in range(3000):
        table.wire_parts(prepare_publish(f"topic/{i}", b"", 0, False, None, MQTT_5))
    assert len(table) == 1024
    assert table.alias_of("topic/0") == 1
    assert table.alias_of("topic/1023") == 1024
    assert table.alias_of("topic/1024") is None


@pytest.mark.parametrize("body", [0, 1, 124, 125, 300, 16_380])
def test_add_topic_alias_appends_the_property_to_any_block(body: int) -> None:
    props = Properties(user_property=(("k", "v" * body),)) if body else Properties()
    block = codec.encode_properties(props, Publish.TYPE)
    data = codec.encode_publish_parts(
        codec.PUBLISH_FIRST[0][0], codec.EMPTY_TOPIC_FIELD, 0, codec.add_topic_alias(block, 7), b""
    )
    packet = codec.decode(data, MQTT_5)
    assert isinstance(packet, Publish)
    assert packet.properties.user_property == props.user_property
    assert packet.properties.topic_alias == 7


# -- any sequence: the broker always resolves each message to its own topic ---------------------

TOPICS = ("room/1/temperature", "room/2/temperature", "room/3/humidity", "a/much/longer/t", "s/1")

_publish = st.tuples(
    st.just("publish"),
    st.sampled_from(range(len(TOPICS))),
    st.integers(0, 2),
    st.sampled_from([None] * 6 + [1, 2, 3]),  # the application's own alias, sometimes
)
_ack = st.tuples(st.just("ack"))
_reconnect = st.tuples(st.just("reconnect"), st.sampled_from([0, 1, 2, 3, 3, 3]), st.booleans())
OPS = st.lists(st.one_of(*[_publish] * 8, _ack, _ack, _reconnect), min_size=20, max_size=100)


class _Broker:
    """The receiving end of one conversation: resolves what the session wrote as a broker
    would, connection by connection, and checks it against what was published. Every byte
    written before a connection ends arrives (QoS 0 included)."""

    def __init__(self, c: Conversation, expected: dict[bytes, str]) -> None:
        self.c = c
        self.expected = expected
        self.maximum = 0
        self.aliases: dict[int, str] = {}  # this connection's mapping, learnt from the wire
        self.inflight: dict[int, int] = {}  # packet id -> QoS of what awaits our answer
        self.seen: set[bytes] = set()

    def new_connection(self, maximum: int) -> None:
        self.maximum = maximum
        self.aliases = {}
        self.inflight = {}

    def acknowledge(self) -> None:
        """PUBACK / PUBREC for every QoS 1/2 message received and not yet answered."""
        for packet_id, qos in list(self.inflight.items()):
            self.c.send(PubAck(packet_id) if qos == 1 else PubRec(packet_id))
            del self.inflight[packet_id]

    def read(self) -> None:
        """Take what the session wrote until it writes nothing more (PUBREL gets its PUBCOMP
        at once, which may let more go), checking each PUBLISH."""
        for _ in range(100):
            packets = self.c.sent()
            if not packets:
                return
            for packet in packets:
                if isinstance(packet, PubRel):
                    self.c.send(PubComp(packet.packet_id))
                else:
                    assert isinstance(packet, Publish), packet
                    self.check(packet)
        raise AssertionError("the session kept writing")

    def check(self, packet: Publish) -> None:
        alias = packet.properties.topic_alias
        topic = packet.topic
        if alias is not None:
            # [MQTT-3.3.2-9], and an alias goes alone only once set on this connection.
            assert 1 <= alias <= self.maximum, (packet, self.maximum)
            if topic:
                self.aliases[alias] = topic
            else:
                assert alias in self.aliases, f"alias {alias} not set on this connection"
                topic = self.aliases[alias]
        if packet.dup:
            assert packet.topic  # a resend never relies on a mapping: it carries its topic
        assert topic == self.expected[packet.payload], (packet, self.expected)
        self.seen.add(packet.payload)
        if packet.qos:
            self.inflight[packet.packet_id or 0] = packet.qos


@settings(max_examples=300, deadline=None)
@given(ops=OPS, first_maximum=st.sampled_from([0, 1, 2, 3, 3, 3]))
def test_any_sequence_reaches_the_broker_on_the_right_topics(
    ops: list[tuple[object, ...]], first_maximum: int
) -> None:
    c = Conversation(5, auto_topic_alias=True, clean_start=False, max_inflight=4)
    expected: dict[bytes, str] = {}
    broker = _Broker(c, expected)
    c.handshake(properties=maximum(first_maximum))
    broker.new_connection(first_maximum)
    for number, op in enumerate(ops):
        if op[0] == "publish":
            _, index, qos, own = op
            payload = b"m%d" % number
            # The application's own aliases go to topics of their own: a number it takes from
            # the automatic table then maps to another topic on the broker.
            name = TOPICS[index] if own is None else f"own/{index}/topic"  # type: ignore[index]
            props = None if own is None else by_alias(own)  # type: ignore[arg-type]
            try:
                c.publish(name, payload, qos, properties=props, token=payload)  # type: ignore[arg-type]
            except PublishError:  # the application's alias over this broker's maximum
                assert own is not None
                assert own > broker.maximum
                continue
            expected[payload] = name
        elif op[0] == "ack":
            broker.acknowledge()
        else:
            _, new_maximum, present = op
            c.lose()
            c.connect()
            c.send(ConnAck(bool(present), 0, maximum(new_maximum)))  # type: ignore[arg-type]
            broker.new_connection(new_maximum)  # type: ignore[arg-type]
        broker.read()
        failed(c, expected)
    # The end: the connection acknowledges everything.
    for _ in range(100):
        broker.acknowledge()
        broker.read()
        failed(c, expected)
        if not broker.inflight and not c.session.pending:
            break
    assert not c.session.pending
    assert broker.seen >= set(expected)


def failed(c: Conversation, expected: dict[bytes, str]) -> None:
    """Forget the messages whose publish failed: an alias of the application over the maximum
    of a later connection, found when it was to be resent there."""
    for event in c.events():
        if isinstance(event, PublishCompleted) and event.error is not None:
            assert isinstance(event.error, PublishError), event.error
            expected.pop(event.token)
