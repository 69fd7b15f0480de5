"""The blocking / threaded front: the seed-000 client on a private loop thread.

``client`` (the client and its operations), ``handle`` (waitable outcomes), ``dispatch`` (from
the loop thread to the listeners), ``loop`` (the loop thread and the way onto it), ``events``
(the Node-style emitter), ``oneshot`` (``publish_single``, ``publish_multiple``,
``subscribe_simple``).
"""

from .client import Client, connect
from .events import EventEmitter
from .handle import Handle
from .loop import engine_loop
from .oneshot import publish_multiple, publish_single, subscribe_simple

__all__ = [
    "Client",
    "EventEmitter",
    "Handle",
    "connect",
    "engine_loop",
    "publish_multiple",
    "publish_single",
    "subscribe_simple",
]
