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

Threads. A store given to the blocking client (``mqttkit.Client``) is called from the
publishing threads (``publish()`` returns once the store holds the message) as well as from the
client's loop thread, possibly at the same moment: ``put`` and ``delete`` must be thread-safe,
and for one key the last call made must win. ``MemoryStore`` is, under the GIL: each call is a
single dict operation. A slow ``put`` (an fsync) is best shared: a store may commit the writes
of threads that call at once together (``mqttkit.stores.SQLiteStore`` does).

Optional batch extension: ``begin()`` and ``commit()``. A store may also have these two
methods; the client looks them up with ``getattr(store, "begin", None)`` and, without them,
calls the store one write at a time, each durable when it returns. With them, the loop thread
calls ``begin()`` at the start of a loop turn and ``commit()`` before it writes any bytes to the
network and at the end of the turn, so that the writes of one turn (say 50 acknowledgements read
at once) cost one commit:

* ``begin()``: from now on, this thread's ``put``/``delete`` calls may return before they are
  durable (they are held). Calling it again before ``commit()`` is harmless: still one batch.
* ``commit()``: makes everything this thread holds durable (and may also commit what other
  threads have pending); returns once it is. Afterwards this thread's writes are durable when
  they return again. Without a ``begin()`` before, it is a no-op apart from that flush.
  It raises if a held write could not be stored.
* ``get``/``iterate`` on the holding thread see its held writes. A write from another thread
  while writes are held must still be durable when it returns; committing the held writes with
  it is allowed (earlier durability is never wrong).

``MemoryStore`` has both, as no-ops: nothing of it is durable, so nothing needs holding.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

__all__ = ["MemoryStore", "Store", "private_store"]


@runtime_checkable
class Store(Protocol):
    """What the session needs from a store. Implement these five methods for your own
    (thread-safe ``put``/``delete``; ``begin``/``commit`` optional, see the module docstring)."""

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

    def begin(self) -> None:
        """The optional batch extension (see the module docstring): nothing to hold."""

    def commit(self) -> None:
        """The optional batch extension: nothing to commit."""

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
