"""The asyncio driver and the asyncio client.

``Engine`` is the only code in mqttkit that touches sockets and timers; ``Client`` is the public
asyncio front built on it (the blocking front in ``mqttkit.sync`` runs the same engine on a
private loop thread); ``publish_single``, ``publish_multiple`` and ``subscribe_simple`` are
one-shot helpers on that client.
"""

from .client import (
    MAX_STATE_EVENTS,
    Client,
    Connected,
    ConnectionEvent,
    Disconnected,
    Reconnecting,
)
from .engine import Engine
from .oneshot import publish_multiple, publish_single, subscribe_simple

__all__ = [
    "MAX_STATE_EVENTS",
    "Client",
    "Connected",
    "ConnectionEvent",
    "Disconnected",
    "Engine",
    "Reconnecting",
    "publish_multiple",
    "publish_single",
    "subscribe_simple",
]
