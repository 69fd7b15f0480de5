"""Topic names and filters (MQTT 5.0 section 4.7, shared subscriptions 4.8.2)."""

from __future__ import annotations

import pytest

from mqttkit.protocol.errors import InvalidArgumentError, InvalidTopicError
from mqttkit.protocol.topics import (
    MAX_TOPIC_BYTES,
    matches,
    parse_shared,
    validate_topic_filter,
    validate_topic_name,
)

VALID_NAMES = [
    "a",
    "a/b",
    "/",
    "/finance",
    "sport/tennis/player1",
    "sport/",
    "$SYS/monitor/Clients",
    "Accounts payable",
    "ü/€/日本",
    "x" * MAX_TOPIC_BYTES,  # 65,535 bytes: the limit
    "é" * (MAX_TOPIC_BYTES // 2),  # 65,534 bytes of two-byte characters
    "$share/g/a",  # an ordinary topic name in PUBLISH
]

# (name, fragment of the message that says what to fix)
INVALID_NAMES = [
    ("", "must not be empty"),
    ("x" * (MAX_TOPIC_BYTES + 1), "65,536 bytes in UTF-8; the limit is 65,535"),
    ("é" * (MAX_TOPIC_BYTES // 2) + "x" * 2, "the limit is 65,535"),  # 65,536 bytes, 32,769 chars
    ("a\x00b", "null character U+0000"),
    ("a/\ud800", "lone surrogate"),
    ("\udfff", "lone surrogate"),
    ("a/+", "wildcards are only allowed in subscription filters"),
    ("+", "wildcard"),
    ("a/#", "wildcard"),
    ("#", "wildcard"),
    ("a+b", "wildcard"),
]

VALID_FILTERS = [
    "a",
    "a/b",
    "#",
    "+",
    "+/+",
    "/+",
    "a/#",
    "a/+/b",
    "+/tennis/#",
    "sport/tennis/player1/#",
    "$SYS/#",
    "/",
    "//",
    "x" * MAX_TOPIC_BYTES,
    "$share/g/a/+",
    "$share/g/#",
    "$share/group-1/sport/tennis/+",
    "$share",  # not a shared subscription: "$share" alone is an ordinary filter
    "$sharex/a",
]

INVALID_FILTERS = [
    ("", "must not be empty"),
    ("x" * (MAX_TOPIC_BYTES + 1), "the limit is 65,535"),
    ("a/\x00", "null character U+0000"),
    ("a/\ud800", "lone surrogate"),
    ("a/#/b", "'#' must be the last level and stand alone"),
    ("#/a", "'#' must be the last level"),
    ("#x", "'#' must be the last level and stand alone"),
    ("a/b#", "'#' must be the last level and stand alone"),
    ("a+", "'+' must occupy a whole level"),
    ("a/+b/c", "'+' must occupy a whole level"),
    ("++", "'+' must occupy a whole level"),
    ("$share//a", "the share name must be non-empty"),
    ("$share/g", "needs a filter: '$share/<name>/<filter>'"),
    ("$share/g/", "needs a filter"),
    ("$share/#", "needs a filter"),
    ("$share/g+/a", "the share name must be non-empty and hold no wildcard"),
    ("$share/+/a", "hold no wildcard"),
    ("$share/#/a", "hold no wildcard"),
    ("$share/g/a/#/b", "'#' must be the last level"),
    ("$share/g/a+", "'+' must occupy a whole level"),
]


@pytest.mark.parametrize("name", VALID_NAMES, ids=lambda n: repr(n[:20]))
def test_valid_topic_names(name: str) -> None:
    assert validate_topic_name(name) == name.encode("utf-8")


@pytest.mark.parametrize(("name", "message"), INVALID_NAMES, ids=lambda n: repr(n[:20]))
def test_invalid_topic_names(name: str, message: str) -> None:
    with pytest.raises(InvalidTopicError) as info:
        validate_topic_name(name)
    assert message in str(info.value)


@pytest.mark.parametrize("topic_filter", VALID_FILTERS, ids=lambda n: repr(n[:20]))
def test_valid_topic_filters(topic_filter: str) -> None:
    assert validate_topic_filter(topic_filter) == topic_filter.encode("utf-8")


@pytest.mark.parametrize(("topic_filter", "message"), INVALID_FILTERS, ids=lambda n: repr(n[:20]))
def test_invalid_topic_filters(topic_filter: str, message: str) -> None:
    with pytest.raises(InvalidTopicError) as info:
        validate_topic_filter(topic_filter)
    assert message in str(info.value)


@pytest.mark.parametrize("value", [None, b"a/b", 1, ["a"]])
def test_topics_must_be_str(value: object) -> None:
    with pytest.raises(InvalidTopicError, match="must be a str"):
        validate_topic_name(value)  # type: ignore[arg-type]
    with pytest.raises(InvalidTopicError, match="must be a str"):
        validate_topic_filter(value)  # type: ignore[arg-type]


def test_invalid_topic_error_is_a_value_error() -> None:
    """Sending methods raise at once; callers may catch ValueError as for any bad argument."""
    assert issubclass(InvalidTopicError, InvalidArgumentError)
    assert issubclass(InvalidTopicError, ValueError)


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("a/b", None),
        ("$share", None),
        ("$SHARE/g/a", None),
        ("$share/g/a", ("g", "a")),
        ("$share/consumer1/sport/tennis/+", ("consumer1", "sport/tennis/+")),
        ("$share/g//", ("g", "/")),
    ],
)
def test_parse_shared(topic_filter: str, expected: tuple[str, str] | None) -> None:
    assert parse_shared(topic_filter) == expected


# Section 4.7.1 and 4.7.2 examples, in order, plus the corner cases they imply.
MATCHES = [
    # 4.7.1.2 multi-level wildcard
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),  # '#' includes the parent level
    ("#", "sport", True),
    ("#", "sport/tennis", True),
    ("#", "/", True),
    ("sport/#", "sports", False),
    ("sport/#", "sport/", True),
    # 4.7.1.3 single-level wildcard
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+", "sport", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("+/tennis/#", "sport/tennis/player1", True),
    ("+/tennis/#", "sport/tennis", True),
    ("+/tennis/#", "sport/golf", False),
    # 4.7.2 topics beginning with $
    ("#", "$SYS", False),
    ("#", "$SYS/monitor/Clients", False),
    ("+", "$SYS", False),
    ("+", "$SYS/x", False),
    ("+/x", "$SYS/x", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("$SYS/#", "$SYS/monitor/Clients", True),
    ("$SYS/#", "$SYS", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("$SYS", "$SYS", True),
    ("a/+", "a/$x", True),  # only a leading '$' is special
    # 4.7.3 topic semantics: case sensitive, spaces allowed, '/' significant
    ("ACCOUNTS", "Accounts", False),
    ("Accounts payable", "Accounts payable", True),
    ("/finance", "finance", False),
    ("finance", "finance/", False),
    ("a/b", "a/b", True),
    ("a/b", "a/b/c", False),
    ("a/b/c", "a/b", False),
    # shared subscriptions match by their inner filter (4.8.2)
    ("$share/g/sport/#", "sport/tennis", True),
    ("$share/g/+", "sport", True),
    ("$share/g/+", "$SYS", False),
    ("$share/g/a", "b", False),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCHES)
def test_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert matches(topic_filter, topic) is expected
