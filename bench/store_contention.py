"""What SQLiteStore's writes for one QoS 1 message cost when two threads share the store, as
the blocking client's publishing thread and loop thread do: no MQTT, no broker.

    python bench/store_contention.py [--durability batched|full] [-n 20000]

Per message: the publishing thread puts the record and commits (what ``publish()`` waits
for); the loop thread puts it again (with its packet id) and deletes it (the PUBACK), holding
its writes for a batch and committing once (``begin()``/``commit()``). The second figure is the
same writes made by one thread alone.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mqttkit.stores import SQLiteStore

VALUE = b"\x32\x46\x00\x01t\x00\x00" + b"x" * 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--durability", default="batched", choices=["batched", "full"])
    parser.add_argument("-n", type=int, default=20_000)
    args = parser.parse_args()
    n = args.n
    store = SQLiteStore(
        os.path.join(tempfile.mkdtemp(), "x.db"), name="out", durability=args.durability
    )
    keys: queue.SimpleQueue[int] = queue.SimpleQueue()

    def loop_thread() -> None:
        done = 0
        while done < n:
            batch = [keys.get()]
            while True:
                try:
                    batch.append(keys.get_nowait())
                except queue.Empty:
                    break
            store.begin()
            for key in batch:
                store.put(key, VALUE)
            for key in batch:
                store.delete(key)
            store.commit()
            done += len(batch)

    thread = threading.Thread(target=loop_thread)
    cpu, start = time.process_time(), time.perf_counter()
    thread.start()
    for key in range(1, n + 1):
        store.put(key, VALUE)
        keys.put(key)
    thread.join()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"two threads: {elapsed / n * 1e6:.1f} us/msg elapsed, {cpu / n * 1e6:.1f} us CPU")
    cpu, start = time.process_time(), time.perf_counter()
    for key in range(n + 1, 2 * n + 1):
        store.put(key, VALUE)
        store.begin()
        store.put(key, VALUE)
        store.delete(key)
        store.commit()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"one thread:  {elapsed / n * 1e6:.1f} us/msg elapsed, {cpu / n * 1e6:.1f} us CPU")
    store.close()


if __name__ == "__main__":
    main()
