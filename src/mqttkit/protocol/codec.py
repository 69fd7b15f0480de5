"""Wire format: framing, and encode/decode of every control packet of MQTT 3.1, 3.1.1 and 5.0.

Theory of operation
-------------------
All wire facts live in tables at the top of this module: the fixed-header flags each packet
type requires, the property identifiers with their type and the packets that may carry them, and
the reason codes each packet may carry. Encoding and decoding are both driven by those tables, so
a fact is written once.

:class:`PacketBuffer` turns a byte stream cut at arbitrary places into whole frames
``(first_byte, data, start, end)``: the body is ``data[start:end]``. It never copies a frame that
arrived whole in one chunk. :func:`decode_packet` turns a frame into a packet object and raises
:class:`MalformedPacketError` (or :class:`ProtocolError`) for anything the specification calls
malformed; that is the only exception any input can cause here. :func:`encode_packet` does the
reverse; it trusts its input to be valid (the session validates user input before it gets here)
but still refuses what cannot be encoded at all.

The session's speed tricks live here too, so that no other module builds or reads a wire byte:
the pre-encoded parts of a PUBLISH (:data:`PUBLISH_FIRST`, :func:`encode_topic_field`,
:func:`encode_publish_parts`), the success forms of the four acknowledgements and PINGREQ, the
first-byte tables of the receive fast path (:data:`PUBLISH_FIRST_BYTES`,
:data:`SHORT_ACK_TYPES`, :func:`short_ack_id`), and the edits the session makes to the stored
bytes of an outgoing flow (:func:`set_dup`, :func:`set_packet_id`, :func:`decode_stored`).
The codec keeps no state between calls beyond bounded caches, knows nothing of sessions, flows
or stores, and does no I/O.

Normative statement ids from the specifications are quoted next to the checks, MQTT 5.0 ids
unless the check only exists in 3.1.1.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any, Final

from .errors import MalformedPacketError, ProtocolError, ReasonCode
from .packets import (
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

__all__ = [
    "MAX_PACKET_SIZE",
    "MAX_REMAINING_LENGTH",
    "PacketBuffer",
    "decode",
    "decode_packet",
    "decode_publish",
    "encode_packet",
    "encode_properties",
    "encode_publish",
    "encode_publish_parts",
    "encode_varint",
]

# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------

#: The largest Remaining Length the 4-byte Variable Byte Integer can carry (section 1.5.5).
MAX_REMAINING_LENGTH: Final = 268_435_455
#: The largest whole packet: fixed header (1 + 4 bytes) plus the largest remaining length.
MAX_PACKET_SIZE: Final = MAX_REMAINING_LENGTH + 5

#: Fixed-header flags (low nibble) each packet type requires; PUBLISH has its own rules.
#: [MQTT-2.1.3-1]: "Where a flag bit is marked as Reserved, it is reserved for future use and MUST
#: be set to the value listed."
REQUIRED_FLAGS: Final[dict[int, int]] = {
    PacketType.CONNECT: 0b0000,
    PacketType.CONNACK: 0b0000,
    PacketType.PUBACK: 0b0000,
    PacketType.PUBREC: 0b0000,
    PacketType.PUBREL: 0b0010,
    PacketType.PUBCOMP: 0b0000,
    PacketType.SUBSCRIBE: 0b0010,
    PacketType.SUBACK: 0b0000,
    PacketType.UNSUBSCRIBE: 0b0010,
    PacketType.UNSUBACK: 0b0000,
    PacketType.PINGREQ: 0b0000,
    PacketType.PINGRESP: 0b0000,
    PacketType.DISCONNECT: 0b0000,
    PacketType.AUTH: 0b0000,
}

# Property value types (section 1.5).
BYTE, TWO, FOUR, VARINT, UTF8, BINARY, PAIR = range(7)

#: Pseudo packet type for the Will Properties of CONNECT.
WILL: Final = 0

_C, _CA, _P, _PA, _PREC, _PREL, _PC = (
    PacketType.CONNECT,
    PacketType.CONNACK,
    PacketType.PUBLISH,
    PacketType.PUBACK,
    PacketType.PUBREC,
    PacketType.PUBREL,
    PacketType.PUBCOMP,
)
_S, _SA, _U, _UA, _D, _AU = (
    PacketType.SUBSCRIBE,
    PacketType.SUBACK,
    PacketType.UNSUBSCRIBE,
    PacketType.UNSUBACK,
    PacketType.DISCONNECT,
    PacketType.AUTH,
)
_ALL: Final = frozenset({_C, _CA, _P, WILL, _PA, _PREC, _PREL, _PC, _S, _SA, _U, _UA, _D, _AU})

#: MQTT 5 properties (section 2.2.2.2): id -> (field name, type, packets that may carry it).
PROPERTIES: Final[dict[int, tuple[str, int, frozenset[int]]]] = {
    0x01: ("payload_format_indicator", BYTE, frozenset({_P, WILL})),
    0x02: ("message_expiry_interval", FOUR, frozenset({_P, WILL})),
    0x03: ("content_type", UTF8, frozenset({_P, WILL})),
    0x08: ("response_topic", UTF8, frozenset({_P, WILL})),
    0x09: ("correlation_data", BINARY, frozenset({_P, WILL})),
    0x0B: ("subscription_identifier", VARINT, frozenset({_P, _S})),
    0x11: ("session_expiry_interval", FOUR, frozenset({_C, _CA, _D})),
    0x12: ("assigned_client_identifier", UTF8, frozenset({_CA})),
    0x13: ("server_keep_alive", TWO, frozenset({_CA})),
    0x15: ("authentication_method", UTF8, frozenset({_C, _CA, _AU})),
    0x16: ("authentication_data", BINARY, frozenset({_C, _CA, _AU})),
    0x17: ("request_problem_information", BYTE, frozenset({_C})),
    0x18: ("will_delay_interval", FOUR, frozenset({WILL})),
    0x19: ("request_response_information", BYTE, frozenset({_C})),
    0x1A: ("response_information", UTF8, frozenset({_CA})),
    0x1C: ("server_reference", UTF8, frozenset({_CA, _D})),
    0x1F: ("reason_string", UTF8, frozenset({_CA, _PA, _PREC, _PREL, _PC, _SA, _UA, _D, _AU})),
    0x21: ("receive_maximum", TWO, frozenset({_C, _CA})),
    0x22: ("topic_alias_maximum", TWO, frozenset({_C, _CA})),
    0x23: ("topic_alias", TWO, frozenset({_P})),
    0x24: ("maximum_qos", BYTE, frozenset({_CA})),
    0x25: ("retain_available", BYTE, frozenset({_CA})),
    0x26: ("user_property", PAIR, _ALL),
    0x27: ("maximum_packet_size", FOUR, frozenset({_C, _CA})),
    0x28: ("wildcard_subscription_available", BYTE, frozenset({_CA})),
    0x29: ("subscription_identifier_available", BYTE, frozenset({_CA})),
    0x2A: ("shared_subscription_available", BYTE, frozenset({_CA})),
}
_PROPERTY_IDS: Final = {name: pid for pid, (name, _, _) in PROPERTIES.items()}
#: Properties whose value is a boolean byte: anything but 0 or 1 is a protocol error. Maximum QoS
#: too: "It is a Protocol Error to include Maximum QoS more than once, or to have a value other
#: than 0 or 1" (section 3.2.2.3.4).
_BOOLEAN_PROPERTIES: Final = frozenset({0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A})
#: Properties for which 0 is a protocol error: receive maximum (MQTT 5.0 sections 3.1.2.11.3,
#: 3.2.2.3.3), maximum packet size, topic alias [MQTT-3.3.2-8], subscription identifier.
_NONZERO_PROPERTIES: Final = frozenset({0x0B, 0x21, 0x23, 0x27})

#: MQTT 5 reason codes each packet may carry (sections 3.x.2.1).
# fmt: off
REASON_CODES: Final[dict[int, frozenset[int]]] = {
    _CA: frozenset({0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A,
                    0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}),
    _PA: frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99}),
    _PREC: frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99}),
    _PREL: frozenset({0x00, 0x92}),
    _PC: frozenset({0x00, 0x92}),
    _SA: frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2}),
    _UA: frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91}),
    _D: frozenset({0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F,
                   0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D,
                   0x9E, 0x9F, 0xA0, 0xA1, 0xA2}),
    _AU: frozenset({0x00, 0x18, 0x19}),
}
# fmt: on
#: MQTT 3.1 / 3.1.1: CONNACK return codes 0-5 (MQTT 3.1.1 section 3.2.2.3, Table 3.1: a server
#: with no code of the table for its answer closes without a CONNACK, 3.1.1's [MQTT-3.2.2-6]);
#: SUBACK 0, 1, 2 or 0x80.
REASON_CODES_V3: Final[dict[int, frozenset[int]]] = {
    _CA: frozenset(range(6)),
    _SA: frozenset({0x00, 0x01, 0x02, 0x80}),
}

_PROTOCOL_NAMES: Final = {MQTT_3_1: b"MQIsdp", MQTT_3_1_1: b"MQTT", MQTT_5: b"MQTT"}

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_pack_u16 = _U16.pack
_unpack_u16_from = _U16.unpack_from

# ---------------------------------------------------------------------------------------------
# Primitive encoders
# ---------------------------------------------------------------------------------------------


def _varint_table() -> tuple[bytes, ...]:
    # Remaining lengths below 16,384 (two bytes) cover nearly all packets: precompute them.
    out = []
    for n in range(16_384):
        out.append(bytes([n]) if n < 128 else bytes([(n & 0x7F) | 0x80, n >> 7]))
    return tuple(out)


_SMALL_VARINTS: Final = _varint_table()


def encode_varint(value: int) -> bytes:
    """Encode a Variable Byte Integer (section 1.5.5); 0 <= value <= 268,435,455."""
    if value < 16_384:
        return _SMALL_VARINTS[value]
    if value > MAX_REMAINING_LENGTH:
        raise ValueError(f"{value} does not fit a Variable Byte Integer (max 268,435,455)")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _str(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 65_535:
        raise ValueError(f"string of {len(raw)} bytes exceeds the 65,535-byte limit")
    return _pack_u16(len(raw)) + raw


def _bin(value: bytes) -> bytes:
    if len(value) > 65_535:
        raise ValueError(f"binary data of {len(value)} bytes exceeds the 65,535-byte limit")
    return _pack_u16(len(value)) + bytes(value)


def _encode_property_value(ptype: int, value: Any) -> bytes:
    if ptype == BYTE:
        return bytes([value])
    if ptype == TWO:
        return _pack_u16(value)
    if ptype == FOUR:
        return _U32.pack(value)
    if ptype == VARINT:
        return encode_varint(value)
    if ptype == UTF8:
        return _str(value)
    return _bin(value)


def encode_properties(props: Properties, packet_type: int) -> bytes:
    """Encode a property block (length prefix included) for ``packet_type`` (or ``WILL``).

    Raises:
        ValueError: a property this packet may not carry, or a value out of range.
    """
    if props is NO_PROPERTIES:
        return b"\x00"
    parts: list[bytes] = []
    for pid, (name, ptype, allowed) in PROPERTIES.items():
        value = getattr(props, name)
        if value is None or value == ():
            continue
        if packet_type not in allowed:
            raise ValueError(f"property {name} is not allowed in {_packet_name(packet_type)}")
        if ptype == PAIR:
            for key, val in value:
                parts.append(b"\x26" + _str(key) + _str(val))
        elif pid == 0x0B:
            for sid in value:
                parts.append(b"\x0b" + encode_varint(sid))
        else:
            parts.append(bytes([pid]) + _encode_property_value(ptype, value))
    body = b"".join(parts)
    return encode_varint(len(body)) + body


def _packet_name(packet_type: int) -> str:
    return "Will Properties" if packet_type == WILL else PacketType(packet_type).name


def _frame(first: int, body: bytes) -> bytes:
    if len(body) > MAX_REMAINING_LENGTH:
        raise ValueError(f"packet body of {len(body)} bytes exceeds the protocol maximum")
    return bytes([first]) + encode_varint(len(body)) + body


def encode_publish(
    topic: bytes,
    payload: bytes,
    qos: int,
    retain: bool,
    dup: bool,
    packet_id: int,
    properties: bytes | None,
) -> bytes:
    """Encode a PUBLISH from pre-validated parts.

    ``topic`` is the UTF-8 topic name; ``properties`` the encoded property block for MQTT 5 or
    None for 3.x; ``packet_id`` is ignored for QoS 0.
    """
    first = 0x30 | (dup << 3) | (qos << 1) | retain
    return encode_publish_parts(
        first, _pack_u16(len(topic)) + topic, packet_id, properties, payload
    )


#: One-byte bytes objects, by value: the first byte of a fixed header without allocating.
BYTE_VALUES: Final = tuple(bytes((b,)) for b in range(256))


def encode_publish_parts(
    first: int,
    topic_field: bytes,
    packet_id: int,
    properties: bytes | None,
    payload: bytes,
) -> bytes:
    """Encode a PUBLISH from its first byte, its length-prefixed topic (``topic_field``), the
    packet id (used when the QoS bits of ``first`` are set), the MQTT 5 property block (None
    for 3.x) and the payload: the hot path, one copy of the payload."""
    if first & 0x06:
        head = topic_field + _pack_u16(packet_id)
    else:
        head = topic_field
    if properties is not None:
        head += properties
    remaining = len(head) + len(payload)
    if remaining < 16_384:
        return b"".join((BYTE_VALUES[first], _SMALL_VARINTS[remaining], head, payload))
    if remaining > MAX_REMAINING_LENGTH:
        raise ValueError(f"PUBLISH of {remaining} bytes exceeds the protocol maximum")
    return b"".join((BYTE_VALUES[first], encode_varint(remaining), head, payload))


def encode_packet(packet: Packet, protocol_level: int = MQTT_3_1_1) -> bytes:
    """Encode any control packet for the given protocol level.

    Raises:
        ValueError: the packet cannot be expressed at this protocol level or exceeds a limit.
    """
    encoder = _ENCODERS[packet.TYPE]
    return encoder(packet, protocol_level)


def _enc_connect(p: Connect, _level: int) -> bytes:
    level = p.protocol_level
    v5 = level == MQTT_5
    flags = 0
    if p.clean_start:
        flags |= 0x02
    payload = [_str(p.client_id)]
    if p.will is not None:
        flags |= 0x04 | (p.will.qos << 3) | (0x20 if p.will.retain else 0)
        if v5:
            payload.append(encode_properties(p.will.properties, WILL))
        payload.append(_str(p.will.topic))
        payload.append(_bin(p.will.payload))
    if p.username is not None:
        flags |= 0x80
        payload.append(_str(p.username))
    if p.password is not None:
        flags |= 0x40
        payload.append(_bin(p.password))
    head = _bin(_PROTOCOL_NAMES[level]) + bytes([level, flags]) + _pack_u16(p.keepalive)
    if v5:
        head += encode_properties(p.properties, _C)
    return _frame(0x10, head + b"".join(payload))


def _enc_connack(p: ConnAck, level: int) -> bytes:
    body = bytes([1 if p.session_present else 0, p.reason_code])
    if level == MQTT_5:
        body += encode_properties(p.properties, _CA)
    return _frame(0x20, body)


def _enc_publish(p: Publish, level: int) -> bytes:
    props = encode_properties(p.properties, _P) if level == MQTT_5 else None
    return encode_publish(
        p.topic.encode("utf-8"),
        p.payload,
        p.qos,
        p.retain,
        p.dup,
        p.packet_id or 0,
        props,
    )


def _enc_ack(p: PubAck | PubRec | PubRel | PubComp, level: int) -> bytes:
    first = (p.TYPE << 4) | REQUIRED_FLAGS[p.TYPE]
    body = _pack_u16(p.packet_id)
    if level == MQTT_5:
        body += _reason_and_properties(p.reason_code, p.properties, p.TYPE)
    return _frame(first, body)


def _reason_and_properties(reason_code: int, props: Properties, ptype: int) -> bytes:
    # The short forms of sections 3.4.2.1, 3.14.2.1, 3.15.2.1: the reason code may be left out
    # when it is 0 and there are no properties, the properties when there are none.
    if props is NO_PROPERTIES or not props:
        return b"" if reason_code == 0 else bytes([reason_code])
    return bytes([reason_code]) + encode_properties(props, ptype)


def _enc_subscribe(p: Subscribe, level: int) -> bytes:
    parts = [_pack_u16(p.packet_id)]
    if level == MQTT_5:
        parts.append(encode_properties(p.properties, _S))
    for sub in p.subscriptions:
        options = sub.qos
        if level == MQTT_5:
            options |= (
                (0x04 if sub.no_local else 0)
                | (0x08 if sub.retain_as_published else 0)
                | (sub.retain_handling << 4)
            )
        parts.append(_str(sub.topic_filter) + bytes([options]))
    return _frame(0x82, b"".join(parts))


def _enc_suback(p: SubAck, level: int) -> bytes:
    body = _pack_u16(p.packet_id)
    if level == MQTT_5:
        body += encode_properties(p.properties, _SA)
    return _frame(0x90, body + bytes(p.reason_codes))


def _enc_unsubscribe(p: Unsubscribe, level: int) -> bytes:
    parts = [_pack_u16(p.packet_id)]
    if level == MQTT_5:
        parts.append(encode_properties(p.properties, _U))
    parts.extend(_str(f) for f in p.topic_filters)
    return _frame(0xA2, b"".join(parts))


def _enc_unsuback(p: UnsubAck, level: int) -> bytes:
    body = _pack_u16(p.packet_id)
    if level == MQTT_5:
        body += encode_properties(p.properties, _UA) + bytes(p.reason_codes)
    return _frame(0xB0, body)


def _enc_empty(p: PingReq | PingResp, _level: int) -> bytes:
    return bytes([p.TYPE << 4, 0])


def _enc_disconnect(p: Disconnect, level: int) -> bytes:
    if level != MQTT_5:
        return b"\xe0\x00"
    return _frame(0xE0, _reason_and_properties(p.reason_code, p.properties, _D))


def _enc_auth(p: Auth, level: int) -> bytes:
    if level != MQTT_5:
        raise ValueError("AUTH exists only in MQTT 5")
    return _frame(0xF0, _reason_and_properties(p.reason_code, p.properties, _AU))


_ENCODERS: Final[dict[int, Callable[[Any, int], bytes]]] = {
    PacketType.CONNECT: _enc_connect,
    PacketType.CONNACK: _enc_connack,
    PacketType.PUBLISH: _enc_publish,
    PacketType.PUBACK: _enc_ack,
    PacketType.PUBREC: _enc_ack,
    PacketType.PUBREL: _enc_ack,
    PacketType.PUBCOMP: _enc_ack,
    PacketType.SUBSCRIBE: _enc_subscribe,
    PacketType.SUBACK: _enc_suback,
    PacketType.UNSUBSCRIBE: _enc_unsubscribe,
    PacketType.UNSUBACK: _enc_unsuback,
    PacketType.PINGREQ: _enc_empty,
    PacketType.PINGRESP: _enc_empty,
    PacketType.DISCONNECT: _enc_disconnect,
    PacketType.AUTH: _enc_auth,
}

# ---------------------------------------------------------------------------------------------
# The session's fast paths and stored forms
#
# The session never builds or reads a byte itself: the pre-built packets, the short forms it
# sends and receives most, and the edits it makes to stored PUBLISH bytes are here.
# ---------------------------------------------------------------------------------------------


def _first_byte(packet_type: int) -> int:
    return (packet_type << 4) | REQUIRED_FLAGS[packet_type]


#: The first byte of a PUBLISH by ``[qos][retain]``, DUP clear (section 3.3.1).
PUBLISH_FIRST: Final = tuple(
    tuple((PacketType.PUBLISH << 4) | (qos << 1) | retain for retain in (0, 1)) for qos in (0, 1, 2)
)
#: Every first byte a PUBLISH may arrive with (its flags are checked when it is decoded).
PUBLISH_FIRST_BYTES: Final = frozenset(
    range(PacketType.PUBLISH << 4, (PacketType.PUBLISH + 1) << 4)
)
#: The DUP flag of a PUBLISH's first byte [MQTT-3.3.1-1].
_DUP: Final = 0x08
#: The first bytes of PUBACK, PUBREC, PUBREL, PUBCOMP (PUBREL's reserved flags are 0b0010),
#: by packet type: the acknowledgements of the QoS 1/2 flows, decoded in place when short.
SHORT_ACK_TYPES: Final[dict[int, PacketType]] = {
    _first_byte(t): t
    for t in (PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL, PacketType.PUBCOMP)
}

# The success forms of the four acknowledgements: packet id in, four bytes out. The same at
# every protocol level (MQTT 5 leaves out reason code 0 and no properties, sections 3.4.2.1,
# 3.5.2.1, 3.6.2.1, 3.7.2.1). A precompiled struct bound to its first two bytes: one C call,
# no Python frame. (Caching the bytes per packet id was faster still, but ids cycle through all
# 65,535 values: up to 7 MB a packet type.)
_SHORT_ACK: Final = struct.Struct("!BBH")
encode_puback: Final[Callable[[int], bytes]] = partial(
    _SHORT_ACK.pack, _first_byte(PacketType.PUBACK), 2
)
encode_pubrec: Final[Callable[[int], bytes]] = partial(
    _SHORT_ACK.pack, _first_byte(PacketType.PUBREC), 2
)
encode_pubrel: Final[Callable[[int], bytes]] = partial(
    _SHORT_ACK.pack, _first_byte(PacketType.PUBREL), 2
)
encode_pubcomp: Final[Callable[[int], bytes]] = partial(
    _SHORT_ACK.pack, _first_byte(PacketType.PUBCOMP), 2
)
#: PINGREQ, the same at every protocol level.
PINGREQ: Final = bytes((_first_byte(PacketType.PINGREQ), 0))


def short_ack_id(data: bytes, start: int, end: int) -> int:
    """The packet identifier of an acknowledgement body ``data[start:end]`` in its short form
    (two bytes: success, no properties), or 0 when it has another form (decode it then).

    Raises:
        MalformedPacketError: packet identifier 0 [MQTT-2.2.1-3].
    """
    if end - start != 2:
        return 0
    packet_id = (data[start] << 8) | data[start + 1]
    if not packet_id:
        raise MalformedPacketError("packet identifier 0 [MQTT-2.2.1-3]")
    return packet_id


def encode_topic_field(topic: bytes) -> bytes:
    """A UTF-8 topic name as it goes on the wire: two-byte length, then the bytes (1.5.4)."""
    return _pack_u16(len(topic)) + topic


#: The topic field of a PUBLISH sent by Topic Alias alone: a zero-length topic name.
EMPTY_TOPIC_FIELD: Final = encode_topic_field(b"")

_TOPIC_ALIAS_ID: Final = bytes((_PROPERTY_IDS["topic_alias"],))


def add_topic_alias(properties: bytes, alias: int) -> bytes:
    """The encoded MQTT 5 property block ``properties`` (length prefix included, no Topic Alias
    in it) with Topic Alias ``alias`` appended (MQTT 5.0, 3.3.2.3.4): the wire form of a
    PUBLISH sent under an automatic alias, whose queued and stored forms carry none. Properties
    may come in any order (2.2.2.2), so the rest is copied as it is."""
    entry = _TOPIC_ALIAS_ID + _pack_u16(alias)
    if len(properties) == 1:  # the empty block: the common case
        return b"\x03" + entry
    # Skip the block's Variable Byte Integer length (at most 4 bytes, section 1.5.5).
    start = 1
    while properties[start - 1] & 0x80:
        start += 1
    body = properties[start:]
    return encode_varint(len(body) + 3) + body + entry


def publish_remaining_length(
    topic_length: int, qos: int, payload_length: int, properties_length: int | None
) -> int:
    """The Remaining Length of a PUBLISH: topic field, packet identifier (QoS 1/2), the
    property block (None for MQTT 3.x) and the payload (section 3.3.2)."""
    return 2 + topic_length + (2 if qos else 0) + (properties_length or 0) + payload_length


def packet_size(remaining_length: int) -> int:
    """The size of a whole packet with this Remaining Length (fixed header included)."""
    return 1 + len(encode_varint(min(remaining_length, MAX_REMAINING_LENGTH))) + remaining_length


def set_dup(data: bytes) -> bytes:
    """The encoded PUBLISH ``data`` with DUP set, for a resend [MQTT-3.3.1-1] (``data``
    itself when it is set already)."""
    first = data[0]
    if first & _DUP:
        return data
    return BYTE_VALUES[first | _DUP] + data[1:]


def has_dup(data: bytes) -> bool:
    """True if the encoded PUBLISH ``data`` has DUP set."""
    return bool(data[0] & _DUP)


def set_packet_id(data: bytes, packet_id: int, tail: int) -> bytes:
    """The encoded QoS 1/2 PUBLISH ``data`` with ``packet_id`` in place of its identifier:
    cheaper than encoding it again. ``tail`` is how many bytes follow the identifier (the
    property block and the payload), so the identifier is found from the end without parsing
    the header. One copy: the tail goes in through a view, not a slice (a second copy of a
    large payload)."""
    offset = len(data) - tail - 2
    return b"".join((data[:offset], _pack_u16(packet_id), memoryview(data)[offset + 2 :]))


def _publish_id_offset(data: bytes) -> int:
    # Position of the packet identifier in an encoded QoS 1/2 PUBLISH: after the fixed header
    # and the topic name.
    i = 1
    while data[i] & 0x80:
        i += 1
    i += 1
    return i + 2 + ((data[i] << 8) | data[i + 1])


def decode_stored(data: bytes, protocol_level: int) -> Publish | PubRel:
    """Decode an outgoing flow's stored form: a PUBLISH, or the PUBREL that replaced it once
    PUBREC came back. A PUBLISH queued before it was sent is stored with packet identifier 0,
    which no PUBLISH may carry on the wire [MQTT-2.2.1-3]: it decodes with ``packet_id`` 0.

    Raises:
        MalformedPacketError: not a whole PUBLISH or PUBREL, or malformed.
        ProtocolError: a well-formed packet the protocol forbids.
    """
    ptype = data[0] >> 4 if data else 0
    if ptype == PacketType.PUBREL:
        packet = decode(data, protocol_level)
        assert isinstance(packet, PubRel)
        return packet
    if ptype != PacketType.PUBLISH:
        raise MalformedPacketError("not a PUBLISH or PUBREL")
    try:
        offset = _publish_id_offset(data)
    except IndexError:
        raise MalformedPacketError("PUBLISH shorter than its header") from None
    queued = data[offset : offset + 2] == b"\x00\x00" and bool(data[0] & 0x06)
    if not queued:
        packet = decode(data, protocol_level)
        assert isinstance(packet, Publish)
        return packet
    # Decoded with a stand-in identifier, which the result then replaces.
    message = decode(data[:offset] + b"\x00\x01" + data[offset + 2 :], protocol_level)
    assert isinstance(message, Publish)
    return replace(message, packet_id=0)


# ---------------------------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------------------------

Frame = tuple[int, bytes, int, int]


class PacketBuffer:
    """Cuts a byte stream into frames, whatever the chunk boundaries.

    Args:
        max_packet_size: the largest whole packet accepted; a larger one is refused as soon as its
            fixed header has arrived, before its body is buffered.
    """

    __slots__ = ("_held", "_need", "_parts", "max_packet_size")

    def __init__(self, max_packet_size: int = MAX_PACKET_SIZE) -> None:
        # The chunks of a partial frame, joined once it is whole: one copy of a large packet
        # (growing a bytearray and converting it to bytes cost two).
        self._parts: list[bytes | memoryview] = []
        self._held = 0  # bytes in _parts
        # Bytes the buffered partial frame needs before it is whole (0: header incomplete).
        self._need = 0
        self.max_packet_size = max_packet_size

    def __len__(self) -> int:
        """Bytes held that do not yet form a whole packet."""
        return self._held

    def clear(self) -> None:
        """Forget any partial packet (the connection it came from is gone)."""
        self._parts = []
        self._held = 0
        self._need = 0

    def feed(self, data: bytes) -> list[Frame]:
        """Add ``data`` and return the whole frames now available, in order.

        Raises:
            MalformedPacketError: a Remaining Length longer than four bytes.
            ProtocolError: a packet larger than ``max_packet_size`` (reason 0x95).
        """
        if self._held:
            self._parts.append(data)
            self._held += len(data)
            if self._held < self._need:
                # Still short of the frame whose header we know: only keep the chunk.
                # Re-copying and re-parsing the whole buffer per chunk made a large packet cost
                # quadratic time.
                return []
            data = b"".join(self._parts)
            self._parts = []
            self._held = 0
        frames: list[Frame] = []
        append = frames.append
        pos = 0
        size = len(data)
        limit = self.max_packet_size
        need = 0
        while pos < size:
            # Decode the Remaining Length (section 2.1.4); at most four bytes [MQTT-1.5.5-1].
            i = pos + 1
            if i < size and data[i] < 0x80 and limit >= 129:
                # One byte (under 128): acknowledgements and small messages, the usual case.
                start = i + 1
                end = start + data[i]
                if end > size:
                    need = end - pos
                    break
                append((data[pos], data, start, end))
                pos = end
                continue
            remaining = 0
            shift = 0
            while True:
                if i >= size:
                    remaining = -1
                    break
                byte = data[i]
                i += 1
                remaining |= (byte & 0x7F) << shift
                if byte < 0x80:
                    break
                shift += 7
                if shift == 28:
                    raise MalformedPacketError("Remaining Length longer than four bytes")
            if remaining < 0:
                break
            start = i
            end = start + remaining
            if end - pos > limit:
                raise ProtocolError(
                    f"incoming packet of {end - pos} bytes exceeds the maximum packet size "
                    f"of {limit} bytes",
                    ReasonCode.PACKET_TOO_LARGE,
                )
            if end > size:
                need = end - pos
                break
            append((data[pos], data, start, end))
            pos = end
        if pos < size:
            # The start of a partial frame: a view of an immutable chunk (no copy), a copy of
            # anything else (the caller may reuse its buffer).
            if type(data) is bytes:
                self._parts = [memoryview(data)[pos:] if pos else data]
            else:
                self._parts = [bytes(data[pos:])]
            self._held = size - pos
        self._need = need
        return frames


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def _utf8(raw: bytes) -> str:
    # [MQTT-1.5.4-1] ill-formed UTF-8 (surrogates included) and [MQTT-1.5.4-2] U+0000 are
    # malformed. Python's strict decoder rejects overlong forms and surrogates.
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacketError(f"invalid UTF-8 string: {exc.reason}") from None
    if "\x00" in text:
        raise MalformedPacketError("UTF-8 string contains U+0000 [MQTT-1.5.4-2]")
    return text


class _Reader:
    """Sequential reads from ``data[pos:end]``; every read checks the bounds."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data = data
        self.pos = pos
        self.end = end

    def left(self) -> int:
        return self.end - self.pos

    def _take(self, n: int) -> bytes:
        pos = self.pos
        if pos + n > self.end:
            raise MalformedPacketError("packet shorter than its contents require")
        self.pos = pos + n
        return self.data[pos : pos + n]

    def byte(self) -> int:
        if self.pos >= self.end:
            raise MalformedPacketError("packet shorter than its contents require")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def u16(self) -> int:
        value: int = _U16.unpack(self._take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def varint(self) -> int:
        value = 0
        for shift in (0, 7, 14, 21):
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
        raise MalformedPacketError("Variable Byte Integer longer than four bytes")

    def rest(self) -> bytes:
        return self._take(self.left())

    def binary(self) -> bytes:
        return self._take(self.u16())

    def string(self) -> str:
        return _utf8(self._take(self.u16()))

    def properties(self, packet_type: int) -> Properties:
        length = self.varint()
        if length == 0:
            return NO_PROPERTIES
        end = self.pos + length
        if end > self.end:
            raise MalformedPacketError("property length exceeds the packet")
        values: dict[str, Any] = {}
        pairs: list[tuple[str, str]] = []
        sids: list[int] = []
        saved_end = self.end
        self.end = end
        while self.pos < end:
            pid = self.varint()
            spec = PROPERTIES.get(pid)
            if spec is None:
                raise MalformedPacketError(f"unknown property identifier 0x{pid:02X}")
            name, ptype, allowed = spec
            if packet_type not in allowed:
                raise ProtocolError(
                    f"property {name} is not allowed in {_packet_name(packet_type)}"
                )
            if ptype == PAIR:
                pairs.append((self.string(), self.string()))
                continue
            value: Any
            if ptype == BYTE:
                value = self.byte()
            elif ptype == TWO:
                value = self.u16()
            elif ptype == FOUR:
                value = self.u32()
            elif ptype == VARINT:
                value = self.varint()
            elif ptype == UTF8:
                value = self.string()
            else:
                value = self.binary()
            if pid in _BOOLEAN_PROPERTIES and value > 1:
                raise ProtocolError(f"property {name} must be 0 or 1, got {value}")
            if pid in _NONZERO_PROPERTIES and value == 0:
                raise ProtocolError(f"property {name} must not be 0")
            if pid == 0x0B:
                # Several subscription identifiers may arrive in a PUBLISH [MQTT-3.3.4-4];
                # a SUBSCRIBE carries at most one.
                if sids and packet_type != _P:
                    raise ProtocolError("subscription_identifier included more than once")
                sids.append(value)
                continue
            if name in values:
                raise ProtocolError(f"property {name} included more than once")
            values[name] = value
        self.end = saved_end
        if sids:
            values["subscription_identifier"] = tuple(sids)
        if pairs:
            values["user_property"] = tuple(pairs)
        return Properties(**values)


def decode(data: bytes | bytearray | memoryview, protocol_level: int = MQTT_3_1_1) -> Packet:
    """Decode exactly one whole packet from ``data`` (tests, tools).

    Raises:
        MalformedPacketError: incomplete input, trailing bytes, or a malformed packet.
        ProtocolError: a well-formed packet the protocol forbids.
    """
    buffer = PacketBuffer()
    frames = buffer.feed(bytes(data))
    if len(frames) != 1 or len(buffer):
        raise MalformedPacketError("expected exactly one whole packet")
    first, buf, start, end = frames[0]
    return decode_packet(first, buf, start, end, protocol_level)


def v3_connack_code(first: int, data: bytes, start: int, end: int) -> int | None:
    """The return code of an MQTT 3.1.1-shaped CONNACK (two bytes, no properties) that refuses
    the connection, else None.

    A server that does not speak MQTT 5 answers its CONNECT this way, with return code 1
    (unacceptable protocol version) [MQTT-3.1.2-2]; decoded as MQTT 5 it would be malformed.
    One that accepts (return code 0) is no answer to an MQTT 5 CONNECT: None, and the frame is
    decoded as the malformed MQTT 5 CONNACK it is.
    """
    if first == _first_byte(PacketType.CONNACK) and end - start == 2 and data[start + 1]:
        return data[start + 1]
    return None


def decode_packet(first: int, data: bytes, start: int, end: int, protocol_level: int) -> Packet:
    """Decode the frame ``first`` + ``data[start:end]`` at the given protocol level.

    CONNECT is decoded at the level it declares itself.

    Raises:
        MalformedPacketError: the bytes are not a valid packet of that type.
        ProtocolError: a well-formed packet the protocol forbids (a property in the wrong packet).
    """
    ptype = first >> 4
    if ptype == PacketType.PUBLISH:
        return decode_publish(first, data, start, end, protocol_level)
    if ptype == 0 or (ptype == PacketType.AUTH and protocol_level != MQTT_5):
        raise MalformedPacketError(f"reserved packet type {ptype}")
    if first & 0x0F != REQUIRED_FLAGS[ptype]:
        # [MQTT-2.1.3-1]
        raise MalformedPacketError(
            f"{PacketType(ptype).name} with reserved fixed-header flags 0x{first & 0x0F:X}"
        )
    reader = _Reader(data, start, end)
    packet = _DECODERS[ptype](reader, protocol_level)
    if reader.pos != end:
        raise MalformedPacketError(f"{PacketType(ptype).name} has trailing bytes")
    return packet


def decode_publish(first: int, data: bytes, start: int, end: int, level: int) -> Publish:
    """Decode a PUBLISH frame (the hot path of :func:`decode_packet`).

    Raises:
        MalformedPacketError, ProtocolError: as :func:`decode_packet`.
    """
    qos = (first >> 1) & 0x03
    if qos == 3:
        raise MalformedPacketError("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
    dup = bool(first & 0x08)
    if dup and not qos:
        raise MalformedPacketError("PUBLISH with DUP set at QoS 0 [MQTT-3.3.1-2]")
    if end - start < 2:
        raise MalformedPacketError("PUBLISH shorter than its topic length")
    tlen = (data[start] << 8) | data[start + 1]
    pos = start + 2 + tlen
    if pos > end:
        raise MalformedPacketError("PUBLISH topic longer than the packet")
    raw = data[start + 2 : pos]
    topic = _TOPIC_NAMES.get(raw)
    if topic is None:
        topic = _topic_name(raw)
    packet_id = None
    if qos:
        if pos + 2 > end:
            raise MalformedPacketError("PUBLISH shorter than its packet identifier")
        packet_id = (data[pos] << 8) | data[pos + 1]
        if packet_id == 0:
            raise MalformedPacketError("PUBLISH with packet identifier 0 [MQTT-2.2.1-3]")
        pos += 2
    props = NO_PROPERTIES
    if level == MQTT_5:
        if pos < end and data[pos] == 0:
            pos += 1
        else:
            reader = _Reader(data, pos, end)
            props = reader.properties(_P)
            pos = reader.pos
    if not topic and (level != MQTT_5 or props.topic_alias is None):
        raise MalformedPacketError("PUBLISH with an empty topic name [MQTT-4.7.3-1]")
    # Publish(...) built field by field through its slots: a frozen dataclass's __init__
    # costs about twice as much, and this runs once per incoming message.
    message: Publish = _new(Publish)
    _set_topic(message, topic)
    _set_payload(message, data[pos:end])
    _set_qos(message, qos)
    _set_retain(message, bool(first & 0x01))
    _set_dup(message, dup)
    _set_packet_id(message, packet_id)
    _set_properties(message, props)
    return message


_new: Final = object.__new__
_set_topic: Final[Callable[[Publish, str], None]] = vars(Publish)["topic"].__set__
_set_payload: Final[Callable[[Publish, bytes], None]] = vars(Publish)["payload"].__set__
_set_qos: Final[Callable[[Publish, int], None]] = vars(Publish)["qos"].__set__
_set_retain: Final[Callable[[Publish, bool], None]] = vars(Publish)["retain"].__set__
_set_dup: Final[Callable[[Publish, bool], None]] = vars(Publish)["dup"].__set__
_set_packet_id: Final[Callable[[Publish, int | None], None]] = vars(Publish)["packet_id"].__set__
_set_properties: Final[Callable[[Publish, Properties], None]] = vars(Publish)["properties"].__set__


# Decoded topic names by their bytes: a subscriber sees the same few topics millions of times,
# and a name that decoded and passed the checks once passes them again. Bounded: cleared when
# full (a plain dict is safe to share between threads under the GIL).
_TOPIC_NAMES: dict[bytes, str] = {}
_TOPIC_NAMES_MAX: Final = 4096


def _topic_name(raw: bytes) -> str:
    topic = _utf8(raw)
    if "+" in topic or "#" in topic:
        raise MalformedPacketError("PUBLISH topic name contains a wildcard [MQTT-3.3.2-2]")
    if len(_TOPIC_NAMES) >= _TOPIC_NAMES_MAX:
        _TOPIC_NAMES.clear()
    _TOPIC_NAMES[raw] = topic
    return topic


def _check_reason(code: int, ptype: int, level: int) -> int:
    table = REASON_CODES if level == MQTT_5 else REASON_CODES_V3
    if code not in table[ptype]:
        raise MalformedPacketError(
            f"reason code 0x{code:02X} is not valid in {PacketType(ptype).name}"
        )
    return code


def _dec_connect(r: _Reader, _level: int) -> Connect:
    name = r.binary()
    level = r.byte()
    if _PROTOCOL_NAMES.get(level) != name:
        # [MQTT-3.1.2-1] / [MQTT-3.1.2-2]; a server answers 0x84 / return code 1.
        raise MalformedPacketError(f"unsupported protocol name {name!r} / level {level}")
    flags = r.byte()
    if flags & 0x01:
        raise MalformedPacketError("CONNECT reserved flag set [MQTT-3.1.2-3]")
    will_flag = bool(flags & 0x04)
    will_qos = (flags >> 3) & 0x03
    will_retain = bool(flags & 0x20)
    if not will_flag and (will_qos or will_retain):
        raise MalformedPacketError("CONNECT will QoS/retain set without will flag [MQTT-3.1.2-11]")
    if will_qos == 3:
        raise MalformedPacketError("CONNECT will QoS 3 [MQTT-3.1.2-12]")
    has_user, has_pass = bool(flags & 0x80), bool(flags & 0x40)
    if level != MQTT_5 and has_pass and not has_user:
        raise MalformedPacketError("CONNECT password without user name [MQTT-3.1.2-22]")
    keepalive = r.u16()
    props = r.properties(_C) if level == MQTT_5 else NO_PROPERTIES
    client_id = r.string()
    will = None
    if will_flag:
        will_props = r.properties(WILL) if level == MQTT_5 else NO_PROPERTIES
        topic = r.string()
        will = Will(topic, r.binary(), will_qos, will_retain, will_props)
    username = r.string() if has_user else None
    password = r.binary() if has_pass else None
    return Connect(client_id, level, bool(flags & 0x02), keepalive, username, password, will, props)


def _dec_connack(r: _Reader, level: int) -> ConnAck:
    flags = r.byte()
    if flags & 0xFE:
        raise MalformedPacketError("CONNACK reserved flags set [MQTT-3.2.2-1]")
    code = _check_reason(r.byte(), _CA, level)
    props = r.properties(_CA) if level == MQTT_5 else NO_PROPERTIES
    if flags and code != 0:
        # [MQTT-3.2.2-6]: Session Present must be 0 with a non-zero return code.
        raise MalformedPacketError("CONNACK session present set with a failure code")
    return ConnAck(bool(flags), code, props)


def _packet_id(r: _Reader) -> int:
    packet_id = r.u16()
    if packet_id == 0:
        raise MalformedPacketError("packet identifier 0 [MQTT-2.2.1-3]")
    return packet_id


def _dec_ack(cls: type[PubAck | PubRec | PubRel | PubComp]) -> Callable[[_Reader, int], Packet]:
    def decoder(r: _Reader, level: int) -> Packet:
        packet_id = _packet_id(r)
        if level != MQTT_5 or not r.left():
            return cls(packet_id)
        code = _check_reason(r.byte(), cls.TYPE, level)
        props = r.properties(cls.TYPE) if r.left() else NO_PROPERTIES
        return cls(packet_id, code, props)

    return decoder


def _dec_subscribe(r: _Reader, level: int) -> Subscribe:
    packet_id = _packet_id(r)
    props = r.properties(_S) if level == MQTT_5 else NO_PROPERTIES
    subs = []
    while r.left():
        topic_filter = r.string()
        options = r.byte()
        qos = options & 0x03
        if qos == 3:
            raise MalformedPacketError("SUBSCRIBE with QoS 3 [MQTT-3.8.3-2]")
        if level == MQTT_5:
            retain_handling = (options >> 4) & 0x03
            if options & 0xC0 or retain_handling == 3:
                raise MalformedPacketError("SUBSCRIBE options reserved bits set [MQTT-3.8.3-5]")
            if options & 0x04 and topic_filter.startswith("$share/"):
                # [MQTT-3.8.3-4]
                raise ProtocolError(
                    f"SUBSCRIBE sets No Local on the shared subscription {topic_filter!r}"
                )
            subs.append(
                Subscription(
                    topic_filter, qos, bool(options & 0x04), bool(options & 0x08), retain_handling
                )
            )
        else:
            if options & 0xFC:
                raise MalformedPacketError("SUBSCRIBE reserved bits set [MQTT-3-8.3-4]")
            subs.append(Subscription(topic_filter, qos))
    if not subs:
        raise MalformedPacketError("SUBSCRIBE without a topic filter [MQTT-3.8.3-2]")
    return Subscribe(packet_id, tuple(subs), props)


def _dec_suback(r: _Reader, level: int) -> SubAck:
    packet_id = _packet_id(r)
    props = r.properties(_SA) if level == MQTT_5 else NO_PROPERTIES
    codes = tuple(_check_reason(c, _SA, level) for c in r.rest())
    if not codes:
        raise MalformedPacketError("SUBACK without a return code")
    return SubAck(packet_id, codes, props)


def _dec_unsubscribe(r: _Reader, level: int) -> Unsubscribe:
    packet_id = _packet_id(r)
    props = r.properties(_U) if level == MQTT_5 else NO_PROPERTIES
    filters = []
    while r.left():
        filters.append(r.string())
    if not filters:
        raise MalformedPacketError("UNSUBSCRIBE without a topic filter [MQTT-3.10.3-2]")
    return Unsubscribe(packet_id, tuple(filters), props)


def _dec_unsuback(r: _Reader, level: int) -> UnsubAck:
    packet_id = _packet_id(r)
    if level != MQTT_5:
        return UnsubAck(packet_id)
    props = r.properties(_UA)
    codes = tuple(_check_reason(c, _UA, level) for c in r.rest())
    if not codes:
        raise MalformedPacketError("UNSUBACK without a reason code")
    return UnsubAck(packet_id, codes, props)


def _dec_pingreq(_r: _Reader, _level: int) -> PingReq:
    return PingReq()


def _dec_pingresp(_r: _Reader, _level: int) -> PingResp:
    return PingResp()


def _dec_disconnect(r: _Reader, level: int) -> Disconnect:
    if level != MQTT_5 or not r.left():
        return Disconnect()
    code = _check_reason(r.byte(), _D, level)
    props = r.properties(_D) if r.left() else NO_PROPERTIES
    return Disconnect(code, props)


def _dec_auth(r: _Reader, level: int) -> Auth:
    if not r.left():
        return Auth()
    code = _check_reason(r.byte(), _AU, level)
    props = r.properties(_AU) if r.left() else NO_PROPERTIES
    return Auth(code, props)


_DECODERS: Final[dict[int, Callable[[_Reader, int], Packet]]] = {
    PacketType.CONNECT: _dec_connect,
    PacketType.CONNACK: _dec_connack,
    PacketType.PUBACK: _dec_ack(PubAck),
    PacketType.PUBREC: _dec_ack(PubRec),
    PacketType.PUBREL: _dec_ack(PubRel),
    PacketType.PUBCOMP: _dec_ack(PubComp),
    PacketType.SUBSCRIBE: _dec_subscribe,
    PacketType.SUBACK: _dec_suback,
    PacketType.UNSUBSCRIBE: _dec_unsubscribe,
    PacketType.UNSUBACK: _dec_unsuback,
    PacketType.PINGREQ: _dec_pingreq,
    PacketType.PINGRESP: _dec_pingresp,
    PacketType.DISCONNECT: _dec_disconnect,
    PacketType.AUTH: _dec_auth,
}
