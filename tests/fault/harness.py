"""Shared machinery of the fault tests: the scale (short for CI, long on demand), child processes
(publisher.py, subscriber.py) started, killed and waited for, record files read as they grow, an
in-process counting subscriber, a resident-memory sampler, and the per-scenario tally and report.

Accepted means that ``publish()`` returned, nothing else: publisher.py records a message right
after its call returns. The tally's *lost* are the accepted messages never delivered; a message
delivered but never recorded (its publisher was killed first) is not an error, and a repeat that
answers a second ``publish()`` of the same message by the application (``republished``) is not
a duplicate.

Scale: ``MQTTKIT_FAULT_SCALE=short`` (the default, what CI runs) or ``long`` (the sizes of issue
5 and RELIABILITY.md). Seed: ``MQTTKIT_FAULT_SEED`` (default 1); every random choice of a
scenario (kill moments, broker downtime, cut intervals) comes from ``random.Random`` seeded
with ``"<seed>:<scenario>"`` and is printed with the result, so a run is reproduced by its seed.

Every wait here polls a condition with a deadline and fails loudly; nothing waits a fixed time
in the hope that something has happened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mqttkit

HERE = Path(__file__).resolve().parent
PUBLISHER = HERE / "publisher.py"
SUBSCRIBER = HERE / "subscriber.py"

#: Peak resident memory allowed for a publisher or subscriber *process* (publisher.py,
#: subscriber.py: the interpreter, mqttkit, sqlite3 and the client's state), in MiB.
CHILD_RSS_LIMIT_MB = 48.0
#: Growth allowed for the test process's resident memory during one scenario (it holds the
#: in-process subscriber, its counts, a proxy or two and their packet records), in MiB.
TEST_RSS_GROWTH_LIMIT_MB = 48.0

_POLL = 0.002  # seconds between two looks at a condition that has no event to wait on


# -- scale -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """Sizes of one run of the suite."""

    name: str
    seed: int
    pub_messages: int
    """Scenario 1: messages published in a tight loop (half QoS 1, half QoS 2), for each
    durability of the SQLiteStore."""
    pub_kills: int
    sub_messages: int
    """Scenario 2: messages the killed subscriber receives (half QoS 1, half QoS 2)."""
    sub_kills: int
    broker_messages: int
    broker_restarts: int
    broker_rate: float
    """Scenario 3: messages/s the publisher sends (the stream spans the restarts)."""
    cut_messages: int
    cut_rate: float
    blackhole_messages: int
    blackhole_rounds: int
    timeout: float
    """pytest-timeout for each scenario, in seconds."""

    @classmethod
    def from_env(cls) -> Scale:
        name = os.environ.get("MQTTKIT_FAULT_SCALE", "short")
        seed = int(os.environ.get("MQTTKIT_FAULT_SEED", "1"))
        if name == "short":
            return cls(
                name,
                seed,
                pub_messages=1000,
                pub_kills=3,
                sub_messages=1000,
                sub_kills=3,
                broker_messages=1000,
                broker_restarts=2,
                broker_rate=1000,
                cut_messages=1000,
                cut_rate=800,
                blackhole_messages=300,
                blackhole_rounds=1,
                timeout=60,
            )
        if name == "long":
            return cls(
                name,
                seed,
                pub_messages=20_000,
                pub_kills=5,
                sub_messages=10_000,
                sub_kills=5,
                broker_messages=10_000,
                broker_restarts=3,
                broker_rate=1000,
                cut_messages=10_000,
                cut_rate=500,
                blackhole_messages=3000,
                blackhole_rounds=3,
                timeout=900,
            )
        raise ValueError(f"MQTTKIT_FAULT_SCALE must be 'short' or 'long', not {name!r}")

    def rng(self, scenario: str) -> random.Random:
        """The scenario's own seeded generator."""
        return random.Random(f"{self.seed}:{scenario}")


SCALE = Scale.from_env()


