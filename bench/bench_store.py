"""The stores' cost per call, per durability mode: what the session pays per QoS 1/2 message.

    python bench/bench_store.py                  # 5,000 messages per row, file in a temp dir
    python bench/bench_store.py -n 20000 --dir /var/lib/myapp   # on the disk you will use

Rows: ``MemoryStore`` (the default) and ``SQLiteStore`` with ``durability="full"`` and
``"batched"``. Columns: single calls (``put``, ``get``, ``delete``) and the calls the session
makes per message: QoS 1 = put + delete, QoS 2 = put + put (PUBREL) + delete.

Then, per mode: "8 threads" runs the same calls from 8 threads at once on one store (the
blocking client's publishing threads), so concurrent writes share commits (group commit); its
figures are totals over the threads. "begin/20 msg/commit" holds the calls of 20 messages between
``begin()`` and ``commit()`` (the loop thread's batch; the put column: 20 puts per batch). The
last rows are not stores: raw sqlite3 with the "full" pragmas and the writes of 1 or 20 QoS 2
messages in one transaction, the floor and the ceiling of what one commit per batch gives.

``--sqlite-module FILE`` loads ``SQLiteStore`` from another copy of ``mqttkit/stores/sqlite.py``
(e.g. ``git show HEAD~1:src/mqttkit/stores/sqlite.py > /tmp/old.py``) to compare versions on
one disk; rows a version cannot run (no ``begin``) are left out.

The fsync cost dominates "full" and depends entirely on the disk: run this where the file will
live.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mqttkit.protocol.store import MemoryStore  # noqa: E402
from mqttkit.stores import SQLiteStore  # noqa: E402

VALUE = b"\x32\x15\x00\x0bsensors/abc\x00\x01" + b"x" * 100  # a ~120-byte PUBLISH


def rate(n: int, calls_per_item: int, fn: Callable[[int], None]) -> float:
    """Calls per second of ``fn`` run for keys 1..n (each item makes ``calls_per_item`` calls)."""
    start = time.perf_counter()
    for key in range(1, n + 1):
        fn(key)
    return n * calls_per_item / (time.perf_counter() - start)


def measure(store: Any, n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    out["put"] = rate(n, 1, lambda k: store.put(k, VALUE))
    out["get"] = rate(n, 1, store.get)
    out["delete"] = rate(n, 1, store.delete)

    def qos1(k: int) -> None:
        store.put(k, VALUE)
        store.delete(k)

    def qos2(k: int) -> None:
        store.put(k, VALUE)
        store.put(k, b"\x62\x02\x00\x01")
        store.delete(k)

    out["qos1 msg/s"] = rate(n, 1, qos1)
    out["qos2 msg/s"] = rate(n, 1, qos2)
    return out


def threaded(store: Any, n: int, threads: int) -> dict[str, float]:
    """``measure``'s write columns with ``threads`` threads calling at once (totals)."""

    def run(calls_per_item: int, fn: Callable[[int], None]) -> float:
        per = n // threads
        barrier = threading.Barrier(threads + 1)

        def work(base: int) -> None:
            barrier.wait()
            for key in range(base + 1, base + per + 1):
                fn(key)

        workers = [threading.Thread(target=work, args=(i * per,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        barrier.wait()
        start = time.perf_counter()
        for worker in workers:
            worker.join()
        return per * threads * calls_per_item / (time.perf_counter() - start)

    def qos1(k: int) -> None:
        store.put(k, VALUE)
        store.delete(k)

    def qos2(k: int) -> None:
        store.put(k, VALUE)
        store.put(k, b"\x62\x02\x00\x01")
        store.delete(k)

    out = {"put": run(1, lambda k: store.put(k, VALUE)), "delete": run(1, store.delete)}
    out["qos1 msg/s"] = run(1, qos1)
    out["qos2 msg/s"] = run(1, qos2)
    return out


def held(store: Any, n: int, batch: int) -> dict[str, float]:
    """The loop thread's batch: ``begin()``, the calls of ``batch`` messages, ``commit()``."""

    def batched(fn: Callable[[int], None]) -> Callable[[int], None]:
        def item(k: int) -> None:
            if k % batch == 1 or batch == 1:
                store.begin()
            fn(k)
            if k % batch == 0:
                store.commit()

        return item

    def qos1(k: int) -> None:
        store.put(k, VALUE)
        store.delete(k)

    def qos2(k: int) -> None:
        store.put(k, VALUE)
        store.put(k, b"\x62\x02\x00\x01")
        store.delete(k)

    out = {
        "put": rate(n, 1, batched(lambda k: store.put(k, VALUE))),
        "delete": rate(n, 1, batched(store.delete)),
    }
    out["qos1 msg/s"] = rate(n, 1, batched(qos1))
    out["qos2 msg/s"] = rate(n, 1, batched(qos2))
    store.commit()
    return out


def load_store_class(path: str | None) -> Any:
    """``SQLiteStore`` from this checkout, or from the file ``path`` (another version)."""
    if path is None:
        return SQLiteStore
    spec = importlib.util.spec_from_file_location("bench_sqlite_store", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and NamedTuple look their module up
    spec.loader.exec_module(module)
    return module.SQLiteStore


def one_transaction_per_batch(path: str, n: int, batch: int) -> dict[str, float]:
    """Raw sqlite3, "full" pragmas: the writes of ``batch`` QoS 2 messages in one transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS t (name TEXT NOT NULL, key INTEGER NOT NULL, "
            "value BLOB NOT NULL, PRIMARY KEY (name, key)) WITHOUT ROWID"
        )
        put = "INSERT OR REPLACE INTO t VALUES ('c/out', ?, ?)"
        delete = "DELETE FROM t WHERE name = 'c/out' AND key = ?"

        def qos2(k: int) -> None:
            if k % batch == 1 or batch == 1:
                conn.execute("BEGIN")
            conn.execute(put, (k, VALUE))
            conn.execute(put, (k, b"\x62\x02\x00\x01"))
            conn.execute(delete, (k,))
            if k % batch == 0:
                conn.execute("COMMIT")

        result = {"qos2 msg/s": rate(n, 1, qos2)}
        if conn.in_transaction:
            conn.execute("COMMIT")
        return result
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5_000, help="messages (keys) per row")
    parser.add_argument("--dir", default=None, help="directory for the database file")
    parser.add_argument("--threads", type=int, default=8, help="threads of the threaded rows")
    parser.add_argument(
        "--sqlite-module", default=None, metavar="FILE", help="load SQLiteStore from FILE"
    )
    args = parser.parse_args()
    store_class = load_store_class(args.sqlite_module)
    columns = ["put", "get", "delete", "qos1 msg/s", "qos2 msg/s"]
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rows.append(("MemoryStore", measure(MemoryStore(), args.n)))
        for mode in ("full", "batched"):
            path = os.path.join(tmp, f"{mode}.db")
            with store_class(path, name="bench/out", durability=mode) as store:
                rows.append((f"SQLiteStore {mode}", measure(store, args.n)))
        for mode in ("full", "batched"):
            path = os.path.join(tmp, f"{mode}-threads.db")
            with store_class(path, name="bench/out", durability=mode) as store:
                label = f"{mode}, {args.threads} threads"
                rows.append((label, threaded(store, args.n, args.threads)))
        for mode in ("full", "batched"):
            path = os.path.join(tmp, f"{mode}-held.db")
            with store_class(path, name="bench/out", durability=mode) as store:
                if hasattr(store, "begin"):
                    rows.append((f"{mode}, begin/20 msg/commit", held(store, args.n, 20)))
        for batch in (1, 20):
            path = os.path.join(tmp, f"txn{batch}.db")
            rows.append(
                (f"raw full, {batch} msg/txn", one_transaction_per_batch(path, args.n, batch))
            )
        source = args.sqlite_module or "this checkout"
        print(f"sqlite {sqlite3.sqlite_version}, n={args.n}, dir={tmp}, SQLiteStore: {source}")
    print("put/get/delete: calls per second; qos1/qos2: messages per second (2 or 3 calls each)")
    print(f"{'':<26}" + "".join(f"{c:>13}" for c in columns))
    for label, values in rows:
        cells = "".join(f"{values[c]:>13,.0f}" if c in values else f"{'':>13}" for c in columns)
        print(f"{label:<26}{cells}")
    for label, values in rows:
        if "put" in values and "get" in values:
            put_us, delete_us = 1e6 / values["put"], 1e6 / values["delete"]
            print(f"{label:<26}put {put_us:.1f} us, delete {delete_us:.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
