"""The library's loggers: the ``mqttkit`` hierarchy, one adapter per client, packet summaries.

This module owns how a record names its client (:class:`ClientLog`: logger ``mqttkit.client``,
the client id in ``record.client_id`` and in front of the message) and how a packet reads in
a DEBUG record (:func:`describe`, after ``mosquitto_sub -d``: never a payload, a password or
authentication data). It imports nothing but :mod:`logging` and the packet classes, so that
every layer, the core included, may use it.

Why an adapter and not a logger per client (``mqttkit.client.<id>``): loggers are never freed,
and random client ids would grow the logging module's registry by one logger per client for
the life of the process (10,000 clients in one process is a benchmark). A
:class:`logging.Filter` on ``record.client_id`` selects one client instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from .packets import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)

__all__ = ["CLIENT_LOGGER", "ROOT_LOGGER", "ClientLog", "describe"]

#: The logger every record of the library goes to, directly or through a child.
ROOT_LOGGER = "mqttkit"
#: The logger of the records about one client (connect, disconnect, reconnect, packets...).
CLIENT_LOGGER = "mqttkit.client"


class ClientLog(logging.LoggerAdapter[logging.Logger]):
    """The log of one client: records go to ``mqttkit.client`` with ``record.client_id`` set
    and the message starting with ``[<client id>] ``.

    Args:
        client_id: returns the client id now (an MQTT 5 server may assign one on connect).
    """

    def __init__(self, client_id: Callable[[], str]) -> None:
        super().__init__(logging.getLogger(CLIENT_LOGGER), None)
        self._client_id = client_id

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """Put the client id in the record (only called for records that are emitted)."""
        client_id = self._client_id()
        kwargs["extra"] = {**(kwargs.get("extra") or {}), "client_id": client_id}
        return f"[{client_id}] {msg}", kwargs


def _flag(value: bool) -> int:
    return 1 if value else 0


def describe(packet: Packet) -> str:
    """A one-line summary of ``packet`` for a DEBUG record, in the manner of ``mosquitto_sub
    -d``: ``PUBLISH (d0, q1, r0, m3, 'a/b', ... (5 bytes))``. Payloads, passwords and
    authentication data are left out (their size at most)."""
    name = type(packet).__name__.upper()
    if isinstance(packet, Publish):
        return (
            f"PUBLISH (d{_flag(packet.dup)}, q{packet.qos}, r{_flag(packet.retain)}, "
            f"m{packet.packet_id or 0}, {packet.topic!r}, ... ({len(packet.payload)} bytes))"
        )
    if isinstance(packet, PubAck | PubRec | PubRel | PubComp):
        return f"{name} (Mid: {packet.packet_id}, RC: {packet.reason_code})"
    if isinstance(packet, Subscribe):
        subs = ", ".join(
            f"Topic: {sub.topic_filter}, QoS: {sub.qos}" for sub in packet.subscriptions
        )
        return f"SUBSCRIBE (Mid: {packet.packet_id}, {subs})"
    if isinstance(packet, SubAck | UnsubAck):
        codes = ", ".join(str(code) for code in packet.reason_codes)
        return f"{name} (Mid: {packet.packet_id}, RC: [{codes}])"
    if isinstance(packet, Unsubscribe):
        return f"UNSUBSCRIBE (Mid: {packet.packet_id}, {', '.join(packet.topic_filters)})"
    if isinstance(packet, Connect):
        parts = [
            f"v{packet.protocol_level}",
            f"c{_flag(packet.clean_start)}",
            f"k{packet.keepalive}",
            f"client id {packet.client_id!r}",
        ]
        if packet.username is not None:
            parts.append(f"username {packet.username!r}")
        if packet.password is not None:
            parts.append("password ***")
        if packet.will is not None:
            parts.append(f"will {packet.will.topic!r}")
        return f"CONNECT ({', '.join(parts)})"
    if isinstance(packet, ConnAck):
        text = f"CONNACK (session present {_flag(packet.session_present)}, RC: {packet.reason_code}"
        reason = packet.properties.reason_string
        return f"{text}, {reason!r})" if reason else f"{text})"
    if isinstance(packet, Disconnect | Auth):
        reason = packet.properties.reason_string
        text = f"{name} (RC: {packet.reason_code}"
        return f"{text}, {reason!r})" if reason else f"{text})"
    return name
