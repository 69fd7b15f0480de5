"""Scenario 5: a blackholed link (no RST, no FIN, no data) detected by keepalive and recovered;
the messages published meanwhile arrive after the recovery.

A publisher process and a ``clean=False`` subscriber in the test process are each behind a
proxy; both use ``keepalive=1`` and ``connect_timeout=1``. At seeded progress points (distinct
messages received) both proxies blackhole every connection, new ones too. The publisher goes on
publishing. The test waits until *both* clients have reported ``KeepaliveTimeoutError`` (the
publisher writes its events to a file), checks that each noticed within 1.5 x keepalive (plus
0.5 s of scheduling slack), restores the links and waits for both to reconnect. Every message,
including those published into the blackhole, must then arrive.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

import mqttkit
from mqttkit.testing import MosquittoBroker
from tests.support.proxy import FaultProxy

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

KEEPALIVE = 1
SLACK = 0.5  # seconds of scheduling slack on top of 1.5 x keepalive


def publisher_events(path: Path) -> list[tuple[float, str, str]]:
    """``(monotonic time, event, detail)`` lines written by publisher.py ``--events``."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [(float(t), name, detail) for t, name, detail in (line.split(" ") for line in lines)]


def test_blackholed_link_detected_by_keepalive_and_recovered(
    mosquitto: MosquittoBroker,
    make_client: Callable[..., mqttkit.Client],
    children: Children,
    report: Callable[[Result], None],
    tmp_path: Path,
) -> None:
    rng = SCALE.rng("blackhole")
    n = SCALE.blackhole_messages
    rounds = moments(rng, SCALE.blackhole_rounds, n // 2)  # in the first half: time to recover
    timeout = SCALE.timeout / 2
    record = Record(tmp_path / "accepted")
    events_path = tmp_path / "publisher.events"
    detected: list[dict[str, float]] = []
    during: list[int] = []
    started = time.monotonic()
    with (
        FaultProxy(mosquitto.host, mosquitto.port, parse=False) as pub_proxy,
        FaultProxy(mosquitto.host, mosquitto.port, parse=False) as sub_proxy,
        RssSampler() as rss,
    ):
        subscriber = CountingSubscriber(
            make_client,
            sub_proxy.url,
            "fault/bh/#",
            client_id="fault-bh-sub",
            keepalive=KEEPALIVE,
            connect_timeout=1,
        )
        args = [
            *("--url", pub_proxy.url, "--client-id", "fault-bh-pub", "--topic", "fault/bh"),
            *("--record", str(record.path), "--count", str(n), "--rate", "100"),
            *("--keepalive", str(KEEPALIVE), "--connect-timeout", "1"),
            *("--events", str(events_path)),
        ]
        publisher = children.start(PUBLISHER, args, "publisher")
        rss.watch("publisher", publisher.pid)
        for i, point in enumerate(rounds):
            subscriber.wait_unique(point, timeout)
            sub_errors = subscriber.count("error")
            pub_errors = sum(1 for e in publisher_events(events_path) if e[1] == "error")
            accepted_before = record.refresh()
            start = time.monotonic()
            pub_proxy.blackhole()
            sub_proxy.blackhole()

            def both_noticed(sub_errors: int = sub_errors, pub_errors: int = pub_errors) -> bool:
                pub = [e for e in publisher_events(events_path) if e[1] == "error"]
                return subscriber.count("error") > sub_errors and len(pub) > pub_errors

            wait_for(both_noticed, 10 * KEEPALIVE, f"round {i}: both clients to notice")
            sub_error = [e for e in subscriber.events if e[1] == "error"][sub_errors]
            pub_error = [e for e in publisher_events(events_path) if e[1] == "error"][pub_errors]
            assert isinstance(sub_error[2], mqttkit.KeepaliveTimeoutError), sub_error
            assert pub_error[2] == "KeepaliveTimeoutError", pub_error
            detected.append(
                {
                    "subscriber_s": round(sub_error[0] - start, 3),
                    "publisher_s": round(pub_error[0] - start, 3),
                }
            )
            connects = subscriber.count("connect")
            pub_connects = sum(1 for e in publisher_events(events_path) if e[1] == "connect")
            during.append(record.refresh() - accepted_before)  # published into the blackhole
            restored = time.monotonic()
            pub_proxy.restore()
            sub_proxy.restore()
            subscriber.wait_event("connect", connects + 1, 10 * KEEPALIVE)
            wait_for(
                lambda c=pub_connects: (
                    sum(1 for e in publisher_events(events_path) if e[1] == "connect") > c
                ),
                10 * KEEPALIVE,
                f"round {i}: the publisher to reconnect",
            )
            detected[-1]["recovered_s"] = round(time.monotonic() - restored, 3)
        assert publisher.wait(timeout) == 0, publisher.errors()
        subscriber.wait_markers(timeout)
        wait_for(lambda: record.refresh() >= n, 5, "the whole record")
    sent = accepted(record, n)  # publish() returned
    result = Result.tally("blackhole", sent, subscriber.snapshot())
    result.faults = {
        "blackholes": len(rounds),
        "keepalive_s": KEEPALIVE,
        "max_detect_s": max(max(d["subscriber_s"], d["publisher_s"]) for d in detected),
        "published_during": during,
        "detected": detected,
        "round_points": rounds,
    }
    result.peak_rss_mb = rss.peaks_mb()
    result.seconds = time.monotonic() - started
    report(result)
    result.check()
    rss.check()
    for d in detected:
        for who in ("subscriber_s", "publisher_s"):
            assert d[who] <= 1.5 * KEEPALIVE + SLACK, f"{who[:-2]} noticed after {d[who]} s"
    assert all(during), "nothing was published into a blackhole: the round proves nothing"
