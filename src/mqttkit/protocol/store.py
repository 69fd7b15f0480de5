"""The Store protocol, which holds QoS 1/2 state, and the in-memory default.

A client has two stores (the seed's ``outgoingStore`` and ``incomingStore``):

* the **outgoing** store maps a sequence number (publish order) to the message's current wire
  form: the encoded PUBLISH while it waits or awaits PUBACK/PUBREC, then the encoded PUBREL once
  PUBREC came back. Nothing else is needed to finish the flow after a restart;
* the **incoming** store maps the broker's packet id of a QoS 2 message that the application has
  acknowledged (its PUBREC is sent then, in arrival order) to an empty value, until PUBREL
  releases it. This is what makes incoming
  QoS 2 exactly-once across reconnects and restarts.

The session calls the store synchronously, before the bytes it records leave (so a durable store
is always ahead of the wire). Keys are ints, values are bytes. A store must keep, for each key,
the last value put; ``iterate`` yields the live entries in key order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

__all__ = ["MemoryStore", "Store", "private_store"]


@runtime_checkable
class Store(Protocol):
    """What the session needs from a store. Implement these five methods for your own."""

    def put(self, key: int, value: bytes) -> None:
        """Insert or replace the value for ``key``."""

    def get(self, key: int) -> bytes | None:
        """The value for ``key``, or None."""

    def delete(self, key: int) -> None:
        """Remove ``key``; removing an absent key is not an error."""

    def iterate(self) -> Iterator[tuple[int, bytes]]:
        """All ``(key, value)`` pairs in ascending key order."""

    def close(self) -> None:
        """Release resources; the store is not used afterwards."""


class MemoryStore:
    """The default store: a dict. Fast; gone when the process ends."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[int, bytes] = {}

    def put(self, key: int, value: bytes) -> None:
        """Insert or replace the value for ``key``."""
        self._data[key] = value

    def get(self, key: int) -> bytes | None:
        """The value for ``key``, or None."""
        return self._data.get(key)

    def delete(self, key: int) -> None:
        """Remove ``key`` if present."""
        self._data.pop(key, None)

    def iterate(self) -> Iterator[tuple[int, bytes]]:
        """All entries in ascending key order."""
        return iter(sorted(self._data.items()))

    def close(self) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<MemoryStore entries={len(self._data)}>"


class _PrivateMemoryStore(MemoryStore):
    """The store a client makes for itself when given none. Nothing outside the session reads
    it, so the session records an outgoing message in it only once the message is sent, and
    saves encoding a copy of each message while it waits in the queue."""

    __slots__ = ()


def private_store() -> MemoryStore:
    """A new in-memory store that only its session uses (the default of the store options)."""
    return _PrivateMemoryStore()


def is_private(store: object) -> bool:
    """True for a store made by :func:`private_store`."""
    return type(store) is _PrivateMemoryStore
