"""``mqttkit sub``: mosquitto_sub.

Subscribes and prints each message (see :mod:`mqttkit.cli.output` for the bytes). Like
mosquitto_sub it reconnects when the connection is lost (a broker restart, a cut link) and
subscribes again; only the first connection's failure ends it. It ends after ``-C`` messages
(status 0), when ``-W`` runs out (27, ``Timed out``), once subscribed with ``-E``, at the first
message that is not retained with ``--retained-only``, on SIGINT / SIGTERM (0), or quietly when
its reader has gone (``| head -1``: killed by SIGPIPE, as mosquitto_sub is).
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from ..protocol.errors import InvalidArgumentError
from ..protocol.packets import Publish
from ..protocol.topics import matches, validate_topic_filter
from .connection import Connection, setup
from .ending import TICK, Ending, die_of_sigpipe, reader_gone, timed_out, wait_result
from .flags import Args, UsageError
from .output import Printer

__all__ = ["run", "subscribe_options", "topic_filter"]


def topic_filter(topic: str, what: str) -> str:
    """A topic filter, checked.

    Raises:
        UsageError: a filter MQTT does not allow, in Mosquitto's words.
    """
    try:
        validate_topic_filter(topic)
    except InvalidArgumentError:
        raise UsageError(
            f"Invalid {what} topic '{topic}', are all '+' and '#' wildcards correct?"
        ) from None
    return topic


def subscribe_options(a: Args, protocol: int) -> dict[str, Any]:
    """The MQTT 5 subscription options (``--rap``, ``--nl``, ``--rh``) for ``subscribe()``.

    Raises:
        UsageError: one of them with MQTT 3.x.
    """
    options: dict[str, Any] = {}
    if a.retain_as_published:
        options["retain_as_published"] = True
    if a.no_local:
        options["no_local"] = True
    if a.retain_handling:
        options["retain_handling"] = a.retain_handling
    if options and protocol != 5:
        raise UsageError(
            "--retain-as-published, --nl and --rh are MQTT 5 subscription options: use -V 5."
        )
    return options


def run(a: Args, stderr: Any) -> int:
    """Subscribe and print as the flags say; the exit status.

    Raises:
        UsageError: bad flags.
        MQTTError: the first connection failed.
    """
    s = setup(a)
    topics = list(a.topics)
    if s.url_topic is not None:
        topics.insert(0, s.url_topic)
    if not topics and not a.unsubscribe:
        raise UsageError("You must specify a topic to subscribe to.")
    for topic in topics:
        topic_filter(topic, "subscription")
    for topic in a.filter_out:
        topic_filter(topic, "filter")
    for topic in a.unsubscribe:
        topic_filter(topic, "unsubscribe")
    if a.no_stale and a.retained_only:
        raise UsageError("-R and --retained-only cannot be used together.")
    options = subscribe_options(a, s.protocol)
    printer = Printer(a.format, verbose=a.verbose, eol=not a.no_eol, pretty=a.pretty)
    for warning in s.warnings:
        if not a.quiet:
            print(warning, file=stderr, flush=True)
    ending = Ending()
    lock = threading.Lock()
    printed = 0
    rng = random.Random()

    conn = Connection(a, s, reconnect=True)
    conn.on_broken_pipe = ending.pipe_closed

    def on_message(topic: str, payload: bytes, message: Publish) -> None:
        nonlocal printed
        if ending.event.is_set():
            return
        if any(matches(f, topic) for f in a.filter_out):
            return
        if a.remove_retained and message.retain:
            # Clear it: an empty retained message at the subscription's QoS.
            conn.client.publish(topic, b"", qos=a.qos, retain=True)
        if a.retained_only and not message.retain:
            ending.end(0)
            return
        if a.no_stale and message.retain:
            return
        if a.random_filter is not None and rng.random() * 100.0 >= a.random_filter:
            return
        with lock:
            rendered = printer.render(message)
            for warning in rendered.warnings:
                print(warning, file=stderr, flush=True)
            if not conn.write(rendered.data):
                return
            printed += 1
            if a.count is not None and printed >= a.count:
                ending.end(0)

    conn.client.on("message", on_message)
    conn.open()
    try:
        deadline = None if a.timeout is None else time.monotonic() + a.timeout
        if topics:
            handle = conn.client.subscribe(
                dict.fromkeys(topics, a.qos),
                properties=s.properties.get("subscribe"),
                **options,
            )
        else:
            handle = None
        if a.unsubscribe:
            unsubscribed = conn.client.unsubscribe(
                a.unsubscribe, properties=s.properties.get("unsubscribe")
            )
        else:
            unsubscribed = None
        if handle is not None:
            granted = wait_result(handle, deadline, conn, ending)
            if granted is None:
                return timed_out(a, stderr) if not ending.event.is_set() else ending.status
            if all(g.qos >= 0x80 for g in granted):
                if not a.quiet:
                    print("All subscription requests were denied.", file=stderr, flush=True)
                return 1
        if unsubscribed is not None and wait_result(unsubscribed, deadline, conn, ending) is None:
            return timed_out(a, stderr) if not ending.event.is_set() else ending.status
        if a.exit_after_sub:
            return 0
        while not ending.event.is_set():
            if conn.stopped.is_set() and conn.error is not None:
                raise conn.error
            if reader_gone(conn.out):
                ending.pipe_closed()
                break
            left = TICK if deadline is None else min(TICK, deadline - time.monotonic())
            if left <= 0:
                return timed_out(a, stderr)
            ending.event.wait(left)
        return ending.status
    finally:
        conn.close(5.0 if not ending.broken_pipe else 1.0)
        if ending.broken_pipe:
            die_of_sigpipe()
