"""Validated user requests: what ``publish``, ``subscribe`` and ``unsubscribe`` hand the session.

This module owns the request types (:class:`PublishRequest`, :class:`SubscribeRequest`,
:class:`UnsubscribeRequest`), their validation (``prepare_*``, :func:`normalize_payload`), and
:func:`record_publish`, the stored form of a queued message. Everything here is pure and safe
from any thread: a front validates in the caller's thread, so misuse raises there, at once.
It keeps no session state and builds no wire bytes itself (``codec`` does).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from . import codec
from .codec import PUBLISH_FIRST, encode_topic_field
from .errors import InvalidArgumentError, InvalidQoSError, PacketTooLargeError, PayloadTypeError
from .packets import MQTT_3_1_1, MQTT_5, NO_PROPERTIES, PacketType, Properties, Subscription
from .store import Store
from .topics import parse_shared, validate_topic_filter, validate_topic_name

__all__ = [
    "PublishRequest",
    "SubscribeRequest",
    "UnsubscribeRequest",
    "encode_request",
    "normalize_payload",
    "prepare_publish",
    "prepare_subscribe",
    "prepare_unsubscribe",
    "record_publish",
]


class PublishRequest:
    """A validated PUBLISH, ready to encode once it has a packet identifier.

    Immutable by convention (a plain slotted class rather than a frozen dataclass: one is built
    per message, and this is the hot path).

    Attributes:
        topic, topic_bytes: the topic name and its UTF-8 encoding.
        payload: the payload bytes.
        qos, retain: as given.
        properties: MQTT 5 properties.
        properties_bytes: the encoded property block for MQTT 5, None for 3.x.
        first: the first byte of the fixed header, without DUP.
        topic_field: the topic as it goes on the wire (two-byte length, then the bytes).
    """

    __slots__ = (
        "alias_only",
        "first",
        "payload",
        "properties",
        "properties_bytes",
        "qos",
        "retain",
        "topic",
        "topic_bytes",
        "topic_field",
    )

    def __init__(
        self,
        topic: str,
        topic_bytes: bytes,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: Properties,
        properties_bytes: bytes | None,
    ) -> None:
        self.topic = topic
        self.topic_bytes = topic_bytes
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties
        self.properties_bytes = properties_bytes
        self.first = PUBLISH_FIRST[qos][1 if retain else 0]
        self.topic_field = encode_topic_field(topic_bytes)
        #: Published with an empty topic and a Topic Alias, resolved by the session to the
        #: alias's topic: sent without the topic where the alias is set on the connection.
        self.alias_only = False

    def _key(self) -> tuple[Any, ...]:
        return (self.topic, self.payload, self.qos, self.retain, self.properties)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublishRequest):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"PublishRequest(topic={self.topic!r}, payload=<{len(self.payload)} bytes>, "
            f"qos={self.qos}, retain={self.retain})"
        )


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """A validated SUBSCRIBE."""

    subscriptions: tuple[Subscription, ...]
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class UnsubscribeRequest:
    """A validated UNSUBSCRIBE."""

    topic_filters: tuple[str, ...]
    properties: Properties = NO_PROPERTIES


def normalize_payload(payload: object) -> bytes:
    """str (UTF-8), bytes, bytearray or memoryview to bytes.

    Raises:
        PayloadTypeError: any other type.
    """
    if type(payload) is bytes:
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, bytes | bytearray | memoryview):
        # A copy: the caller may change a bytearray after publish() returns.
        return bytes(payload)
    raise PayloadTypeError(
        f"payload must be str, bytes, bytearray or memoryview, not {type(payload).__name__}"
        " (encode it first, e.g. json.dumps(obj) or str(number))"
    )


def _check_qos(qos: object) -> int:
    if type(qos) is not int or not 0 <= qos <= 2:  # bool is not a QoS
        raise InvalidQoSError(f"QoS must be 0, 1 or 2, not {qos!r}")
    return qos


def _check_properties(props: object, level: int, what: str) -> Properties:
    if props is None or props is NO_PROPERTIES:
        return NO_PROPERTIES
    if not isinstance(props, Properties):
        raise InvalidArgumentError(
            f"{what} properties must be an mqttkit.Properties, not {type(props).__name__}"
        )
    if props and level != MQTT_5:
        raise InvalidArgumentError(
            f"{what} properties need MQTT 5; this client speaks protocol level {level} "
            "(pass protocol_version=5)"
        )
    return props


#: Validated topic names and their wire fields (length prefix + UTF-8), for the fast path of
#: prepare_publish(): applications publish to a handful of topics, millions of times.
_TOPIC_FIELDS: dict[str, tuple[bytes, bytes]] = {}
_TOPIC_FIELDS_MAX = 4096
_new_object = object.__new__


def _topic_fields(topic: str) -> tuple[bytes, bytes]:
    topic_bytes = validate_topic_name(topic)  # raises for a bad name: nothing cached then
    fields = (topic_bytes, encode_topic_field(topic_bytes))
    if len(_TOPIC_FIELDS) >= _TOPIC_FIELDS_MAX:
        _TOPIC_FIELDS.clear()  # many distinct topics: start over rather than grow without bound
    _TOPIC_FIELDS[topic] = fields
    return fields


def prepare_publish(
    topic: object,
    payload: object,
    qos: object = 0,
    retain: object = False,
    properties: object = None,
    protocol_level: int = MQTT_3_1_1,
) -> PublishRequest:
    """Validate a publish and encode its parts. Pure: safe from any thread.

    Raises:
        InvalidTopicError: bad topic name.
        InvalidQoSError: QoS not 0, 1, 2.
        PayloadTypeError: payload of a type that is not bytes-like or str.
        InvalidArgumentError: MQTT 5 properties on an older protocol, or invalid properties.
        PacketTooLargeError: larger than the protocol allows.
    """
    if (
        properties is None
        and protocol_level != MQTT_5
        and type(topic) is str
        and type(payload) is bytes
        and type(qos) is int
        and 0 <= qos <= 2
        and len(payload) < 268_000_000
    ):
        # The common case, with the fewest calls: plain topic, bytes payload, MQTT 3.x.
        fields = _TOPIC_FIELDS.get(topic)
        if fields is None:
            fields = _topic_fields(topic)
        request: PublishRequest = _new_object(PublishRequest)
        request.topic = topic
        request.topic_bytes, request.topic_field = fields
        request.payload = payload
        request.qos = qos
        request.retain = retain = bool(retain)
        request.properties = NO_PROPERTIES
        request.properties_bytes = None
        request.first = PUBLISH_FIRST[qos][retain]
        request.alias_only = False
        return request
    props = _check_properties(properties, protocol_level, "publish")
    alias = props.topic_alias
    if alias is not None and (type(alias) is not int or not 1 <= alias <= 65_535):
        # [MQTT-3.3.2-8]: a Topic Alias of 0 is a protocol error; the field is two bytes.
        raise InvalidArgumentError(f"topic_alias must be 1..65535, not {alias!r} [MQTT-3.3.2-8]")
    if isinstance(topic, str) and topic == "" and props.topic_alias is not None:
        topic_bytes = b""  # an empty topic name with a topic alias (MQTT 5.0, 3.3.2.1)
    else:
        topic_bytes = validate_topic_name(topic)
    data = normalize_payload(payload)
    qos = _check_qos(qos)
    props_bytes: bytes | None = None
    if protocol_level == MQTT_5:
        try:
            props_bytes = codec.encode_properties(props, PacketType.PUBLISH)
        except (ValueError, TypeError, struct.error) as exc:
            raise InvalidArgumentError(f"invalid publish properties: {exc}") from None
    # Counted with a packet identifier at every QoS: one limit, whatever the QoS.
    size = codec.publish_remaining_length(
        len(topic_bytes), 1, len(data), len(props_bytes) if props_bytes else None
    )
    if size > codec.MAX_REMAINING_LENGTH:
        raise PacketTooLargeError(
            f"a PUBLISH of {size:,} bytes exceeds MQTT's limit of 268,435,455 bytes"
        )
    assert isinstance(topic, str)  # validate_topic_name checked it
    return PublishRequest(topic, topic_bytes, data, qos, bool(retain), props, props_bytes)


def prepare_subscribe(
    subscriptions: tuple[Subscription, ...],
    properties: object = None,
    protocol_level: int = MQTT_3_1_1,
) -> SubscribeRequest:
    """Validate a SUBSCRIBE. Pure: safe from any thread.

    Raises:
        InvalidTopicError, InvalidQoSError, InvalidArgumentError: what to fix is in the message.
    """
    if not subscriptions:
        raise InvalidArgumentError("subscribe needs at least one topic filter [MQTT-3.8.3-2]")
    props = _check_properties(properties, protocol_level, "subscribe")
    for sub in subscriptions:
        validate_topic_filter(sub.topic_filter)
        _check_qos(sub.qos)
        v5_options = sub.no_local or sub.retain_as_published or sub.retain_handling
        if v5_options and protocol_level != MQTT_5:
            raise InvalidArgumentError(
                "no_local, retain_as_published and retain_handling need MQTT 5 "
                "(pass protocol_version=5)"
            )
        if sub.retain_handling not in (0, 1, 2):
            raise InvalidArgumentError(
                f"retain_handling must be 0, 1 or 2, not {sub.retain_handling!r}"
            )
        if sub.no_local and parse_shared(sub.topic_filter):
            # [MQTT-3.8.3-4]
            raise InvalidArgumentError("no_local cannot be set on a shared subscription")
    for sid in props.subscription_identifier:
        if not 1 <= sid <= codec.MAX_REMAINING_LENGTH:
            raise InvalidArgumentError(f"subscription identifier must be 1..268,435,455, not {sid}")
    if len(props.subscription_identifier) > 1:
        raise InvalidArgumentError("a SUBSCRIBE carries at most one subscription identifier")
    try:
        codec.encode_properties(props, PacketType.SUBSCRIBE)
    except (ValueError, TypeError, struct.error) as exc:
        raise InvalidArgumentError(f"invalid subscribe properties: {exc}") from None
    return SubscribeRequest(tuple(subscriptions), props)


def prepare_unsubscribe(
    topic_filters: tuple[str, ...],
    properties: object = None,
    protocol_level: int = MQTT_3_1_1,
) -> UnsubscribeRequest:
    """Validate an UNSUBSCRIBE. Pure: safe from any thread.

    Raises:
        InvalidTopicError, InvalidArgumentError: what to fix is in the message.
    """
    if not topic_filters:
        raise InvalidArgumentError("unsubscribe needs at least one topic filter [MQTT-3.10.3-2]")
    props = _check_properties(properties, protocol_level, "unsubscribe")
    for topic_filter in topic_filters:
        validate_topic_filter(topic_filter)
    try:
        codec.encode_properties(props, PacketType.UNSUBSCRIBE)
    except (ValueError, TypeError, struct.error) as exc:
        raise InvalidArgumentError(f"invalid unsubscribe properties: {exc}") from None
    return UnsubscribeRequest(tuple(topic_filters), props)


def encode_request(
    request: PublishRequest, packet_id: int, topic_field: bytes | None = None
) -> bytes:
    """The PUBLISH of ``request`` with ``packet_id`` (ignored at QoS 0), DUP clear;
    ``topic_field`` replaces its topic on the wire (an empty one for a message by Topic
    Alias)."""
    return codec.encode_publish_parts(
        request.first,
        request.topic_field if topic_field is None else topic_field,
        packet_id,
        request.properties_bytes,
        request.payload,
    )


def record_publish(store: Store, key: int, request: PublishRequest) -> bool:
    """Put ``request`` in ``store`` under ``key`` (from :attr:`ClientSession.new_key`) in the
    form the session stores a queued message in, then pass ``key`` to
    :meth:`ClientSession.publish`. For a driver whose publishing threads must not return
    before the store holds the message while the session runs elsewhere.

    Returns:
        False (nothing stored) for a message the session must resolve first: one published by
        Topic Alias alone, whose topic only the session knows.

    Raises:
        Whatever ``store.put`` raises.
    """
    if not request.topic:
        return False
    store.put(key, encode_request(request, 0))
    return True
