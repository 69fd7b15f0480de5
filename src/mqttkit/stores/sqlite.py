"""SQLiteStore: a durable :class:`~mqttkit.Store` in one SQLite file (stdlib ``sqlite3``, WAL).

This module owns the on-disk format of mqttkit's durable QoS 1/2 state and what each durability
setting promises. It knows nothing of MQTT: keys are ints, values are bytes, exactly as the
session hands them over (see :mod:`mqttkit.protocol.store` for what the two stores hold). It
never calls into the client; the client calls it, synchronously, on the hot path of every QoS
1/2 message (two or three calls per message), so each call is one prepared statement.

The file holds one table, ``mqttkit_store_v1 (name, key, value)``, keyed by ``(name, key)``
``WITHOUT ROWID``. ``name`` is a namespace: one file serves many stores (the incoming and the
outgoing store of one client, and the stores of other clients), from several threads and
processes at once. Each store object has its own connection and lock; processes are serialised
by SQLite's own locking, waiting up to ``timeout`` seconds for one another.

Durability (the quotes are from the SQLite documentation, https://sqlite.org/pragma.html
#pragma_synchronous; see also https://sqlite.org/wal.html). ``synchronous`` is a setting of each
connection, so each store object keeps its own promise, whatever others on the file chose.

* ``"full"`` (default): ``journal_mode=WAL``, ``synchronous=FULL`` (plus ``fullfsync``, which
  only macOS uses: its plain fsync does not flush the drive's cache). "With synchronous=FULL in
  WAL mode, an additional sync operation of the WAL file happens after each transaction
  commit": every ``put``/``delete`` is committed *and fsynced* before it returns, so before the
  bytes it records are handed to the network. Survives a process crash (SIGKILL), an OS crash
  and a power loss, as far as the storage honours fsync.
* ``"batched"``: ``journal_mode=WAL``, ``synchronous=NORMAL``. Every ``put``/``delete`` is still
  committed before it returns (its WAL frames are written to the OS), and "transactions are
  durable across application crashes regardless of the synchronous setting or journal mode":
  a SIGKILL or a crash of the process loses nothing. The fsync is what is batched: "a
  transaction committed in WAL mode with synchronous=NORMAL might roll back following a power
  loss or system crash". The store therefore runs a checkpoint ``sync_interval`` seconds after
  the first unsynced write (on a timer thread), in :meth:`SQLiteStore.sync` and in
  :meth:`SQLiteStore.close`; with synchronous=NORMAL "the WAL file is synchronized before each
  checkpoint". An OS crash or a power loss loses at most the writes of the last
  ``sync_interval`` seconds (longer only while another connection holds a read transaction open
  and the checkpoint cannot complete: it is retried every ``sync_interval``). What it loses is a
  whole suffix of writes, never part of one: "WAL mode is always consistent with
  synchronous=NORMAL".
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final, Literal, NamedTuple, TypeVar

__all__ = ["DURABILITY_MODES", "Durability", "SQLiteStore", "StorePair"]

log = logging.getLogger("mqttkit")

#: The durability settings :class:`SQLiteStore` accepts.
Durability = Literal["full", "batched"]
DURABILITY_MODES: Final[tuple[str, ...]] = ("full", "batched")

# One table for every namespace; the version is in the name, so a future format can sit beside
# this one and migrate it.
_TABLE: Final = "mqttkit_store_v1"
_CREATE: Final = (
    f"CREATE TABLE IF NOT EXISTS {_TABLE} ("
    "name TEXT NOT NULL, key INTEGER NOT NULL, value BLOB NOT NULL, "
    "PRIMARY KEY (name, key)) WITHOUT ROWID"
)
_PUT: Final = f"INSERT OR REPLACE INTO {_TABLE} (name, key, value) VALUES (?, ?, ?)"
_GET: Final = f"SELECT value FROM {_TABLE} WHERE name = ? AND key = ?"
_DELETE: Final = f"DELETE FROM {_TABLE} WHERE name = ? AND key = ?"
_ITERATE: Final = f"SELECT key, value FROM {_TABLE} WHERE name = ? ORDER BY key"
_COUNT: Final = f"SELECT count(*) FROM {_TABLE} WHERE name = ?"
# PASSIVE: never waits for other connections. With synchronous=NORMAL "the WAL file is
# synchronized before each checkpoint" (pragma.html), which is the fsync "batched" defers.
_CHECKPOINT: Final = "PRAGMA wal_checkpoint(PASSIVE)"
_WAL_SIZE_LIMIT: Final = 8 * 1024 * 1024


class SQLiteStore:
    """A durable store: one namespace (``name``) in an SQLite file in WAL mode.

    Use one store object per client and role (its ``incomingStore`` or its ``outgoingStore``);
    :meth:`pair` makes both for a client id. Any number of store objects, in any number of
    threads and processes, may share one file; each ``name`` must be used by one client at a
    time (as an MQTT client id is). Open stores in the process that uses them (after ``fork``,
    not before). The client does not close its stores: close them after the client.

    Example::

        incoming, outgoing = SQLiteStore.pair("mqtt.db", "sensor-1")
        client = mqttkit.connect(url, {"clientId": "sensor-1", "clean": False,
                                       "incomingStore": incoming, "outgoingStore": outgoing})

    Args:
        path: the database file; created if missing (its directory must exist). SQLite adds
            ``-wal`` and ``-shm`` files beside it.
        name: the namespace within the file, e.g. ``"<client_id>/out"``.
        durability: ``"full"`` (every write fsynced before it returns: survives a power loss)
            or ``"batched"`` (every write committed before it returns: survives a process
            crash; fsynced within ``sync_interval``: an OS crash or power loss may lose the
            last ``sync_interval`` seconds of writes). See the module docstring.
        sync_interval: with ``"batched"``, the longest time in seconds a committed write waits
            for its fsync.
        timeout: seconds to wait for another connection (thread or process) that holds the
            file's write lock before raising ``sqlite3.OperationalError`` ("database is
            locked").

    Raises:
        ValueError: an empty ``name``, an unknown ``durability``, a non-positive
            ``sync_interval`` or a negative ``timeout``; or a file that cannot use WAL mode
            (``":memory:"``, some network file systems).
        sqlite3.Error: the file cannot be opened or is not an SQLite database.
    """

    __slots__ = (
        "_batched",
        "_conn",
        "_durability",
        "_lock",
        "_name",
        "_path",
        "_sync_interval",
        "_timer",
        "_unsynced",
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str = "default",
        durability: Durability = "full",
        sync_interval: float = 0.05,
        timeout: float = 5.0,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, not {name!r}")
        if durability not in DURABILITY_MODES:
            raise ValueError(
                f"durability must be one of {', '.join(map(repr, DURABILITY_MODES))}, "
                f"not {durability!r}"
            )
        if isinstance(sync_interval, bool) or not sync_interval > 0:
            raise ValueError(f"sync_interval must be > 0 seconds, not {sync_interval!r}")
        if isinstance(timeout, bool) or not timeout >= 0:
            raise ValueError(f"timeout must be >= 0 seconds, not {timeout!r}")
        self._path = os.fspath(path)
        self._name = name
        self._durability: Durability = durability
        self._batched = durability == "batched"
        self._sync_interval = float(sync_interval)
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._unsynced = False
        self._conn: sqlite3.Connection | None = _open(self._path, durability, float(timeout))

    @classmethod
    def pair(
        cls,
        path: str | os.PathLike[str],
        client_id: str,
        *,
        durability: Durability = "full",
        sync_interval: float = 0.05,
        timeout: float = 5.0,
    ) -> StorePair:
        """Both stores of one client in ``path``: names ``"<client_id>/in"`` and ``"/out"``.

        Args:
            path: the database file (see the class).
            client_id: the client's fixed MQTT client id; the stores only make sense with the
                same id and ``clean=False`` on every run.
            durability: see the class.
            sync_interval: see the class.
            timeout: see the class.

        Returns:
            ``(incoming, outgoing)``, a :class:`StorePair` (also ``.incoming``,
            ``.outgoing``, ``.close()`` and a ``with`` block that closes both).

        Raises:
            ValueError: an empty client id (a random id changes every run, so nothing stored
                under it would ever be resumed), or a bad setting (see the class).
            sqlite3.Error: the file cannot be opened.
        """
        if not isinstance(client_id, str) or not client_id:
            raise ValueError(
                "a durable store needs the client's fixed client id, not "
                f"{client_id!r} (a random id is new on every run)"
            )
        incoming = cls(
            path,
            name=f"{client_id}/in",
            durability=durability,
            sync_interval=sync_interval,
            timeout=timeout,
        )
        try:
            outgoing = cls(
                path,
                name=f"{client_id}/out",
                durability=durability,
                sync_interval=sync_interval,
                timeout=timeout,
            )
        except BaseException:
            incoming.close()
            raise
        return StorePair(incoming, outgoing)

    # -- inspection ------------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    @property
    def name(self) -> str:
        """This store's namespace within the file."""
        return self._name

    @property
    def durability(self) -> Durability:
        """``"full"`` or ``"batched"``."""
        return self._durability

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._conn is None

    # -- the Store protocol ----------------------------------------------------------------------

    def put(self, key: int, value: bytes) -> None:
        """Insert or replace the value for ``key``; committed (and, with ``"full"``, fsynced)
        when this returns.

        Args:
            key: an int (the session uses 1 ... 2**63 - 1).
            value: bytes (bytearray and memoryview are stored as bytes).

        Raises:
            TypeError: ``key`` not an int or ``value`` not bytes-like.
            ValueError: the store is closed.
            sqlite3.Error: the write failed (disk full, locked beyond ``timeout``...).
        """
        if type(key) is not int:
            raise TypeError(f"store keys are ints, not {type(key).__name__}")
        checked: object = value  # typed bytes, but a misuse must not be stored as TEXT
        if type(checked) is not bytes and not isinstance(checked, bytearray | memoryview):
            raise TypeError(f"store values are bytes, not {type(value).__name__}")
        with self._lock:
            conn = self._conn
            if conn is None:
                raise self._closed_error()
            conn.execute(_PUT, (self._name, key, value))
            if self._batched:
                self._written()

    def get(self, key: int) -> bytes | None:
        """The value for ``key``, or None.

        Raises:
            ValueError: the store is closed.
            sqlite3.Error: the read failed.
        """
        with self._lock:
            conn = self._conn
            if conn is None:
                raise self._closed_error()
            row = conn.execute(_GET, (self._name, key)).fetchone()
        return None if row is None else row[0]

    def delete(self, key: int) -> None:
        """Remove ``key``; an absent key is not an error. Durable as :meth:`put` is.

        Raises:
            ValueError: the store is closed.
            sqlite3.Error: the write failed.
        """
        with self._lock:
            conn = self._conn
            if conn is None:
                raise self._closed_error()
            conn.execute(_DELETE, (self._name, key))
            if self._batched:
                self._written()

    def iterate(self) -> Iterator[tuple[int, bytes]]:
        """All ``(key, value)`` pairs in ascending key order, as of this call.

        The entries are read at once (one consistent snapshot), so the caller may put and
        delete while it iterates.

        Raises:
            ValueError: the store is closed.
            sqlite3.Error: the read failed.
        """
        with self._lock:
            conn = self._conn
            if conn is None:
                raise self._closed_error()
            rows: list[tuple[int, bytes]] = conn.execute(_ITERATE, (self._name,)).fetchall()
        return iter(rows)

    def close(self) -> None:
        """Make every write durable (``"batched"``) and close the connection. Idempotent.

        Raises:
            sqlite3.Error: the final sync failed (the connection is closed anyway).
        """
        with self._lock:
            conn, self._conn = self._conn, None
            timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()
            if conn is None:
                return
            try:
                if self._unsynced:
                    self._unsynced = False
                    conn.execute(_CHECKPOINT).fetchone()
            finally:
                conn.close()

    # -- beyond the protocol ---------------------------------------------------------------------

    def sync(self) -> None:
        """Make every write so far durable against a power loss now (``"full"``: a no-op).

        Raises:
            ValueError: the store is closed.
            sqlite3.Error: the checkpoint failed.
        """
        with self._lock:
            conn = self._conn
            if conn is None:
                raise self._closed_error()
            if self._unsynced and not self._checkpoint(conn):
                self._arm_timer()

    def __len__(self) -> int:
        with self._lock:
            conn = self._conn
            if conn is None:
                raise self._closed_error()
            (count,) = conn.execute(_COUNT, (self._name,)).fetchone()
        return int(count)

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return (
            f"<SQLiteStore {self._name!r} path={self._path!r} "
            f"durability={self._durability!r} {state}>"
        )

    # -- internals -------------------------------------------------------------------------------

    def _closed_error(self) -> ValueError:
        return ValueError(f"{self!r} is closed; open a new SQLiteStore on {self._path!r}")

    def _written(self) -> None:
        # "batched", lock held: the write is committed, its fsync is owed within sync_interval.
        self._unsynced = True
        if self._timer is None:
            self._arm_timer()

    def _arm_timer(self) -> None:
        timer = threading.Timer(self._sync_interval, self._timer_fired)
        timer.daemon = True  # a forgotten store must not keep the interpreter alive
        self._timer = timer
        timer.start()

    def _timer_fired(self) -> None:
        with self._lock:
            if self._timer is not threading.current_thread():
                return  # cancelled (closed) or superseded while waiting for the lock
            self._timer = None
            conn = self._conn
            if conn is None or not self._unsynced:
                return
            try:
                done = self._checkpoint(conn)
            except sqlite3.Error:
                log.warning("SQLiteStore %r: sync failed; retrying", self._name, exc_info=True)
                done = False
            if not done:
                self._arm_timer()

    def _checkpoint(self, conn: sqlite3.Connection) -> bool:
        # Lock held. True when every WAL frame was checkpointed, which means the WAL was fsynced
        # first. Not done: another connection's read transaction pinned older frames; retry.
        busy, frames, done = conn.execute(_CHECKPOINT).fetchone()
        if busy or done < frames:
            return False
        self._unsynced = False
        return True


