"""Topic names and topic filters: validation, wildcard matching, shared subscriptions.

This module owns the rules of MQTT section 4.7 and 4.8.2. Validation functions return the UTF-8
encoding (which the codec needs anyway) and raise :class:`InvalidTopicError` with a message that
says what to fix. Nothing here does I/O.
"""

from __future__ import annotations

from functools import lru_cache

from .errors import InvalidTopicError

__all__ = [
    "MAX_TOPIC_BYTES",
    "matches",
    "parse_shared",
    "validate_topic_filter",
    "validate_topic_name",
]

#: Topic names and filters are UTF-8 strings: at most 65,535 bytes [MQTT-1.5.4].
MAX_TOPIC_BYTES = 65_535


def _encode(topic: object, what: str) -> bytes:
    if not isinstance(topic, str):
        raise InvalidTopicError(f"{what} must be a str, not {type(topic).__name__}")
    if not topic:
        # [MQTT-4.7.3-1]: topic names and filters are at least one character long.
        raise InvalidTopicError(f"{what} must not be empty [MQTT-4.7.3-1]")
    try:
        raw = topic.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates cannot be sent as well-formed UTF-8 [MQTT-1.5.4-1].
        raise InvalidTopicError(
            f"{what} {topic!r} is not valid Unicode text (it contains a lone surrogate)"
        ) from None
    if len(raw) > MAX_TOPIC_BYTES:
        raise InvalidTopicError(
            f"{what} is {len(raw):,} bytes in UTF-8; the limit is {MAX_TOPIC_BYTES:,}"
        )
    if "\x00" in topic:
        # [MQTT-4.7.3-2]
        raise InvalidTopicError(f"{what} must not contain the null character U+0000")
    return raw


def validate_topic_name(topic: object) -> bytes:
    """Check a topic name for PUBLISH and return its UTF-8 encoding.

    Raises:
        InvalidTopicError: empty, too long, U+0000, lone surrogate, or a wildcard in it.
    """
    if type(topic) is not str:
        raise InvalidTopicError(f"topic name must be a str, not {type(topic).__name__}")
    return _validate_topic_name(topic)


@lru_cache(maxsize=4096)
def _validate_topic_name(topic: str) -> bytes:
    # Cached: applications publish to a handful of topics, millions of times.
    raw = _encode(topic, "topic name")
    if "+" in topic or "#" in topic:
        # [MQTT-3.3.2-2]
        raise InvalidTopicError(
            f"topic name {topic!r} contains a wildcard ('+' or '#'); wildcards are only "
            "allowed in subscription filters"
        )
    return raw


def validate_topic_filter(topic_filter: object) -> bytes:
    """Check a topic filter for SUBSCRIBE/UNSUBSCRIBE and return its UTF-8 encoding.

    ``$share/{ShareName}/{filter}`` is checked as a shared subscription (section 4.8.2).

    Raises:
        InvalidTopicError: empty, too long, U+0000, misplaced wildcard, bad share name.
    """
    if not isinstance(topic_filter, str):
        raise InvalidTopicError(f"topic filter must be a str, not {type(topic_filter).__name__}")
    raw = _encode(topic_filter, "topic filter")
    levels = topic_filter.split("/")
    if levels[0] == "$share":
        # First, so that a bad share name gets the share-name message, not the wildcard one.
        parse_shared(topic_filter)
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != last):
            # [MQTT-4.7.1-1]: '#' alone in its level and the last character of the filter.
            raise InvalidTopicError(
                f"topic filter {topic_filter!r}: '#' must be the last level and stand alone "
                "(e.g. 'a/#')"
            )
        if "+" in level and level != "+":
            # [MQTT-4.7.1-2]: '+' must occupy an entire level.
            raise InvalidTopicError(
                f"topic filter {topic_filter!r}: '+' must occupy a whole level (e.g. 'a/+/b')"
            )
    return raw


def parse_shared(topic_filter: str) -> tuple[str, str] | None:
    """Split ``$share/{ShareName}/{filter}`` into ``(share_name, filter)``; None if not shared.

    Raises:
        InvalidTopicError: a share name that is empty or holds a wildcard, or no filter.
    """
    if not topic_filter.startswith("$share/"):
        return None
    parts = topic_filter.split("/", 2)
    if len(parts) < 3 or not parts[2]:
        # [MQTT-4.8.2-2]
        raise InvalidTopicError(
            f"shared subscription {topic_filter!r} needs a filter: '$share/<name>/<filter>'"
        )
    name = parts[1]
    if not name or "+" in name or "#" in name:
        # [MQTT-4.8.2-1]
        raise InvalidTopicError(
            f"shared subscription {topic_filter!r}: the share name must be non-empty and "
            "hold no wildcard"
        )
    return name, parts[2]


def matches(topic_filter: str, topic: str) -> bool:
    """True when ``topic`` (a topic name) matches ``topic_filter`` (section 4.7).

    Shared filters match by their inner filter. Filters starting with a wildcard do not match
    topics starting with '$' [MQTT-4.7.2-1].
    """
    shared = parse_shared(topic_filter) if topic_filter.startswith("$share/") else None
    if shared is not None:
        topic_filter = shared[1]
    if topic_filter == topic:
        return True
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            # "sport/#" also matches "sport" itself (the parent level).
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)
