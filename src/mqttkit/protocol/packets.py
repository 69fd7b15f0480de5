"""One frozen dataclass per MQTT control packet (3.1, 3.1.1 and 5.0), and Properties.

This module owns the in-memory shape of packets: what the codec produces and consumes, what
events carry and what users see. It holds no wire facts (those are tables in ``codec``) and no
behaviour beyond small conveniences. Field names follow the specification.

Strings are ``str``; binary data (payloads, passwords, correlation and authentication data) is
``bytes``. Reason codes are plain ints; see :class:`mqttkit.protocol.errors.ReasonCode`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "MQTT_3_1",
    "MQTT_3_1_1",
    "MQTT_5",
    "NO_PROPERTIES",
    "Auth",
    "ConnAck",
    "Connect",
    "Disconnect",
    "Packet",
    "PacketType",
    "PingReq",
    "PingResp",
    "Properties",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "QoS",
    "SubAck",
    "Subscribe",
    "Subscription",
    "UnsubAck",
    "Unsubscribe",
    "Will",
]

#: Protocol levels as they appear in CONNECT.
MQTT_3_1 = 3
MQTT_3_1_1 = 4
MQTT_5 = 5


class QoS(enum.IntEnum):
    """Quality of service levels; plain ints 0, 1, 2 work everywhere too."""

    AT_MOST_ONCE = 0
    AT_LEAST_ONCE = 1
    EXACTLY_ONCE = 2


class PacketType(enum.IntEnum):
    """Control packet types (the high nibble of the fixed header)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


@dataclass(frozen=True, slots=True, repr=False)
class Properties:
    """MQTT 5 properties (section 2.2.2). Every field is optional; None means absent.

    Which property a packet may carry is checked by the codec, in both directions.
    """

    payload_format_indicator: int | None = None
    """0: unspecified bytes, 1: UTF-8 text (PUBLISH, Will)."""
    message_expiry_interval: int | None = None
    """Seconds the broker keeps the message for subscribers (PUBLISH, Will)."""
    content_type: str | None = None
    """A MIME type describing the payload (PUBLISH, Will)."""
    response_topic: str | None = None
    """Topic name for a response message (PUBLISH, Will)."""
    correlation_data: bytes | None = None
    """Data linking a response to its request (PUBLISH, Will)."""
    subscription_identifier: tuple[int, ...] = ()
    """Subscription identifiers (SUBSCRIBE: at most one; PUBLISH from server: any number)."""
    session_expiry_interval: int | None = None
    """Seconds the session outlives the connection (CONNECT, CONNACK, DISCONNECT)."""
    assigned_client_identifier: str | None = None
    """The client id the server assigned to an empty one (CONNACK)."""
    server_keep_alive: int | None = None
    """Keepalive the server imposes instead of the client's (CONNACK)."""
    authentication_method: str | None = None
    """Extended authentication method name (CONNECT, CONNACK, AUTH)."""
    authentication_data: bytes | None = None
    """Extended authentication data (CONNECT, CONNACK, AUTH)."""
    request_problem_information: int | None = None
    """0 asks the server not to send reason strings except in CONNACK/DISCONNECT (CONNECT)."""
    will_delay_interval: int | None = None
    """Seconds the server waits before publishing the will (Will)."""
    request_response_information: int | None = None
    """1 asks the server for Response Information in CONNACK (CONNECT)."""
    response_information: str | None = None
    """Basis for response topics (CONNACK)."""
    server_reference: str | None = None
    """Another server to use (CONNACK, DISCONNECT)."""
    reason_string: str | None = None
    """Human-readable diagnostics (acks, CONNACK, DISCONNECT, AUTH)."""
    receive_maximum: int | None = None
    """How many QoS 1/2 PUBLISH the sender of this property accepts in flight (CONNECT, CONNACK)."""
    topic_alias_maximum: int | None = None
    """Highest topic alias the sender of this property accepts (CONNECT, CONNACK)."""
    topic_alias: int | None = None
    """Topic alias used instead of, or bound to, the topic name (PUBLISH)."""
    maximum_qos: int | None = None
    """Highest QoS the server supports (CONNACK)."""
    retain_available: int | None = None
    """0 if the server does not support retained messages (CONNACK)."""
    user_property: tuple[tuple[str, str], ...] = ()
    """Name/value pairs, in order, names may repeat (every packet with properties)."""
    maximum_packet_size: int | None = None
    """Largest packet the sender of this property accepts (CONNECT, CONNACK)."""
    wildcard_subscription_available: int | None = None
    """0 if the server does not support wildcard filters (CONNACK)."""
    subscription_identifier_available: int | None = None
    """0 if the server does not support subscription identifiers (CONNACK)."""
    shared_subscription_available: int | None = None
    """0 if the server does not support shared subscriptions (CONNACK)."""

    def __post_init__(self) -> None:
        # Accept the natural spellings: an int subscription identifier, a dict or list of
        # user properties. Normalised here so packets stay hashable and comparable.
        sid: Any = self.subscription_identifier
        if isinstance(sid, int):
            object.__setattr__(self, "subscription_identifier", (sid,))
        elif not isinstance(sid, tuple):
            object.__setattr__(self, "subscription_identifier", tuple(sid))
        up: Any = self.user_property
        if isinstance(up, dict):
            object.__setattr__(self, "user_property", tuple(up.items()))
        elif not isinstance(up, tuple) or any(not isinstance(p, tuple) for p in up):
            object.__setattr__(self, "user_property", tuple(tuple(p) for p in up))

    def __bool__(self) -> bool:
        return self != NO_PROPERTIES

    def __repr__(self) -> str:
        # Only the properties that are present: a full repr is 27 fields of None.
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in self.__dataclass_fields__
            if getattr(self, name) not in (None, ())
        )
        return f"Properties({fields})"