class StorePair(NamedTuple):
    """The two stores of one client, from :meth:`SQLiteStore.pair`; unpacks as
    ``incoming, outgoing``."""

    incoming: SQLiteStore
    """Incoming QoS 2 state (the seed's ``incomingStore``)."""
    outgoing: SQLiteStore
    """Outgoing QoS 1/2 messages (the seed's ``outgoingStore``)."""

    def close(self) -> None:
        """Close both stores (idempotent)."""
        try:
            self.incoming.close()
        finally:
            self.outgoing.close()

    def __enter__(self) -> StorePair:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _open(path: str, durability: Durability, timeout: float) -> sqlite3.Connection:
    """Open ``path`` in WAL mode with the durability's pragmas and make sure the table exists."""
    if path == ":memory:" or path.startswith("file::memory:"):
        raise ValueError("SQLiteStore needs a file; use mqttkit.MemoryStore for memory")
    # isolation_level=None: no implicit BEGIN, so every statement is its own transaction,
    # committed when execute() returns. check_same_thread=False: the store's lock serialises.
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        mode = _retry_busy(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone()[0], timeout)
        if str(mode).lower() != "wal":
            raise ValueError(
                f"{path!r} cannot use SQLite's WAL mode (journal_mode is {mode!r}); "
                "put the store on a local file system"
            )
        if durability == "full":
            conn.execute("PRAGMA synchronous=FULL")
            # macOS: plain fsync does not flush the drive's cache; F_FULLFSYNC does. A no-op
            # elsewhere.
            conn.execute("PRAGMA fullfsync=ON")
        else:
            conn.execute("PRAGMA synchronous=NORMAL")
        # After a checkpoint resets the WAL, truncate it to this size: one large message must
        # not leave a large -wal file behind for good.
        conn.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
        _retry_busy(lambda: conn.execute(_CREATE), timeout)
    except BaseException:
        conn.close()
        raise
    return conn


_T = TypeVar("_T")


def _retry_busy(fn: Callable[[], _T], timeout: float) -> _T:
    """Run ``fn`` again while the file is busy, for up to ``timeout`` seconds.

    Two processes opening a new file at once both switch it to WAL; SQLite answers the loser
    SQLITE_BUSY at once, without its busy handler (waiting could deadlock), so wait here.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    for _ in range(100_000):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", None) in (
                sqlite3.SQLITE_BUSY,
                sqlite3.SQLITE_LOCKED,
            )
            if not busy or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    raise AssertionError("unreachable")  # pragma: no cover
