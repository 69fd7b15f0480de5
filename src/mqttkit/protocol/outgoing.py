"""The outgoing side of a session: the records of outgoing work and where each one stands.

This module owns :class:`_Entry`, one outgoing PUBLISH, SUBSCRIBE or UNSUBSCRIBE with its kind
and its flow state (queued, sent, released). It builds no wire bytes (``codec`` does) and does
no I/O.
"""

from __future__ import annotations

from typing import Any

# What an outgoing queue entry is.
_PUBLISH, _SUBSCRIBE, _UNSUBSCRIBE = 1, 2, 3
# Where a QoS 1/2 PUBLISH stands.
_QUEUED, _SENT, _RELEASED = 0, 1, 2


class _Entry:
    """One outgoing PUBLISH, SUBSCRIBE or UNSUBSCRIBE."""

    __slots__ = (
        "data",
        "key",
        "kind",
        "packet_id",
        "qos",
        "request",
        "sent_at",
        "sent_mark",
        "seq",
        "state",
        "token",
    )

    # Set when the entry is sent (or restored in flight): the session's send counter then
    # (see _note_connection_end) and the time. Not set before: a queued entry has neither.
    sent_mark: int
    sent_at: float

    def __init__(
        self, kind: int, seq: int, qos: int, request: Any, token: Any, key: int = 0
    ) -> None:
        self.kind = kind
        #: The session's order of work (FIFO among publishes, subscribes, unsubscribes).
        self.seq = seq
        #: The outgoing store's key of a QoS 1/2 PUBLISH (0: not stored under its own key yet).
        self.key = key
        self.qos = qos
        self.request = request
        self.token = token
        self.packet_id = 0
        self.state = _QUEUED
        self.data = b""
