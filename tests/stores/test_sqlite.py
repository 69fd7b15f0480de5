"""SQLiteStore: the Store contract (beside MemoryStore), persistence, namespaces, group commit
and begin()/commit() batches, threads and processes sharing a file, a SIGKILL right after put(),
a ClientSession resuming over the file after a crash, and a client restarted over the file
finishing its sends through Mosquitto.

Commits are observed, not assumed: ``Trace`` reads every statement the store's connection runs
(sqlite3's trace callback) and can stop one statement, before it takes the file's write lock,
until the test lets it go.

A "crash" of a session is the object dropped without any goodbye and a new one built over new
SQLiteStore objects (new connections) on the same file, as a restarted process would. A process
crash is a real SIGKILL of a child process.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import mqttkit
from mqttkit.protocol.packets import ConnAck, PubAck, PubComp, Publish, PubRec, PubRel
from mqttkit.protocol.store import MemoryStore
from mqttkit.stores import SQLiteStore, StorePair
from mqttkit.testing import MosquittoBroker
from tests.protocol.session_helpers import Conversation, names
from tests.support.proxy import FaultProxy
from tests.support.recorder import Recorder

MODES = ["full", "batched"]
LEVELS = pytest.mark.parametrize("level", [4, 5])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    idle = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        idle.wait(0.005)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "mqtt.db"


@pytest.fixture
def open_store(db: Path) -> Iterator[Callable[..., SQLiteStore]]:
    """Open SQLiteStores on ``db`` (keyword arguments as SQLiteStore's); closed at teardown."""
    stores: list[SQLiteStore] = []

    def factory(**kwargs: Any) -> SQLiteStore:
        store = SQLiteStore(kwargs.pop("path", db), **kwargs)
        stores.append(store)
        return store

    yield factory
    for store in stores:
        store.close()


@pytest.fixture
def open_pair(db: Path) -> Iterator[Callable[..., StorePair]]:
    """Open ``SQLiteStore.pair(db, client_id, ...)``; every pair is closed at teardown."""
    pairs: list[StorePair] = []

    def factory(client_id: str = "client-1", **kwargs: Any) -> StorePair:
        pair = SQLiteStore.pair(db, client_id, **kwargs)
        pairs.append(pair)
        return pair

    yield factory
    for pair in pairs:
        pair.close()


# -- the Store contract, for MemoryStore and SQLiteStore alike -----------------------------------

KINDS = ["memory", "sqlite-full", "sqlite-batched"]


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, open_store: Callable[..., SQLiteStore]) -> Any:
    if request.param == "memory":
        return MemoryStore()
    return open_store(name="contract", durability=request.param.removeprefix("sqlite-"))


def test_is_a_store(store: Any) -> None:
    assert isinstance(store, mqttkit.Store)


def test_empty(store: Any) -> None:
    assert store.get(1) is None
    assert list(store.iterate()) == []
    store.delete(1)  # absent: not an error
    assert len(store) == 0


def test_put_get_replace_delete(store: Any) -> None:
    store.put(1, b"one")
    store.put(2, b"")  # the incoming store's values are empty
    assert (store.get(1), store.get(2), store.get(3)) == (b"one", b"", None)
    store.put(1, b"\x00\xffone again")  # the last value put wins
    assert store.get(1) == b"\x00\xffone again"
    store.delete(1)
    assert store.get(1) is None
    assert list(store.iterate()) == [(2, b"")]
    assert len(store) == 1


def test_iterate_is_in_ascending_key_order(store: Any) -> None:
    keys = [7, 2**40, 1, 65535, 3, 2**63 - 1]
    for key in keys:
        store.put(key, str(key).encode())
    assert list(store.iterate()) == [(k, str(k).encode()) for k in sorted(keys)]
    assert all(type(v) is bytes for _, v in store.iterate())


def test_iterate_is_safe_while_the_caller_puts_and_deletes(store: Any) -> None:
    for key in range(1, 11):
        store.put(key, b"v%d" % key)
    seen = []
    for key, value in store.iterate():  # what the session's _restart does
        seen.append(key)
        store.delete(key)
        store.put(key + 100, value)
    assert seen == list(range(1, 11))  # a snapshot: the new keys do not show up
    assert [k for k, _ in store.iterate()] == list(range(101, 111))


def test_begin_and_commit_are_a_harmless_batch(store: Any) -> None:
    store.commit()  # without begin(): nothing to do
    store.begin()
    store.begin()  # twice: still one batch
    store.put(1, b"one")
    store.put(2, b"two")
    store.delete(2)
    assert (store.get(1), store.get(2)) == (b"one", None)  # the holding thread sees its writes
    assert list(store.iterate()) == [(1, b"one")]
    assert len(store) == 1
    store.commit()
    store.put(3, b"three")  # after commit(): one by one again
    assert list(store.iterate()) == [(1, b"one"), (3, b"three")]


def test_close_is_idempotent(store: Any) -> None:
    store.close()
    store.close()


# -- SQLiteStore beyond the contract ------------------------------------------------------------


@pytest.mark.parametrize(
    "op", ["put", "get", "delete", "iterate", "len", "sync", "begin", "commit"]
)
def test_use_after_close_is_a_clear_error(open_store: Callable[..., SQLiteStore], op: str) -> None:
    store = open_store(name="x")
    store.close()
    assert store.closed
    calls: dict[str, Callable[[], object]] = {
        "put": lambda: store.put(1, b"v"),
        "get": lambda: store.get(1),
        "delete": lambda: store.delete(1),
        "iterate": store.iterate,
        "len": lambda: len(store),
        "sync": store.sync,
        "begin": store.begin,
        "commit": store.commit,
    }
    with pytest.raises(ValueError, match=r"'x' .* is closed"):
        calls[op]()


