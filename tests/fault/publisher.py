"""The publisher process of the fault tests (a script the tests start, kill and restart).

It publishes messages ``0 .. count-1``, QoS 1 for even and QoS 2 for odd sequence numbers, to
``<topic>/q1`` and ``<topic>/q2``, with the payload ``fault|<seq>|<qos>|`` (padded to
``--size``). After the last one it waits for every flow to complete (with ``--hold`` it then
prints ``flushed`` and waits for a line on stdin), publishes the end markers ``fault|end|1|``
(QoS 1) and ``fault|end|2|`` (QoS 2), waits for those, closes and prints ``done``. A run
killed at any moment is resumed by the next run with the same arguments.

**Accepted.** A message is accepted once the client's outgoing store holds it: from that moment
the library owes its delivery (``publish()`` itself returns before the store has the message,
see docs/stores.md). The outgoing store is wrapped (:class:`AcceptRecord`) so that, right after
the store first holds a message, its sequence number is appended to the ``--record`` file, on
the client's loop thread, before the message's bytes are handed to the network (the session
stores every QoS 1/2 message before it sends it). A SIGKILL can fall between the store's write
and the record's, so on start the run takes as accepted the record plus every message still in
the store (such a message has not been sent: nothing after the store write ran), appends the
latter to the record, checks that the accepted messages are exactly ``0 .. n-1`` and publishes
from ``n`` on. Nothing accepted is published again; nothing is skipped.

Only mqttkit and the standard library: it runs as ``python tests/fault/publisher.py ...``.
Exit status: 0 done; 3 the record and the store disagree (a gap); 4 the flows did not complete
within ``--timeout``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import mqttkit
from mqttkit.stores import SQLiteStore

#: The sequence number in a stored PUBLISH (the payload is the end of the encoded packet).
SEQ = re.compile(rb"fault\|(\d+)\|")


class AcceptRecord:
    """An outgoing store that appends a message's sequence number to the record file right
    after the wrapped store first holds the message (see the module docstring)."""

    def __init__(self, inner: Any, fd: int, known: set[int]) -> None:
        self._inner = inner
        self._fd = fd
        self._known = known

    def put(self, key: int, value: bytes) -> None:
        self._inner.put(key, value)
        found = SEQ.search(value)
        if found is not None:
            seq = int(found[1])
            if seq not in self._known:
                self._known.add(seq)
                os.write(self._fd, b"%d\n" % seq)  # reaches the OS: survives a SIGKILL

    def get(self, key: int) -> bytes | None:
        value: bytes | None = self._inner.get(key)
        return value

    def delete(self, key: int) -> None:
        self._inner.delete(key)

    def iterate(self) -> Iterator[tuple[int, bytes]]:
        return iter(self._inner.iterate())

    def close(self) -> None:
        self._inner.close()


def read_record(path: str) -> list[int]:
    """The sequence numbers in a record file (a line cut by a kill is not counted)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    return [int(line) for line in data.split(b"\n")[:-1] if line]


def payload(seq: int, qos: int, size: int) -> bytes:
    head = b"fault|%d|%d|" % (seq, qos)
    return head + b"x" * max(0, size - len(head))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--topic", required=True, help="topic prefix: <topic>/q1, <topic>/q2")
    parser.add_argument("--record", required=True, help="file of accepted sequence numbers")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--db", help="SQLiteStore file (default: MemoryStore)")
    parser.add_argument("--durability", default="full", choices=["full", "batched"])
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s (0: no limit)")
    parser.add_argument("--size", type=int, default=32, help="payload bytes")
    parser.add_argument("--keepalive", type=int, default=10)
    parser.add_argument("--connect-timeout", type=float, default=5.0)
    parser.add_argument("--events", help="append client events to this file")
    parser.add_argument("--timeout", type=float, default=120.0, help="for the final flush")
    parser.add_argument(
        "--hold", action="store_true", help="print 'flushed', wait for a stdin line, then mark"
    )
    args = parser.parse_args(argv)

    accepted = read_record(args.record)
    known = set(accepted)
    fd = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pair = (
        SQLiteStore.pair(args.db, args.client_id, durability=args.durability) if args.db else None
    )
    if pair is not None:
        # Accepted but not yet recorded when the last run was killed: still in the store.
        for _key, value in pair.outgoing.iterate():
            found = SEQ.search(value)
            if found is not None and int(found[1]) not in known:
                known.add(int(found[1]))
                os.write(fd, b"%d\n" % int(found[1]))
    if known != set(range(len(known))):
        missing = sorted(set(range(max(known) + 1)) - known)[:10]
        print(f"accepted messages have a gap: missing {missing}", file=sys.stderr)
        return 3
    start = len(known)
    outgoing = AcceptRecord(pair.outgoing if pair else mqttkit.MemoryStore(), fd, known)
    events_fd = (
        os.open(args.events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if args.events else None
    )
    client = mqttkit.Client(
        url=args.url,
        client_id=args.client_id,
        clean=False,
        keepalive=args.keepalive,
        connect_timeout=args.connect_timeout,
        reconnect_period=0.05,
        reconnect_max=0.5,
        outgoing_store=outgoing,
        incoming_store=pair.incoming if pair else mqttkit.MemoryStore(),
    )
    if events_fd is not None:
        for name in ("connect", "error", "offline", "close", "reconnect"):

            def log(*event_args: Any, _name: str = name) -> None:
                detail = type(event_args[0]).__name__ if _name == "error" and event_args else ""
                line = f"{time.monotonic():.6f} {_name} {detail}\n"
                os.write(events_fd, line.encode())  # type: ignore[arg-type]

            client.on(name, log)
    client.connect()
    print(f"start {start}", flush=True)
    started = time.monotonic()
    for seq in range(start, args.count):
        if args.rate:
            # Pacing the workload (not waiting for anything): message seq leaves at its slot.
            delay = started + (seq - start) / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        qos = 1 + (seq & 1)
        client.publish(f"{args.topic}/q{qos}", payload(seq, qos, args.size), qos=qos)
    if not client.flush(args.timeout):
        print("the flows did not complete within --timeout", file=sys.stderr)
        return 4
    if args.hold:  # the test ends its faults before the end markers go
        print("flushed", flush=True)
        sys.stdin.readline()
    for qos in (1, 2):
        client.publish(f"{args.topic}/q{qos}", b"fault|end|%d|" % qos, qos=qos)
    if not client.flush(args.timeout):
        print("the end markers did not complete within --timeout", file=sys.stderr)
        return 4
    closed = threading.Event()
    client.close(closed.set)
    closed.wait(15)
    if pair is not None:
        pair.close()
    os.close(fd)
    if events_fd is not None:
        os.close(events_fd)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
