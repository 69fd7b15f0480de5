"""Bytes on the wire with and without automatic Topic Aliases (``auto_topic_alias``, MQTT 5).

    python bench/topic_alias.py              # both parts: about 10 seconds
    python bench/topic_alias.py --policies   # only the policy table (no broker)

1. **Against Mosquitto** (its ``max_topic_alias`` default: 10): an asyncio client publishes
   10,000 QoS 0 messages (16-byte payloads) round robin on 10 topics of 60 bytes, once with
   ``auto_topic_alias=False`` and once with ``True``, through a counting TCP proxy in this
   process: the bytes the client wrote (CONNECT to DISCONNECT) are counted as they pass. A
   second client, subscribed to the topics, must receive every message on the topic its
   payload names, or the run fails.
2. **Replacement policies**, on the sans-IO session alone (its output bytes, no broker):
   the same 10,000 messages under workloads that fit the broker's 10 aliases and workloads that
   do not, for no aliases, plain LRU, "the first 10 topics keep their alias", and mqttkit's
   "least recently used, once idle" (``mqttkit.protocol.aliases``), whose idle period the
   table also varies. Only the PUBLISH bytes count (the handshake is the same for all).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mqttkit.aio import Client
from mqttkit.protocol import aliases, flows
from mqttkit.protocol import session as s
from mqttkit.protocol.codec import encode_packet
from mqttkit.protocol.packets import ConnAck, Properties
from mqttkit.testing import MosquittoBroker

N = 10_000
MAXIMUM = 10  # Mosquitto's max_topic_alias default
PAYLOAD_BYTES = 16


def long_topic(i: int) -> str:
    """A 60-byte topic name, distinct per ``i``."""
    topic = f"factory/site-a/line-3/station-{i:06d}/conveyor-7/motor/temp-c"
    assert len(topic) == 60, len(topic)
    return topic


def payload(i: int, topic: int) -> bytes:
    """16 bytes naming the message and its topic, so the subscriber can check both."""
    return f"{i:08d}:{topic:07d}".encode()


# -- 1. against Mosquitto, through a counting proxy ---------------------------------------------


class CountingProxy:
    """Forward 127.0.0.1:<port> to the broker; count the bytes each client writes upstream."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.upstream = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            try:
                while data := await src.read(65536):
                    if count:
                        self.upstream += len(data)
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def one_run(broker: MosquittoBroker, auto: bool) -> tuple[int, float]:
    """Publish N messages (auto_topic_alias ``auto``); the bytes written and the seconds."""
    proxy = CountingProxy((broker.host, broker.port))
    await proxy.start()
    topics = [long_topic(i) for i in range(MAXIMUM)]
    async with Client(broker.url, protocol_version=5, max_buffered=2 * N) as sub:
        await sub.subscribe("factory/#", qos=0)
        pub = Client(f"mqtt://127.0.0.1:{proxy.port}", protocol_version=5, auto_topic_alias=auto)
        started = time.perf_counter()
        async with pub:
            for i in range(N):
                pub.publish(topics[i % MAXIMUM], payload(i, i % MAXIMUM))
            await pub.flush()
        elapsed = time.perf_counter() - started
        received = 0
        async with asyncio.timeout(30):
            async for message in sub.messages():
                index, topic = (int(x) for x in message.payload.split(b":"))
                assert index == received, f"message {index} arrived as number {received}"
                assert message.topic == topics[topic], (message.topic, topic)
                received += 1
                if received == N:
                    break
    await proxy.close()
    return proxy.upstream, elapsed


async def against_mosquitto() -> None:
    with MosquittoBroker() as broker:
        print(
            f"{N:,} QoS 0 publishes, {PAYLOAD_BYTES}-byte payloads, round robin on {MAXIMUM} "
            f"topics of 60 bytes, MQTT 5, Mosquitto {MAXIMUM} aliases; bytes the client "
            "wrote (CONNECT to DISCONNECT), all received on the right topics:"
        )
        results = {}
        for auto in (False, True):
            results[auto] = await one_run(broker, auto)
        base = results[False][0]
        for auto, (written, elapsed) in results.items():
            print(
                f"  auto_topic_alias={auto!s:5}  {written:>9,} bytes  {written / N:6.1f} B/msg  "
                f"{written / base:5.3f}x  ({elapsed:.2f} s)"
            )