def test_bytes_like_values_come_back_as_bytes(open_store: Callable[..., SQLiteStore]) -> None:
    store = open_store()
    store.put(1, bytearray(b"ba"))  # type: ignore[arg-type]
    store.put(2, memoryview(b"mv"))  # type: ignore[arg-type]
    assert list(store.iterate()) == [(1, b"ba"), (2, b"mv")]


@pytest.mark.parametrize(
    ("key", "value"), [("1", b"v"), (1.0, b"v"), (1, "text"), (1, None), (1, 5)]
)
def test_wrong_types_are_refused(
    open_store: Callable[..., SQLiteStore], key: object, value: object
) -> None:
    store = open_store()
    with pytest.raises(TypeError, match=r"store (keys|values)"):
        store.put(key, value)  # type: ignore[arg-type]
    assert list(store.iterate()) == []


def test_bad_keys_are_refused_before_they_join_a_batch(
    open_store: Callable[..., SQLiteStore],
) -> None:
    store = open_store()
    store.begin()
    with pytest.raises(TypeError, match="store keys"):
        store.delete("1")  # type: ignore[arg-type]
    for key in (2**63, -(2**63) - 1):
        with pytest.raises(OverflowError, match="64-bit"):
            store.put(key, b"v")
        with pytest.raises(OverflowError, match="64-bit"):
            store.delete(key)
    store.put(2**63 - 1, b"max")
    store.put(-(2**63), b"min")
    store.commit()  # the batch was not poisoned by the refused calls
    assert list(store.iterate()) == [(-(2**63), b"min"), (2**63 - 1, b"max")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "name must be"),
        ({"durability": "fast"}, "durability must be one of 'full', 'batched'"),
        ({"sync_interval": 0}, "sync_interval"),
        ({"timeout": -1}, "timeout"),
        ({"path": ":memory:"}, "MemoryStore"),
    ],
)
def test_bad_settings_are_refused(db: Path, kwargs: dict[str, Any], message: str) -> None:
    path = kwargs.pop("path", db)
    with pytest.raises(ValueError, match=message):
        SQLiteStore(path, **kwargs)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "not.db"
    path.write_bytes(b"this is not an SQLite database, not even close" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        SQLiteStore(path)


@pytest.mark.parametrize(("mode", "synchronous"), [("full", 2), ("batched", 1)])
def test_durability_sets_wal_and_synchronous(
    open_store: Callable[..., SQLiteStore], mode: str, synchronous: int
) -> None:
    store = open_store(durability=mode)
    conn = store._conn
    assert conn is not None
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA synchronous").fetchone() == (synchronous,)
    assert store.durability == mode
    assert repr(store) == (f"<SQLiteStore 'default' path={store.path!r} durability={mode!r} open>")


@pytest.mark.parametrize("mode", MODES)
def test_persists_across_close_and_reopen(
    open_store: Callable[..., SQLiteStore], mode: str
) -> None:
    store = open_store(name="c/out", durability=mode)
    for key in range(1, 6):
        store.put(key, b"m%d" % key)
    store.delete(3)
    store.close()
    again = open_store(name="c/out", durability=mode)
    assert list(again.iterate()) == [(1, b"m1"), (2, b"m2"), (4, b"m4"), (5, b"m5")]


@pytest.mark.parametrize("mode", MODES)
def test_a_write_is_committed_when_it_returns(
    open_store: Callable[..., SQLiteStore], mode: str
) -> None:
    writer = open_store(name="n", durability=mode)
    reader = open_store(name="n")  # another connection: sees only what is committed
    writer.put(1, b"a")
    assert reader.get(1) == b"a"
    writer.put(1, b"b")
    assert reader.get(1) == b"b"
    writer.delete(1)
    assert reader.get(1) is None


def test_names_in_one_file_are_isolated(open_store: Callable[..., SQLiteStore]) -> None:
    a = open_store(name="a/out")
    b = open_store(name="b/out")
    a_in = open_store(name="a/in")
    a.put(1, b"a1")
    b.put(1, b"b1")
    a_in.put(1, b"")
    b.put(2, b"b2")
    a.delete(1)
    assert (a.get(1), b.get(1), a_in.get(1)) == (None, b"b1", b"")
    assert list(b.iterate()) == [(1, b"b1"), (2, b"b2")]
    assert (len(a), len(b), len(a_in)) == (0, 2, 1)


def test_batched_syncs_within_sync_interval(open_store: Callable[..., SQLiteStore]) -> None:
    store = open_store(durability="batched", sync_interval=0.01)
    store.put(1, b"v")
    assert store._unsynced
    wait_until(lambda: not store._unsynced, 5, "the timer's sync")
    # Everything is in the database file itself now: the WAL was fsynced and checkpointed.
    assert store._conn is not None
    busy, frames, done = store._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert (busy, frames) == (0, done)


def test_batched_sync_retries_while_a_reader_pins_the_wal(
    open_store: Callable[..., SQLiteStore], db: Path
) -> None:
    store = open_store(durability="batched", sync_interval=0.01)
    store.put(1, b"before")
    store.sync()
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM mqttkit_store_v1").fetchone()  # holds a snapshot
        store.put(2, b"after")
        store.sync()
        assert store._unsynced  # the checkpoint could not complete; the timer keeps trying
    finally:
        reader.close()
    wait_until(lambda: not store._unsynced, 5, "the retried sync")


def test_full_has_nothing_to_sync(open_store: Callable[..., SQLiteStore]) -> None:
    store = open_store(durability="full")
    store.put(1, b"v")
    assert not store._unsynced
    assert store._timer is None
    store.sync()


def test_close_cancels_a_pending_sync(open_store: Callable[..., SQLiteStore]) -> None:
    store = open_store(durability="batched", sync_interval=60)
    store.put(1, b"v")
    timer = store._timer
    assert timer is not None
    store.close()
    timer.join(5)
    assert not timer.is_alive()


# -- pair() and the client options --------------------------------------------------------------


def test_pair_names_and_close(open_pair: Callable[..., StorePair]) -> None:
    pair = open_pair("sensor-1", durability="batched")
    incoming, outgoing = pair
    assert (incoming.name, outgoing.name) == ("sensor-1/in", "sensor-1/out")
    assert (pair.incoming, pair.outgoing) == (incoming, outgoing)
    assert incoming.durability == outgoing.durability == "batched"
    with pair:
        pass
    assert incoming.closed
    assert outgoing.closed


def test_pair_needs_a_fixed_client_id(db: Path) -> None:
    with pytest.raises(ValueError, match="fixed client id"):
        SQLiteStore.pair(db, "")


def test_pair_plugs_into_both_option_spellings(open_pair: Callable[..., StorePair]) -> None:
    incoming, outgoing = open_pair("x")
    seed = mqttkit.Client(
        {"clientId": "x", "clean": False, "incomingStore": incoming, "outgoingStore": outgoing}
    )
    kwargs = mqttkit.Client(
        client_id="x", clean=False, incoming_store=incoming, outgoing_store=outgoing
    )
    for client in (seed, kwargs):
        assert client.options.incoming_store is incoming
        assert client.options.outgoing_store is outgoing
        config = client.options.session_config()
        assert (config.incoming_store, config.outgoing_store) == (incoming, outgoing)
    aio = mqttkit.aio.Client(incoming_store=incoming, outgoing_store=outgoing, client_id="x")
    assert aio.options.outgoing_store is outgoing


# -- group commit and begin()/commit() ----------------------------------------------------------


class Trace:
    """Every statement ``store``'s connection runs, through sqlite3's trace callback.

    ``transactions`` counts the transactions begun: each BEGIN, and each write statement run
    outside one (an autocommit statement is its own transaction). ``stop_at(prefix)`` makes the
    next statement starting with ``prefix`` wait, inside SQLite, until ``go()``: SQLite calls the
    trace at the statement's first step, before it takes the file's write lock. The leader runs
    its statements with the store's lock released, so the other threads queue up meanwhile.
    """

    def __init__(self, store: SQLiteStore) -> None:
        self.statements: list[str] = []
        self.transactions = 0
        self.stopped = threading.Event()
        self._go = threading.Event()
        self._stop_at: str | None = None
        self._in_transaction = False
        assert store._conn is not None
        store._conn.set_trace_callback(self._trace)

    def stop_at(self, prefix: str) -> None:
        self._stop_at = prefix

    def go(self) -> None:
        self._go.set()

    def _trace(self, sql: str) -> None:
        # Only the thread that owns the connection at the moment runs statements: no races.
        self.statements.append(sql)
        word = sql.split(None, 1)[0].upper()
        if word == "BEGIN":
            self.transactions += 1
            self._in_transaction = True
        elif word in ("COMMIT", "ROLLBACK"):
            self._in_transaction = False
        elif word in ("INSERT", "DELETE") and not self._in_transaction:
            self.transactions += 1
        if self._stop_at is not None and sql.startswith(self._stop_at):
            self._stop_at = None
            self.stopped.set()
            self._go.wait(30)


def start_threads(*targets: Callable[[], None]) -> tuple[list[threading.Thread], list[Any]]:
    """Start one thread per target; each appends what it raised (or None) to the list."""
    outcomes: list[Any] = []

    def run(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            outcomes.append(exc)
        else:
            outcomes.append(None)

    threads = [threading.Thread(target=run, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    return threads, outcomes


def join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()


@pytest.mark.parametrize("mode", MODES)
def test_concurrent_puts_share_commits(open_store: Callable[..., SQLiteStore], mode: str) -> None:
    store = open_store(name="group", durability=mode)
    reader = open_store(name="group")  # another connection: sees only committed writes
    trace = Trace(store)
    workers, per_worker = 8, 500
    barrier = threading.Barrier(workers)
    missing: list[int] = []

    def work(base: int) -> None:
        barrier.wait(10)
        for j in range(per_worker):
            store.put(base + j, b"%d" % (base + j))
            if j % 100 == 0 and reader.get(base + j) is None:
                missing.append(base + j)  # put() returned before its commit

    threads, outcomes = start_threads(*(lambda i=i: work(i * 10_000) for i in range(workers)))
    join_all(threads)
    assert outcomes == [None] * workers
    assert missing == []
    expected = [
        (i * 10_000 + j, b"%d" % (i * 10_000 + j))
        for i in range(workers)
        for j in range(per_worker)
    ]
    assert list(reader.iterate()) == expected
    # Each put waits for a commit carrying it, so one commit carries at most one write per
    # thread: at least 500 commits. In "full", each commit's fsync (~0.2 ms) leaves the others
    # time to queue up, and commits are shared: about 4 writes each on a 2-vCPU VM, far fewer
    # commits than puts. A "batched" commit is over in ~10 us, so few writes meet there.
    total = workers * per_worker
    assert trace.transactions >= total // workers, trace.transactions
    if mode == "full":
        assert trace.transactions <= total // 2, trace.transactions


def test_begin_puts_commit_is_one_commit(open_store: Callable[..., SQLiteStore]) -> None:
    store = open_store(name="held", durability="full")
    reader = open_store(name="held")
    store.put(1000, b"old")
    trace = Trace(store)
    store.begin()
    for key in range(1, 101):
        store.put(key, b"v%d" % key)
    store.delete(1000)
    assert trace.statements == []  # held: nothing has reached SQLite yet
    assert reader.get(1) is None
    assert reader.get(1000) == b"old"
    store.commit()
    assert trace.transactions == 1
    assert [s.split()[0] for s in trace.statements].count("COMMIT") == 1
    assert list(reader.iterate()) == [(k, b"v%d" % k) for k in range(1, 101)]
    # After commit(), each write commits by itself when it returns.
    store.put(101, b"alone")
    assert trace.transactions == 2
    assert reader.get(101) == b"alone"


def test_commit_without_begin_runs_nothing_and_begin_twice_is_one_batch(
    open_store: Callable[..., SQLiteStore],
) -> None:
    store = open_store(name="twice")
    trace = Trace(store)
    store.commit()
    assert trace.statements == []
    store.begin()
    store.put(1, b"a")
    store.begin()
    store.put(2, b"b")
    store.commit()
    store.commit()  # a second commit(): nothing held any more
    assert trace.transactions == 1
    assert list(store.iterate()) == [(1, b"a"), (2, b"b")]


def test_held_writes_are_seen_by_the_holding_thread_only_until_commit(
    open_store: Callable[..., SQLiteStore],
) -> None:
    store = open_store(name="seen")
    other = open_store(name="seen")
    store.put(3, b"three")
    store.put(4, b"four")
    store.begin()
    buffer = bytearray(b"one")
    store.put(1, buffer)  # type: ignore[arg-type]
    buffer[:] = b"changed"  # a held value is a copy
    store.put(2, b"two")
    store.delete(3)
    store.put(4, b"four again")
    assert store.get(1) == b"one"
    assert store.get(3) is None
    assert list(store.iterate()) == [(1, b"one"), (2, b"two"), (4, b"four again")]
    assert len(store) == 3
    assert list(other.iterate()) == [(3, b"three"), (4, b"four")]  # not committed yet
    store.commit()
    assert list(other.iterate()) == [(1, b"one"), (2, b"two"), (4, b"four again")]


def test_last_write_wins_within_a_batch(open_store: Callable[..., SQLiteStore]) -> None:
    store = open_store(name="order")
    store.put(2, b"stored")
    store.begin()
    store.put(1, b"a")
    store.delete(1)
    store.put(1, b"b")  # put, delete, put: b
    store.put(2, b"x")
    store.delete(2)  # put, delete: gone, though it was stored before
    store.commit()
    assert list(store.iterate()) == [(1, b"b")]


def test_a_put_from_another_thread_carries_the_held_writes(
    open_store: Callable[..., SQLiteStore],
) -> None:
    store = open_store(name="carry")
    reader = open_store(name="carry")
    trace = Trace(store)
    store.begin()
    store.put(1, b"held-1")
    store.put(2, b"held-2")
    threads, outcomes = start_threads(lambda: store.put(3, b"other"))
    join_all(threads)
    assert outcomes == [None]
    # The other thread's put() committed its write, and the held ones with it, in one go.
    assert trace.transactions == 1
    assert list(reader.iterate()) == [(1, b"held-1"), (2, b"held-2"), (3, b"other")]
    store.commit()
    assert trace.transactions == 1  # nothing left to commit


def test_last_write_wins_in_call_order_across_a_running_commit(
    open_store: Callable[..., SQLiteStore],
) -> None:
    store = open_store(name="race")
    reader = open_store(name="race")
    trace = Trace(store)
    trace.stop_at("INSERT")
    first, first_outcome = start_threads(lambda: store.put(1, b"first"))  # leads, stops
    assert trace.stopped.wait(10)
    second, second_outcome = start_threads(lambda: store.put(1, b"second"))  # queues
    wait_until(lambda: store._pending.writes == {1: b"second"}, 10, "the queued put")
    store.begin()
    store.put(1, b"third")  # held, after the others in call order
    trace.go()
    join_all(first + second)
    assert first_outcome == second_outcome == [None]
    store.commit()
    assert reader.get(1) == b"third"
    assert trace.transactions == 2  # "first" alone, then "second" superseded by "third"


def test_a_failed_commit_raises_in_every_caller_it_carried(
    open_store: Callable[..., SQLiteStore], db: Path
) -> None:
    # A real failure: another connection holds the file's write lock, and timeout=0.
    store = open_store(name="fail", durability="full", timeout=0)
    reader = open_store(name="fail")
    store.put(999, b"before")
    trace = Trace(store)
    trace.stop_at("INSERT")
    leader, leader_outcome = start_threads(lambda: store.put(1, b"first"))
    assert trace.stopped.wait(10)  # the lone put is running, its lock not yet taken
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        followers, outcomes = start_threads(
            *(lambda k=k: store.put(k, b"queued") for k in range(2, 8))
        )
        store.begin()
        store.put(100, b"held")
        store.delete(999)
        wait_until(lambda: len(store._pending.writes) == 8, 10, "6 queued and 2 held writes")
        trace.go()
        join_all(leader + followers)
        # The lone put failed by itself; the next commit carried the 6 queued writes and the
        # 2 held ones, and failed: one BEGIN for all of them.
        assert trace.transactions == 2
        [own] = leader_outcome
        assert isinstance(own, sqlite3.OperationalError)
        assert "locked" in str(own)
        assert len(outcomes) == 6
        for exc in outcomes:
            assert isinstance(exc, sqlite3.OperationalError)
            assert exc.sqlite_errorcode == sqlite3.SQLITE_BUSY
            assert isinstance(exc.__cause__, sqlite3.OperationalError)
        assert len({id(exc) for exc in outcomes}) == 6  # each thread raised its own copy
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            store.commit()  # the holder learns that its held writes were not stored
    finally:
        blocker.close()
    # Nothing of the failed commits is stored, and the store works again.
    assert list(reader.iterate()) == [(999, b"before")]
    assert list(store.iterate()) == [(999, b"before")]
    store.put(1, b"after")
    store.begin()
    store.put(2, b"after")
    store.commit()
    assert list(reader.iterate()) == [(1, b"after"), (2, b"after"), (999, b"before")]


def test_close_reports_held_writes_that_a_failed_commit_carried(db: Path) -> None:
    store = SQLiteStore(db, name="lost", timeout=0)
    store.begin()
    store.put(1, b"held")
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        threads, outcomes = start_threads(lambda: store.put(2, b"other"))  # carries the held
        join_all(threads)
        [exc] = outcomes
        assert isinstance(exc, sqlite3.OperationalError)
    finally:
        blocker.close()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        store.close()  # no commit() will come to report it
    assert store.closed
    with SQLiteStore(db, name="lost") as again:
        assert list(again.iterate()) == []


class _RollbackFails(SQLiteStore):
    __slots__ = ()

    def _rollback(self, conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error (injected)")


def test_a_store_whose_rollback_failed_refuses_every_call(db: Path) -> None:
    store = _RollbackFails(db, name="broken", timeout=0)
    try:
        store.begin()
        store.put(1, b"a")
        store.put(2, b"b")
        blocker = sqlite3.connect(db, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                store.commit()
        finally:
            blocker.close()
        calls: list[Callable[[], object]] = [
            lambda: store.put(3, b"c"),
            lambda: store.get(1),
            lambda: store.delete(1),
            store.iterate,
            store.begin,
            store.commit,
            store.sync,
        ]
        for call in calls:
            with pytest.raises(sqlite3.OperationalError, match=r"unusable.*injected.*new"):
                call()
    finally:
        store.close()
    assert store.closed
    with SQLiteStore(db, name="broken") as again:  # a new store on the file works
        again.put(1, b"a")
        assert list(again.iterate()) == [(1, b"a")]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("closer", ["holder", "other-thread"])
def test_close_commits_held_writes(db: Path, mode: str, closer: str) -> None:
    store = SQLiteStore(db, name="c", durability=mode)
    store.begin()
    store.put(1, b"a")
    store.put(2, b"b")
    store.delete(2)
    if closer == "holder":
        store.close()
    else:
        threads, outcomes = start_threads(store.close)
        join_all(threads)
        assert outcomes == [None]
    with pytest.raises(ValueError, match="closed"):
        store.commit()
    with SQLiteStore(db, name="c") as again:
        assert list(again.iterate()) == [(1, b"a")]
    if mode == "batched":  # close() also synced: everything is in the database file itself
        conn = sqlite3.connect(db, isolation_level=None)
        try:
            assert conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1] == 0
        finally:
            conn.close()


def test_sync_commits_what_is_held(open_store: Callable[..., SQLiteStore]) -> None:
    store = open_store(name="s", durability="batched", sync_interval=60)
    reader = open_store(name="s")
    store.begin()
    store.put(1, b"a")
    store.sync()
    assert reader.get(1) == b"a"
    assert not store._unsynced
    store.put(2, b"b")  # still held: sync() did not end the batch
    assert reader.get(2) is None
    store.commit()
    assert reader.get(2) == b"b"


def test_batched_sync_that_falls_due_during_a_commit_runs_after_it(
    open_store: Callable[..., SQLiteStore],
) -> None:
    store = open_store(durability="batched", sync_interval=0.01)
    store.put(1, b"v")  # arms the sync timer
    trace = Trace(store)
    trace.stop_at("INSERT")
    threads, outcomes = start_threads(lambda: store.put(2, b"w"))
    assert trace.stopped.wait(10)
    # The timer fires while the commit runs: it does not wait for the connection, it leaves
    # the sync to the commit's leader.
    wait_until(lambda: store._sync_due, 10, "the timer during the commit")
    trace.go()
    join_all(threads)
    assert outcomes == [None]
    assert not store._sync_due
    assert not store._unsynced  # the leader ran the checkpoint once its commit was done
    assert "PRAGMA wal_checkpoint(PASSIVE)" in trace.statements


# -- threads and processes sharing one file -----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_threads_share_a_store_and_a_file(
    open_store: Callable[..., SQLiteStore], mode: str
) -> None:
    shared = open_store(name="shared", durability=mode)
    own = [open_store(name=f"own-{i}", durability=mode) for i in range(3)]
    workers = 6
    per_worker = 60
    barrier = threading.Barrier(workers + len(own))
    errors: list[BaseException] = []

    def work(store: SQLiteStore, base: int) -> None:
        try:
            barrier.wait(10)
            for j in range(per_worker):
                store.put(base + j, b"%d" % (base + j))
                if j % 2:
                    store.delete(base + j - 1)
                store.get(base + j)
            list(store.iterate())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(shared, i * 1000)) for i in range(workers)]
    threads += [threading.Thread(target=work, args=(s, 0)) for s in own]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    assert errors == []
    odd = [j for j in range(per_worker) if j % 2]
    expected = sorted(i * 1000 + j for i in range(workers) for j in odd)
    assert [k for k, _ in shared.iterate()] == expected
    for store in own:
        assert [k for k, _ in store.iterate()] == odd


WRITER = r"""
import sys
from mqttkit.stores import SQLiteStore
path, name, base, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
held = sys.argv[5] == "held"  # begin()/commit() around every 10 iterations, as the loop does
own = SQLiteStore(path, name=name)
shared = SQLiteStore(path, name="shared")
print("ready", flush=True)
sys.stdin.readline()
for j in range(count):
    if held and j % 10 == 0:
        own.begin()
        shared.begin()
    own.put(j, b"%d" % j)
    shared.put(base + j, name.encode())
    if j % 3 == 0:
        own.delete(j)
    if held and j % 10 == 9:
        own.commit()
        shared.commit()
own.close()
shared.close()
print("done", flush=True)
"""


def test_two_processes_and_a_thread_share_a_file(
    db: Path, open_store: Callable[..., SQLiteStore]
) -> None:
    # proc-0 writes call by call, proc-1 in begin()/commit() batches (BEGIN IMMEDIATE waiting
    # for the others in SQLite's busy handler), the parent from two threads at once.
    count = 150
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, "-c", WRITER, str(db), f"proc-{i}", str(i * 10_000)),
                *(str(count), "held" if i else "each"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n", proc.communicate(timeout=10)[1]
        mine = open_store(name="shared")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()

        def parent_writes(base: int) -> None:  # at the same time, under the shared name
            for j in range(count // 2):
                mine.put(base + j, b"parent")

        threads, outcomes = start_threads(
            lambda: parent_writes(20_000), lambda: parent_writes(30_000)
        )
        join_all(threads)
        assert outcomes == [None, None]
        for proc in procs:
            out, err = proc.communicate(timeout=30)
            assert (proc.returncode, out) == (0, "done\n"), err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    kept = [j for j in range(count) if j % 3]
    for i in range(2):
        own = open_store(name=f"proc-{i}")
        assert list(own.iterate()) == [(j, b"%d" % j) for j in kept]
    shared = dict(mine.iterate())
    assert len(shared) == 3 * count
    assert Counter(shared.values()) == {b"proc-0": count, b"proc-1": count, b"parent": count}


KILLED_WRITER = r"""
import sys
from mqttkit.stores import SQLiteStore
store = SQLiteStore(sys.argv[1], name="victim", durability=sys.argv[2])
pause_at = int(sys.argv[3])
for key in range(1, 1_000_000):
    store.put(key, b"value-%d" % key)
    if key % 2 == 0:
        store.delete(key - 1)
    print(key, flush=True)  # put() (and delete()) have returned
    if key == pause_at:
        sys.stdin.readline()  # wait here to be killed
"""


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("moment", ["right-after-put", "mid-write"])
def test_sigkill_loses_no_write_that_returned(
    db: Path, open_store: Callable[..., SQLiteStore], mode: str, moment: str
) -> None:
    pause_at = 200 if moment == "right-after-put" else 0
    with subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(db), mode, str(pause_at)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        last = 0
        for _ in range(1000):
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            last = int(line)
            if last >= 200:
                break
        # "mid-write": the child goes on writing and is cut anywhere; "right-after-put": it waits
        # just after put() and delete() of key 200 returned.
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    store = open_store(name="victim")
    entries = dict(store.iterate())
    # The child went on writing after the last line we read; the kill cut it anywhere. The file
    # holds a prefix of its writes, each whole, and that prefix covers every reported one.
    top = max(entries)
    assert top >= last
    if pause_at:
        assert top == last == pause_at
    for key in range(1, top - 1):
        if key % 2 == 0:
            assert entries.get(key) == b"value-%d" % key, key
        else:
            assert key not in entries, key
    assert entries[top] == b"value-%d" % top
    if top % 2 == 1:
        assert entries[top - 1] == b"value-%d" % (top - 1)  # deleted only when top + 1 is put
    else:
        assert entries.get(top - 1) in (None, b"value-%d" % (top - 1))  # its delete in flight
    assert store._conn is not None
    assert store._conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# -- a ClientSession over SQLiteStores, crashed and rebuilt -------------------------------------


@pytest.fixture(params=MODES)
def session_stores(
    request: pytest.FixtureRequest, open_pair: Callable[..., StorePair]
) -> Callable[[], StorePair]:
    """Each call is a new "process": a new pair of stores (new connections) on the same file."""
    return lambda: open_pair("client-1", durability=request.param)


def conversation(pair: StorePair, level: int, **config: Any) -> Conversation:
    return Conversation(
        level,
        clean_start=False,
        incoming_store=pair.incoming,
        outgoing_store=pair.outgoing,
        **config,
    )


def crash_mid_flow(stores: Callable[[], StorePair], level: int) -> StorePair:
    """A first run that dies with every kind of unfinished state in the file."""
    pair = stores()
    witness = stores()  # what another process would read from the file, at every step
    c = conversation(pair, level, max_inflight=3)
    c.handshake()
    c.publish("a", b"A", 1)  # id 1: awaits PUBACK
    assert witness.outgoing.get(1) == c.session.data_to_send()  # on disk before it leaves
    c.publish("b", b"B", 2)  # id 2: PUBREC'd, awaits PUBCOMP
    c.publish("c", b"C", 2)  # id 3: awaits PUBREC
    c.publish("d", b"D", 1)  # queued behind the window
    c.send(PubRec(2))
    c.send(Publish("in", b"X", 2, packet_id=7), Publish("in", b"Y", 2, packet_id=8))
    x, _y = c.events()
    c.ack(x)  # the application has X (PUBREC 7 goes out); Y was received, not acknowledged
    assert witness.incoming.get(7) == b""
    assert [(type(p).__name__, getattr(p, "packet_id", 0)) for p in c.sent()] == [
        ("Publish", 2),
        ("Publish", 3),
        ("PubRel", 2),
        ("PubRec", 7),
    ]
    c.lose()
    c.publish("e", b"E", 2)  # offline
    # The process dies: no close(), no DISCONNECT. Its connections stay open, as a dead
    # process's would until the OS reaps it; the next run opens its own.
    del c
    return witness


@LEVELS
def test_crashed_session_resumes_over_the_file(
    session_stores: Callable[[], StorePair], level: int
) -> None:
    witness = crash_mid_flow(session_stores, level)
    c = conversation(session_stores(), level, max_inflight=3)
    assert (c.session.inflight, c.session.queued) == (3, 2)
    c.connect()
    c.send(ConnAck(True, 0))
    assert names(c.events()) == ["Connected"]
    assert c.sent() == [
        Publish("a", b"A", 1, False, True, 1),
        PubRel(2),
        Publish("c", b"C", 2, False, True, 3),
    ]
    # The broker resends the QoS 2 message the application had: answered, not delivered.
    c.send(Publish("in", b"X", 2, False, True, 7))
    assert c.events() == []
    assert c.sent() == [PubRec(7)]
    c.send(PubRel(7))
    assert c.sent() == [PubComp(7)]
    # The one that was received but never acknowledged is delivered (it was never PUBREC'd).
    c.send(Publish("in", b"Y", 2, False, True, 8))
    [message] = c.events()
    assert message.message.payload == b"Y"  # type: ignore[attr-defined]
    c.ack(message)
    assert c.sent() == [PubRec(8)]
    c.send(PubRel(8))
    assert c.sent() == [PubComp(8)]
    # Finish every outgoing flow; the queued and the offline messages follow as the window frees.
    c.send(PubAck(1))
    [d] = c.sent()
    c.send(PubComp(2))
    [e] = c.sent()
    assert isinstance(d, Publish)
    assert isinstance(e, Publish)
    assert [(p.payload, p.qos, p.dup) for p in (d, e)] == [(b"D", 1, False), (b"E", 2, False)]
    c.send(PubRec(3))
    assert c.sent() == [PubRel(3)]
    c.send(PubComp(3), PubAck(d.packet_id), PubRec(e.packet_id))  # type: ignore[arg-type]
    assert c.sent() == [PubRel(e.packet_id)]  # type: ignore[arg-type]
    c.send(PubComp(e.packet_id))  # type: ignore[arg-type]
    assert c.session.pending == 0
    # Nothing is left in the file, as another process sees it.
    assert list(witness.outgoing.iterate()) == []
    assert list(witness.incoming.iterate()) == []


@LEVELS
def test_crashed_session_sends_again_as_new_when_the_broker_lost_it(
    session_stores: Callable[[], StorePair], level: int
) -> None:
    witness = crash_mid_flow(session_stores, level)
    c = conversation(session_stores(), level, max_inflight=3)
    c.connect()
    c.send(ConnAck(False, 0))
    sent = c.sent()
    # B was PUBREC'd: the broker owned it. A, C, D go again as new messages; E waits.
    assert [(p.payload, p.dup) for p in sent] == [  # type: ignore[attr-defined]
        (b"A", False),
        (b"C", False),
        (b"D", False),
    ]
    assert list(witness.incoming.iterate()) == []  # the old session's QoS 2 ids are void
    assert [v[0] >> 4 for _, v in witness.outgoing.iterate()] == [3, 3, 3, 3]  # A C D E
    # In the new session, packet id 7 is a new message.
    c.send(Publish("in", b"X2", 2, packet_id=7))
    assert [e.message.payload for e in c.events()[1:]] == [b"X2"]  # type: ignore[attr-defined]


def test_a_second_restart_before_anything_completed_is_still_whole(
    session_stores: Callable[[], StorePair],
) -> None:
    crash_mid_flow(session_stores, 4)
    again = conversation(session_stores(), 4, max_inflight=3)  # dies before connecting
    del again
    c = conversation(session_stores(), 4, max_inflight=3)
    assert (c.session.inflight, c.session.queued) == (3, 2)


# -- a real client, a real broker, a restarted process ------------------------------------------


def test_client_restarted_over_the_file_finishes_the_sends(
    open_pair: Callable[..., StorePair],
    mosquitto_factory: Callable[..., MosquittoBroker],
    make_client: Callable[..., mqttkit.Client],
) -> None:
    # Persistence: the subscriber's session and the publisher's survive the broker's restart.
    broker = mosquitto_factory(persistence=True)
    sub = make_client(url=broker.url, client_id="store-sub", clean=False, reconnect_period=0.05)
    received = Recorder(sub, ("connect", "message"))
    received.wait_for("connect")
    sub.subscribe("store/#", qos=2).result(5)

    # The first run: one message delivered normally, then the broker goes away.
    incoming, outgoing = open_pair("store-pub")
    options = {"clientId": "store-pub", "clean": False, "reconnectPeriod": 50}
    first = make_client(
        {**options, "incomingStore": incoming, "outgoingStore": outgoing}, url=broker.url
    )
    first_events = Recorder(first)
    first_events.wait_for("connect")
    assert first.publish("store/live", "live", qos=2).result(5) == 0
    broker.stop()
    first_events.wait_for("offline")
    expected = {f"offline-{i}".encode(): 1 + i % 2 for i in range(10)}  # payload -> QoS
    handles = [first.publish("store/queued", p, qos=q) for p, q in expected.items()]
    wait_until(lambda: len(outgoing) == 10, 10, "the offline messages in the store")
    # The process "dies": force-closed, the handles fail, the messages stay in the file.
    assert first.close(force=True).wait(10)
    for handle in handles:
        with pytest.raises(mqttkit.ClientClosedError):
            handle.result(5)
    incoming.close()
    outgoing.close()

    # The next run: same client id, clean=False, same file, broker back.
    broker.start()
    incoming, outgoing = open_pair("store-pub")
    second = make_client(
        {**options, "incomingStore": incoming, "outgoingStore": outgoing}, url=broker.url
    )
    received.wait_until(lambda: len(received.messages) >= 11, 15, "every message")
    wait_until(lambda: len(outgoing) == 0, 15, "the last acknowledgements")
    assert second.close().wait(15)
    got = Counter(m[1] for m in received.messages)
    assert set(got) == {b"live", *expected}
    assert all(got[p] == 1 for p, qos in expected.items() if qos == 2)  # QoS 2: exactly once
    assert len(incoming) == 0


@pytest.mark.parametrize("step", [PubAck, PubRec, PubComp], ids=lambda p: p.__name__)
def test_client_killed_mid_flow_is_finished_by_the_next_one(
    open_pair: Callable[..., StorePair],
    mosquitto: MosquittoBroker,
    make_client: Callable[..., mqttkit.Client],
    step: type[PubAck | PubRec | PubComp],
) -> None:
    # The broker's acknowledgements stop at ``step`` (nothing after it reaches the client), the
    # first client is killed with every flow unfinished, the next one resends PUBLISH with DUP
    # (PubAck, PubRec) or PUBREL (PubComp) over the broker's kept session.
    qos = 1 if step is PubAck else 2
    sub = make_client(url=mosquitto.url)
    received = Recorder(sub, ("connect", "message"))
    received.wait_for("connect")
    sub.subscribe("flow/#", qos=2).result(5)
    count = 5
    options = {"client_id": "flow-pub", "clean": False, "reconnect_period": 60}
    with FaultProxy(mosquitto.host, mosquitto.port) as proxy:
        incoming, outgoing = open_pair("flow-pub")
        first = make_client(
            url=proxy.url, incoming_store=incoming, outgoing_store=outgoing, **options
        )
        Recorder(first).wait_for("connect")
        rule = proxy.cut_after("s2c", step, before=True)
        handles = [first.publish("flow/t", f"m{i}", qos=qos) for i in range(count)]
        rule.wait(10)
        assert first.close(force=True).wait(10)
        assert all(handle.exception(5) is not None for handle in handles)
        assert len(outgoing) == count  # every flow unfinished, all in the file
        incoming.close()
        outgoing.close()
        first_ids = {r.packet.packet_id for r in proxy.records("c2s", Publish)}  # type: ignore[union-attr]

        incoming, outgoing = open_pair("flow-pub")
        second = make_client(
            url=proxy.url, incoming_store=incoming, outgoing_store=outgoing, **options
        )
        Recorder(second).wait_for("connect")  # the flows resume here; close() waits for them
        expected = {f"m{i}".encode() for i in range(count)}
        received.wait_until(
            lambda: {m[1] for m in received.messages} >= expected, 15, "every message"
        )
        wait_until(lambda: len(outgoing) == 0, 15, "the resumed flows to complete")
        assert second.close().wait(15)
        resent = [r for r in proxy.records("c2s") if r.connection == 1]
    if step is PubComp:
        # Each flow resumes where it stood at the kill: PUBREL for those whose PUBREC had come
        # back (at least the first: the broker's PUBCOMP answers our PUBREL), PUBLISH with DUP
        # for the others (their PUBREC may follow the cut PUBCOMP in the broker's stream).
        # How each flow resumed: the first packet with its id on the new connection (a flow
        # resumed by PUBLISH gets PUBREC, then PUBREL, there too).
        first_packet: dict[int, str] = {}
        for r in resent:
            if r.type_name in ("PUBLISH", "PUBREL"):
                first_packet.setdefault(r.packet.packet_id, r.type_name)  # type: ignore[union-attr]
        rel = {pid for pid, kind in first_packet.items() if kind == "PUBREL"}
        pub = [r for r in resent if r.type_name == "PUBLISH"]
        pub_ids = {r.packet.packet_id for r in pub}  # type: ignore[union-attr]
        recd = {
            r.packet.packet_id  # type: ignore[union-attr]
            for r in proxy.records("s2c", PubRec)
            if r.connection == 0 and r.forwarded
        }
        # Every flow resumes (those written after the cut never reached the proxy's record of
        # the first connection: the client wrote them before it learned of the cut).
        assert len(rel | pub_ids) == count
        assert first_ids <= rel | pub_ids
        assert not rel & pub_ids
        assert rel
        assert rel <= recd
        assert all(r.dup for r in pub)
    else:
        # Every flow is sent again, and with DUP at least each one the broker may have seen
        # (the proxy saw it on the first connection). A message written after the cut, before
        # the client learned of it, counts as sent too: DUP as well.
        pub = [r for r in resent if r.type_name == "PUBLISH"]
        dup = {r.packet.packet_id for r in pub if r.dup}  # type: ignore[union-attr]
        assert len(pub) == count
        assert first_ids <= dup
    got = Counter(m[1] for m in received.messages)
    assert set(got) == expected
    if qos == 2:
        assert set(got.values()) == {1}  # exactly once, across the kill
