"""``mqttkit pub|sub|bench``: command-line tools with mosquitto_pub / mosquitto_sub's flags.

    mqttkit sub -h broker -t 'sensors/#' -v
    mqttkit pub -h broker -t sensors/t1 -m 21.5 -q 1
    mqttkit bench -h broker -n 10000 -q 1

Also ``python -m mqttkit ...``. As in Mosquitto's tools, ``-h`` is the host (help is ``--help``),
``-L mqtt://user:pass@host:port/topic`` gives everything in one URL, and the exit status is 0 on
success, 1 on an error (with a message on stderr), 27 when ``sub -W`` timed out.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .options import DEFAULT_PORTS
from .protocol.errors import MQTTError
from .protocol.packets import MQTT_3_1, MQTT_3_1_1, MQTT_5, Publish
from .sync.client import Client

__all__ = ["main"]

#: mosquitto_sub's exit status when ``-W`` ran out (libmosquitto's MOSQ_ERR_TIMEOUT).
EXIT_TIMEOUT = 27

_VERSIONS = {
    "31": MQTT_3_1,
    "mqttv31": MQTT_3_1,
    "311": MQTT_3_1_1,
    "mqttv311": MQTT_3_1_1,
    "5": MQTT_5,
    "mqttv5": MQTT_5,
}


class _Fail(Exception):
    """An error to report on stderr with exit status 1."""


# -- arguments -----------------------------------------------------------------------------------


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("connection (as mosquitto_pub / mosquitto_sub)")
    g.add_argument("-h", "--host", default=None, help="broker host (default localhost)")
    g.add_argument("-p", "--port", type=int, default=None, help="broker port")
    g.add_argument(
        "-L",
        "--url",
        default=None,
        help="mqtt(s)://[user[:password]@]host[:port]/topic, or ws(s)://..., unix:///path",
    )
    g.add_argument("--unix", default=None, metavar="PATH", help="connect to a Unix socket")
    g.add_argument("-u", "--username", default=None)
    g.add_argument("-P", "--pw", default=None, help="password")
    g.add_argument("-i", "--id", default=None, help="client id (default: random)")
    g.add_argument("-I", "--id-prefix", default=None, help="client id = prefix + process id")
    g.add_argument("-k", "--keepalive", type=int, default=60, help="seconds (default 60)")
    g.add_argument(
        "-V",
        "--protocol-version",
        default="311",
        choices=sorted(_VERSIONS),
        help="MQTT version (default 311)",
    )
    g.add_argument(
        "-c",
        "--disable-clean-session",
        action="store_true",
        help="keep the session (and queued QoS 1/2 messages) on the broker",
    )
    g.add_argument("--cafile", default=None, help="CA certificates: turns TLS on")
    g.add_argument("--cert", default=None, help="client certificate (PEM)")
    g.add_argument("--key", default=None, help="client private key (PEM)")
    g.add_argument("--insecure", action="store_true", help="do not verify the server (tests)")
    g.add_argument("--will-topic", default=None)
    g.add_argument("--will-payload", default=None)
    g.add_argument("--will-qos", type=int, default=0)
    g.add_argument("--will-retain", action="store_true")
    g.add_argument("-d", "--debug", action="store_true", help="report progress on stderr")
    g.add_argument("--quiet", action="store_true", help="no error messages")
    g.add_argument("--help", action="help", help="show this help and exit")


def _parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="mqttkit", description="MQTT command-line tools (mqttkit).", add_help=True
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="{pub,sub,bench}")

    pub = commands.add_parser(
        "pub", add_help=False, help="publish messages (mosquitto_pub's flags)"
    )
    _connection_arguments(pub)
    g = pub.add_argument_group("publishing")
    g.add_argument("-t", "--topic", default=None, help="topic to publish to")
    source = g.add_mutually_exclusive_group()
    source.add_argument("-m", "--message", default=None, help="the payload")
    source.add_argument("-f", "--file", default=None, help="send this file as the payload")
    source.add_argument(
        "-l", "--stdin-line", action="store_true", help="one message per line of stdin"
    )
    source.add_argument("-s", "--stdin-file", action="store_true", help="stdin as one message")
    source.add_argument("-n", "--null-message", action="store_true", help="an empty payload")
    g.add_argument("-q", "--qos", type=int, default=0, choices=(0, 1, 2))
    g.add_argument("-r", "--retain", action="store_true")
    g.add_argument("--repeat", type=int, default=1, help="publish the message this many times")
    g.add_argument("--repeat-delay", type=float, default=0.0, help="seconds between repeats")

    sub = commands.add_parser(
        "sub", add_help=False, help="subscribe and print messages (mosquitto_sub's flags)"
    )
    _connection_arguments(sub)
    g = sub.add_argument_group("subscribing")
    g.add_argument("-t", "--topic", action="append", default=[], help="filter (repeatable)")
    g.add_argument("-q", "--qos", type=int, default=0, choices=(0, 1, 2))
    g.add_argument("-C", "--count", type=int, default=0, help="exit after this many messages")
    g.add_argument(
        "-W", "--timeout", type=float, default=0, help="exit (status 27) after this many seconds"
    )
    g.add_argument("-v", "--verbose", action="store_true", help="print 'topic payload'")
    g.add_argument("-N", "--no-eol", action="store_true", help="no newline after each payload")
    g.add_argument("-R", "--no-stale", action="store_true", help="do not print retained messages")
    g.add_argument("--retained-only", action="store_true", help="print only retained messages")
    g.add_argument("-E", "--exit-after-sub", action="store_true", help="exit once subscribed")

    bench = commands.add_parser(
        "bench",
        add_help=False,
        help="publish n messages to yourself through the broker; throughput and loss",
    )
    _connection_arguments(bench)
    g = bench.add_argument_group("benchmark")
    g.add_argument("-t", "--topic", default=None, help="default: mqttkit/bench/<random>")
    g.add_argument("-n", "--count", type=int, default=10_000)
    g.add_argument("-q", "--qos", type=int, default=0, choices=(0, 1, 2))
    g.add_argument("-s", "--size", type=int, default=64, help="payload bytes (at least 8)")
    g.add_argument("-W", "--timeout", type=float, default=60.0)
    return top


def _client_kwargs(a: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    """Client options from the connection flags, and the topic a ``-L`` URL names."""
    kwargs: dict[str, Any] = {
        "keepalive": a.keepalive,
        "clean": not a.disable_clean_session,
        "protocol_version": _VERSIONS[a.protocol_version],
        "reconnect_period": 0,  # a command-line tool reports a lost connection and exits
        "connect_timeout": 10,
    }
    topic = None
    if a.url:
        parts = urlsplit(a.url)
        scheme = parts.scheme.lower()
        if scheme in ("mqtt", "mqtts", "tcp", "ssl", "tls") and parts.path not in ("", "/"):
            topic = parts.path[1:]
            url = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
        else:
            url = a.url
        kwargs["url"] = url
    elif a.unix:
        kwargs["url"] = f"unix://{a.unix}"
    else:
        tls = bool(a.cafile or a.cert or a.insecure)
        host = a.host or "localhost"
        port = a.port or DEFAULT_PORTS["tls" if tls else "tcp"]
        kwargs["url"] = f"{'mqtts' if tls else 'mqtt'}://{_host(host)}:{port}"
    if a.url and (a.host or a.port):
        raise _Fail("give the broker either with -L or with -h/-p, not both")
    if a.username is not None:
        kwargs["username"] = a.username
    if a.pw is not None:
        kwargs["password"] = a.pw
    if a.id and a.id_prefix:
        raise _Fail("-i and -I cannot be used together")
    if a.id:
        kwargs["client_id"] = a.id
    elif a.id_prefix:
        kwargs["client_id"] = f"{a.id_prefix}{os.getpid()}"
    elif a.disable_clean_session:
        raise _Fail("-c needs a client id (-i): a random one is new every time")
    for flag, name in (("cafile", "cafile"), ("cert", "certfile"), ("key", "keyfile")):
        if getattr(a, flag):
            kwargs[name] = getattr(a, flag)
    if a.insecure:
        kwargs["insecure"] = True
    if a.will_topic:
        kwargs["will"] = {
            "topic": a.will_topic,
            "payload": a.will_payload or "",
            "qos": a.will_qos,
            "retain": a.will_retain,
        }
    elif a.will_payload is not None:
        raise _Fail("--will-payload needs --will-topic")
    return kwargs, topic


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


# -- running -------------------------------------------------------------------------------------


class _Session:
    """A connected blocking client for one command, closed by ``with``."""

    def __init__(self, a: argparse.Namespace, kwargs: dict[str, Any]) -> None:
        self.debug = a.debug
        self.client = Client(**kwargs)
        self.error: BaseException | None = None
        self.lost = threading.Event()
        self._connected = threading.Event()
        self.client.on("connect", self._on_connect)
        self.client.on("error", self._on_error)
        self.client.on("close", self._on_close)

    def _on_connect(self, connack: Any) -> None:
        self.log(f"connected to {self.client.options.url} as {self.client.options.client_id!r}")
        self._connected.set()

    def _on_error(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self._connected.set()

    def _on_close(self) -> None:
        self.lost.set()
        self._connected.set()

    def log(self, text: str) -> None:
        if self.debug:
            print(f"mqttkit: {text}", file=sys.stderr, flush=True)

    def __enter__(self) -> _Session:
        self.client.connect()
        if not self._connected.wait(self.client.options.connect_timeout + 5):
            raise _Fail("no answer from the broker")
        if self.error is not None:
            raise _Fail(str(self.error))
        if not self.client.connected:
            raise _Fail("the connection closed before it was accepted")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close().wait(10)


def _payloads(a: argparse.Namespace) -> Iterator[bytes]:
    if a.message is not None:
        message = a.message.encode("utf-8")
        for _ in range(max(1, a.repeat)):
            yield message
    elif a.file is not None:
        try:
            with open(a.file, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise _Fail(f"cannot read {a.file}: {exc.strerror or exc}") from None
        yield data
    elif a.null_message:
        yield b""
    elif a.stdin_file:
        yield sys.stdin.buffer.read()
    elif a.stdin_line:
        for line in sys.stdin.buffer:
            yield line.rstrip(b"\r\n")
    else:
        raise _Fail("give the message: -m MESSAGE, -f FILE, -l, -s or -n")


def _run_pub(a: argparse.Namespace) -> int:
    kwargs, url_topic = _client_kwargs(a)
    topic = a.topic or url_topic
    if not topic:
        raise _Fail("give the topic: -t TOPIC")
    payloads = _payloads(a)
    with _Session(a, kwargs) as s:
        handles = []
        for i, payload in enumerate(payloads):
            if i and a.repeat_delay and a.message is not None:
                time.sleep(a.repeat_delay)
            handles.append(s.client.publish(topic, payload, qos=a.qos, retain=a.retain))
            if a.stdin_line:
                handles[-1].result(30)  # each line goes out as it is read
                handles.clear()
        for handle in handles:
            handle.result(30)
        s.log(f"published {max(1, len(handles))} message(s) to {topic!r}")
    return 0


def _run_sub(a: argparse.Namespace) -> int:
    kwargs, url_topic = _client_kwargs(a)
    topics = a.topic or ([url_topic] if url_topic else [])
    if not topics:
        raise _Fail("give at least one topic: -t FILTER")
    if a.no_stale and a.retained_only:
        raise _Fail("-R and --retained-only cannot be used together")
    out = sys.stdout.buffer
    eol = b"" if a.no_eol else b"\n"
    done = threading.Event()
    printed = 0
    lock = threading.Lock()

    def on_message(topic: str, payload: bytes, packet: Publish) -> None:
        nonlocal printed
        if (a.no_stale and packet.retain) or (a.retained_only and not packet.retain):
            return
        with lock:
            if a.count and printed >= a.count:
                return
            line = (topic.encode("utf-8") + b" " + payload if a.verbose else payload) + eol
            out.write(line)
            out.flush()
            printed += 1
            if a.count and printed >= a.count:
                done.set()

    with _Session(a, kwargs) as s:
        s.client.on("message", on_message)
        granted = s.client.subscribe(dict.fromkeys(topics, a.qos)).result(30)
        refused = [g.topic for g in granted if g.qos >= 0x80]
        if refused:
            raise _Fail(f"the broker refused the subscription to {', '.join(refused)}")
        s.log("subscribed: " + ", ".join(f"{g.topic} (QoS {g.qos})" for g in granted))
        if a.exit_after_sub:
            return 0
        deadline = time.monotonic() + a.timeout if a.timeout else None
        while not done.is_set():
            if s.lost.is_set():
                raise _Fail(f"connection lost: {s.error}" if s.error else "connection closed")
            if deadline is not None and time.monotonic() >= deadline:
                if not a.quiet:
                    print("Timed out", file=sys.stderr, flush=True)
                return EXIT_TIMEOUT
            left = 0.5 if deadline is None else min(0.5, max(0.0, deadline - time.monotonic()))
            done.wait(left)
    return 0


def _run_bench(a: argparse.Namespace) -> int:
    kwargs, url_topic = _client_kwargs(a)
    topic = a.topic or url_topic or f"mqttkit/bench/{os.urandom(4).hex()}"
    if a.size < 8:
        raise _Fail("-s must be at least 8 (each payload carries its sequence number)")
    if a.count < 1:
        raise _Fail("-n must be at least 1")
    seen: set[int] = set()
    received = 0
    all_in = threading.Event()
    lock = threading.Lock()

    def on_message(topic: str, payload: bytes) -> None:
        nonlocal received
        with lock:
            received += 1
            seen.add(int.from_bytes(payload[:8], "big"))
            if len(seen) >= a.count:
                all_in.set()

    kwargs["max_queued"] = a.count + 10
    filler = b"x" * (a.size - 8)
    with _Session(a, kwargs) as s:
        s.client.on("message", on_message)
        s.client.subscribe(topic, qos=a.qos).result(30)
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        publish = s.client.publish
        for i in range(a.count):
            publish(topic, i.to_bytes(8, "big") + filler, qos=a.qos)
        s.client.flush(a.timeout)
        published = time.perf_counter()
        all_in.wait(max(0.0, a.timeout - (published - t0)))
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    lost = a.count - len(seen)
    rate = len(seen) / elapsed if elapsed else 0.0
    print(
        f"{a.count} x {a.size} B at QoS {a.qos} to {topic!r}: "
        f"{rate:,.0f} msg/s ({rate * a.size / 1e6:.1f} MB/s), "
        f"published in {published - t0:.3f} s, all received in {elapsed:.3f} s; "
        f"lost {lost}, duplicated {received - len(seen)}; "
        f"CPU {cpu / max(1, a.count) * 1e6:.1f} us per message (this process, both clients)"
    )
    return 1 if lost else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mqttkit pub|sub|bench`` with ``argv`` (default ``sys.argv[1:]``); the exit status."""
    a = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    run = {"pub": _run_pub, "sub": _run_sub, "bench": _run_bench}[a.command]
    try:
        return run(a)
    except (_Fail, MQTTError, ValueError, OSError) as exc:
        if not a.quiet:
            print(f"Error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
