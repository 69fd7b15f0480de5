"""The sans-IO core: packets, codec, topics, the client session, stores and errors.

Bytes and ``now`` in; bytes, events and a deadline out. Standard library only; nothing here
imports socket, ssl, asyncio, threading, time or random (a test enforces it).
"""

from .errors import *  # noqa: F403
from .errors import __all__ as _errors_all
from .packets import *  # noqa: F403
from .packets import __all__ as _packets_all
from .session import ClientSession, SessionConfig, State
from .store import MemoryStore, Store
from .topics import matches, validate_topic_filter, validate_topic_name

__all__ = [
    *_errors_all,
    *_packets_all,
    "ClientSession",
    "MemoryStore",
    "SessionConfig",
    "State",
    "Store",
    "matches",
    "validate_topic_filter",
    "validate_topic_name",
]
