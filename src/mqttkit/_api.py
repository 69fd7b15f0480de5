"""Argument shapes shared by the fronts: topic arguments to subscriptions, and results.

The seed APIs accept a topic as a str, a list of str, or a dict ``{topic: qos}``; this module
turns those into validated protocol requests. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from .protocol.errors import InvalidArgumentError
from .protocol.packets import MQTT_5, Properties, Publish, Subscription
from .protocol.session import SubscribeCompleted

__all__ = [
    "ACK_REASONS",
    "AckableMessage",
    "Granted",
    "ackable",
    "auth_properties",
    "check_ack_reason",
    "filters_from",
    "granted_from",
    "subscriptions_from",
]

#: The reason codes a PUBACK / PUBREC may carry (MQTT 5, sections 3.4.2.1 and 3.5.2.1).
ACK_REASONS = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})


def check_ack_reason(reason_code: int, level: int) -> None:
    """Raise :class:`InvalidArgumentError` unless ``reason_code`` may be sent at ``level``."""
    if isinstance(reason_code, bool) or not isinstance(reason_code, int):
        raise InvalidArgumentError(f"reason_code must be an int, not {reason_code!r}")
    if reason_code and level != MQTT_5:
        raise InvalidArgumentError("an acknowledgement reason code needs protocol_version=5")
    if reason_code not in ACK_REASONS:
        raise InvalidArgumentError(
            f"0x{reason_code:02X} is not a PUBACK/PUBREC reason code; use one of "
            + ", ".join(f"0x{code:02X}" for code in sorted(ACK_REASONS))
        )


class AckableMessage(Publish):
    """An incoming message of a client with ``manual_ack=True``: a :class:`Publish` with
    :meth:`ack`."""

    __slots__ = ("_acknowledge",)

    def ack(self, reason_code: int = 0) -> None:
        """Acknowledge this message to the broker (PUBACK for QoS 1, PUBREC for QoS 2; QoS 0:
        nothing to do). Safe from any thread or task, and more than once (only the first
        counts). Acknowledgements leave in the order the messages arrived, as MQTT requires:
        one acknowledged early waits for those before it. Not acknowledged at all, a message
        stays unacknowledged: the broker sends it again after a reconnect (kept session).

        Args:
            reason_code: MQTT 5: 0x00 success, 0x10 no matching subscribers, or a refusal
                (0x80 unspecified, 0x83 implementation specific, 0x87 not authorized, 0x90
                topic name invalid, 0x91 packet identifier in use, 0x97 quota exceeded, 0x99
                payload format invalid). A refused QoS 2 message ends its flow there.

        Raises:
            InvalidArgumentError: a reason code PUBACK/PUBREC cannot carry, or a non-zero one
                with MQTT 3.x.
        """
        acknowledge: Callable[[int], None] = object.__getattribute__(self, "_acknowledge")
        acknowledge(reason_code)


def ackable(message: Publish, acknowledge: Callable[[int], None]) -> AckableMessage:
    """``message`` as an :class:`AckableMessage` whose ``ack(reason_code)`` calls
    ``acknowledge(reason_code)``."""
    copy = AckableMessage(
        message.topic,
        message.payload,
        message.qos,
        message.retain,
        message.dup,
        message.packet_id,
        message.properties,
    )
    object.__setattr__(copy, "_acknowledge", acknowledge)
    return copy


class Granted(NamedTuple):
    """One filter of a SUBSCRIBE and what the broker granted (128 or more: refused)."""

    topic: str
    qos: int


def subscriptions_from(
    topic: Any,
    qos: int = 0,
    *,
    no_local: bool = False,
    retain_as_published: bool = False,
    retain_handling: int = 0,
) -> tuple[Subscription, ...]:
    """Turn ``topic`` (str, list of str, dict of str -> qos, Subscription(s)) into
    Subscriptions; ``qos`` and the MQTT 5 options apply where the topic form gives none.

    Raises:
        InvalidArgumentError: an unsupported shape or an empty collection.
    """

    def one(topic_filter: Any, sub_qos: Any) -> Subscription:
        if isinstance(topic_filter, Subscription):
            return topic_filter
        if not isinstance(topic_filter, str):
            raise InvalidArgumentError(
                f"a topic filter must be a str, not {type(topic_filter).__name__}"
            )
        return Subscription(topic_filter, sub_qos, no_local, retain_as_published, retain_handling)

    if isinstance(topic, str | Subscription):
        subs: tuple[Subscription, ...] = (one(topic, qos),)
    elif isinstance(topic, Mapping):
        subs = tuple(one(name, value) for name, value in topic.items())
    elif isinstance(topic, Iterable) and not isinstance(topic, bytes | bytearray):
        subs = tuple(one(name, qos) for name in topic)
    else:
        raise InvalidArgumentError(
            "topic must be a str, a list of str, or a dict {topic: qos}, not "
            f"{type(topic).__name__}"
        )
    if not subs:
        raise InvalidArgumentError("subscribe needs at least one topic filter")
    return subs


def filters_from(topic: Any) -> tuple[str, ...]:
    """Turn ``topic`` (str, list of str, or a dict whose keys are filters) into filters."""
    if isinstance(topic, str):
        return (topic,)
    if isinstance(topic, Mapping) or (
        isinstance(topic, Iterable) and not isinstance(topic, bytes | bytearray)
    ):
        filters = tuple(topic)
    else:
        raise InvalidArgumentError(
            f"topic must be a str or a list of str, not {type(topic).__name__}"
        )
    for topic_filter in filters:
        if not isinstance(topic_filter, str):
            raise InvalidArgumentError(
                f"a topic filter must be a str, not {type(topic_filter).__name__}"
            )
    if not filters:
        raise InvalidArgumentError("unsubscribe needs at least one topic filter")
    return filters


def granted_from(event: SubscribeCompleted) -> list[Granted]:
    """The seed's ``granted`` list: one ``(topic, qos)`` per filter, in request order."""
    return [
        Granted(sub.topic_filter, code)
        for sub, code in zip(event.subscriptions, event.reason_codes, strict=True)
    ]


def auth_properties(properties: object, protocol_version: int) -> Properties:
    """Check the argument of ``reauthenticate()``.

    Raises:
        InvalidArgumentError: not MQTT 5, not a Properties, or no authentication method.
    """
    if protocol_version != MQTT_5:
        raise InvalidArgumentError("re-authentication needs MQTT 5 (protocol_version=5)")
    if not isinstance(properties, Properties):
        raise InvalidArgumentError(
            f"reauthenticate() takes an mqttkit.Properties, not {type(properties).__name__}"
        )
    if not properties.authentication_method:
        raise InvalidArgumentError(
            "reauthenticate() needs authentication_method, the one the connection started with"
        )
    return properties
