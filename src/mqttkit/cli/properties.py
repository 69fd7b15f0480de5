"""``-D COMMAND NAME VALUE``: MQTT 5 properties from the command line.

This module owns the property names as Mosquitto's tools spell them (the specification's names
with ``-``), their value types, and which packet may carry which (MQTT 5.0 section 2.2.2.2). It
turns the ``-D`` arguments into one :class:`~mqttkit.protocol.packets.Properties` per packet
kind, and refuses with a clear message what the client cannot send.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from ..protocol.packets import Properties
from .flags import UsageError

__all__ = ["PACKETS", "build_properties"]

# name -> (Properties field, value type). Types: "byte", "u16", "u32", "varint", "str", "bin",
# "pair" (user-property).
_NAMES: Final = {
    "payload-format-indicator": ("payload_format_indicator", "byte"),
    "message-expiry-interval": ("message_expiry_interval", "u32"),
    "content-type": ("content_type", "str"),
    "response-topic": ("response_topic", "str"),
    "correlation-data": ("correlation_data", "bin"),
    "subscription-identifier": ("subscription_identifier", "varint"),
    "session-expiry-interval": ("session_expiry_interval", "u32"),
    "assigned-client-identifier": ("assigned_client_identifier", "str"),
    "server-keep-alive": ("server_keep_alive", "u16"),
    "authentication-method": ("authentication_method", "str"),
    "authentication-data": ("authentication_data", "bin"),
    "request-problem-information": ("request_problem_information", "byte"),
    "will-delay-interval": ("will_delay_interval", "u32"),
    "request-response-information": ("request_response_information", "byte"),
    "response-information": ("response_information", "str"),
    "server-reference": ("server_reference", "str"),
    "reason-string": ("reason_string", "str"),
    "receive-maximum": ("receive_maximum", "u16"),
    "topic-alias-maximum": ("topic_alias_maximum", "u16"),
    "topic-alias": ("topic_alias", "u16"),
    "maximum-qos": ("maximum_qos", "byte"),
    "retain-available": ("retain_available", "byte"),
    "user-property": ("user_property", "pair"),
    "maximum-packet-size": ("maximum_packet_size", "u32"),
    "wildcard-subscription-available": ("wildcard_subscription_available", "byte"),
    "subscription-identifier-available": ("subscription_identifier_available", "byte"),
    "shared-subscription-available": ("shared_subscription_available", "byte"),
}

#: What a client may send in each packet (MQTT 5.0 section 2.2.2.2), by ``-D`` command.
PACKETS: Final = {
    "connect": frozenset(
        {
            "session-expiry-interval",
            "receive-maximum",
            "maximum-packet-size",
            "topic-alias-maximum",
            "request-response-information",
            "request-problem-information",
            "user-property",
            "authentication-method",
            "authentication-data",
        }
    ),
    "publish": frozenset(
        {
            "payload-format-indicator",
            "message-expiry-interval",
            "content-type",
            "response-topic",
            "correlation-data",
            "topic-alias",
            "user-property",
        }
    ),
    "subscribe": frozenset({"subscription-identifier", "user-property"}),
    "unsubscribe": frozenset({"user-property"}),
    "disconnect": frozenset({"session-expiry-interval", "reason-string", "user-property"}),
    "will": frozenset(
        {
            "payload-format-indicator",
            "message-expiry-interval",
            "content-type",
            "response-topic",
            "correlation-data",
            "will-delay-interval",
            "user-property",
        }
    ),
}

# The packets each command sends (and so may carry -D properties).
_COMMAND_PACKETS: Final = {
    "pub": ("connect", "publish", "disconnect", "will"),
    "sub": ("connect", "subscribe", "unsubscribe", "disconnect", "will"),
    "rr": ("connect", "publish", "subscribe", "disconnect", "will"),
    "bench": ("connect", "publish", "subscribe", "disconnect", "will"),
}

_REFUSED: Final = {
    "auth": (
        "the client sends AUTH only for enhanced authentication, which the command line does "
        "not drive"
    ),
    "puback": "the client sends its acknowledgements itself, without properties",
    "pubrec": "the client sends its acknowledgements itself, without properties",
    "pubrel": "the client sends its acknowledgements itself, without properties",
    "pubcomp": "the client sends its acknowledgements itself, without properties",
}

_RANGES: Final = {"byte": 0xFF, "u16": 0xFFFF, "u32": 0xFFFFFFFF, "varint": 268_435_455}


def build_properties(
    command: str, entries: Iterable[tuple[str, str, tuple[str, ...]]]
) -> dict[str, Properties]:
    """The ``-D`` entries of ``command`` as Properties per packet (``connect``, ``publish``,
    ``subscribe``, ``unsubscribe``, ``disconnect``, ``will``); packets without entries are left
    out.

    Raises:
        UsageError: an unknown packet or property name, a property that packet cannot carry,
            a value of the wrong type or out of range, or a property given twice.
    """
    values: dict[str, dict[str, object]] = {}
    for packet, name, raw in entries:
        if packet in _REFUSED:
            raise UsageError(f"-D {packet}: {_REFUSED[packet]}.")
        if packet not in PACKETS:
            raise UsageError("Invalid command given in --property argument.")
        if packet not in _COMMAND_PACKETS[command]:
            raise UsageError(
                f"-D {packet}: mqttkit {command} sends no {packet.upper()} packet "
                f"(it sends {', '.join(_COMMAND_PACKETS[command])})."
            )
        if name not in _NAMES:
            raise UsageError("Invalid property name given in --property argument.")
        if name not in PACKETS[packet]:
            raise UsageError(f"{name} property not allowed for {packet} in --property argument.")
        field_name, kind = _NAMES[name]
        seen = values.setdefault(packet, {})
        if kind == "pair":
            pairs = seen.setdefault(field_name, [])
            assert isinstance(pairs, list)
            pairs.append((raw[0], raw[1]))
            continue
        if field_name in seen:
            raise UsageError(f"Duplicate {name} property given in --property argument.")
        seen[field_name] = _value(name, kind, raw[0])
    result = {}
    for packet, fields in values.items():
        if "user_property" in fields:
            pairs = fields["user_property"]
            assert isinstance(pairs, list)
            fields["user_property"] = tuple(pairs)
        result[packet] = Properties(**fields)  # type: ignore[arg-type]
    return result


def _value(name: str, kind: str, raw: str) -> object:
    if kind == "str":
        return raw
    if kind == "bin":
        # As in Mosquitto's tools, binary properties are given as text (sent as its UTF-8).
        return raw.encode("utf-8")
    try:
        number = int(raw, 10)
    except ValueError:
        raise UsageError(f"{name}: expected a number, not {raw!r}.") from None
    low = 1 if kind == "varint" else 0
    if not low <= number <= _RANGES[kind]:
        raise UsageError(f"Property value ({number}) out of range for property {name}.")
    return (number,) if kind == "varint" else number
