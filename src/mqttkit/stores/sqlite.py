"""SQLiteStore: a durable :class:`~mqttkit.Store` in one SQLite file (stdlib ``sqlite3``, WAL).

This module owns the on-disk format of mqttkit's durable QoS 1/2 state and what each durability
setting promises. It knows nothing of MQTT: keys are ints, values are bytes, exactly as the
session hands them over (see :mod:`mqttkit.protocol.store` for what the two stores hold). It
never calls into the client; the client calls it, synchronously, on the hot path of every QoS
1/2 message (two or three calls per message), so a lone write is one prepared statement.

The file holds one table, ``mqttkit_store_v1 (name, key, value)``, keyed by ``(name, key)``
``WITHOUT ROWID``. ``name`` is a namespace: one file serves many stores (the incoming and the
outgoing store of one client, and the stores of other clients), from several threads and
processes at once. Each store object has its own connection and lock; processes are serialised
by SQLite's own locking, waiting up to ``timeout`` seconds for one another.

Group commit (theory of operation). ``put``/``delete`` may be called from any number of threads
at once (the blocking client's publishing threads and its loop thread). A write is first added,
under the lock, to the *pending* writes (a dict: for one key, the last write in call order
wins). A caller then waits until a commit carrying its write has finished: the first waiter that
finds no commit running becomes the *leader*, takes every pending write, releases the lock,
commits them in one transaction (one fsync in ``"full"``), takes the lock back, marks them done
and wakes the others. Writes that arrive meanwhile pile up for the next commit, so N threads
writing at once share fsyncs instead of paying N. A lone write (nothing pending, no commit
running) is one autocommit statement, as without grouping. A failed commit (rolled back) raises
in every caller whose write it carried; their writes are not stored, later writes are, and the
store stays usable. Only if the rollback itself fails does the store refuse every further call
(``sqlite3.OperationalError``: close it and open a new one). Reads (``get``, ``iterate``,
``len``) wait for a running commit and overlay the pending writes on the file, so they see every
write whose call has returned. Pending writes live only in this process's memory: other
connections and processes see a write once its commit is done.

Holding writes: :meth:`SQLiteStore.begin` / :meth:`SQLiteStore.commit` (the optional extension
of the Store protocol). After ``begin()`` on a thread, that thread's writes are held: added to
the pending writes without waiting. ``commit()`` (same thread) commits them, and anything else
pending, and returns once they are durable as the mode promises. A commit led by another thread
meanwhile carries them earlier. The client's loop thread holds the writes of one loop turn and
commits before it sends any bytes, so a read with 50 acknowledgements costs one commit.

Durability (the quotes are from the SQLite documentation, https://sqlite.org/pragma.html
#pragma_synchronous; see also https://sqlite.org/wal.html). ``synchronous`` is a setting of each
connection, so each store object keeps its own promise, whatever others on the file chose.
"Returned" below means the ``put``/``delete`` call, or for a held write the ``commit()`` that
follows it; a held write not yet committed is in memory only and any crash loses it.

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
  whole suffix of commits, never part of one: "WAL mode is always consistent with
  synchronous=NORMAL".
"""

from __future__ import annotations

import copy
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
# IMMEDIATE: take the file's write lock at BEGIN (waiting up to ``timeout`` in SQLite's busy
# handler), so a group's transaction never has to upgrade a read lock half-way.
_BEGIN: Final = "BEGIN IMMEDIATE"
# PASSIVE: never waits for other connections. With synchronous=NORMAL "the WAL file is
# synchronized before each checkpoint" (pragma.html), which is the fsync "batched" defers.
_CHECKPOINT: Final = "PRAGMA wal_checkpoint(PASSIVE)"
_WAL_SIZE_LIMIT: Final = 8 * 1024 * 1024

# A pending write: the value to put, or None to delete.
_Writes = dict[int, bytes | None]


class _Hold:
    """The held writes of one thread between ``begin()`` and ``commit()``."""

    __slots__ = ("batch", "error")

    def __init__(self) -> None:
        self.batch: _Batch | None = None
        """The last batch this thread added a held write to."""
        self.error: BaseException | None = None
        """The first failed commit that carried one of its held writes."""