def moments(rng: random.Random, count: int, total: int) -> list[int]:
    """``count`` sorted progress points in ``0 .. total``: the span from 5 % to 90 % is cut
    into ``count`` equal parts and each point is drawn uniformly in its own part, so the
    faults are random but spread over the whole run."""
    low, high = max(1, total // 20), total - total // 10
    width = (high - low) / count
    return [int(low + width * (i + rng.random())) for i in range(count)]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds, saying what was awaited."""
    deadline = time.monotonic() + timeout
    idle = threading.Event()
    for _ in range(int(timeout / _POLL) + 2):  # each round waits _POLL: bounded by timeout too
        if predicate():
            return
        if time.monotonic() > deadline:
            break
        idle.wait(_POLL)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# -- messages --------------------------------------------------------------------------------------


def qos_of(seq: int) -> int:
    """The QoS publisher.py uses for ``seq``: 1 for even, 2 for odd."""
    return 1 + (seq & 1)


def payload(seq: int, qos: int) -> bytes:
    """The payload publisher.py sends (for publishers in the test process)."""
    return b"fault|%d|%d|" % (seq, qos)


class Record:
    """A growing record file, one line per entry (``<seq>`` from publisher.py, ``<seq> <qos>
    <packet id>`` from subscriber.py), read incrementally as it grows.

    The children write each line with one ``os.write``, so a kill leaves whole lines only; a
    line without its newline yet is kept back until the rest arrives.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[bytes] = []
        self._offset = 0
        self._tail = b""

    def refresh(self) -> int:
        """Read what was appended; return the number of complete lines so far."""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        if data:
            self._offset += len(data)
            parts = (self._tail + data).split(b"\n")
            self._tail = parts.pop()
            self.lines.extend(parts)
        return len(self.lines)

    def seqs(self) -> list[int]:
        """The sequence numbers of the data lines (end markers excluded)."""
        self.refresh()
        return [int(line.split()[0]) for line in self.lines if not line.startswith(b"end")]

    def markers(self) -> set[int]:
        """The QoS of the end markers recorded."""
        self.refresh()
        return {int(line.split()[1]) for line in self.lines if line.startswith(b"end")}


@dataclass(frozen=True)
class StoreEntry:
    """One entry of an outgoing store, decoded enough to say which message and which stage."""

    key: int
    stage: str
    """``queued`` (PUBLISH without a packet id yet), ``sent`` (PUBLISH awaiting PUBACK /
    PUBREC) or ``released`` (PUBREL awaiting PUBCOMP)."""
    packet_id: int
    seq: int | None
    """The message's sequence number (None for a PUBREL, which carries only the packet id,
    and for an end marker)."""


def store_entries(db: Path, name: str) -> list[StoreEntry]:
    """What an outgoing SQLiteStore holds, in key order (read after its process was killed)."""
    from mqttkit.stores import SQLiteStore

    entries = []
    with SQLiteStore(db, name=name) as store:
        for key, value in store.iterate():
            if value[0] >> 4 == 6:
                packet_id = int.from_bytes(value[2:4], "big")
                entries.append(StoreEntry(key, "released", packet_id, None))
                continue
            # PUBLISH: fixed header, Remaining Length (1-4 bytes), topic (2 + n), packet id.
            i = next(i for i in range(1, 5) if not value[i] & 0x80)
            topic_end = i + 3 + int.from_bytes(value[i + 1 : i + 3], "big")
            packet_id = int.from_bytes(value[topic_end : topic_end + 2], "big")
            field = value[topic_end + 2 :].split(b"|")[1]
            seq = int(field) if field.isdigit() else None
            entries.append(StoreEntry(key, "sent" if packet_id else "queued", packet_id, seq))
    return entries


def stages(entries: list[StoreEntry]) -> dict[str, int]:
    """How many entries are at each stage."""
    counts = dict.fromkeys(("queued", "sent", "released"), 0)
    for entry in entries:
        counts[entry.stage] += 1
    return counts


def accepted(record: Record, count: int) -> dict[int, int]:
    """The messages a publisher.py record says were accepted (``publish()`` returned), as
    seq -> QoS, after checking that it is ``0 .. count-1``, each once: a resumed run starts
    from the record's length, so anything else is a defect of the publisher or the harness."""
    seqs = record.seqs()
    assert sorted(seqs) == list(range(count)), (
        f"the record is not 0 .. {count - 1}, each once: {len(seqs)} lines, "
        f"{len(set(seqs))} distinct, the last {seqs[-5:]}"
    )
    return {seq: qos_of(seq) for seq in seqs}


# -- child processes -------------------------------------------------------------------------------


class Child:
    """One run of publisher.py or subscriber.py; stdout and stderr go to files in ``workdir``.

    Always ended by :meth:`kill`, :meth:`wait` or :meth:`close` (the fixture closes leftovers),
    so no process or pipe outlives its test.
    """

    def __init__(self, script: Path, args: list[str], workdir: Path, name: str) -> None:
        self.name = name
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                [sys.executable, str(script), *args],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                cwd=workdir,
            )
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def errors(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_output(self, text: str, timeout: float) -> None:
        """Wait until the child printed ``text`` (fails early if it exited without it)."""

        def printed() -> bool:
            if text in self.output():
                return True
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode} before printing {text!r}:\n"
                    f"{self.errors()}"
                )
            return False

        wait_for(printed, timeout, f"{self.name} to print {text!r}")

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        self.proc.kill()
        self.proc.wait(10)
        self._close_stdin()

    def tell(self, line: str) -> None:
        """Write a line to its stdin."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()

    def quit(self, timeout: float) -> int:
        """Ask it to finish (a line on stdin) and wait; return its exit status."""
        self.tell("quit")
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        """Wait for the child to exit; fail with its stderr after ``timeout`` seconds."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name} did not exit within {timeout} s:\n{self.errors()}"
            ) from None
        self._close_stdin()
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        else:
            self.proc.wait()
            self._close_stdin()

    def _close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()


