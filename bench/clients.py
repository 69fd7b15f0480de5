"""One benchmark role of one client library, in this process; prints one JSON line.

    python bench/clients.py ROLE CLIENT --url mqtt://127.0.0.1:PORT [--n N --qos Q --size B ...]

ROLE: ``sub`` (subscribe, print READY, count until n messages or timeout), ``pub`` (publish n
messages and wait for the acknowledgements), ``pubcb`` (the "callback and window" shape: at most
``--window`` messages in flight, each publish with a completion callback that frees a slot; done
when every callback has fired, an error in one fails the run), ``rtt`` (sequential QoS 1 round
trips to its own subscription), ``fanin`` (``--clients`` publishing clients in this one
process), ``conn`` (``--n`` idle connections in this one process), ``durpub`` (``pub`` with
``clean=False``, a fixed ``--client-id``, the outgoing/incoming store of ``--store`` and
``--threads`` publishing threads; mqttkit only).

CLIENT: ``mqttkit-sync``, ``mqttkit-inline`` (the blocking front with ``dispatch="inline"``),
``mqttkit-aio``, ``mqttkit-aio-uvloop`` (the asyncio front on uvloop's event loop), ``paho``,
``gmqtt``, ``raw`` (bench/mqttjs/client.js has the same roles for MQTT.js).

Every payload starts with its sequence number (8 bytes, big endian), so the subscriber reports
messages received, distinct, and duplicated; a run that misses messages says so.
Times are ``time.monotonic()`` (one clock for every process on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

SEQ = struct.Struct(">Q")
_unpack_seq = SEQ.unpack_from


def payload_for(i: int, size: int) -> bytes:
    head = SEQ.pack(i)
    return head + b"x" * (size - len(head)) if size > len(head) else head


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def current_rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def emit(result: dict[str, Any]) -> None:
    result.setdefault("peak_rss_kb", peak_rss_kb())
    print(json.dumps(result), flush=True)


def ready(counter: Counter | None = None) -> None:
    """Tell the runner we are subscribed; a ``STOP`` line on stdin then ends the wait early
    (the runner sends it once the publisher is done and a grace period has passed)."""
    print("READY", flush=True)
    if counter is not None:

        def watch() -> None:
            for line in sys.stdin:
                if line.strip() == "STOP":
                    counter.done.set()
                    return

        threading.Thread(target=watch, daemon=True).start()


class Counter:
    """Counts messages by sequence number, notes the first arrival and the one that completed
    the set. One thread calls ``add`` (every client's subscriber delivers on one thread), so no
    lock; per message it costs a counter, a set insert and a length test, the same for every
    client (it is part of each subscriber's CPU figure; a clock read and a lock per message
    were about a microsecond)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen: set[int] = set()
        self.received = 0
        self.first = 0.0
        self.last = 0.0  # when the n-th distinct message arrived; at result() if it never did
        self.done = threading.Event()

    def add(self, payload: bytes) -> None:
        self.received = received = self.received + 1
        if received == 1:
            self.first = time.monotonic()
        seen = self.seen
        seen.add(_unpack_seq(payload)[0])
        if len(seen) >= self.n and not self.last:
            self.last = time.monotonic()
            self.done.set()

    def result(self, cpu_used: float) -> dict[str, Any]:
        if not self.last:
            self.last = time.monotonic()
        return {
            "received": self.received,
            "distinct": len(self.seen),
            "duplicates": self.received - len(self.seen),
            "first": self.first,
            "last": self.last,
            "cpu": cpu_used,
        }


def run_loop(a: argparse.Namespace, main: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run an asyncio role: on asyncio's own loop, or on uvloop's for ``mqttkit-aio-uvloop``
    (uvloop from bench/.uvloop, which run.py installs there: never in the environment the
    tests use, where pproxy would pick it up and fail)."""
    if a.client == "mqttkit-aio-uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 1883


# ---------------------------------------------------------------------------------------------
# mqttkit, blocking front
# ---------------------------------------------------------------------------------------------


def _dispatch(a: argparse.Namespace) -> str:
    # mqttkit-inline: the blocking front with dispatch="inline" (listeners on the loop thread).
    return "inline" if a.client == "mqttkit-inline" else "thread"


def mk_sync_sub(a: argparse.Namespace) -> None:
    import mqttkit

    counter = Counter(a.n)
    client = mqttkit.Client(url=a.url, keepalive=60, dispatch=_dispatch(a))
    client.on("message", lambda topic, message: counter.add(message))
    client.connect()
    client.subscribe(a.topic, qos=a.qos).result(10)
    ready(counter)
    c0 = cpu()
    counter.done.wait(a.timeout)
    c1 = cpu()
    client.close(force=True).wait(5)
    emit(counter.result(c1 - c0))


def mk_sync_pub(a: argparse.Namespace) -> None:
    import mqttkit

    client = mqttkit.Client(url=a.url, keepalive=60, max_queued=a.n + 10, dispatch=_dispatch(a))
    connected = threading.Event()
    client.on("connect", lambda connack: connected.set())
    client.connect()
    connected.wait(10)
    payloads = [payload_for(i, a.size) for i in range(a.n)]
    c0 = cpu()
    start = time.monotonic()
    publish = client.publish
    for p in payloads:
        publish(a.topic, p, qos=a.qos)
    client.flush(a.timeout)  # every flow completed
    end = time.monotonic()
    c1 = cpu()
    client.close().wait(10)
    emit({"start": start, "end": end, "cpu": c1 - c0})


def mk_sync_pubcb(a: argparse.Namespace) -> None:
    """The shape paho users write, with mqttkit's node-style callback: a semaphore keeps at most
    ``--window`` messages in flight, each ``publish(topic, payload, {"qos": q}, callback)``'s
    callback (``err`` first) releases it."""
    import mqttkit

    client = mqttkit.Client(url=a.url, keepalive=60, dispatch=_dispatch(a))
    connected = threading.Event()
    client.on("connect", lambda connack: connected.set())
    client.connect()
    connected.wait(10)
    payloads = [payload_for(i, a.size) for i in range(a.n)]
    window = threading.Semaphore(a.window)
    tally = _Tally(a.n)

    def callback(err: BaseException | None) -> None:
        tally.complete(err)
        window.release()

    options = {"qos": a.qos}
    c0 = cpu()
    start = time.monotonic()
    publish, topic, acquire = client.publish, a.topic, window.acquire
    for p in payloads:
        if not acquire(timeout=a.timeout) or tally.error is not None:
            break
        publish(topic, p, options, callback)
    tally.done.wait(a.timeout)
    end = time.monotonic()
    c1 = cpu()
    client.close().wait(10)
    emit(tally.result(start, end, c1 - c0, a.timeout))


class _Tally:
    """Counts the publish callbacks of ``pubcb`` (any thread); the first error ends the run."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.error: str | None = None
        self.done = threading.Event()
        self.lock = threading.Lock()

    def complete(self, err: BaseException | None) -> None:
        with self.lock:
            if err is not None and self.error is None:
                self.error = f"publish callback reported {err!r}"
                self.done.set()
            self.left -= 1
            if self.left == 0:
                self.done.set()

    def result(self, start: float, end: float, cpu_used: float, timeout: float) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        if self.left:
            return {"error": f"{self.left} callbacks had not fired after {timeout} s"}
        return {"start": start, "end": end, "cpu": cpu_used}


def mk_sync_rtt(a: argparse.Namespace) -> None:
    import mqttkit

    client = mqttkit.Client(url=a.url, keepalive=60, dispatch=_dispatch(a))
    got = threading.Event()
    client.on("message", lambda topic, message: got.set())
    client.connect()
    client.subscribe(a.topic, qos=1).result(10)
    samples = []
    payload = payload_for(0, a.size)
    c0 = cpu()
    for _ in range(a.n):
        got.clear()
        t0 = time.perf_counter()
        client.publish(a.topic, payload, qos=1)
        if not got.wait(5):
            break
        samples.append(time.perf_counter() - t0)
    c1 = cpu()
    client.close(force=True).wait(5)
    emit({"samples": samples, "cpu": c1 - c0})


def mk_sync_fanin(a: argparse.Namespace) -> None:
    import mqttkit

    clients = []
    for _ in range(a.clients):
        client = mqttkit.Client(url=a.url, keepalive=60, dispatch=_dispatch(a))
        connected = threading.Event()
        client.once("connect", lambda *_, e=connected: e.set())  # (connack, server)
        client.connect()
        clients.append((client, connected))
    for _, connected in clients:
        connected.wait(20)
    per = a.n // a.clients
    c0 = cpu()
    start = time.monotonic()
    for i in range(per):
        for k, (client, _) in enumerate(clients):
            client.publish(a.topic, payload_for(k * per + i, a.size), qos=a.qos)
    for client, _ in clients:
        client.flush(a.timeout)
    end = time.monotonic()
    c1 = cpu()
    for client, _ in clients:
        client.close(force=True)
    emit({"start": start, "end": end, "cpu": c1 - c0})


# ---------------------------------------------------------------------------------------------
# mqttkit, asyncio front
# ---------------------------------------------------------------------------------------------


def mk_aio_sub(a: argparse.Namespace) -> None:
    from mqttkit.aio import Client

    async def main() -> dict[str, Any]:
        counter = Counter(a.n)
        async with Client(a.url, keepalive=60) as client:
            await client.subscribe(a.topic, qos=a.qos)
            ready(counter)
            c0 = cpu()

            async def consume() -> None:
                async for message in client.messages():
                    counter.add(message.payload)
                    if counter.done.is_set():
                        return

            task = asyncio.ensure_future(consume())
            stopped = asyncio.ensure_future(asyncio.to_thread(counter.done.wait, a.timeout))
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
            task.cancel()
            c1 = cpu()
            await client.close(force=True)
        return counter.result(c1 - c0)

    emit(run_loop(a, main()))


def mk_aio_pub(a: argparse.Namespace) -> None:
    from mqttkit.aio import Client

    async def main() -> dict[str, Any]:
        payloads = [payload_for(i, a.size) for i in range(a.n)]
        async with Client(a.url, keepalive=60, max_queued=a.n + 10) as client:
            c0 = cpu()
            start = time.monotonic()
            publish = client.publish
            for p in payloads:
                publish(a.topic, p, qos=a.qos)
            await asyncio.wait_for(client.flush(), a.timeout)  # every flow completed
            end = time.monotonic()
            c1 = cpu()
        return {"start": start, "end": end, "cpu": c1 - c0}

    emit(run_loop(a, main()))


def mk_aio_pubcb(a: argparse.Namespace) -> None:
    """``pubcb`` on the asyncio front: an ``asyncio.Semaphore`` window; ``publish()`` returns a
    future, whose done-callback releases it."""
    from mqttkit.aio import Client

    async def main() -> dict[str, Any]:
        payloads = [payload_for(i, a.size) for i in range(a.n)]
        async with Client(a.url, keepalive=60) as client:
            window = asyncio.Semaphore(a.window)
            done = asyncio.Event()
            left = a.n
            errors: list[str] = []

            def on_done(future: asyncio.Future[int]) -> None:
                nonlocal left
                if future.cancelled():
                    errors.append("publish future cancelled")
                elif future.exception() is not None:
                    errors.append(f"publish future failed: {future.exception()!r}")
                left -= 1
                window.release()
                if errors or not left:
                    done.set()

            c0 = cpu()
            start = time.monotonic()
            publish, topic, qos = client.publish, a.topic, a.qos
            for p in payloads:
                await window.acquire()
                if errors:
                    break
                publish(topic, p, qos=qos).add_done_callback(on_done)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(done.wait(), a.timeout)
            end = time.monotonic()
            c1 = cpu()
        if errors:
            return {"error": errors[0]}
        if left:
            return {"error": f"{left} callbacks had not fired after {a.timeout} s"}
        return {"start": start, "end": end, "cpu": c1 - c0}

    emit(run_loop(a, main()))


def mk_aio_rtt(a: argparse.Namespace) -> None:
    from mqttkit.aio import Client

    async def main() -> dict[str, Any]:
        samples = []
        payload = payload_for(0, a.size)
        async with Client(a.url, keepalive=60) as client:
            await client.subscribe(a.topic, qos=1)
            messages = client.messages()
            c0 = cpu()
            for _ in range(a.n):
                t0 = time.perf_counter()
                client.publish(a.topic, payload, qos=1)
                async with asyncio.timeout(5):  # no task per sample, as wait_for() makes
                    await anext(messages)
                samples.append(time.perf_counter() - t0)
            c1 = cpu()
            await messages.aclose()
        return {"samples": samples, "cpu": c1 - c0}

    emit(run_loop(a, main()))


def mk_aio_fanin(a: argparse.Namespace) -> None:
    from mqttkit.aio import Client

    async def main() -> dict[str, Any]:
        clients = [Client(a.url, keepalive=60) for _ in range(a.clients)]
        await asyncio.gather(*(c.connect() for c in clients))
        per = a.n // a.clients
        c0 = cpu()
        start = time.monotonic()
        for i in range(per):
            for k, client in enumerate(clients):
                client.publish(a.topic, payload_for(k * per + i, a.size), qos=a.qos)
        await asyncio.wait_for(asyncio.gather(*(c.flush() for c in clients)), a.timeout)
        end = time.monotonic()
        c1 = cpu()
        await asyncio.gather(*(c.close(force=True) for c in clients))
        return {"start": start, "end": end, "cpu": c1 - c0}

    emit(run_loop(a, main()))


def mk_aio_conn(a: argparse.Namespace) -> None:
    from mqttkit.aio import Client

    async def main() -> dict[str, Any]:
        base = current_rss_kb()
        clients = [Client(a.url, keepalive=600, reconnect_period=0) for _ in range(a.n)]
        c0 = cpu()
        start = time.monotonic()
        sem = asyncio.Semaphore(500)  # bounded concurrent handshakes

        async def one(client: Client) -> None:
            async with sem:
                await client.connect()

        await asyncio.wait_for(asyncio.gather(*(one(c) for c in clients)), a.timeout)
        end = time.monotonic()
        c1 = cpu()
        rss = current_rss_kb()
        connected = sum(1 for c in clients if c.connected)
        await asyncio.gather(*(c.close(force=True) for c in clients))
        return {
            "start": start,
            "end": end,
            "cpu": c1 - c0,
            "connected": connected,
            "rss_per_conn_kb": (rss - base) / max(1, a.n),
        }

    emit(run_loop(a, main()))


# ---------------------------------------------------------------------------------------------
# mqttkit with a durable outgoing store: the dur1-* workloads (role ``durpub``). ``--store
# memory`` is the default MemoryStore, the reference; ``batched`` and ``full`` pass an
# SQLiteStore pair in that durability, in the fresh file ``--store-path`` (the runner makes and
# removes its directory). Every variant, the reference too, uses the fixed ``--client-id`` and
# ``clean=False``, as a durable store requires. ``--threads`` publishing threads each publish
# their share (every ``threads``-th message) in a tight loop of ``publish(topic, payload,
# {"qos": 1})``; then the process waits with ``flush()``. One thread publishes from the main
# thread, as ``pub`` does. The asyncio front has one publisher only (no ``--threads``).
# ---------------------------------------------------------------------------------------------


def _open_stores(a: argparse.Namespace) -> Any:
    """The SQLiteStore pair ``--store`` asks for, or None for the default memory store."""
    if a.store == "memory":
        return None
    from mqttkit.stores import SQLiteStore

    return SQLiteStore.pair(a.store_path, a.client_id, durability=a.store)


def _store_options(pair: Any) -> dict[str, Any]:
    if pair is None:
        return {}
    return {"incoming_store": pair.incoming, "outgoing_store": pair.outgoing}


def _close_stores(pair: Any) -> int | None:
    """Close the stores (after the client); the records the outgoing store still held, 0 once
    every flow completed (None for the memory store)."""
    if pair is None:
        return None
    try:
        return sum(1 for _ in pair.outgoing.iterate())
    finally:
        pair.close()


def mk_sync_durpub(a: argparse.Namespace) -> None:
    import mqttkit

    pair = _open_stores(a)
    client = mqttkit.Client(
        url=a.url,
        client_id=a.client_id,
        clean=False,
        keepalive=60,
        max_queued=a.n + 10,
        dispatch=_dispatch(a),
        **_store_options(pair),
    )
    connected = threading.Event()
    client.on("connect", lambda connack: connected.set())
    client.connect()
    connected.wait(10)
    payloads = [payload_for(i, a.size) for i in range(a.n)]
    options = {"qos": a.qos}
    errors: list[BaseException] = []
    gate = threading.Barrier(a.threads + 1)

    def publish_all(share: list[bytes]) -> None:
        publish, topic = client.publish, a.topic
        try:
            for p in share:
                publish(topic, p, options)
        except Exception as exc:
            errors.append(exc)

    def worker(share: list[bytes]) -> None:
        gate.wait()
        publish_all(share)

    workers = [
        threading.Thread(target=worker, args=(payloads[k :: a.threads],))
        for k in range(a.threads if a.threads > 1 else 0)
    ]
    for t in workers:
        t.start()
    c0 = cpu()
    start = time.monotonic()
    if workers:
        gate.wait()  # every worker starts now
        for t in workers:
            t.join()
    else:
        publish_all(payloads)
    flushed = not errors and client.flush(a.timeout)  # every flow completed
    end = time.monotonic()
    c1 = cpu()
    client.close().wait(10)
    left = _close_stores(pair)
    if errors:
        emit({"error": f"publish raised {errors[0]!r}"})
    elif not flushed:
        emit({"error": f"flush() timed out after {a.timeout} s"})
    else:
        emit({"start": start, "end": end, "cpu": c1 - c0, "store_left": left})


def mk_aio_durpub(a: argparse.Namespace) -> None:
    from mqttkit.aio import Client

    if a.threads != 1:
        emit({"unsupported": True})
        return

    async def main() -> dict[str, Any]:
        pair = _open_stores(a)
        payloads = [payload_for(i, a.size) for i in range(a.n)]
        async with Client(
            a.url,
            client_id=a.client_id,
            clean=False,
            keepalive=60,
            max_queued=a.n + 10,
            **_store_options(pair),
        ) as client:
            c0 = cpu()
            start = time.monotonic()
            publish = client.publish
            for p in payloads:
                publish(a.topic, p, qos=a.qos)
            await asyncio.wait_for(client.flush(), a.timeout)  # every flow completed
            end = time.monotonic()
            c1 = cpu()
        left = _close_stores(pair)
        return {"start": start, "end": end, "cpu": c1 - c0, "store_left": left}

    emit(run_loop(a, main()))


# ---------------------------------------------------------------------------------------------
# paho-mqtt 2.x
# ---------------------------------------------------------------------------------------------


def _paho_client(a: argparse.Namespace) -> Any:
    import paho.mqtt.client as paho

    return paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)


def _paho_connect(client: Any, a: argparse.Namespace) -> None:
    import socket

    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    host, port = host_port(a.url)
    client.connect(host, port, keepalive=60)
    # paho does not disable Nagle's algorithm; without this its round trip is ~44 ms here.
    client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.loop_start()
    connected.wait(10)


def paho_sub(a: argparse.Namespace) -> None:
    counter = Counter(a.n)
    client = _paho_client(a)
    client.on_message = lambda c, u, msg: counter.add(msg.payload)
    _paho_connect(client, a)
    subscribed = threading.Event()
    client.on_subscribe = lambda c, u, mid, rc, p: subscribed.set()
    client.subscribe(a.topic, qos=a.qos)
    subscribed.wait(10)
    ready(counter)
    c0 = cpu()
    counter.done.wait(a.timeout)
    c1 = cpu()
    client.disconnect()
    client.loop_stop()
    emit(counter.result(c1 - c0))


def paho_pub(a: argparse.Namespace) -> None:
    client = _paho_client(a)
    _paho_connect(client, a)
    payloads = [payload_for(i, a.size) for i in range(a.n)]
    c0 = cpu()
    start = time.monotonic()
    infos = [client.publish(a.topic, p, qos=a.qos) for p in payloads]
    for info in infos:
        info.wait_for_publish(a.timeout)
    end = time.monotonic()
    c1 = cpu()
    client.disconnect()
    client.loop_stop()
    emit({"start": start, "end": end, "cpu": c1 - c0})


def paho_pubcb(a: argparse.Namespace) -> None:
    """``pubcb`` for paho: ``on_publish`` releases a ``threading.Semaphore`` window. paho keeps
    at most 20 messages in flight by default (``max_inflight_messages_set``); for QoS 1 it is
    raised to the window, so that the application's window, not paho's, bounds the flow (as for
    the other clients). QoS 2 keeps paho's 20: Mosquitto drops the QoS 2 messages a 3.1.1 client
    sends beyond its own window of 20, and mqttkit keeps 20 too (``max_inflight_qos2``)."""
    import paho.mqtt.client as paho

    client = _paho_client(a)
    if a.qos == 1:
        client.max_inflight_messages_set(a.window)
    window = threading.Semaphore(a.window)
    tally = _Tally(a.n)

    def on_publish(c: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        failed = getattr(reason_code, "is_failure", False)
        tally.complete(RuntimeError(f"reason code {reason_code}") if failed else None)
        window.release()

    client.on_publish = on_publish
    _paho_connect(client, a)
    payloads = [payload_for(i, a.size) for i in range(a.n)]
    c0 = cpu()
    start = time.monotonic()
    publish, topic, qos, acquire = client.publish, a.topic, a.qos, window.acquire
    for p in payloads:
        if not acquire(timeout=a.timeout) or tally.error is not None:
            break
        info = publish(topic, p, qos=qos)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            tally.complete(RuntimeError(f"publish returned {paho.error_string(info.rc)}"))
            break
    tally.done.wait(a.timeout)
    end = time.monotonic()
    c1 = cpu()
    client.disconnect()
    client.loop_stop()
    emit(tally.result(start, end, c1 - c0, a.timeout))


def paho_rtt(a: argparse.Namespace) -> None:
    client = _paho_client(a)
    got = threading.Event()
    client.on_message = lambda c, u, msg: got.set()
    _paho_connect(client, a)
    subscribed = threading.Event()
    client.on_subscribe = lambda c, u, mid, rc, p: subscribed.set()
    client.subscribe(a.topic, qos=1)
    subscribed.wait(10)
    samples = []
    payload = payload_for(0, a.size)
    c0 = cpu()
    for _ in range(a.n):
        got.clear()
        t0 = time.perf_counter()
        client.publish(a.topic, payload, qos=1)
        if not got.wait(5):
            break
        samples.append(time.perf_counter() - t0)
    c1 = cpu()
    client.disconnect()
    client.loop_stop()
    emit({"samples": samples, "cpu": c1 - c0})


def paho_fanin(a: argparse.Namespace) -> None:
    clients = []
    for _ in range(a.clients):
        client = _paho_client(a)
        _paho_connect(client, a)
        clients.append(client)
    per = a.n // a.clients
    c0 = cpu()
    start = time.monotonic()
    infos = []
    for i in range(per):
        for k, client in enumerate(clients):
            infos.append(client.publish(a.topic, payload_for(k * per + i, a.size), qos=a.qos))
    for info in infos:
        info.wait_for_publish(a.timeout)
    end = time.monotonic()
    c1 = cpu()
    for client in clients:
        client.disconnect()
        client.loop_stop()
    emit({"start": start, "end": end, "cpu": c1 - c0})


# ---------------------------------------------------------------------------------------------
# gmqtt 0.8 (asyncio)
# ---------------------------------------------------------------------------------------------


async def _gmqtt_connect(
    a: argparse.Namespace, on_message: Callable[..., Any] | None = None
) -> Any:
    import gmqtt
    from gmqtt.mqtt.constants import MQTTv311

    client = gmqtt.Client(f"gmqtt-{os.getpid()}-{id(a)}-{time.monotonic_ns()}")
    if on_message is not None:
        client.on_message = on_message
    host, port = host_port(a.url)
    await client.connect(host, port, keepalive=60, version=MQTTv311)
    return client


def gmqtt_sub(a: argparse.Namespace) -> None:
    async def main() -> dict[str, Any]:
        counter = Counter(a.n)
        done = asyncio.Event()

        def on_message(client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
            counter.add(payload)
            if counter.done.is_set():
                done.set()
            return 0

        client = await _gmqtt_connect(a, on_message)
        subscribed = asyncio.Event()
        client.on_subscribe = lambda *args: subscribed.set()
        client.subscribe(a.topic, qos=a.qos)
        await asyncio.wait_for(subscribed.wait(), 10)
        ready(counter)
        c0 = cpu()
        stopped = asyncio.ensure_future(asyncio.to_thread(counter.done.wait, a.timeout))
        await asyncio.wait(
            {asyncio.ensure_future(done.wait()), stopped}, return_when=asyncio.FIRST_COMPLETED
        )
        c1 = cpu()
        await client.disconnect()
        return counter.result(c1 - c0)

    emit(asyncio.run(main()))


def gmqtt_pub(a: argparse.Namespace) -> None:
    async def main() -> dict[str, Any]:
        client = await _gmqtt_connect(a)
        payloads = [payload_for(i, a.size) for i in range(a.n)]
        c0 = cpu()
        start = time.monotonic()
        for p in payloads:
            client.publish(a.topic, p, qos=a.qos)
        if a.qos:
            await asyncio.wait_for(client._persistent_storage.wait_empty(), a.timeout)
        else:
            await asyncio.sleep(0)
        end = time.monotonic()
        c1 = cpu()
        await client.disconnect()
        return {"start": start, "end": end, "cpu": c1 - c0}

    emit(asyncio.run(main()))


def gmqtt_rtt(a: argparse.Namespace) -> None:
    async def main() -> dict[str, Any]:
        got = asyncio.Event()

        def on_message(*args: Any) -> int:
            got.set()
            return 0

        client = await _gmqtt_connect(a, on_message)
        subscribed = asyncio.Event()
        client.on_subscribe = lambda *args: subscribed.set()
        client.subscribe(a.topic, qos=1)
        await asyncio.wait_for(subscribed.wait(), 10)
        samples = []
        payload = payload_for(0, a.size)
        c0 = cpu()
        for _ in range(a.n):
            got.clear()
            t0 = time.perf_counter()
            client.publish(a.topic, payload, qos=1)
            async with asyncio.timeout(5):  # as for mqttkit-aio: no task per sample
                await got.wait()
            samples.append(time.perf_counter() - t0)
        c1 = cpu()
        await client.disconnect()
        return {"samples": samples, "cpu": c1 - c0}

    emit(asyncio.run(main()))


def gmqtt_fanin(a: argparse.Namespace) -> None:
    async def main() -> dict[str, Any]:
        clients = [await _gmqtt_connect(a) for _ in range(a.clients)]
        per = a.n // a.clients
        c0 = cpu()
        start = time.monotonic()
        for i in range(per):
            for k, client in enumerate(clients):
                client.publish(a.topic, payload_for(k * per + i, a.size), qos=a.qos)
        if a.qos:
            await asyncio.wait_for(
                asyncio.gather(*(c._persistent_storage.wait_empty() for c in clients)), a.timeout
            )
        end = time.monotonic()
        c1 = cpu()
        await asyncio.gather(*(c.disconnect() for c in clients))
        return {"start": start, "end": end, "cpu": c1 - c0}

    emit(asyncio.run(main()))


def gmqtt_conn(a: argparse.Namespace) -> None:
    async def main() -> dict[str, Any]:
        base = current_rss_kb()
        sem = asyncio.Semaphore(500)
        c0 = cpu()
        start = time.monotonic()

        async def one() -> Any:
            async with sem:
                return await _gmqtt_connect(a)

        clients = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(a.n))), a.timeout)
        end = time.monotonic()
        c1 = cpu()
        rss = current_rss_kb()
        await asyncio.gather(*(c.disconnect() for c in clients))
        return {
            "start": start,
            "end": end,
            "cpu": c1 - c0,
            "connected": len(clients),
            "rss_per_conn_kb": (rss - base) / max(1, a.n),
        }

    emit(asyncio.run(main()))