class _Batch:
    """Writes that one commit will carry; ``done`` once that commit has run (``error`` if it
    failed)."""

    __slots__ = ("done", "error", "holds", "writes")

    def __init__(self) -> None:
        self.writes: _Writes = {}
        self.done = False
        self.error: BaseException | None = None
        self.holds: list[_Hold] | None = None
        """The holds whose writes are in ``writes`` (told if the commit fails)."""


class SQLiteStore:
    """A durable store: one namespace (``name``) in an SQLite file in WAL mode.

    Use one store object per client and role (its ``incomingStore`` or its ``outgoingStore``);
    :meth:`pair` makes both for a client id. Any number of store objects, in any number of
    threads and processes, may share one file; each ``name`` must be used by one client at a
    time (as an MQTT client id is). Open stores in the process that uses them (after ``fork``,
    not before). The client does not close its stores: close them after the client.

    Every method may be called from any thread. Writes from threads that call at once share
    commits (group commit, see the module docstring); :meth:`begin` / :meth:`commit` let one
    thread batch its own writes.

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
        "_broken",
        "_closing",
        "_committing",
        "_conn",
        "_durability",
        "_holds",
        "_latch",
        "_lock",
        "_name",
        "_path",
        "_pending",
        "_sync_due",
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
        # One lock guards every field below and every use of the connection. The connection is
        # used either with the lock held, or by the one leader while ``_committing`` is set
        # (with the lock released, so that other writers can queue up behind the commit).
        self._lock = threading.Lock()
        self._committing = False
        # Held while a commit runs, once a thread waits for it; released when it ends (_sleep).
        self._latch: threading.Lock | None = None
        self._pending = _Batch()  # the writes the next commit will carry
        self._holds: dict[int, _Hold] = {}  # thread ident -> its held writes (begin())
        self._closing = False  # close() has begun: refuse new calls
        self._broken: BaseException | None = None  # a rollback failed: refuse every call
        self._timer: threading.Timer | None = None
        self._unsynced = False
        self._sync_due = False  # the timer fired during a commit: its leader syncs after it
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
        when this returns, unless this thread holds its writes (:meth:`begin`).

        Safe from any thread; concurrent calls share one commit.

        Args:
            key: an int (the session uses 1 ... 2**63 - 1).
            value: bytes (bytearray and memoryview are copied and stored as bytes).

        Raises:
            TypeError: ``key`` not an int or ``value`` not bytes-like.
            OverflowError: ``key`` does not fit in 64 bits (signed).
            ValueError: the store is closed.
            sqlite3.Error: the commit carrying this write failed (disk full, locked beyond
                ``timeout``...); the write is not stored.
        """
        _check_key(key)  # before it joins a batch: one caller's misuse must fail only it
        checked: object = value  # typed bytes, but a misuse must not be stored as TEXT
        if type(checked) is not bytes:
            if not isinstance(checked, bytearray | memoryview):
                raise TypeError(f"store values are bytes, not {type(value).__name__}")
            value = bytes(checked)  # a held or pending write must not change with the buffer
        self._write(key, value)

    def get(self, key: int) -> bytes | None:
        """The value for ``key``, or None; a pending or held write counts.

        Raises:
            ValueError: the store is closed.
            sqlite3.Error: the read failed.
        """
        with self._lock:
            conn = self._conn
            if conn is None or self._committing or self._closing or self._broken is not None:
                conn = self._connection()  # waits for the commit, or raises
            writes = self._pending.writes
            if writes and key in writes:
                return writes[key]
            row = conn.execute(_GET, (self._name, key)).fetchone()
        return None if row is None else row[0]

    def delete(self, key: int) -> None:
        """Remove ``key``; an absent key is not an error. Durable as :meth:`put` is.

        Raises:
            TypeError: ``key`` not an int.
            OverflowError: ``key`` does not fit in 64 bits (signed).
            ValueError: the store is closed.
            sqlite3.Error: the commit carrying this write failed; the key is not removed.
        """
        _check_key(key)
        self._write(key, None)

    def iterate(self) -> Iterator[tuple[int, bytes]]:
        """All ``(key, value)`` pairs in ascending key order, as of this call (pending and
        held writes included).

        The entries are read at once (one consistent snapshot), so the caller may put and
        delete while it iterates.

        Raises:
            ValueError: the store is closed.
            sqlite3.Error: the read failed.
        """
        with self._lock:
            conn = self._connection()
            rows: list[tuple[int, bytes]] = conn.execute(_ITERATE, (self._name,)).fetchall()
            writes = self._pending.writes
            if writes:
                merged = dict(rows)
                for key, value in writes.items():
                    if value is None:
                        merged.pop(key, None)
                    else:
                        merged[key] = value
                rows = sorted(merged.items())
        return iter(rows)

    def close(self) -> None:
        """Commit every held or pending write, make every write durable (``"batched"``) and
        close the connection. Idempotent; calls from other threads fail from now on.

        Raises:
            sqlite3.Error: the final commit or sync failed, or an earlier commit failed that
                carried writes held since a ``begin()`` not yet committed (the connection is
                closed anyway; what a failed commit carried is not stored).
        """
        with self._lock:
            conn = self._conn
            if conn is None or self._closing:
                return
            self._closing = True  # from now on every other call is refused
            error: BaseException | None = None
            if self._broken is None:
                error = self._flush()
            if error is None:  # a held write lost earlier, whose commit() will never come
                lost = (hold.error for hold in self._holds.values() if hold.error is not None)
                error = next(lost, None)
            while self._committing:  # the connection must be free before it is closed
                self._sleep()
            self._conn = None
            timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()
            self._holds.clear()
            try:
                if self._unsynced and self._broken is None:
                    self._unsynced = False
                    conn.execute(_CHECKPOINT).fetchone()
            finally:
                conn.close()
        if error is not None:
            raise _carried(error) from error

    # -- the optional batch extension of the Store protocol ---------------------------------------

    def begin(self) -> None:
        """Hold this thread's writes until :meth:`commit`: its ``put``/``delete`` calls return
        at once, before they are committed.

        Held writes are visible to ``get``/``iterate``/``len`` at once; a commit that another
        thread leads meanwhile may carry them (earlier durability). Until :meth:`commit`
        returns they are in memory only: a crash loses them. ``begin()`` twice is one batch.

        Raises:
            ValueError: the store is closed.
        """
        with self._lock:
            if self._closing or self._broken is not None:
                raise self._refusal()
            ident = threading.get_ident()
            if ident not in self._holds:
                self._holds[ident] = _Hold()

    def commit(self) -> None:
        """Commit this thread's held writes, and any write pending from other threads; returns
        once they are durable as the mode promises. Later writes of this thread commit as they
        are made again. Without a :meth:`begin` before, it only flushes what is pending.

        Raises:
            ValueError: the store is closed.
            sqlite3.Error: a commit that carried one of this thread's held writes failed, now
                or earlier (e.g. led by another thread's ``put``); those writes are not stored,
                the later ones are.
        """
        with self._lock:
            if self._closing or self._broken is not None:
                raise self._refusal()
            hold = self._holds.pop(threading.get_ident(), None)
            self._flush()
            error = None if hold is None else hold.error
        if error is not None:
            raise _carried(error) from error

    # -- beyond the protocol ---------------------------------------------------------------------

    def sync(self) -> None:
        """Commit what is held or pending, and make every write so far durable against a power
        loss now (``"full"``: commits are already fsynced).

        Raises:
            ValueError: the store is closed.
            sqlite3.Error: the commit or the checkpoint failed.
        """
        with self._lock:
            if self._closing or self._broken is not None:
                raise self._refusal()
            error = self._flush()
            if error is None:
                conn = self._connection()
                if self._unsynced and not self._checkpoint(conn):
                    self._arm_timer()
        if error is not None:
            raise _carried(error) from error

    def __len__(self) -> int:
        with self._lock:
            conn = self._connection()
            (count,) = conn.execute(_COUNT, (self._name,)).fetchone()
            for key, value in self._pending.writes.items():
                stored = conn.execute(_GET, (self._name, key)).fetchone() is not None
                count += (value is not None) - stored
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

    # -- internals: group commit -----------------------------------------------------------------

    def _write(self, key: int, value: bytes | None) -> None:
        """``put`` (``value``) or ``delete`` (None): committed, or held, when this returns."""
        with self._lock:
            if self._closing or self._broken is not None:
                raise self._refusal()
            if self._holds:
                hold = self._holds.get(threading.get_ident())
                if hold is not None:
                    batch = self._pending
                    batch.writes[key] = value
                    if hold.batch is not batch:
                        hold.batch = batch
                        if batch.holds is None:
                            batch.holds = []
                        batch.holds.append(hold)
                    return
            conn = self._conn
            if conn is not None and not self._committing and not self._pending.writes:
                # Alone: nothing to share a commit with. One autocommit statement, as
                # _apply makes for one write, with the lock released meanwhile so that
                # writers arriving now queue behind it.
                self._committing = True
                self._lock.release()
                try:
                    if value is None:
                        conn.execute(_DELETE, (self._name, key))
                    else:
                        conn.execute(_PUT, (self._name, key, value))
                except BaseException:
                    broken = self._undo(conn)
                    self._lock.acquire()
                    self._committed(False, broken)
                    raise  # this call's own failure, as SQLite raised it
                self._lock.acquire()
                self._committed(True, None)
                return
            batch = self._pending
            batch.writes[key] = value
            while not batch.done:
                if self._committing:
                    self._sleep()
                else:
                    self._lead()
            error = batch.error
        if error is not None:
            raise _carried(error) from error

    def _flush(self) -> BaseException | None:
        """Lock held: commit everything pending now and wait for it; the error if that
        commit failed."""
        batch = self._pending
        if not batch.writes and not self._committing:
            return None
        while not batch.done:  # an empty batch marks when the running commit is over
            if self._committing:
                self._sleep()
            else:
                self._lead()
        return batch.error

    def _lead(self) -> None:
        """Lock held, no commit running: commit every pending write as one transaction."""
        batch = self._pending
        self._pending = _Batch()
        error = self._commit(batch.writes) if batch.writes else None
        batch.done = True
        if error is not None:
            batch.error = error
            for hold in batch.holds or ():
                if hold.error is None:
                    hold.error = error
            if not isinstance(error, Exception):
                raise error  # KeyboardInterrupt and the like belong to this thread
        # The waiters were woken when the commit ended (_committed); they need the lock, held
        # until now, to see ``done``.

    def _commit(self, writes: _Writes) -> BaseException | None:
        """Lock held on entry and exit, no commit running: commit ``writes`` with the lock
        released; the exception if that failed (then nothing of ``writes`` is stored)."""
        conn = self._conn
        if conn is None or self._broken is not None:
            return self._refusal()  # broken by an earlier commit; close() refuses writers first
        self._committing = True
        self._lock.release()
        error: BaseException | None = None
        broken: BaseException | None = None
        try:
            self._apply(conn, writes)
        except BaseException as exc:
            error = exc
            broken = self._undo(conn)
        self._lock.acquire()
        self._committed(error is None, broken)
        return error

    def _undo(self, conn: sqlite3.Connection) -> BaseException | None:
        """Lock not held, still ``_committing``: roll back after a failed commit; the
        exception if even that failed (the store is then unusable)."""
        try:
            self._rollback(conn)
        except BaseException as exc:
            return exc
        return None

    def _committed(self, ok: bool, broken: BaseException | None) -> None:
        """Lock held again after a commit (``ok``) or a failed one: free the connection, owe
        the "batched" sync, run one that fell due meanwhile, wake the waiters."""
        self._committing = False
        if broken is not None:
            log.error("SQLiteStore %r: rollback failed; store unusable", self._name)
            self._broken = broken
        elif ok and self._batched:
            self._unsynced = True
            if self._timer is None and not self._sync_due:
                self._arm_timer()
        if self._sync_due:
            self._sync_due = False
            self._sync_now()
        latch = self._latch
        if latch is not None:
            self._latch = None
            latch.release()

    def _apply(self, conn: sqlite3.Connection, writes: _Writes) -> None:
        """Commit ``writes`` in one transaction. The connection is this thread's alone here."""
        name = self._name
        if len(writes) == 1:  # one statement is its own transaction
            ((key, value),) = writes.items()
            if value is None:
                conn.execute(_DELETE, (name, key))
            else:
                conn.execute(_PUT, (name, key, value))
            return
        # The keys are distinct, so the order of statements inside the transaction is moot.
        puts = [(name, key, value) for key, value in writes.items() if value is not None]
        deletes = [(name, key) for key, value in writes.items() if value is None]
        conn.execute(_BEGIN)
        if puts:
            conn.executemany(_PUT, puts)
        if deletes:
            conn.executemany(_DELETE, deletes)
        conn.execute("COMMIT")

    def _rollback(self, conn: sqlite3.Connection) -> None:
        """After a failed :meth:`_apply`: undo what it began (SQLite may have already)."""
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def _sleep(self) -> None:
        """Lock held, a commit running: wait for it to end (the lock is released meanwhile).

        The first waiter makes the latch, a plain lock held for the leader; every waiter blocks
        acquiring it until the leader releases it (in :meth:`_committed`), then passes it on.
        A lock, not a Condition: with commits as short as "batched" makes them, a Condition's
        wait and notify_all (Python code, every waiter woken at once) cost more than sharing
        the commits saves.
        """
        latch = self._latch
        if latch is None:
            latch = self._latch = threading.Lock()
            latch.acquire()
        self._lock.release()
        try:
            latch.acquire()
            latch.release()  # wake the next waiter
        finally:
            self._lock.acquire()

    def _connection(self) -> sqlite3.Connection:
        """Lock held: the connection, once no commit is using it."""
        while self._committing:
            self._sleep()
        conn = self._conn
        if conn is None or self._closing or self._broken is not None:
            raise self._refusal()
        return conn

    def _refusal(self) -> Exception:
        if self._broken is not None and not self._closing:
            return sqlite3.OperationalError(
                f"{self!r} is unusable: a failed commit could not be rolled back "
                f"({self._broken!r}); close it and open a new SQLiteStore on {self._path!r}"
            )
        return ValueError(f"{self!r} is closed; open a new SQLiteStore on {self._path!r}")

    # -- internals: "batched" sync ---------------------------------------------------------------

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
            if self._committing:
                # Never wait for the connection here: a timer thread sleeping on the condition
                # would be woken by, and contend with, every commit of a busy writer.
                self._sync_due = True
                return
            self._sync_now()

    def _sync_now(self) -> None:
        """Lock held, no commit running: the checkpoint the timer owes; retried if not done."""
        conn = self._conn
        if conn is None or self._broken is not None or not self._unsynced:
            return
        try:
            done = self._checkpoint(conn)
        except sqlite3.Error:
            log.warning("SQLiteStore %r: sync failed; retrying", self._name, exc_info=True)
            done = False
        if not done:
            self._arm_timer()

    def _checkpoint(self, conn: sqlite3.Connection) -> bool:
        # Lock held, no commit running. True when every WAL frame was checkpointed, which means
        # the WAL was fsynced first. Not done: another connection's read transaction pinned
        # older frames; retry.
        busy, frames, done = conn.execute(_CHECKPOINT).fetchone()
        if busy or done < frames:
            return False
        self._unsynced = False
        return True


def _check_key(key: int) -> None:
    if type(key) is not int:
        raise TypeError(f"store keys are ints, not {type(key).__name__}")
    if not -0x8000_0000_0000_0000 <= key <= 0x7FFF_FFFF_FFFF_FFFF:
        raise OverflowError(f"store keys are 64-bit signed ints, not {key}")


def _carried(error: BaseException) -> Exception:
    """The exception to raise in one caller whose write a failed commit carried.

    Every such caller gets its own copy (one exception object must not be raised in several
    threads: its traceback would mix theirs); ``raise ... from error`` keeps the original, with
    the traceback of the commit that failed, as the cause.
    """
    if isinstance(error, Exception):
        try:
            return copy.copy(error)  # keeps the type and sqlite_errorcode / sqlite_errorname
        except Exception:  # pragma: no cover - an exception type that cannot be copied
            pass
    return sqlite3.OperationalError(
        f"the commit carrying this write failed ({error!r}); the write may not be stored"
    )


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