class Children:
    """Starts children in one work directory; closes every one that is left at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Child] = []

    def start(self, script: Path, args: list[str], name: str) -> Child:
        child = Child(script, args, self.workdir, f"{name}-{len(self.started)}")
        self.started.append(child)
        return child

    def close(self) -> None:
        for child in self.started:
            child.close()


# -- memory ----------------------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` from /proc/<pid>/statm, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


class RssSampler:
    """Samples the resident memory of the watched processes every ``interval`` seconds on a
    thread and keeps each role's peak; the test process itself is the role ``"test"``, whose
    figure is its growth over the start of the sampling."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peaks: dict[str, int] = {}
        self.samples = 0
        self._pids: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._baseline = rss_bytes(os.getpid()) or 0

    def watch(self, role: str, pid: int) -> None:
        """Sample ``pid`` under ``role`` from now on (a restarted process replaces the old)."""
        with self._lock:
            self._pids[role] = pid
        self._sample()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        for _ in range(int(3600 / self.interval)):  # an hour at most; stopped long before
            if self._stop.wait(self.interval):
                return
            self._sample()

    def _sample(self) -> None:
        with self._lock:
            pids = {"test": os.getpid(), **self._pids}
            self.samples += 1
            for role, pid in pids.items():
                rss = rss_bytes(pid)
                if rss is None or rss == 0:  # gone, or a zombie waiting to be reaped
                    continue
                if role == "test":
                    rss = max(0, rss - self._baseline)
                self.peaks[role] = max(self.peaks.get(role, 0), rss)

    def peaks_mb(self) -> dict[str, float]:
        with self._lock:
            return {role: round(value / 2**20, 1) for role, value in self.peaks.items()}

    def check(self) -> None:
        """Assert the stated bounds (module constants) held for every sampled role."""
        for role, mb in self.peaks_mb().items():
            limit = TEST_RSS_GROWTH_LIMIT_MB if role == "test" else CHILD_RSS_LIMIT_MB
            assert mb <= limit, f"{role}: peak resident memory {mb} MiB > bound {limit} MiB"


# -- the in-process subscriber ---------------------------------------------------------------------


class CountingSubscriber:
    """A ``clean=False`` QoS 2 subscriber in the test process: counts deliveries per sequence
    number and notes the end markers and the connection events."""

    def __init__(self, make_client: Callable[..., mqttkit.Client], url: str, topic: str, **kw: Any):
        self.counts: Counter[int] = Counter()
        self.markers: Counter[int] = Counter()
        self.events: list[tuple[float, str, Any]] = []
        self._cond = threading.Condition()
        options: dict[str, Any] = {
            "clean": False,
            "reconnect_period": 0.05,
            "reconnect_max": 0.5,
            **kw,
        }
        self.client = make_client(url=url, connect=False, **options)
        self.client.on("message", self._on_message)
        for name in ("connect", "error", "offline", "close"):
            self.client.on(name, self._listener(name))
        self.client.connect()
        self.wait_event("connect", 1, 10)
        self.client.subscribe(topic, qos=2).result(10)

    def _on_message(self, topic: str, message: bytes) -> None:
        _, seq, _ = message.split(b"|", 2)
        with self._cond:
            if seq == b"end":
                self.markers[int(message.split(b"|")[2])] += 1
            else:
                self.counts[int(seq)] += 1
            self._cond.notify_all()

    def _listener(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            with self._cond:
                self.events.append((time.monotonic(), name, args[0] if args else None))
                self._cond.notify_all()

        return record

    @property
    def unique(self) -> int:
        with self._cond:
            return len(self.counts)

    def count(self, name: str) -> int:
        with self._cond:
            return sum(1 for _, n, _ in self.events if n == name)

    def wait_event(self, name: str, count: int, timeout: float) -> None:
        self._wait(lambda: self.count(name) >= count, timeout, f"{count} x {name!r}")

    def wait_unique(self, count: int, timeout: float) -> None:
        self._wait(lambda: len(self.counts) >= count, timeout, f"{count} distinct messages")

    def wait_markers(self, timeout: float) -> None:
        """Wait for both end markers: everything published before them has been delivered."""
        self._wait(lambda: set(self.markers) == {1, 2}, timeout, "the end markers")

    def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            # Woken by every delivery, and every 50 ms: bounded by both counts, and by timeout.
            for _ in range(10_000_000):
                if predicate():
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.05))
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}; "
                f"{len(self.counts)} distinct messages so far"
            )

    def snapshot(self) -> Counter[int]:
        with self._cond:
            return Counter(self.counts)


