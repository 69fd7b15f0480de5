"""Scenario 1: the publisher process SIGKILLed at random moments while it publishes QoS 1 and
QoS 2 messages in a tight loop with an SQLiteStore (``clean=False``, same client id), restarted
each time; the last run publishes the rest. Run once per durability of the store (``"full"``,
``"batched"``). A ``clean=False`` subscriber in the test process counts deliveries per sequence
number.

Accepted means that ``publish()`` returned: the publisher records a sequence number right after
its ``publish()`` call returns, and nothing else counts (see publisher.py). Every recorded
message must be delivered (lost: recorded, never delivered) and no QoS 2 message twice.

Kill moments are driven by progress: kill *i* comes once the record holds a seeded number of
messages (and at least one more than when its run started), plus a seeded delay of 0-5 ms, so
that the kill falls anywhere in the client's work (inside ``publish()``, storing, sending,
receiving acknowledgements, completing flows), not only right after a record write. The delay
is short because the loop is tight: 5 ms is a few messages with ``"full"`` (an fsync each) and
a few hundred with ``"batched"``.

The message in hand at a kill. A kill can fall inside ``publish()`` of message *n* (the record's
length at the kill) or after it returned and before its record line: *n* is not accepted, but
the killed run's store may hold it, and then the next run's client sends it again. The next run
resumes from the record, so it publishes *n* again: the application published *n* twice, and it
may be delivered twice, once for each call. Deliveries of *n* beyond the first, at most one per
kill that left it unrecorded, count as ``republished``, not as duplicated. Every other repeat
of a QoS 2 message is a duplicate and fails the test.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
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
    StoreEntry,
    accepted,
    moments,
    qos_of,
    stages,
    store_entries,
    wait_for,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(SCALE.timeout)]


def explain_losses(
    lost: list[int], killed_at: list[int], stores: list[list[StoreEntry]], final: list[StoreEntry]
) -> str:
    """For each lost message: its QoS, the run that accepted it, and where it was in the
    outgoing store after each kill and at the end (the report a loss needs)."""
    lines = []
    for seq in lost:
        run = sum(1 for n in killed_at if n <= seq)
        where = []
        for label, entries in [*((f"kill {i}", e) for i, e in enumerate(stores)), ("end", final)]:
            mine = [e for e in entries if e.seq == seq]
            where.append(
                f"{label}: "
                + (", ".join(f"{e.stage} key={e.key} id={e.packet_id}" for e in mine) or "absent")
            )
        lines.append(f"seq {seq} (QoS {qos_of(seq)}) accepted by run {run}; " + "; ".join(where))
    return "\n".join(lines)


def store_row(entry: StoreEntry) -> tuple[int, str, int, int | None]:
    """A store entry as a JSON-friendly row (key, stage, packet id, seq)."""
    return (entry.key, entry.stage, entry.packet_id, entry.seq)


@pytest.mark.parametrize("durability", ["full", "batched"])
def test_publisher_killed_at_random_moments(
    durability: str,
    mosquitto: MosquittoBroker,
    make_client: Callable[..., mqttkit.Client],
    children: Children,
    report: Callable[[Result], None],
    tmp_path: Path,
) -> None:
    scenario = f"publisher-kill-{durability}"
    rng = SCALE.rng(scenario)
    n = SCALE.pub_messages
    points = moments(rng, SCALE.pub_kills, n)
    delays = [round(rng.uniform(0, 0.005), 4) for _ in points]
    timeout = SCALE.timeout / 2
    subscriber = CountingSubscriber(
        make_client, mosquitto.url, "fault/pk/#", client_id="fault-pk-sub"
    )
    record = Record(tmp_path / "accepted")
    db = tmp_path / "publisher.db"
    args = [
        *("--url", mosquitto.url, "--client-id", "fault-pk-pub", "--topic", "fault/pk"),
        *("--record", str(record.path), "--count", str(n), "--db", str(db)),
        *("--durability", durability),
    ]
    killed_at: list[int] = []
    stores: list[list[StoreEntry]] = []  # the outgoing store after each kill
    pause = threading.Event()  # never set: waits on it are the seeded delays
    started = time.monotonic()
    with RssSampler() as rss:
        for i, delay in enumerate(delays):
            # A run that starts past its point still publishes one message before its kill.
            point = points[i] = max(points[i], record.refresh() + 1)
            child = children.start(PUBLISHER, args, "publisher")
            rss.watch("publisher", child.pid)

            def reached(child: object = child, point: int = point) -> bool:
                assert child.proc.poll() is None, f"publisher exited early:\n{child.errors()}"  # type: ignore[attr-defined]
                return record.refresh() >= point

            wait_for(reached, timeout, f"{point} accepted messages")
            pause.wait(delay)
            child.kill()
            killed_at.append(record.refresh())
            stores.append(store_entries(db, "fault-pk-pub/out"))  # for the next run
        last = children.start(PUBLISHER, args, "publisher")
        rss.watch("publisher", last.pid)
        assert last.wait(timeout) == 0, last.errors()
        subscriber.wait_markers(timeout)
    final = store_entries(db, "fault-pk-pub/out")
    sent = accepted(record, n)
    # The message in hand at each kill is published again by the next run (the docstring).
    republished = Counter(at for at in killed_at if at < n)
    counts = subscriber.snapshot()
    result = Result.tally(scenario, sent, counts, republished)
    result.faults = {
        "durability": durability,
        "kills": len(points),
        "kill_points": points,
        "kill_delays_s": delays,
        "accepted_at_kill": killed_at,
        # The message in hand at each kill: where the killed run's store had it, if anywhere.
        "unrecorded_in_store": [
            next((e.stage for e in entries if e.seq == at), None)
            for at, entries in zip(killed_at, stores, strict=True)
        ],
        "unfinished_at_kill": [stages(entries) for entries in stores],
        "left_in_store": len(final),
        "_store_at_kill": [[store_row(e) for e in entries] for entries in stores],
    }
    result.peak_rss_mb = rss.peaks_mb()
    result.seconds = time.monotonic() - started
    report(result)
    lost = sorted(seq for seq in sent if not counts[seq])
    if lost:
        print(f"\nlost in {scenario}:\n{explain_losses(lost, killed_at, stores, final)}")
    result.check()
    rss.check()
    assert not final, f"the outgoing store was left with {stages(final)} after the last run"
