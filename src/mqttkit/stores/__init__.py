"""Durable stores for the QoS 1/2 state, for a client's ``incoming_store`` / ``outgoing_store``.

This package owns the adapters that keep :class:`mqttkit.Store` data on disk so that a process
restarted with the same client id and ``clean=False`` finishes what a killed one started. Only the
application imports it; no other layer of mqttkit depends on it. The protocol and the in-memory
default live in :mod:`mqttkit.protocol.store`.

* :class:`SQLiteStore`: one SQLite file (stdlib ``sqlite3``, WAL mode) shared by any number of
  stores, clients, threads and processes; ``durability="full"`` or ``"batched"``.
"""

from .sqlite import DURABILITY_MODES, Durability, SQLiteStore, StorePair

__all__ = ["DURABILITY_MODES", "Durability", "SQLiteStore", "StorePair"]