# -- 2. replacement policies on the sans-IO session ---------------------------------------------


def rr(count: int) -> Iterator[int]:
    """Round robin over ``count`` topics."""
    for i in range(N):
        yield i % count


def shift() -> Iterator[int]:
    """10 topics for the first half, 10 others for the second."""
    for i in range(N):
        yield i % 10 + (10 if i >= N // 2 else 0)


def zipf(topics: int, exponent: float = 1.2) -> Iterator[int]:
    """A skewed choice among ``topics`` (fixed seed: the same sequence every run)."""
    rng = random.Random(14)
    weights = [1 / (k + 1) ** exponent for k in range(topics)]
    yield from rng.choices(range(topics), weights, k=N)


def hot_and_new() -> Iterator[int]:
    """90 % on 10 hot topics in turn, 10 % each on a topic never seen before (a device id)."""
    rng = random.Random(14)
    fresh = 1000
    for i in range(N):
        if rng.random() < 0.1:
            fresh += 1
            yield fresh
        else:
            yield i % 10


WORKLOADS: dict[str, Callable[[], Iterator[int]]] = {
    "10 topics, round robin": lambda: rr(10),
    "11 topics, round robin": lambda: rr(11),
    "20 topics, round robin": lambda: rr(20),
    "150 topics, round robin": lambda: rr(150),
    "10 topics, then 10 others": shift,
    "100 topics, Zipf 1.2": lambda: zipf(100),
    "1,000 topics, Zipf 1.2": lambda: zipf(1000),
    "10 hot + 10 % new topics": hot_and_new,
}

#: Policy name -> idle factor of AutoAliases (None: auto_topic_alias off).
POLICIES: dict[str, int | None] = {
    "no aliases": None,
    "plain LRU": 0,
    "first 10 keep": 10**12,
    "LRU once idle x10": 10,
    "LRU once idle x100": 100,
    f"LRU once idle x{aliases.IDLE_FACTOR} (mqttkit)": aliases.IDLE_FACTOR,
}


def publish_bytes(workload: Callable[[], Iterator[int]], idle: int | None) -> int:
    """The PUBLISH bytes the session writes for ``workload`` under policy ``idle``."""
    original = flows.AutoAliases
    if idle is not None:
        flows.AutoAliases = functools.partial(  # type: ignore[misc]
            aliases.AutoAliases, idle_factor=idle
        )
    try:
        config = s.SessionConfig(
            client_id="bench", protocol_level=5, auto_topic_alias=idle is not None
        )
        session = s.ClientSession(config)
        session.connection_made(0.0)
        session.data_to_send()
        connack = ConnAck(False, 0, Properties(topic_alias_maximum=MAXIMUM))
        session.receive_data(encode_packet(connack, 5), 0.0)
        session.events_received()
        written = 0
        for i, topic in enumerate(workload()):
            request = s.prepare_publish(long_topic(topic), payload(i, topic), 0, False, None, 5)
            session.publish(request, 1.0)
            if i % 100 == 99:
                written += len(session.data_to_send())
        return written + len(session.data_to_send())
    finally:
        flows.AutoAliases = original  # type: ignore[misc]


def policies() -> None:
    print(
        f"\nPUBLISH bytes for {N:,} messages ({PAYLOAD_BYTES}-byte payloads, 60-byte topics), "
        f"broker maximum {MAXIMUM} aliases, by replacement policy (x: vs no aliases):"
    )
    names = list(POLICIES)
    print("| workload | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for workload, make in WORKLOADS.items():
        base = publish_bytes(make, None)
        cells = []
        for name in names:
            written = publish_bytes(make, POLICIES[name])
            cells.append(f"{written:,} ({written / base:.3f}x)")
        print(f"| {workload} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policies", action="store_true", help="only the policy table")
    args = parser.parse_args()
    if not args.policies:
        asyncio.run(against_mosquitto())
    policies()


if __name__ == "__main__":
    main()
