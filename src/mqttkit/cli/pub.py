"""``mqttkit pub``: mosquitto_pub.

Publishes one message (``-m``, ``-f``, ``-s``, ``-n``; ``--repeat`` times) or one per line of
stdin (``-l``) and exits once every QoS flow has completed. Like mosquitto_pub, a lost
connection ends a one-message run (exit status 7), while ``-l`` reconnects and goes on; a
message the broker refuses with an MQTT 5 reason code is a warning (``Warning: Publish 1
failed: ...``), not a failure.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

from ..protocol.errors import InvalidArgumentError, MQTTError, PublishError, reason_name
from ..protocol.topics import validate_topic_name
from ..sync.client import Handle
from .connection import Connection, setup
from .flags import Args, UsageError

__all__ = ["read_payloads", "run", "topic_name"]


def topic_name(topic: str | None, what: str = "publish") -> str:
    """A topic to publish to, checked as Mosquitto's tools check it (and then fully).

    Raises:
        UsageError: a wildcard, or a name MQTT does not allow.
    """
    if topic is None:
        raise UsageError("Both topic and message must be supplied.")
    if "+" in topic or "#" in topic:
        raise UsageError(f"Invalid {what} topic '{topic}', does it contain '+' or '#'?")
    try:
        validate_topic_name(topic)
    except InvalidArgumentError as exc:
        raise UsageError(f"Invalid {what} topic '{topic}': {exc}.") from None
    return topic


def read_payloads(a: Args) -> Iterator[bytes]:
    """The messages the source flag names (one, ``--repeat`` times; or one per line).

    Raises:
        UsageError: no source, a file that cannot be read, an empty ``-s`` input.
    """
    if a.source == "message":
        assert a.message is not None
        data = a.message.encode("utf-8", "surrogateescape")
    elif a.source == "file":
        assert a.file is not None
        try:
            with open(a.file, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise UsageError(f'Unable to read file "{a.file}": {exc.strerror or exc}.') from None
    elif a.source == "stdin_file":
        data = sys.stdin.buffer.read()
        if not data:
            raise UsageError("Zero length input.")
    elif a.source == "null_message":
        data = b""
    elif a.source == "stdin_line":
        for line in sys.stdin.buffer:
            yield line.rstrip(b"\n").rstrip(b"\r")
        return
    else:
        raise UsageError("Both topic and message must be supplied.")
    for _ in range(a.repeat):
        yield data


def run(a: Args, stderr: Any) -> int:
    """Publish as the flags say; the exit status.

    Raises:
        UsageError: bad flags.
        MQTTError: the connection failed or was lost.
    """
    s = setup(a)
    topic = topic_name(a.topic if a.topic is not None else s.url_topic)
    if a.source is None:
        raise UsageError("Both topic and message must be supplied.")
    payloads = read_payloads(a)
    first = next(payloads, None)  # read (a file, stdin) before connecting: errors come first
    for warning in s.warnings:
        if not a.quiet:
            print(warning, file=stderr, flush=True)
    properties = s.properties.get("publish")
    lines = a.source == "stdin_line"
    conn = Connection(a, s, reconnect=lines)
    conn.open()
    status = 0
    try:
        pending: list[tuple[int, Handle[int]]] = []
        items = payloads if first is None else _chain(first, payloads)
        for number, payload in enumerate(items, 1):
            if number > 1 and a.repeat_delay:
                status = _finish(pending, a, stderr) or status
                time.sleep(a.repeat_delay)
            pending.append(
                (
                    number,
                    conn.client.publish(
                        topic, payload, qos=a.qos, retain=a.retain, properties=properties
                    ),
                )
            )
            if lines:
                # Each line goes out as it is read; its flow completes before the next line.
                status = _finish(pending, a, stderr) or status
            if conn.stopped.is_set() and conn.error is not None:
                raise conn.error
        status = _finish(pending, a, stderr) or status
    finally:
        conn.close()
    if conn.error is not None and conn.lost.is_set() and not lines:
        # mosquitto_pub notices a connection the broker closed after the last message
        # (a QoS 0 message over the broker's size limit, for one): status 7.
        raise conn.error
    return status


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _finish(pending: list[tuple[int, Handle[int]]], a: Args, stderr: Any) -> int:
    """Wait for every pending flow; warn (as mosquitto_pub) about refused ones."""
    for number, handle in pending:
        try:
            handle.result()
        except PublishError as exc:
            if not a.quiet:
                words = reason_name(exc.reason_code)
                print(
                    f"Warning: Publish {number} failed: {words[:1].upper()}{words[1:]}.",
                    file=stderr,
                    flush=True,
                )
        except MQTTError:
            pending.clear()
            raise
    pending.clear()
    return 0
