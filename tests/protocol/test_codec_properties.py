"""Hypothesis round trips: decode(encode(p)) == p for every packet type at MQTT 3.1, 3.1.1 and 5.0.

The strategies generate valid packets only, built from this file's own transcription of the
specification's tables (MQTT 5.0 section 2.2.2.2 for properties, sections 3.x.2.1 for reason
codes), which are also checked against the codec's tables. test_codec_fuzz and test_framing reuse
``packets`` and ``level_and_packet``.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqttkit.protocol import codec
from mqttkit.protocol.codec import decode, encode_packet
from mqttkit.protocol.packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    NO_PROPERTIES,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)

LEVELS = (MQTT_3_1, MQTT_3_1_1, MQTT_5)
WILL = 0  # the pseudo packet type of Will Properties

C, CA, P, PA, PREC, PREL, PC = 1, 2, 3, 4, 5, 6, 7
S, SA, U, UA, D, AU = 8, 9, 10, 11, 14, 15

# fmt: off
# MQTT 5.0 section 2.2.2.2, table "Properties": id -> (name, value type, packets).
SPEC_PROPERTIES: dict[int, tuple[str, str, frozenset[int]]] = {
    0x01: ("payload_format_indicator", "byte", frozenset({P, WILL})),
    0x02: ("message_expiry_interval", "four", frozenset({P, WILL})),
    0x03: ("content_type", "utf8", frozenset({P, WILL})),
    0x08: ("response_topic", "utf8", frozenset({P, WILL})),
    0x09: ("correlation_data", "binary", frozenset({P, WILL})),
    0x0B: ("subscription_identifier", "varint", frozenset({P, S})),
    0x11: ("session_expiry_interval", "four", frozenset({C, CA, D})),
    0x12: ("assigned_client_identifier", "utf8", frozenset({CA})),
    0x13: ("server_keep_alive", "two", frozenset({CA})),
    0x15: ("authentication_method", "utf8", frozenset({C, CA, AU})),
    0x16: ("authentication_data", "binary", frozenset({C, CA, AU})),
    0x17: ("request_problem_information", "byte", frozenset({C})),
    0x18: ("will_delay_interval", "four", frozenset({WILL})),
    0x19: ("request_response_information", "byte", frozenset({C})),
    0x1A: ("response_information", "utf8", frozenset({CA})),
    0x1C: ("server_reference", "utf8", frozenset({CA, D})),
    0x1F: ("reason_string", "utf8", frozenset({CA, PA, PREC, PREL, PC, SA, UA, D, AU})),
    0x21: ("receive_maximum", "two", frozenset({C, CA})),
    0x22: ("topic_alias_maximum", "two", frozenset({C, CA})),
    0x23: ("topic_alias", "two", frozenset({P})),
    0x24: ("maximum_qos", "byte", frozenset({CA})),
    0x25: ("retain_available", "byte", frozenset({CA})),
    0x26: ("user_property", "pair", frozenset({C, CA, P, WILL, PA, PREC, PREL, PC, S, SA, U})
           | frozenset({UA, D, AU})),
    0x27: ("maximum_packet_size", "four", frozenset({C, CA})),
    0x28: ("wildcard_subscription_available", "byte", frozenset({CA})),
    0x29: ("subscription_identifier_available", "byte", frozenset({CA})),
    0x2A: ("shared_subscription_available", "byte", frozenset({CA})),
}
#: "It is a Protocol Error to ... have a value of 0": receive maximum, maximum packet size, topic
#: alias, subscription identifier. Every byte-valued property only admits 0 or 1.
NONZERO = frozenset({"receive_maximum", "maximum_packet_size", "topic_alias"})

# MQTT 5.0 reason codes per packet (tables in 3.2.2.2, 3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1,
# 3.9.3, 3.11.3, 3.14.2.1, 3.15.2.1).
SPEC_REASON_CODES: dict[int, frozenset[int]] = {
    CA: frozenset({0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C,
                   0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}),
    PA: frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99}),
    PREC: frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99}),
    PREL: frozenset({0x00, 0x92}),
    PC: frozenset({0x00, 0x92}),
    SA: frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2}),
    UA: frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91}),
    D: frozenset({0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90,
                  0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F,
                  0xA0, 0xA1, 0xA2}),
    AU: frozenset({0x00, 0x18, 0x19}),
}
# fmt: on
V3_CONNACK_CODES = range(6)
V3_SUBACK_CODES = (0x00, 0x01, 0x02, 0x80)

# -- strategies --------------------------------------------------------------------------------

#: Any text MQTT accepts in a UTF-8 string: no surrogates [MQTT-1.5.4-1], no U+0000 [MQTT-1.5.4-2].
TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
NONEMPTY_TEXT = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=12
)
TOPIC_NAMES = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00+#"), min_size=1, max_size=12
)
BINARY = st.binary(max_size=16)
PACKET_IDS = st.integers(1, 65_535)
U16 = st.integers(0, 65_535)
U32 = st.integers(0, 2**32 - 1)
USER_PROPERTIES = st.lists(st.tuples(TEXT, TEXT), max_size=3).map(tuple)


def _value_strategy(name: str, kind: str, packet_type: int) -> st.SearchStrategy[Any]:
    if name == "subscription_identifier":
        # Several in a PUBLISH from the server, at most one in a SUBSCRIBE.
        return st.lists(
            st.integers(1, codec.MAX_REMAINING_LENGTH), max_size=3 if packet_type == P else 1
        ).map(tuple)
    low = 1 if name in NONZERO else 0
    return {
        "byte": st.integers(0, 1),
        "two": st.integers(low, 65_535),
        "four": st.integers(low, 2**32 - 1),
        "utf8": TEXT,
        "binary": BINARY,
        "pair": USER_PROPERTIES,
    }[kind]


def properties(packet_type: int) -> st.SearchStrategy[Properties]:
    """Properties valid in ``packet_type`` (or WILL), any subset, valid values only."""
    optional = {
        name: _value_strategy(name, kind, packet_type)
        for name, kind, allowed in SPEC_PROPERTIES.values()
        if packet_type in allowed
    }
    return st.fixed_dictionaries({}, optional=optional).map(lambda d: Properties(**d))


def _props(packet_type: int, level: int) -> st.SearchStrategy[Properties]:
    return properties(packet_type) if level == MQTT_5 else st.just(NO_PROPERTIES)


@st.composite
def connects(draw: st.DrawFn, level: int) -> Connect:
    will = draw(
        st.none()
        | st.builds(Will, TEXT, BINARY, st.integers(0, 2), st.booleans(), _props(WILL, level))
    )
    username = draw(st.none() | TEXT)
    password = draw(st.none() | BINARY)
    if level != MQTT_5 and username is None:
        password = None  # [MQTT-3.1.2-22]; allowed alone in 5.0
    return Connect(
        draw(TEXT),
        level,
        draw(st.booleans()),
        draw(U16),
        username,
        password,
        will,
        draw(_props(C, level)),
    )


@st.composite
def connacks(draw: st.DrawFn, level: int) -> ConnAck:
    codes = sorted(SPEC_REASON_CODES[CA]) if level == MQTT_5 else V3_CONNACK_CODES
    code = draw(st.sampled_from(codes))
    # [MQTT-3.2.2-4] / [MQTT-3.2.2-6]: no session present with a failure code.
    session_present = draw(st.booleans()) if code == 0 else False
    return ConnAck(session_present, code, draw(_props(CA, level)))


@st.composite
def publishes(draw: st.DrawFn, level: int) -> Publish:
    qos = draw(st.integers(0, 2))
    props = draw(_props(P, level))
    topic = draw(TOPIC_NAMES)
    if props.topic_alias is not None and draw(st.booleans()):
        topic = ""  # the alias stands for the topic (5.0 only: aliases exist only there)
    return Publish(
        topic,
        draw(st.binary(max_size=64)),
        qos,
        draw(st.booleans()),
        draw(st.booleans()) if qos else False,  # [MQTT-3.3.1-2]
        draw(PACKET_IDS) if qos else None,
        props,
    )


def acks(cls: type[PubAck | PubRec | PubRel | PubComp], level: int) -> st.SearchStrategy[Packet]:
    if level != MQTT_5:
        return st.builds(cls, PACKET_IDS)
    return st.builds(
        cls, PACKET_IDS, st.sampled_from(sorted(SPEC_REASON_CODES[cls.TYPE])), properties(cls.TYPE)
    )


def subscriptions(level: int) -> st.SearchStrategy[Subscription]:
    if level != MQTT_5:
        return st.builds(Subscription, NONEMPTY_TEXT, st.integers(0, 2))
    return st.builds(
        Subscription,
        NONEMPTY_TEXT | NONEMPTY_TEXT.map(lambda t: "$share/g/" + t),
        st.integers(0, 2),
        st.booleans(),
        st.booleans(),
        st.integers(0, 2),
    ).filter(lambda s: not (s.no_local and s.topic_filter.startswith("$share/")))  # 3.8.3-4


def subscribes(level: int) -> st.SearchStrategy[Subscribe]:
    return st.builds(
        Subscribe,
        PACKET_IDS,
        st.lists(subscriptions(level), min_size=1, max_size=4).map(tuple),
        _props(S, level),
    )


def subacks(level: int) -> st.SearchStrategy[SubAck]:
    codes = sorted(SPEC_REASON_CODES[SA]) if level == MQTT_5 else V3_SUBACK_CODES
    return st.builds(
        SubAck,
        PACKET_IDS,
        st.lists(st.sampled_from(codes), min_size=1, max_size=5).map(tuple),
        _props(SA, level),
    )


def unsubscribes(level: int) -> st.SearchStrategy[Unsubscribe]:
    return st.builds(
        Unsubscribe,
        PACKET_IDS,
        st.lists(NONEMPTY_TEXT, min_size=1, max_size=4).map(tuple),
        _props(U, level),
    )


def unsubacks(level: int) -> st.SearchStrategy[UnsubAck]:
    if level != MQTT_5:
        return st.builds(UnsubAck, PACKET_IDS)  # 3.x UNSUBACK carries no codes
    return st.builds(
        UnsubAck,
        PACKET_IDS,
        st.lists(st.sampled_from(sorted(SPEC_REASON_CODES[UA])), min_size=1, max_size=5).map(tuple),
        properties(UA),
    )


def disconnects(level: int) -> st.SearchStrategy[Disconnect]:
    if level != MQTT_5:
        return st.just(Disconnect())
    return st.builds(Disconnect, st.sampled_from(sorted(SPEC_REASON_CODES[D])), properties(D))


def auths() -> st.SearchStrategy[Auth]:
    return st.builds(Auth, st.sampled_from(sorted(SPEC_REASON_CODES[AU])), properties(AU))


@functools.cache
def packets_of(packet_type: PacketType, level: int) -> st.SearchStrategy[Packet]:
    """Valid packets of one type at one protocol level."""
    factories: dict[PacketType, Any] = {
        PacketType.CONNECT: lambda: connects(level),
        PacketType.CONNACK: lambda: connacks(level),
        PacketType.PUBLISH: lambda: publishes(level),
        PacketType.PUBACK: lambda: acks(PubAck, level),
        PacketType.PUBREC: lambda: acks(PubRec, level),
        PacketType.PUBREL: lambda: acks(PubRel, level),
        PacketType.PUBCOMP: lambda: acks(PubComp, level),
        PacketType.SUBSCRIBE: lambda: subscribes(level),
        PacketType.SUBACK: lambda: subacks(level),
        PacketType.UNSUBSCRIBE: lambda: unsubscribes(level),
        PacketType.UNSUBACK: lambda: unsubacks(level),
        PacketType.PINGREQ: lambda: st.just(PingReq()),
        PacketType.PINGRESP: lambda: st.just(PingResp()),
        PacketType.DISCONNECT: lambda: disconnects(level),
        PacketType.AUTH: auths,
    }
    strategy: st.SearchStrategy[Packet] = factories[packet_type]()
    return strategy


def types_at(level: int) -> list[PacketType]:
    return [t for t in PacketType if t != PacketType.AUTH or level == MQTT_5]


@functools.cache
def packets(level: int) -> st.SearchStrategy[Packet]:
    """Valid packets of any type at ``level``."""
    return st.one_of([packets_of(t, level) for t in types_at(level)])


def level_and_packet() -> st.SearchStrategy[tuple[int, Packet]]:
    """A protocol level and a valid packet at that level."""
    return st.one_of([st.tuples(st.just(lvl), packets(lvl)) for lvl in LEVELS])


# -- tests --------------------------------------------------------------------------------------


def test_property_table_matches_the_specification() -> None:
    kinds = {"byte": codec.BYTE, "two": codec.TWO, "four": codec.FOUR, "varint": codec.VARINT}
    kinds |= {"utf8": codec.UTF8, "binary": codec.BINARY, "pair": codec.PAIR}
    expected = {
        pid: (name, kinds[kind], allowed) for pid, (name, kind, allowed) in SPEC_PROPERTIES.items()
    }
    assert expected == codec.PROPERTIES
    assert set(Properties.__dataclass_fields__) == {name for name, _, _ in expected.values()}


def test_reason_code_tables_match_the_specification() -> None:
    assert codec.REASON_CODES == SPEC_REASON_CODES
    v3 = {CA: frozenset(V3_CONNACK_CODES), SA: frozenset(V3_SUBACK_CODES)}
    assert v3 == codec.REASON_CODES_V3


@pytest.mark.parametrize(
    ("packet_type", "level"),
    [pytest.param(t, lvl, id=f"{t.name}@{lvl}") for lvl in LEVELS for t in types_at(lvl)],
)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_round_trip(packet_type: PacketType, level: int, data: st.DataObject) -> None:
    packet = data.draw(packets_of(packet_type, level), label="packet")
    encoded = encode_packet(packet, level)
    assert decode(encoded, level) == packet
    assert encode_packet(decode(encoded, level), level) == encoded


@settings(max_examples=150, deadline=None)
@given(level_and_packet())
def test_round_trip_any_packet(case: tuple[int, Packet]) -> None:
    level, packet = case
    assert decode(encode_packet(packet, level), level) == packet


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(sorted({WILL} | {t for _, _, a in SPEC_PROPERTIES.values() for t in a})),
    st.data(),
)
def test_properties_round_trip_in_every_packet_that_carries_them(
    packet_type: int, data: st.DataObject
) -> None:
    """encode_properties and the decoder's property reader agree, packet type by packet type."""
    props = data.draw(properties(packet_type))
    block = codec.encode_properties(props, packet_type)
    reader = codec._Reader(block, 0, len(block))  # the decoder's own reader, no framing around it
    assert reader.properties(packet_type) == props
    assert reader.pos == len(block)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_encoder_refuses_properties_a_packet_may_not_carry(data: st.DataObject) -> None:
    pid = data.draw(st.sampled_from(sorted(SPEC_PROPERTIES.keys() - {0x26})))  # not: allowed in all
    name, kind, allowed = SPEC_PROPERTIES[pid]
    packet_type = data.draw(
        st.sampled_from(sorted({WILL, C, CA, P, PA, PREC, PREL, PC, S, SA, U, UA, D, AU} - allowed))
    )
    value = data.draw(_value_strategy(name, kind, P).filter(lambda v: v not in ((), None)))
    with pytest.raises(ValueError, match=f"{name} is not allowed"):
        codec.encode_properties(Properties(**{name: value}), packet_type)
