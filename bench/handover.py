"""What a hand-over between threads costs on this machine: the floor under the blocking
front's round trip (which makes three of them) and paho's (two).

    python bench/handover.py

Prints the median of 2,000 round trips for: a ``threading.Event`` ping-pong between two threads
(two wake-ups), and ``loop.call_soon_threadsafe`` to an asyncio loop running in another thread
answered by an ``Event`` (the caller-to-loop hop and a wake-up back).
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time

N = 2_000


def event_ping_pong() -> float:
    ping, pong = threading.Event(), threading.Event()

    def other() -> None:
        for _ in range(N):
            if not ping.wait(5):
                return
            ping.clear()
            pong.set()

    thread = threading.Thread(target=other)
    thread.start()
    samples = []
    for _ in range(N):
        t0 = time.perf_counter()
        ping.set()
        if not pong.wait(5):
            break
        pong.clear()
        samples.append(time.perf_counter() - t0)
    thread.join(5)
    return statistics.median(samples)


def loop_hop() -> float:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    done = threading.Event()
    samples = []
    try:
        for _ in range(N):
            t0 = time.perf_counter()
            loop.call_soon_threadsafe(done.set)
            if not done.wait(5):
                break
            done.clear()
            samples.append(time.perf_counter() - t0)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    return statistics.median(samples)


def main() -> None:
    print(f"Event ping-pong between two threads:     {event_ping_pong() * 1e6:6.1f} us (p50)")
    print(f"call_soon_threadsafe to a loop, Event back: {loop_hop() * 1e6:6.1f} us (p50)")


if __name__ == "__main__":
    main()
