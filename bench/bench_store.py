"""The stores' cost per call, per durability mode: what the session pays per QoS 1/2 message.

    python bench/bench_store.py                  # 5,000 messages per row, file in a temp dir
    python bench/bench_store.py -n 20000 --dir /var/lib/myapp   # on the disk you will use

Rows: ``MemoryStore`` (the default) and ``SQLiteStore`` with ``durability="full"`` and
``"batched"``. Columns: single calls (``put``, ``get``, ``delete``) and the calls the session
makes per message: QoS 1 = put + delete, QoS 2 = put + put (PUBREL) + delete. The last rows are
not stores: raw sqlite3 with the "full" pragmas and the writes of 1 or 20 QoS 2 messages in one
transaction, i.e. what a commit per batch of session work (one fsync per batch) would give.

The fsync cost dominates "full" and depends entirely on the disk: run this where the file will
live.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
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
    args = parser.parse_args()
    columns = ["put", "get", "delete", "qos1 msg/s", "qos2 msg/s"]
    rows: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rows.append(("MemoryStore", measure(MemoryStore(), args.n)))
        for mode in ("full", "batched"):
            path = os.path.join(tmp, f"{mode}.db")
            with SQLiteStore(path, name="bench/out", durability=mode) as store:  # type: ignore[arg-type]
                rows.append((f"SQLiteStore {mode}", measure(store, args.n)))
        for batch in (1, 20):
            path = os.path.join(tmp, f"txn{batch}.db")
            rows.append(
                (f"raw full, {batch} msg/txn", one_transaction_per_batch(path, args.n, batch))
            )
        print(f"sqlite {sqlite3.sqlite_version}, n={args.n}, dir={tmp}")
    print("put/get/delete: calls per second; qos1/qos2: messages per second (2 or 3 calls each)")
    print(f"{'':<26}" + "".join(f"{c:>13}" for c in columns))
    for label, values in rows:
        cells = "".join(f"{values[c]:>13,.0f}" if c in values else f"{'':>13}" for c in columns)
        print(f"{label:<26}{cells}")
    for label, values in rows:
        if "put" in values:
            put_us, delete_us = 1e6 / values["put"], 1e6 / values["delete"]
            print(f"{label:<26}put {put_us:.1f} us, delete {delete_us:.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