# ---------------------------------------------------------------------------------------------
# raw: not a client library but the broker's ceiling. Pre-encoded MQTT 3.1.1 packets over a
# plain blocking socket: the publisher sends every PUBLISH in large writes, the subscriber
# reads at most once a millisecond, counts bytes and parses only once all have arrived: the
# clients cost next to nothing, so the broker alone sets the pace. QoS 0, small messages only.
# ---------------------------------------------------------------------------------------------


def _raw_connect(a: argparse.Namespace, client_id: str) -> socket.socket:
    sock = socket.create_connection(host_port(a.url))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack(">H", len(cid)) + cid
    sock.sendall(bytes((0x10, len(body))) + body)
    if sock.recv(4) != b"\x20\x02\x00\x00":
        raise RuntimeError("raw: CONNECT refused")
    return sock


def _raw_publish_packet(topic: bytes, payload: bytes) -> bytes:
    body = struct.pack(">H", len(topic)) + topic + payload
    assert len(body) < 128
    return bytes((0x30, len(body))) + body


def _raw_supports(a: argparse.Namespace) -> bool:
    return a.qos == 0 and len(a.topic) + a.size < 120  # a one-byte Remaining Length


def raw_sub(a: argparse.Namespace) -> None:
    if not _raw_supports(a):
        ready()  # the runner waits for this line before it reports the run as n/a
        emit({"unsupported": True})
        return
    topic = a.topic.encode()
    sock = _raw_connect(a, f"raw-sub-{os.getpid()}")
    body = b"\x00\x01" + struct.pack(">H", len(topic)) + topic + b"\x00"
    sock.sendall(bytes((0x82, len(body))) + body)
    if sock.recv(5)[:1] != b"\x90":
        raise RuntimeError("raw: SUBSCRIBE refused")
    size = len(_raw_publish_packet(topic, payload_for(0, a.size)))
    want = size * a.n
    counter = Counter(a.n)
    ready(counter)
    chunks: list[bytes] = []
    got = 0
    sock.settimeout(0.5)
    c0 = cpu()
    deadline = time.monotonic() + a.timeout
    while got < want and not counter.done.is_set() and time.monotonic() < deadline:
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            continue
        if not data:
            break
        if not chunks:
            counter.first = time.monotonic()
        chunks.append(data)
        got += len(data)
        if len(data) < 65536:
            time.sleep(0.001)  # let the stream accumulate: one read per millisecond at most
    counter.last = time.monotonic()
    c1 = cpu()
    stream = b"".join(chunks)
    head = size - a.size
    for off in range(0, len(stream) - size + 1, size):
        counter.seen.add(SEQ.unpack_from(stream, off + head)[0])
        counter.received += 1
    sock.close()
    first, last = counter.first, counter.last
    result = counter.result(c1 - c0)
    result["first"], result["last"] = first, last
    emit(result)


