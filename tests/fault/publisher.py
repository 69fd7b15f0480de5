"""The publisher process of the fault tests (a script the tests start, kill and restart).

It publishes messages ``0 .. count-1``, QoS 1 for even and QoS 2 for odd sequence numbers, to
``<topic>/q1`` and ``<topic>/q2``, with the payload ``fault|<seq>|<qos>|`` (padded to
``--size``), one after the other with no wait between them (``--rate`` paces them instead, for
the scenarios whose faults must fall inside a stream of a given length). After the last one it
waits for every flow to complete (with ``--hold`` it then prints ``flushed`` and waits for a
line on stdin), publishes the end markers ``fault|end|1|`` (QoS 1) and ``fault|end|2|`` (QoS 2),
waits for those, closes and prints ``done``. A run killed at any moment is resumed by the next
run with the same arguments.

**Accepted** means what the library promises: a message is accepted when ``publish()`` has
returned (with a store passed by the user, the store holds it by then), and every accepted
message is delivered. Right after ``client.publish(...)`` returns, the message's sequence
number is appended to the ``--record`` file with one ``os.write`` on an ``O_APPEND`` descriptor:
it reaches the OS, so it survives a SIGKILL. Nothing else counts: the store is passed to the
client as it is, and nothing is read back from it.

A SIGKILL can fall between ``publish()`` returning and the record's write, or inside
``publish()``. That message, the one after the last recorded, is not accepted, though the
killed run's store may hold it and the next run's client then sends it again. The next run
resumes from the record's length: it publishes that sequence number again (the application
re-publishing a message that was never accepted), so the subscriber may receive it twice, once
for each ``publish()`` call. The tests count such a repeat as ``republished``, not as a
duplicate (see harness.py). Nothing accepted is published twice; nothing is skipped.

Only mqttkit and the standard library: it runs as ``python tests/fault/publisher.py ...``.
Exit status: 0 done; 3 the record is not ``0 .. n-1`` in whole lines; 4 the flows did not
complete within ``--timeout``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Any

import mqttkit
from mqttkit.stores import SQLiteStore


def read_record(path: str) -> tuple[list[int], bool]:
    """The sequence numbers in a record file, and whether it ends with a whole line."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], True
    lines = data.split(b"\n")
    return [int(line) for line in lines[:-1]], not lines[-1]


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
    parser.add_argument("--db", help="SQLiteStore file (default: the client's own memory store)")
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

    accepted, whole = read_record(args.record)
    if not whole or accepted != list(range(len(accepted))):
        # One os.write per line, in order: a kill cannot leave anything else.
        print(f"the record is not 0 .. n-1 in whole lines: {accepted[-10:]}", file=sys.stderr)
        return 3
    start = len(accepted)
    fd = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pair = (
        SQLiteStore.pair(args.db, args.client_id, durability=args.durability) if args.db else None
    )
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
        outgoing_store=pair.outgoing if pair else None,
        incoming_store=pair.incoming if pair else None,
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
    publish = client.publish
    topics = {qos: f"{args.topic}/q{qos}" for qos in (1, 2)}
    started = time.monotonic()
    for seq in range(start, args.count):
        if args.rate:
            # Pacing the workload (not waiting for anything): message seq leaves at its slot.
            delay = started + (seq - start) / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        qos = 1 + (seq & 1)
        publish(topics[qos], payload(seq, qos, args.size), qos=qos)
        # Returned: accepted. Recorded at once, with one write that reaches the OS.
        os.write(fd, b"%d\n" % seq)
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
