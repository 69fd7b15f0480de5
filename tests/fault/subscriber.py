"""The subscriber process of the fault tests (a script the tests start, kill and restart).

It connects with ``clean=False``, a fixed client id and an SQLiteStore pair for its QoS 2 state,
subscribes to ``--topic`` at QoS 2, prints ``ready``, and from then on appends every delivered
message to the ``--record`` file, one line ``<seq> <qos> <packet id>`` (``end`` for the sequence
number of an end marker), before its handler returns: written to the OS with ``os.write`` (so
it survives a SIGKILL), and with ``--fsync`` also fsynced. The record is what the application
received. It runs until a line (or EOF) arrives on stdin, then closes gracefully and prints
``done``.

Only mqttkit and the standard library: it runs as ``python tests/fault/subscriber.py ...``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

import mqttkit
from mqttkit.stores import SQLiteStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--topic", required=True, help="topic filter, subscribed at QoS 2")
    parser.add_argument("--record", required=True, help="file of delivered messages")
    parser.add_argument("--db", required=True, help="SQLiteStore file")
    parser.add_argument("--durability", default="full", choices=["full", "batched"])
    parser.add_argument("--fsync", action="store_true", help="fsync the record per message")
    args = parser.parse_args(argv)

    fd = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    fsync = args.fsync
    pair = SQLiteStore.pair(args.db, args.client_id, durability=args.durability)
    client = mqttkit.Client(
        url=args.url,
        client_id=args.client_id,
        clean=False,
        reconnect_period=0.05,
        reconnect_max=0.5,
        incoming_store=pair.incoming,
        outgoing_store=pair.outgoing,
    )

    def on_message(topic: str, message: bytes, packet: mqttkit.Publish) -> None:
        # b"fault|<seq>|<qos>|..." -> b"<seq> <qos> <packet id>\n" (seq "end": an end marker).
        _, seq, qos, _ = message.split(b"|", 3)
        os.write(fd, b"%s %s %d\n" % (seq, qos, packet.packet_id or 0))
        if fsync:
            os.fsync(fd)

    connected = threading.Event()
    client.on("message", on_message)
    client.on("connect", lambda connack: connected.set())
    client.connect()
    if not connected.wait(10):
        print("not connected within 10 s", file=sys.stderr)
        return 2
    client.subscribe(args.topic, qos=2).result(10)
    print("ready", flush=True)
    sys.stdin.readline()
    closed = threading.Event()
    client.close(closed.set)
    closed.wait(15)
    pair.close()
    os.close(fd)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