def raw_pub(a: argparse.Namespace) -> None:
    if not _raw_supports(a):
        emit({"unsupported": True})
        return
    topic = a.topic.encode()
    data = b"".join(_raw_publish_packet(topic, payload_for(i, a.size)) for i in range(a.n))
    sock = _raw_connect(a, f"raw-pub-{os.getpid()}")
    c0 = cpu()
    start = time.monotonic()
    view = memoryview(data)
    for off in range(0, len(data), 1 << 18):
        sock.sendall(view[off : off + (1 << 18)])
    sock.sendall(b"\xe0\x00")  # DISCONNECT after the last PUBLISH: all went to the broker
    end = time.monotonic()
    c1 = cpu()
    sock.close()
    emit({"start": start, "end": end, "cpu": c1 - c0})


ROLES: dict[tuple[str, str], Callable[[argparse.Namespace], None]] = {
    ("sub", "mqttkit-sync"): mk_sync_sub,
    ("pub", "mqttkit-sync"): mk_sync_pub,
    ("pubcb", "mqttkit-sync"): mk_sync_pubcb,
    ("rtt", "mqttkit-sync"): mk_sync_rtt,
    ("fanin", "mqttkit-sync"): mk_sync_fanin,
    ("sub", "mqttkit-inline"): mk_sync_sub,
    ("pub", "mqttkit-inline"): mk_sync_pub,
    ("pubcb", "mqttkit-inline"): mk_sync_pubcb,
    ("rtt", "mqttkit-inline"): mk_sync_rtt,
    ("fanin", "mqttkit-inline"): mk_sync_fanin,
    ("durpub", "mqttkit-sync"): mk_sync_durpub,
    ("durpub", "mqttkit-inline"): mk_sync_durpub,
    ("durpub", "mqttkit-aio"): mk_aio_durpub,
    ("sub", "mqttkit-aio"): mk_aio_sub,
    ("pub", "mqttkit-aio"): mk_aio_pub,
    ("pubcb", "mqttkit-aio"): mk_aio_pubcb,
    ("rtt", "mqttkit-aio"): mk_aio_rtt,
    ("fanin", "mqttkit-aio"): mk_aio_fanin,
    ("conn", "mqttkit-aio"): mk_aio_conn,
    ("durpub", "mqttkit-aio-uvloop"): mk_aio_durpub,
    ("sub", "mqttkit-aio-uvloop"): mk_aio_sub,
    ("pub", "mqttkit-aio-uvloop"): mk_aio_pub,
    ("pubcb", "mqttkit-aio-uvloop"): mk_aio_pubcb,
    ("rtt", "mqttkit-aio-uvloop"): mk_aio_rtt,
    ("fanin", "mqttkit-aio-uvloop"): mk_aio_fanin,
    ("conn", "mqttkit-aio-uvloop"): mk_aio_conn,
    ("sub", "paho"): paho_sub,
    ("pub", "paho"): paho_pub,
    ("pubcb", "paho"): paho_pubcb,
    ("rtt", "paho"): paho_rtt,
    ("fanin", "paho"): paho_fanin,
    ("sub", "gmqtt"): gmqtt_sub,
    ("pub", "gmqtt"): gmqtt_pub,
    ("rtt", "gmqtt"): gmqtt_rtt,
    ("fanin", "gmqtt"): gmqtt_fanin,
    ("conn", "gmqtt"): gmqtt_conn,
    ("sub", "raw"): raw_sub,
    ("pub", "raw"): raw_pub,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=sorted({r for r, _ in ROLES}))
    parser.add_argument("client", choices=sorted({c for _, c in ROLES}))
    parser.add_argument("--url", required=True)
    parser.add_argument("--topic", default="bench/t")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--qos", type=int, default=0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--window", type=int, default=100, help="pubcb: most messages in flight")
    parser.add_argument("--store", choices=("memory", "batched", "full"), default="memory")
    parser.add_argument("--store-path", default=None, help="durpub: the SQLite file to create")
    parser.add_argument("--threads", type=int, default=1, help="durpub: publishing threads")
    parser.add_argument("--client-id", default="mqttkit-bench", help="durpub: the fixed id")
    a = parser.parse_args(argv)
    fn = ROLES.get((a.role, a.client))
    if fn is None:
        emit({"unsupported": True})
        return
    fn(a)


if __name__ == "__main__":
    sys.exit(main())
