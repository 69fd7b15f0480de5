"""The blocking / threaded front: the seed-000 client on a private loop thread."""

from .client import Client, Handle, connect, engine_loop
from .events import EventEmitter

__all__ = ["Client", "EventEmitter", "Handle", "connect", "engine_loop"]
