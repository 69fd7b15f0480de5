"""Microbenchmarks of the sans-IO core alone: no broker, no sockets, CPU time per message.

    python bench/micro.py

These isolate the protocol work (encode, decode, the session's bookkeeping) from the drivers;
``bench/run.py`` measures the whole clients against Mosquitto. Process CPU time, best of 3.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mqttkit.protocol import codec
from mqttkit.protocol import session as s
from mqttkit.protocol.packets import Publish

PAYLOAD = b"x" * 64


def connected(**config: object) -> s.ClientSession:
    session = s.ClientSession(s.SessionConfig(client_id="bench", **config))  # type: ignore[arg-type]
    session.connection_made(0.0)
    session.data_to_send()
    session.receive_data(b"\x20\x02\x00\x00", 0.0)
    session.events_received()
    return session


def publish_qos0(n: int) -> float:
    session = connected()
    t = time.process_time()
    for i in range(n):
        session.publish(s.prepare_publish("bench/t", PAYLOAD, 0, False, None, 4), 1.0, None)
        if i % 100 == 0:
            session.data_to_send()
    return time.process_time() - t


def receive_qos0(n: int) -> float:
    session = connected()
    data = codec.encode_packet(Publish("bench/t", PAYLOAD, 0), 4) * n
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    t = time.process_time()
    for chunk in chunks:
        session.receive_data(chunk, 2.0)
        session.events_received()
    return time.process_time() - t


def qos1_flow(n: int) -> float:
    """Publish n QoS 1 messages behind a window of 20, then feed their PUBACKs in threes."""
    session = connected(max_inflight=20, max_queued=n + 10)
    acks = [b"\x40\x02" + (i % 65535 + 1).to_bytes(2, "big") for i in range(n)]
    groups = [b"".join(acks[i : i + 3]) for i in range(0, n, 3)]
    t = time.process_time()
    for _ in range(n):
        session.publish(s.prepare_publish("bench/t", PAYLOAD, 1, False, None, 4), 1.0, None)
    session.data_to_send()
    for group in groups:
        session.receive_data(group, 2.0)
        session.events_received()
        session.data_to_send()
    return time.process_time() - t


def receive_qos1(n: int) -> float:
    session = connected()
    packets = [
        codec.encode_packet(Publish("bench/t", PAYLOAD, 1, packet_id=i % 65535 + 1), 4)
        for i in range(n)
    ]
    t = time.process_time()
    for packet in packets:
        session.receive_data(packet, 2.0)
        for event in session.events_received():
            session.acknowledge(event.ack, 2.0)  # type: ignore[attr-defined]
        session.data_to_send()
    return time.process_time() - t


def main() -> None:
    cases = [
        ("publish QoS 0", publish_qos0, 100_000),
        ("receive QoS 0", receive_qos0, 100_000),
        ("QoS 1 flow, window 20", qos1_flow, 20_000),
        ("receive QoS 1 + acknowledge", receive_qos1, 20_000),
    ]
    for name, fn, n in cases:
        best = min(fn(n) for _ in range(3))
        print(f"{name:30} {best / n * 1e6:6.2f} us/msg")


if __name__ == "__main__":
    main()
