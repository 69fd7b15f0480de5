"""Scenario 3: the broker (Mosquitto with persistence on) stopped and restarted mid-stream while
a publisher process sends interleaved QoS 1 and QoS 2 streams to a ``clean=False`` subscriber in
the test process.

Restart moments are driven by progress: the first restart comes once the subscriber has a
seeded number of distinct messages (in the first part of the run, see ``moments``), each next
one once it has a seeded 200-600 more: soon enough that the broker is often still catching the
subscriber up, with many flows in flight, when it stops again. The broker is stopped with
SIGTERM (Mosquitto then saves its database: sessions, subscriptions, messages queued and in
flight), stays down for a seeded 50-500 ms (the publisher goes on publishing into its offline
queue) and starts again on the same port from the saved database.

A broker defect, told apart on the wire. Mosquitto 2.0 (2.0.11 here) restores at most
``max_inflight_messages`` (20) outgoing messages of a client as in flight and puts the rest in
its queue whatever their saved state (``persist__client_msg_restore``). When it stops with more
than 20 in flight to the subscriber (PUBREL sent, PUBCOMP not yet received, for some of them),
it resumes the first 20 (PUBREL again) and sends the others again as PUBLISH (DUP set, same
packet id) although it had sent their PUBREL: "MUST NOT re-send the PUBLISH once it has sent the
corresponding PUBREL" (MQTT 3.1.1, 4.3.3). The subscriber
had completed that flow (it received the PUBREL and forgot the id, as it must; its PUBCOMP may
or may not have got out before the connection went) and delivers the message again. The
subscriber's link goes through a proxy that records every packet both ways, so each such resend
is identified exactly on the wire: same packet id and message, DUP set, and the broker's PUBREL
for it before. A repeat of a message the broker re-sent so is reported
(``broker_resent_after_pubrel``: every such resend; ``delivered_again``: the repeats they
explain; ``with_pubcomp``: how many of the resends came after the subscriber's PUBCOMP was on
the wire). Every other repeat of a QoS 2 message counts as duplicated and fails the test.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

import mqttkit
from mqttkit.protocol.packets import PubComp, Publish, PubRel
from mqttkit.testing import MosquittoBroker
from tests.support.proxy import FaultProxy, PacketRecord

from .harness import (
    PUBLISHER,
    SCALE,
    Children,
    CountingSubscriber,
    Record,
    Result,
    RssSampler,
    accepted,
    moments,
    wait_for,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(SCALE.timeout)]


def resent_after_pubrel(records: list[PacketRecord]) -> tuple[Counter[int], Counter[int]]:
    """The QoS 2 PUBLISH the broker sent again (same packet id, same message, DUP set) after it
    had sent their PUBREL, per sequence number: all of them, and those that came after the
    subscriber's PUBCOMP too. See the module docstring."""
    published: dict[int, int] = {}  # packet id -> seq of the last QoS 2 PUBLISH with it
    released: dict[int, int] = {}  # packet id -> seq whose PUBREL the broker sent
    completed: dict[int, int] = {}  # packet id -> seq whose PUBCOMP the subscriber sent
    after_pubrel: Counter[int] = Counter()
    after_pubcomp: Counter[int] = Counter()
    for record in records:  # both directions, in the order the proxy saw them
        packet = record.packet
        if record.direction == "s2c" and isinstance(packet, Publish) and packet.qos == 2:
            packet_id = packet.packet_id or 0
            seq = -1 if b"|end|" in packet.payload else int(packet.payload.split(b"|")[1])
            if packet.dup and released.get(packet_id) == seq:
                after_pubrel[seq] += 1
                if completed.get(packet_id) == seq:
                    after_pubcomp[seq] += 1
            elif published.get(packet_id) != seq:  # the identifier now carries another one
                released.pop(packet_id, None)
                completed.pop(packet_id, None)
            published[packet_id] = seq
        elif record.direction == "s2c" and isinstance(packet, PubRel):
            if packet.packet_id in published:
                released[packet.packet_id] = published[packet.packet_id]
        elif (
            record.direction == "c2s"
            and isinstance(packet, PubComp)
            and packet.packet_id in released
        ):
            completed[packet.packet_id] = released[packet.packet_id]
    return after_pubrel, after_pubcomp


def test_broker_restarted_mid_stream(
    request: pytest.FixtureRequest,
    mosquitto_factory: Callable[..., MosquittoBroker],
    make_client: Callable[..., mqttkit.Client],
    children: Children,
    report: Callable[[Result], None],
    tmp_path: Path,
) -> None:
    rng = SCALE.rng("broker-restart")
    n = SCALE.broker_messages
    points = moments(rng, SCALE.broker_restarts, n)
    downtimes = [round(rng.uniform(0.05, 0.5), 3) for _ in points]
    soon = [round(rng.uniform(200, 600)) for _ in points]
    timeout = SCALE.timeout / 2
    broker = mosquitto_factory(persistence=True)
    sub_proxy = FaultProxy(broker.host, broker.port)  # records what the broker sends
    request.addfinalizer(sub_proxy.close)
    subscriber = CountingSubscriber(
        make_client, sub_proxy.url, "fault/br/#", client_id="fault-br-sub"
    )
    record = Record(tmp_path / "accepted")
    args = [
        *("--url", broker.url, "--client-id", "fault-br-pub", "--topic", "fault/br"),
        *("--record", str(record.path), "--count", str(n), "--rate", str(SCALE.broker_rate)),
    ]
    pause = threading.Event()  # never set: waits on it are the seeded downtimes
    restarted_at: list[int] = []
    started = time.monotonic()
    with RssSampler() as rss:
        publisher = children.start(PUBLISHER, args, "publisher")
        rss.watch("publisher", publisher.pid)
        for i, downtime in enumerate(downtimes):
            # Restarts after the first come soon after the one before (see the docstring).
            point = restarted_at[-1] + soon[i] if i else points[0]
            points[i] = point
            subscriber.wait_unique(point, timeout)
            restarted_at.append(subscriber.unique)
            broker.stop()
            pause.wait(downtime)
            broker.start()
        assert publisher.wait(timeout) == 0, publisher.errors()
        subscriber.wait_markers(timeout)
        wait_for(lambda: record.refresh() >= n, 5, "the whole record")
    sent = accepted(record, n)  # publish() returned
    counts = subscriber.snapshot()
    # The broker kept the subscriber's session through every restart (persistence): a lost
    # session would void its QoS 2 state and change what this scenario tests.
    connacks = [args for _, name, args in subscriber.events if name == "connect"]
    sessions_lost = sum(1 for connack in connacks[1:] if not connack.session_present)
    after_pubrel, after_pubcomp = resent_after_pubrel(sub_proxy.records())
    explained = 0
    for seq, times in after_pubrel.items():
        repeat = min(times, counts[seq] - 1)
        counts[seq] -= repeat
        explained += repeat
    result = Result.tally("broker-restart", sent, counts)
    result.faults = {
        "restarts": len(points),
        "broker_resent_after_pubrel": sum(after_pubrel.values()),
        "delivered_again": explained,
        "with_pubcomp": sum(after_pubcomp.values()),
        "restart_points": points,
        "downtimes_s": downtimes,
        "received_at_restart": restarted_at,
        "subscriber_reconnects": subscriber.count("connect") - 1,
        "sessions_lost": sessions_lost,
    }
    result.peak_rss_mb = rss.peaks_mb()
    result.seconds = time.monotonic() - started
    report(result)
    result.check()
    rss.check()
    assert sessions_lost == 0, "the broker lost the subscriber's session in a restart"
