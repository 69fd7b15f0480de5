"""The receive path alone: a scripted server streams pre-encoded QoS 0 PUBLISH packets at
line rate to one subscribing client; prints the client process's CPU per message.

    python bench/recv.py [--n 200000] [--clients mqttkit-sync,mqttkit-aio,paho,gmqtt]
    python bench/recv.py --profile mqttkit-sync     # yappi profile of the client (every thread)

No broker is involved: the server (its own process) answers CONNECT and SUBSCRIBE, then writes
all messages as fast as the socket takes them, so the figure is the client's own cost of
framing, decoding and handing a message to the application. ``bench/run.py`` measures the
whole round trip through Mosquitto.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

CLIENTS = ("mqttkit-sync", "mqttkit-inline", "mqttkit-aio", "paho", "gmqtt")
TOPIC = b"bench/recv"


def _publish_frame(seq: int, size: int) -> bytes:
    payload = seq.to_bytes(8, "big") + b"x" * max(0, size - 8)
    body = len(TOPIC).to_bytes(2, "big") + TOPIC + payload
    return b"\x30" + _varint(len(body)) + body


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_packet(conn: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    """One whole packet from ``conn`` (first byte, body); ``buf`` keeps what follows it."""
    deadline = time.monotonic() + 30
    while True:
        if len(buf) >= 2:
            n, shift, i = 0, 0, 1
            while i < len(buf):
                b = buf[i]
                n |= (b & 0x7F) << shift
                i += 1
                if b < 0x80:
                    if len(buf) >= i + n:
                        first, body = buf[0], bytes(buf[i : i + n])
                        del buf[: i + n]
                        return first, body
                    break
                shift += 7
        if time.monotonic() > deadline:
            raise TimeoutError("the client sent no whole packet within 30 s")
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("the client closed the connection")
        buf += chunk


def serve(port_file: str, n: int, size: int, rate: int, chunk: int) -> None:
    """The scripted server: one client, CONNACK, SUBACK, then n messages (all at once, or
    ``chunk`` at a time paced to ``rate`` messages/s); then waits for the client to disconnect."""
    frames = [_publish_frame(i, size) for i in range(n)]
    listener = socket.create_server(("127.0.0.1", 0))
    Path(port_file).write_text(str(listener.getsockname()[1]))
    listener.settimeout(60)
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()
    while True:
        first, body = _read_packet(conn, buf)
        kind = first >> 4
        if kind == 1:  # CONNECT
            conn.sendall(b"\x20\x02\x00\x00")
        elif kind == 8:  # SUBSCRIBE: grant QoS 0 to each filter
            filters = 0
            pos = 2
            while pos < len(body):
                pos += 2 + int.from_bytes(body[pos : pos + 2], "big") + 1
                filters += 1
            conn.sendall(b"\x90" + _varint(2 + filters) + body[:2] + b"\x00" * filters)
            break
        elif kind == 12:  # PINGREQ
            conn.sendall(b"\xd0\x00")
    if rate:
        start = time.monotonic()
        for i in range(0, n, chunk):
            due = start + i / rate
            while time.monotonic() < due:
                pass  # pacing finer than sleep() allows
            conn.sendall(b"".join(frames[i : i + chunk]))
    else:
        conn.sendall(b"".join(frames))
    conn.settimeout(120)
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass
    conn.close()


def run_client(client: str, port: int, n: int, profile: bool) -> dict[str, float]:
    """In this process: connect ``client`` to the server, receive n messages; CPU per message."""
    import clients as c  # bench/clients.py

    argv = [
        "sub",
        client,
        "--url",
        f"mqtt://127.0.0.1:{port}",
        "--n",
        str(n),
        "--qos",
        "0",
        "--topic",
        TOPIC.decode(),
        "--timeout",
        "120",
    ]
    if profile:
        import yappi  # pip install yappi: profiles every thread (the blocking front has three)

        yappi.set_clock_type("cpu")
        yappi.start(builtins=True)
        c.main(argv)
        yappi.stop()
        stats = yappi.get_func_stats()
        stats.sort("tsub")
        columns = {0: ("name", 64), 1: ("ncall", 9), 3: ("tsub", 8), 4: ("ttot", 8)}
        stats.print_all(out=sys.stderr, columns=columns)
        return {}
    c.main(argv)
    return {}


def measure(
    client: str, n: int, size: int, profile: bool, rate: int = 0, chunk: int = 10
) -> dict[str, object]:
    port_file = Path(f"/tmp/mqttkit-recv-{os.getpid()}.port")
    port_file.unlink(missing_ok=True)
    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            str(port_file),
            "--n",
            str(n),
            "--size",
            str(size),
            "--rate",
            str(rate),
            "--chunk",
            str(chunk),
        ]
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the scripted server did not start")
            time.sleep(0.01)
        port = int(port_file.read_text())
        cmd = [sys.executable, __file__, "--client", client, "--port", str(port), "--n", str(n)]
        if profile:
            cmd.append("--profile")
        out = subprocess.run(
            cmd, input="", capture_output=not profile, text=True, timeout=300, check=True
        )
        if profile:
            return {}
        line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
        result: dict[str, object] = json.loads(line)
        return result
    finally:
        server.wait(timeout=30) if server.poll() is None else None
        port_file.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--rate", type=int, default=0, help="messages/s, sent --chunk at a time (0: at once)"
    )
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--profile", nargs="?", const="", default=None)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.serve:
        serve(a.serve, a.n, a.size, a.rate, a.chunk)
        return
    if a.client:
        run_client(a.client, a.port, a.n, a.profile is not None)
        return
    if a.profile:
        measure(a.profile, a.n, a.size, True, a.rate, a.chunk)
        return
    pace = f"{a.chunk} at a time, {a.rate} msg/s" if a.rate else "all at once"
    print(f"{a.n} x {a.size} B at QoS 0 ({pace}), client CPU per message (median of {a.repeats})")
    for client in a.clients.split(","):
        per: list[float] = []
        for _ in range(a.repeats):
            r = measure(client, a.n, a.size, False, a.rate, a.chunk)
            if r["distinct"] != a.n:
                print(f"  {client:14} LOST {a.n - int(r['distinct'])}")  # type: ignore[call-overload]
                break
            per.append(float(r["cpu"]) / a.n * 1e6)  # type: ignore[arg-type]
        else:
            per.sort()
            print(f"  {client:14} {per[len(per) // 2]:6.2f} us/msg  (all: {per})")


if __name__ == "__main__":
    main()
