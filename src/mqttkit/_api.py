"""Argument shapes shared by the fronts: topic arguments to subscriptions, and results.

The seed APIs accept a topic as a str, a list of str, or a dict ``{topic: qos}``; this module
turns those into validated protocol requests. No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from .protocol.errors import InvalidArgumentError
from .protocol.packets import MQTT_5, Properties, Subscription
from .protocol.session import SubscribeCompleted

__all__ = ["Granted", "auth_properties", "filters_from", "granted_from", "subscriptions_from"]


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
