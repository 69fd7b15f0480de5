"""Scenario 2: the subscriber process SIGKILLed at random moments while it receives QoS 1 and
QoS 2 messages at QoS 2 with ``clean=False`` and an SQLiteStore for its incoming QoS 2 state,
restarted each time. It records every delivered message before its handler returns (written
and fsynced), so the record is what the application received.

The publisher (in the test process, ``clean=False``) publishes everything at once; the broker
queues what the subscriber has not taken yet. Kill moments are driven by progress: kill *i*
comes once the record holds a seeded number of deliveries, plus a seeded delay of 0-20 ms.

A handler cut by the kill. mqttkit stores a QoS 2 message's packet id (its receipt) when the
message's handler has returned, before the next handler runs; the broker resends a message
until it has the PUBREC, which follows the receipt. A kill after the handler wrote the record
line and before the receipt was stored therefore has the message delivered again by the next
run: its handler did not complete, and no client can make the application's record and its own
receipt one atomic write. Such a repeat is not a duplicate delivery, and it is told apart
exactly: it can only be the last line the killed run recorded, a QoS 2 message whose packet id
is not in the incoming store after the kill. It is reported (``interrupted``), at most one per
kill; every other repeat of a QoS 2 message counts as duplicated and fails the test.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

import mqttkit
from mqttkit.stores import SQLiteStore
from mqttkit.testing import MosquittoBroker

from .harness import (
    SCALE,
    SUBSCRIBER,
    Children,
    Record,
    Result,
    RssSampler,
    moments,
    payload,
    qos_of,
    wait_for,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(SCALE.timeout)]


def test_subscriber_killed_at_random_moments(
    mosquitto: MosquittoBroker,
    make_client: Callable[..., mqttkit.Client],
    children: Children,
    report: Callable[[Result], None],
    tmp_path: Path,
) -> None:
    rng = SCALE.rng("subscriber-kill")
    n = SCALE.sub_messages
    points = moments(rng, SCALE.sub_kills, n)
    delays = [round(rng.uniform(0, 0.02), 4) for _ in points]
    timeout = SCALE.timeout / 2
    record = Record(tmp_path / "delivered")
    db = tmp_path / "subscriber.db"
    args = [
        *("--url", mosquitto.url, "--client-id", "fault-sk-sub", "--topic", "fault/sk/#"),
        *("--record", str(record.path), "--db", str(db), "--fsync"),
    ]
    pause = threading.Event()  # never set: waits on it are the seeded delays
    killed_at: list[int] = []
    interrupted: list[int] = []  # see the module docstring
    started = time.monotonic()
    with RssSampler() as rss:
        child = children.start(SUBSCRIBER, args, "subscriber")
        rss.watch("subscriber", child.pid)
        child.wait_output("ready", 15)  # subscribed: the broker keeps what follows for it
        publisher = make_client(url=mosquitto.url, client_id="fault-sk-pub", clean=False)
        for seq in range(n):
            qos = qos_of(seq)
            publisher.publish(f"fault/sk/q{qos}", payload(seq, qos), qos=qos)
        for qos in (1, 2):
            publisher.publish(f"fault/sk/q{qos}", b"fault|end|%d|" % qos, qos=qos)
        run_start = 0  # record lines when the running child started
        for point, delay in zip(points, delays, strict=True):

            def reached(child: object = child, point: int = point) -> bool:
                assert child.proc.poll() is None, f"subscriber exited:\n{child.errors()}"  # type: ignore[attr-defined]
                return record.refresh() >= point

            wait_for(reached, timeout, f"{point} deliveries")
            pause.wait(delay)
            child.kill()
            killed_at.append(record.refresh())
            if len(record.lines) > run_start:
                seq, qos, packet_id = record.lines[-1].split()
                if qos == b"2" and seq != b"end":
                    with SQLiteStore(db, name="fault-sk-sub/in") as incoming:
                        if incoming.get(int(packet_id)) is None:
                            interrupted.append(int(seq))
            run_start = len(record.lines)
            child = children.start(SUBSCRIBER, args, "subscriber")
            rss.watch("subscriber", child.pid)
        wait_for(lambda: record.markers() == {1, 2}, timeout, "the end markers")
        assert publisher.flush(timeout)
        assert child.quit(15) == 0, child.errors()
    counts = Counter(record.seqs())
    reruns = []
    for seq in interrupted:
        if counts[seq] > 1:
            counts[seq] -= 1
            reruns.append(seq)
    # Every publish() above returned: all n messages are accepted.
    result = Result.tally("subscriber-kill", {s: qos_of(s) for s in range(n)}, counts)
    result.faults = {
        "kills": len(points),
        "interrupted": len(reruns),
        "kill_points": points,
        "kill_delays_s": delays,
        "delivered_at_kill": killed_at,
        "interrupted_seqs": reruns,
    }
    result.peak_rss_mb = rss.peaks_mb()
    result.seconds = time.monotonic() - started
    report(result)
    result.check()
    rss.check()
