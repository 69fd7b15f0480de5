"""Scenario 1: the publisher process SIGKILLed at random moments while it sends QoS 1 and QoS 2
messages with an SQLiteStore (``clean=False``, same client id), restarted each time; the last
run publishes the rest. A ``clean=False`` subscriber in the test process counts deliveries per
sequence number.

Kill moments are driven by progress: kill *i* comes once the publisher has accepted (its store
holds) at least a seeded number of messages, plus a seeded delay of 0-20 ms so that the kill
falls anywhere in the client's work (storing, sending, receiving acknowledgements, completing
flows), not only right after a store write.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import mqttkit
from mqttkit.testing import MosquittoBroker

from .harness import (
    PUBLISHER,
    SCALE,
    Children,
    CountingSubscriber,
    Record,
    Result,
    RssSampler,
    moments,
    qos_of,
    store_stages,
    wait_for,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(SCALE.timeout)]


def test_publisher_killed_at_random_moments(
    mosquitto: MosquittoBroker,
    make_client: Callable[..., mqttkit.Client],
    children: Children,
    report: Callable[[Result], None],
    tmp_path: Path,
) -> None:
    rng = SCALE.rng("publisher-kill")
    n = SCALE.pub_messages
    points = moments(rng, SCALE.pub_kills, n)
    delays = [round(rng.uniform(0, 0.02), 4) for _ in points]
    timeout = SCALE.timeout / 2
    subscriber = CountingSubscriber(
        make_client, mosquitto.url, "fault/pk/#", client_id="fault-pk-sub"
    )
    record = Record(tmp_path / "accepted")
    db = tmp_path / "publisher.db"
    args = [
        *("--url", mosquitto.url, "--client-id", "fault-pk-pub", "--topic", "fault/pk"),
        *("--record", str(record.path), "--count", str(n), "--db", str(db)),
        *("--rate", str(SCALE.pub_rate)),
    ]
    killed_at: list[int] = []
    unfinished: list[dict[str, int]] = []
    pause = threading.Event()  # never set: waits on it are the seeded delays
    started = time.monotonic()
    with RssSampler() as rss:
        for point, delay in zip(points, delays, strict=True):
            child = children.start(PUBLISHER, args, "publisher")
            rss.watch("publisher", child.pid)

            def reached(child: object = child, point: int = point) -> bool:
                assert child.proc.poll() is None, f"publisher exited early:\n{child.errors()}"  # type: ignore[attr-defined]
                return record.refresh() >= point

            wait_for(reached, timeout, f"{point} accepted messages")
            pause.wait(delay)
            child.kill()
            killed_at.append(record.refresh())
            unfinished.append(store_stages(db, "fault-pk-pub/out"))  # for the next run
        last = children.start(PUBLISHER, args, "publisher")
        rss.watch("publisher", last.pid)
        assert last.wait(timeout) == 0, last.errors()
        subscriber.wait_markers(timeout)
    accepted = record.seqs()
    assert sorted(accepted) == list(range(n)), "a message was accepted twice or never"
    result = Result.tally("publisher-kill", {s: qos_of(s) for s in range(n)}, subscriber.snapshot())
    result.faults = {
        "kills": len(points),
        "kill_points": points,
        "kill_delays_s": delays,
        "accepted_at_kill": killed_at,
        "unfinished_at_kill": unfinished,
    }
    result.peak_rss_mb = rss.peaks_mb()
    result.seconds = time.monotonic() - started
    report(result)
    result.check()
    rss.check()