# -- tally and report ------------------------------------------------------------------------------


@dataclass
class Result:
    """What one scenario did and what came out of it."""

    scenario: str
    sent: dict[int, int]
    """QoS -> messages the publisher(s) had accepted (each counted once)."""
    received: dict[int, int] = field(default_factory=dict)
    """QoS -> distinct messages delivered."""
    lost: dict[int, int] = field(default_factory=dict)
    """QoS -> accepted messages never delivered."""
    duplicated: dict[int, int] = field(default_factory=dict)
    """QoS -> deliveries beyond the first that the client owes (republished ones excluded)."""
    republished: dict[int, int] = field(default_factory=dict)
    """QoS -> deliveries beyond the first explained by the application publishing the message
    again: a publisher killed before it recorded a message publishes it again when it is
    restarted (see publisher.py). Not a duplicate: each delivery answers its own publish()."""
    unaccepted: int = 0
    """Distinct messages delivered that no publisher recorded as accepted: published, but
    killed before the record's write and not published again. Not an error."""
    faults: dict[str, Any] = field(default_factory=dict)
    """What was done to the system (kills, restarts, cuts...) and the random choices."""
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    scale: str = SCALE.name
    seed: int = SCALE.seed
    lost_examples: list[int] = field(default_factory=list)
    duplicated_examples: list[int] = field(default_factory=list)

    @classmethod
    def tally(
        cls,
        scenario: str,
        sent: dict[int, int],
        counts: Counter[int],
        republished: Counter[int] | None = None,
    ) -> Result:
        """Compare the deliveries ``counts`` (seq -> times) with the accepted messages ``sent``
        (seq -> QoS): lost are the accepted ones never delivered. ``republished`` (seq -> extra
        publish() calls the application made for it) excuses that many deliveries beyond the
        first; every other one counts as duplicated."""
        extra = republished or Counter()
        result = cls(scenario, dict(Counter(sent.values())))
        for qos in (1, 2):
            mine = [seq for seq, q in sent.items() if q == qos]
            result.received[qos] = sum(1 for seq in mine if counts[seq])
            lost = [seq for seq in mine if not counts[seq]]
            result.lost[qos] = len(lost)
            again = {seq: min(extra[seq], counts[seq] - 1) for seq in mine if counts[seq] > 1}
            if republished is not None:
                result.republished[qos] = sum(again.values())
            dups = {seq: counts[seq] - 1 - again[seq] for seq in again}
            result.duplicated[qos] = sum(dups.values())
            result.lost_examples += lost[:10]
            result.duplicated_examples += [seq for seq, d in dups.items() if d][:10]
        result.unaccepted = len(set(counts) - set(sent))
        return result

    def line(self) -> str:
        sent = sum(self.sent.values())
        faults = " ".join(f"{k}={v}" for k, v in self.faults.items() if not k.startswith("_"))
        rss = " ".join(f"{k}={v}MiB" for k, v in self.peak_rss_mb.items())
        return (
            f"[{self.scenario}] scale={self.scale} seed={self.seed} sent={sent} "
            f"(q1 {self.sent.get(1, 0)}, q2 {self.sent.get(2, 0)}) "
            f"received q1={self.received.get(1, 0)} q2={self.received.get(2, 0)} "
            f"lost q1={self.lost.get(1, 0)} q2={self.lost.get(2, 0)} "
            f"duplicated q1={self.duplicated.get(1, 0)} q2={self.duplicated.get(2, 0)} "
            + (
                f"republished q1={self.republished.get(1, 0)} q2={self.republished.get(2, 0)} "
                if self.republished
                else ""
            )
            + (f"unaccepted={self.unaccepted} " if self.unaccepted else "")
            + f"{faults} peak_rss {rss} {self.seconds:.1f}s"
        )

    def check(self) -> None:
        """The pass criteria: nothing accepted lost (QoS 1 and 2); QoS 2 nothing duplicated
        (a republished message, see :attr:`republished`, is not a duplicate)."""
        assert self.lost.get(1, 0) == 0, f"QoS 1 lost: {self.line()} e.g. {self.lost_examples}"
        assert self.lost.get(2, 0) == 0, f"QoS 2 lost: {self.line()} e.g. {self.lost_examples}"
        assert self.duplicated.get(2, 0) == 0, (
            f"QoS 2 duplicated: {self.line()} e.g. {self.duplicated_examples}"
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