NO_PROPERTIES = Properties()


@dataclass(frozen=True, slots=True)
class Will:
    """The Will Message a broker publishes when the connection ends without DISCONNECT."""

    topic: str
    """Topic name the will is published to."""
    payload: bytes = b""
    """The will message's payload."""
    qos: int = 0
    """QoS of the will message."""
    retain: bool = False
    """Whether the will is published as retained."""
    properties: Properties = NO_PROPERTIES
    """MQTT 5 will properties (delay interval, expiry, content type...)."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE with its options (MQTT 5 section 3.8.3.1)."""

    topic_filter: str
    """The topic filter; wildcards ``+`` and ``#`` allowed, ``$share/name/...`` for shared."""
    qos: int = 0
    """Maximum QoS the broker may deliver with."""
    no_local: bool = False
    """MQTT 5: do not receive our own publications."""
    retain_as_published: bool = False
    """MQTT 5: keep the RETAIN flag as published instead of clearing it."""
    retain_handling: int = 0
    """MQTT 5: 0 send retained on subscribe, 1 only if new, 2 never."""


class Packet:
    """Base of every control packet class. ``TYPE`` is the packet type."""

    __slots__ = ()
    TYPE: ClassVar[PacketType]


@dataclass(frozen=True, slots=True)
class Connect(Packet):
    """CONNECT: the first packet a client sends."""

    TYPE: ClassVar[PacketType] = PacketType.CONNECT
    client_id: str = ""
    protocol_level: int = MQTT_3_1_1
    clean_start: bool = True
    keepalive: int = 0
    username: str | None = None
    password: bytes | None = field(default=None, repr=False)
    will: Will | None = None
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class ConnAck(Packet):
    """CONNACK: the server's answer to CONNECT."""

    TYPE: ClassVar[PacketType] = PacketType.CONNACK
    session_present: bool = False
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Publish(Packet):
    """PUBLISH: an application message, in either direction."""

    TYPE: ClassVar[PacketType] = PacketType.PUBLISH
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubAck(Packet):
    """PUBACK: QoS 1 acknowledgement."""

    TYPE: ClassVar[PacketType] = PacketType.PUBACK
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubRec(Packet):
    """PUBREC: QoS 2 delivery part 1."""

    TYPE: ClassVar[PacketType] = PacketType.PUBREC
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubRel(Packet):
    """PUBREL: QoS 2 delivery part 2."""

    TYPE: ClassVar[PacketType] = PacketType.PUBREL
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubComp(Packet):
    """PUBCOMP: QoS 2 delivery part 3."""

    TYPE: ClassVar[PacketType] = PacketType.PUBCOMP
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Subscribe(Packet):
    """SUBSCRIBE: one or more topic filters."""

    TYPE: ClassVar[PacketType] = PacketType.SUBSCRIBE
    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class SubAck(Packet):
    """SUBACK: one granted QoS or failure code per requested filter, in order."""

    TYPE: ClassVar[PacketType] = PacketType.SUBACK
    packet_id: int
    reason_codes: tuple[int, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Unsubscribe(Packet):
    """UNSUBSCRIBE: one or more topic filters."""

    TYPE: ClassVar[PacketType] = PacketType.UNSUBSCRIBE
    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class UnsubAck(Packet):
    """UNSUBACK: MQTT 5 carries one reason code per filter; 3.1.1 carries none."""

    TYPE: ClassVar[PacketType] = PacketType.UNSUBACK
    packet_id: int
    reason_codes: tuple[int, ...] = ()
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class PingReq(Packet):
    """PINGREQ: keepalive probe from the client."""

    TYPE: ClassVar[PacketType] = PacketType.PINGREQ


@dataclass(frozen=True, slots=True)
class PingResp(Packet):
    """PINGRESP: the server's answer to PINGREQ."""

    TYPE: ClassVar[PacketType] = PacketType.PINGRESP


@dataclass(frozen=True, slots=True)
class Disconnect(Packet):
    """DISCONNECT: orderly end of the connection (from the server too in MQTT 5)."""

    TYPE: ClassVar[PacketType] = PacketType.DISCONNECT
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Auth(Packet):
    """AUTH: MQTT 5 extended authentication exchange."""

    TYPE: ClassVar[PacketType] = PacketType.AUTH
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES
