"""``mqttkit bench`` against a Mosquitto with its stock limits (20 in flight, 1,000 queued per
client): the docs' example loses nothing, a timeout is a timeout, progress shows on a terminal."""

from __future__ import annotations

import os
import pty
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mqttkit.cli.bench import Tally
from mqttkit.testing import MosquittoBroker
from tests.cli.tools import ROOT, TIMEOUT, _env, hp, mqttkit

DOCS = ROOT / "docs" / "cli.md"

#: Mosquitto's defaults (mosquitto.conf(5)): what a broker nobody tuned does.
STOCK = {"max_inflight_messages": 20, "max_queued_messages": 1000}


def docs_examples() -> list[list[str]]:
    """The ``mqttkit bench`` commands of docs/cli.md's examples, as arguments."""
    commands = []
    for line in Path(DOCS).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("mqttkit bench "):
            commands.append(shlex.split(line)[2:])
    assert commands, "docs/cli.md has no `mqttkit bench` example"
    return commands


def on(broker: MosquittoBroker, args: list[str]) -> list[str]:
    """The example's arguments aimed at ``broker`` (its `-h broker` replaced)."""
    assert args[:2] == ["-h", "broker"], args
    return [*hp(broker), *args[2:]]


@pytest.mark.parametrize("args", docs_examples(), ids=" ".join)
def test_the_docs_example_loses_nothing_on_a_stock_mosquitto(
    mosquitto_factory: Callable[..., MosquittoBroker], args: list[str]
) -> None:
    broker = mosquitto_factory(**STOCK)
    done = mqttkit("bench", *on(broker, args), timeout=120)
    assert done.returncode == 0, (done.stdout, done.stderr)
    count = args[args.index("-n") + 1]
    assert re.search(rf"^{count} x 64 B at QoS \d to '.*' \(window 500\): ".encode(), done.stdout)
    assert b"lost 0, duplicated 0" in done.stdout
    assert done.stderr == b""  # no progress when stderr is not a terminal


@pytest.mark.parametrize("qos", ["0", "2"])
def test_every_qos_on_a_stock_mosquitto(
    mosquitto_factory: Callable[..., MosquittoBroker], qos: str
) -> None:
    broker = mosquitto_factory(**STOCK)
    done = mqttkit("bench", *hp(broker), "-n", "5000", "-q", qos, "-s", "200", "-w", "1000")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert f"5000 x 200 B at QoS {qos}".encode() in done.stdout
    assert b"lost 0, duplicated 0" in done.stdout


def test_a_timeout_is_reported_as_a_timeout(mosquitto: MosquittoBroker) -> None:
    done = mqttkit("bench", *hp(mosquitto), "-n", "100000000", "-W", "0.5")
    assert done.returncode == 27
    assert b"timed out after 0.5 s: " in done.stdout
    assert b"lost 0, duplicated 0" in done.stdout  # on their way, not lost
    assert b"not back yet" in done.stdout


def test_progress_on_a_terminal(mosquitto: MosquittoBroker) -> None:
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mqttkit",
                "bench",
                *hp(mosquitto),
                "-n",
                "100000000",
                "-W",
                "1",
            ],
            stdout=subprocess.PIPE,
            stderr=follower,
            env=_env(),
        )
        os.close(follower)
        follower = -1
        out, _ = proc.communicate(timeout=TIMEOUT)
        shown = b""
        for _ in range(10_000):  # bounded: until the terminal has nothing more
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process has gone and the terminal is drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert proc.returncode == 27, out
    assert re.search(
        rb"\r\x1b\[K[\d,]+/100,000,000 back \([\d,]+ published\), [\d,]+ msg/s, "
        rb"lost 0",
        shown,
    ), shown
    assert shown.endswith(b"\r\x1b[K")  # cleared before the summary (on stdout)


def test_tally_counts_overtaken_messages_as_lost_and_repeats_as_duplicates() -> None:
    tally = Tally(5)
    for sequence in (0, 2, 2, 4, 99):
        tally.add(sequence)
    assert (tally.distinct, tally.duplicates, tally.lost, tally.done) == (3, 1, 2, True)
    tally.add(1)  # late, not lost after all
    assert (tally.distinct, tally.lost) == (4, 1)


def test_bad_bench_flags() -> None:
    assert mqttkit("bench", "-s", "4").first_error_line == (
        b"Error: -s: the payload size (at least 8: it carries a sequence number) must be "
        b"between 8 and 268435000, not 4."
    )
    assert mqttkit("bench", "-n", "0").returncode == 1
