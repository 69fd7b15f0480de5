"""SessionConfig: what a :class:`~mqttkit.protocol.session.ClientSession` needs to know.

This module owns the settings record the options layer builds and the session and its parts
read (live: a change applies from the next use). It holds no state of a session and does no
validation beyond the types (``mqttkit.options`` validates what users pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .codec import MAX_PACKET_SIZE
from .packets import MQTT_3_1_1, NO_PROPERTIES, Properties, Will
from .store import Store, private_store

__all__ = ["SessionConfig"]


@dataclass(slots=True)
class SessionConfig:
    """What the session needs to know; built by the options layer."""

    client_id: str = ""
    """Client identifier sent in CONNECT."""
    protocol_level: int = MQTT_3_1_1
    """3 (MQTT 3.1), 4 (MQTT 3.1.1) or 5 (MQTT 5.0)."""
    clean_start: bool = True
    """Start a new session on every connection (3.1.1: Clean Session)."""
    keepalive: int = 10
    """Seconds; 0 disables keepalive."""
    username: str | None = None
    """User name for CONNECT."""
    password: bytes | None = field(default=None, repr=False)
    """Password for CONNECT; never logged."""
    will: Will | None = None
    """Last Will and Testament."""
    properties: Properties = NO_PROPERTIES
    """MQTT 5 CONNECT properties (session expiry, receive maximum...)."""
    max_inflight: int = 65_535
    """Most outgoing QoS 1/2 PUBLISH awaiting acknowledgement at once."""
    max_inflight_qos2: int | None = None
    """Most outgoing QoS 2 PUBLISH awaiting PUBCOMP at once (None: only ``max_inflight``)."""
    max_queued: int = 100_000
    """Most messages waiting to be sent (offline, or behind a full window)."""
    max_queued_bytes: int | None = None
    """Most payload bytes waiting to be sent (None: no byte limit)."""
    queue_policy: str = "reject"
    """When the queue is full: ``reject`` (publish raises QueueFullError), ``drop_oldest``
    (the oldest waiting message is dropped), ``drop_newest`` (the new one is)."""
    max_packet_size: int = MAX_PACKET_SIZE
    """Largest incoming packet accepted (bytes); larger ones close the connection."""
    outgoing_store: Store = field(default_factory=private_store)
    """Holds outgoing QoS 1/2 messages until their flow completes."""
    incoming_store: Store = field(default_factory=private_store)
    """Holds incoming QoS 2 packet ids between PUBREC and PUBREL."""
    trace_packets: bool = False
    """Emit PacketSent / PacketReceived events."""
    auto_topic_alias: bool = False
    """MQTT 5: send repeated topics by automatic Topic Alias (see ``aliases.py``)."""
