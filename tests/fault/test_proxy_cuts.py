"""Scenario 4: connections cut every 50 to 500 ms (random, seeded) while a publisher process
sends interleaved QoS 1 and QoS 2 streams to a ``clean=False`` subscriber in the test process.

Both clients are behind proxies, one each, and each proxy cuts on its own seeded schedule
(wait 50-500 ms, cut every connection with RST or FIN, seeded, again): a cut of the publisher's
link exercises the outgoing flows (PUBLISH resent with DUP, PUBREL resent), a cut of the
subscriber's link the incoming ones (the broker resends, PUBREC answered again for a QoS 2
message already delivered), and independent schedules also cut the two in every overlap (the
publisher's resends arriving while the subscriber is away, both away at once). One proxy for
both would cut them only together. The proxies forward raw bytes (``parse=False``): no packet
records, so the test process's memory measures the subscriber, not the proxy's history.
"""

from __future__ import annotations

import random
import threading
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
    wait_for,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(SCALE.timeout)]


class Cutter:
    """Cuts every connection of ``proxy`` every 50-500 ms (seeded) until stopped."""

    def __init__(self, proxy: FaultProxy, rng: random.Random) -> None:
        self.proxy = proxy
        self.rng = rng
        self.cuts = 0  # cut() calls that closed at least one connection
        self.resets = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cutter", daemon=True)

    def __enter__(self) -> Cutter:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        for _ in range(100_000):  # bounded: at least 50 ms each, stopped long before
            if self._stop.wait(self.rng.uniform(0.05, 0.5)):
                return
            reset = self.rng.random() < 0.5
            if self.proxy.cut(reset=reset):
                self.cuts += 1
                self.resets += reset


def test_connections_cut_every_50_to_500_ms(
    mosquitto: MosquittoBroker,
    make_client: Callable[..., mqttkit.Client],
    children: Children,
    report: Callable[[Result], None],
    tmp_path: Path,
) -> None:
    rng = SCALE.rng("proxy-cuts")
    n = SCALE.cut_messages
    timeout = SCALE.timeout / 2
    record = Record(tmp_path / "accepted")
    started = time.monotonic()
    with (
        FaultProxy(mosquitto.host, mosquitto.port, parse=False) as pub_proxy,
        FaultProxy(mosquitto.host, mosquitto.port, parse=False) as sub_proxy,
        RssSampler() as rss,
    ):
        subscriber = CountingSubscriber(
            make_client, sub_proxy.url, "fault/pc/#", client_id="fault-pc-sub"
        )
        args = [
            *("--url", pub_proxy.url, "--client-id", "fault-pc-pub", "--topic", "fault/pc"),
            *("--record", str(record.path), "--count", str(n), "--rate", str(SCALE.cut_rate)),
            "--hold",
        ]
        publisher = children.start(PUBLISHER, args, "publisher")
        rss.watch("publisher", publisher.pid)
        with (
            Cutter(pub_proxy, random.Random(rng.random())) as pub_cutter,
            Cutter(sub_proxy, random.Random(rng.random())) as sub_cutter,
        ):
            # Cutting goes on until every flow of the publisher is complete; the end markers
            # go only after the last cut, so that every repeat a cut causes comes before them.
            publisher.wait_output("flushed", timeout)
        publisher.tell("go")
        assert publisher.wait(timeout) == 0, publisher.errors()
        subscriber.wait_markers(timeout)
        wait_for(lambda: record.refresh() >= n, 5, "the whole record")
    sent = accepted(record, n)  # publish() returned
    result = Result.tally("proxy-cuts", sent, subscriber.snapshot())
    result.faults = {
        "cuts": pub_cutter.cuts + sub_cutter.cuts,
        "publisher_cuts": pub_cutter.cuts,
        "subscriber_cuts": sub_cutter.cuts,
        "with_rst": pub_cutter.resets + sub_cutter.resets,
        "subscriber_reconnects": subscriber.count("connect") - 1,
    }
    result.peak_rss_mb = rss.peaks_mb()
    result.seconds = time.monotonic() - started
    report(result)
    result.check()
    rss.check()
    assert pub_cutter.cuts, "the publisher's link was never cut: the stream was too short"
    assert sub_cutter.cuts, "the subscriber's link was never cut: the stream was too short"
