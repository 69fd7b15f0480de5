"""``mqttkit rr``: mosquitto_rr, request and response.

Subscribes to the response topic (``-e``), publishes the request to ``-t`` once the broker has
acknowledged the subscription (with MQTT 5, the default, the request carries the response topic
as its Response Topic property), prints the first response as ``sub`` prints a message, and
exits: status 0, or 27 with ``Timed out`` when ``-W`` runs out first.
"""

from __future__ import annotations

import threading
import time
from dataclasses import fields
from typing import Any

from ..protocol.packets import MQTT_5, Properties, Publish
from .connection import Connection, setup
from .ending import TICK, Ending, die_of_sigpipe, reader_gone, timed_out, wait_result
from .flags import Args, UsageError
from .output import Printer
from .pub import read_payloads, topic_name
from .sub import subscribe_options

__all__ = ["run"]


def run(a: Args, stderr: Any) -> int:
    """Send the request and print the response; the exit status.

    Raises:
        UsageError: bad flags.
        MQTTError: the connection failed or was lost.
    """
    s = setup(a, default_protocol=MQTT_5)
    topic = a.topic if a.topic is not None else s.url_topic
    if topic is None or a.response_topic is None or a.source is None:
        raise UsageError("All of topic, message, and response topic must be supplied.")
    topic = topic_name(topic)
    response_topic = topic_name(a.response_topic, "response")
    options = subscribe_options(a, s.protocol)
    payload = next(read_payloads(a))
    properties = s.properties.get("publish")
    if s.protocol == MQTT_5:
        given = properties or Properties()
        if given.response_topic is not None:
            raise UsageError("Give the response topic with -e, not with -D publish.")
        values = {f.name: getattr(given, f.name) for f in fields(Properties)}
        values["response_topic"] = response_topic
        properties = Properties(**values)
    printer = Printer(a.format, verbose=a.verbose, eol=not a.no_eol, pretty=a.pretty)
    for warning in s.warnings:
        if not a.quiet:
            print(warning, file=stderr, flush=True)
    ending = Ending()
    lock = threading.Lock()
    conn = Connection(a, s)
    conn.on_broken_pipe = ending.pipe_closed

    def on_message(message_topic: str, data: bytes, message: Publish) -> None:
        if message_topic != response_topic or (a.no_stale and message.retain):
            return
        with lock:
            if ending.event.is_set():
                return
            rendered = printer.render(message)
            for warning in rendered.warnings:
                print(warning, file=stderr, flush=True)
            if conn.write(rendered.data):
                ending.end(0)

    conn.client.on("message", on_message)
    conn.open()
    try:
        deadline = None if a.timeout is None else time.monotonic() + a.timeout
        handle = conn.client.subscribe(
            response_topic, qos=a.qos, properties=s.properties.get("subscribe"), **options
        )
        granted = wait_result(handle, deadline, conn, ending)
        if granted is None:
            return timed_out(a, stderr) if not ending.event.is_set() else ending.status
        if all(g.qos >= 0x80 for g in granted):
            if not a.quiet:
                print("All subscription requests were denied.", file=stderr, flush=True)
            return 1
        conn.client.publish(topic, payload, qos=a.qos, properties=properties)
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
