"""``mqttkit bench``: messages through a broker and back, counted; throughput and loss.

One client subscribes to a topic, another publishes ``-n`` messages of ``-s`` bytes to it at
``-q``; each payload starts with its sequence number. At most ``-w`` messages are published and
not yet back at any time (default 500), so a broker with stock limits (Mosquitto: 20 in flight
and 1,000 queued per client) never has to drop any: the window, not the broker's queue,
absorbs the difference in speed. On a terminal, stderr shows the progress (received, rate, lost
so far); stdout gets one summary line.

A broker delivers one publisher's messages on a topic in order, so a message that arrives after
a later one has arrived is lost (counted as soon as it is known), and a duplicate is one seen
twice. A run that ``-W`` cuts short is a timeout (status 27), reported with what was still on its
way, not as loss; a run with loss exits with status 1.
"""

from __future__ import annotations

import os
import threading
import time
from typing import IO, Any, Final

from ..protocol.packets import Publish
from .connection import Connection, setup
from .exits import EXIT_TIMEOUT
from .flags import Args, UsageError
from .pub import topic_name

__all__ = ["Tally", "run"]

#: Seconds between two progress lines.
_PROGRESS_EVERY: Final = 0.25
#: The most messages one run may count (the receipt bitmap is count / 8 bytes).
MAX_COUNT: Final = 1_000_000_000


class Tally:
    """What came back: distinct messages, duplicates, the highest sequence number seen."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seen = bytearray((count + 7) // 8)
        self.distinct = 0
        self.duplicates = 0
        self.highest = -1
        self.last_at = 0.0
        self.changed = threading.Condition()

    def add(self, sequence: int) -> None:
        """Count one received message (any thread)."""
        with self.changed:
            if not 0 <= sequence < self.count:
                return  # not one of ours (a stale retained message, another run)
            byte, bit = divmod(sequence, 8)
            if self.seen[byte] >> bit & 1:
                self.duplicates += 1
            else:
                self.seen[byte] |= 1 << bit
                self.distinct += 1
                self.highest = max(self.highest, sequence)
                self.last_at = time.perf_counter()
            self.changed.notify_all()

    @property
    def lost(self) -> int:
        """Messages known lost: overtaken by a later one."""
        return self.highest + 1 - self.distinct

    @property
    def done(self) -> bool:
        """The last message has arrived (every earlier one arrived or is lost)."""
        return self.highest == self.count - 1


def run(a: Args, stderr: Any) -> int:
    """Run the benchmark; the exit status (0, 1 if any message was lost, 27 on timeout).

    Raises:
        UsageError: bad flags.
        MQTTError: a connection failed.
    """
    if a.bench_count > MAX_COUNT:
        raise UsageError(f"-n: at most {MAX_COUNT:,} messages per run.")
    s = setup(a)
    topic = topic_name(a.topic or s.url_topic or f"mqttkit/bench/{os.urandom(4).hex()}")
    count, size, qos, window = a.bench_count, a.size, a.qos, a.window
    progress = a.progress if a.progress is not None else _is_terminal(stderr)
    for warning in s.warnings:
        if not a.quiet:
            print(warning, file=stderr, flush=True)
    tally = Tally(count)
    base_id = s.kwargs.get("client_id") or ""
    subscriber = Connection(a, s, client_id=f"{base_id}-sub" if base_id else "")
    publisher = Connection(
        a,
        s,
        client_id=f"{base_id}-pub" if base_id else "",
        max_queued=max(100_000, window + 10),  # the window bounds the queue; never refused
    )

    def on_message(_topic: str, payload: bytes, message: Publish) -> None:
        tally.add(int.from_bytes(payload[:8], "big"))

    subscriber.client.on("message", on_message)
    filler = b"x" * (size - 8)
    subscriber.open()
    try:
        publisher.open()
        try:
            subscriber.client.subscribe(topic, qos=qos).result(30)
            started = time.perf_counter()
            cpu_started = time.process_time()
            deadline = started + a.bench_timeout
            shown = started
            publish = publisher.client.publish
            published = 0
            timed_out = False
            with tally.changed:
                while published < count:
                    # The window: published but neither back nor overtaken (known lost).
                    while published - (tally.highest + 1) >= window:
                        now = time.perf_counter()
                        if now >= deadline:
                            timed_out = True
                            break
                        if progress and now - shown >= _PROGRESS_EVERY:
                            shown = now
                            _show(stderr, tally, published, now - started)
                        _check(subscriber, publisher)
                        tally.changed.wait(min(_PROGRESS_EVERY, deadline - now))
                    if timed_out:
                        break
                    batch = min(count - published, window - (published - (tally.highest + 1)))
                    tally.changed.release()  # publish without holding the receipts' lock
                    try:
                        for sequence in range(published, published + batch):
                            publish(topic, sequence.to_bytes(8, "big") + filler, qos=qos)
                    finally:
                        tally.changed.acquire()
                    published += batch
                while not tally.done and not timed_out:
                    now = time.perf_counter()
                    if now >= deadline:
                        timed_out = True
                        break
                    if progress and now - shown >= _PROGRESS_EVERY:
                        shown = now
                        _show(stderr, tally, published, now - started)
                    _check(subscriber, publisher)
                    tally.changed.wait(min(_PROGRESS_EVERY, deadline - now))
                elapsed = (tally.last_at or time.perf_counter()) - started
                distinct, duplicates, lost = tally.distinct, tally.duplicates, tally.lost
            cpu = time.process_time() - cpu_started
        finally:
            publisher.close()
    finally:
        subscriber.close()
    if progress:
        stderr.write("\r\x1b[K")
        stderr.flush()
    rate = distinct / elapsed if elapsed > 0 else 0.0
    what = f"{count} x {size} B at QoS {qos} to {topic!r} (window {window})"
    if timed_out:
        missing = count - distinct - lost
        print(
            f"{what}: timed out after {a.bench_timeout:g} s: {distinct:,} received, "
            f"{missing:,} not back yet ({count - published:,} of them never published), "
            f"lost {lost}, duplicated {duplicates}; {rate:,.0f} msg/s until then",
            flush=True,
        )
        return EXIT_TIMEOUT
    print(
        f"{what}: {rate:,.0f} msg/s ({rate * size / 1e6:.1f} MB/s), all back in "
        f"{elapsed:.3f} s; lost {lost}, duplicated {duplicates}; CPU "
        f"{cpu / count * 1e6:.1f} us per message (this process, both clients)",
        flush=True,
    )
    return 1 if lost else 0


def _check(*connections: Connection) -> None:
    for conn in connections:
        if conn.stopped.is_set() and conn.error is not None:
            raise conn.error


def _show(stderr: IO[str], tally: Tally, published: int, elapsed: float) -> None:
    rate = tally.distinct / elapsed if elapsed > 0 else 0.0
    stderr.write(
        f"\r\x1b[K{tally.distinct:,}/{tally.count:,} back ({published:,} published), "
        f"{rate:,.0f} msg/s, lost {tally.lost:,}"
    )
    stderr.flush()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
