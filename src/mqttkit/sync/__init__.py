"""The blocking / threaded front: the seed-000 client on a private loop thread.

``client`` (the client and its operations), ``handle`` (waitable outcomes), ``dispatch`` (from
the loop thread to the listeners), ``loop`` (the loop thread and the way onto it), ``events``
(the Node-style emitter).
"""

from .client import Client, connect
from .events import EventEmitter
from .handle import Handle
from .loop import engine_loop

__all__ = ["Client", "EventEmitter", "Handle", "connect", "engine_loop"]
