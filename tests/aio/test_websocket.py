"""MQTT over WebSocket (``ws://``, ``wss://``): round trips through Mosquitto's WebSocket
listeners from both fronts, and the framing rules against a scripted WebSocket server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import socket
import struct
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

import mqttkit
from mqttkit.aio import Client
from mqttkit.aio.websocket import Handshake, WebSocketAdapter
from mqttkit.protocol.codec import PacketBuffer, decode_packet, encode_packet
from mqttkit.protocol.packets import MQTT_3_1_1, ConnAck, Connect, Publish
from mqttkit.testing import MosquittoBroker, TLSFiles, free_port

TIMEOUT = 5.0


def run(coro, timeout: float = 20.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# -- the scripted server's side of RFC 6455 (the client's is wsproto's) ---------------------------


def accept_key(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` a server answers to ``Sec-WebSocket-Key: key``."""
    guid = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    return base64.b64encode(hashlib.sha1(key + guid, usedforsecurity=False).digest())


def mask(data: bytes, key: bytes) -> bytes:
    """``data`` XORed with the 4-byte ``key`` repeated (RFC 6455 section 5.3)."""
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def test_the_scripted_servers_accept_key_is_the_rfc_example() -> None:
    # RFC 6455 section 1.3.
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_ws_urls_parse_with_their_default_ports_and_path() -> None:
    options = mqttkit.Client(url="ws://broker.example").options
    assert (options.transport, options.port, options.path) == ("ws", 80, None)
    options = mqttkit.Client(url="wss://broker.example:8443/custom/mqtt").options
    assert (options.transport, options.port, options.path) == ("wss", 8443, "/custom/mqtt")


# -- through Mosquitto ------------------------------------------------------------------------


def test_round_trip_over_ws_at_each_qos(mosquitto_factory: Callable[..., MosquittoBroker]) -> None:
    broker = mosquitto_factory(websockets=True)

    async def main() -> None:
        async with Client(broker.ws_url + "/mqtt") as client:
            await client.subscribe("ws/#", qos=2)
            big = bytes(range(256)) * 800  # 200 KB: many frames, and a 64-bit length
            for qos in (0, 1, 2):
                await client.publish(f"ws/{qos}", b"m%d" % qos, qos=qos)
            await client.publish("ws/big", big, qos=1)
            got = {}
            async for message in client.messages():
                got[message.topic] = (message.payload, message.qos)
                if len(got) == 4:
                    break
            assert got == {
                "ws/0": (b"m0", 0),
                "ws/1": (b"m1", 1),
                "ws/2": (b"m2", 2),
                "ws/big": (big, 1),
            }

    run(main())


def test_seed_api_over_ws(mosquitto_factory: Callable[..., MosquittoBroker]) -> None:
    broker = mosquitto_factory(websockets=True)
    client = mqttkit.connect(broker.ws_url, keepalive=10)
    got = []
    done = threading.Event()
    try:
        client.on("connect", lambda connack: client.subscribe("seed/ws", qos=1))
        client.subscribe("seed/ws", qos=1).result(TIMEOUT)
        client.on("message", lambda topic, message: (got.append((topic, message)), done.set()))
        client.publish("seed/ws", "Hello mqtt", qos=1).result(TIMEOUT)
        assert done.wait(TIMEOUT)
        assert got[0] == ("seed/ws", b"Hello mqtt")
    finally:
        client.close().wait(TIMEOUT)


def test_round_trip_over_wss_verified(
    mosquitto_factory: Callable[..., MosquittoBroker],
    tls_files: tuple[trustme.CA, TLSFiles, Path],
) -> None:
    _, files, _ = tls_files
    broker = mosquitto_factory(websockets=True, tls=files)

    async def main() -> None:
        async with Client(broker.wss_url, cafile=str(files.cafile)) as client:
            await client.subscribe("wss/t")
            await client.publish("wss/t", "secret", qos=1)
            async for message in client.messages():
                assert message.payload == b"secret"
                break
        # Without the test CA the certificate is not trusted: a TLS error, not a hang.
        with pytest.raises(mqttkit.TLSError):
            await Client(broker.wss_url, reconnect_period=0, connect_timeout=5).connect()

    run(main())


# -- against a scripted WebSocket server ----------------------------------------------------------


class WSServer:
    """One connection's server side of RFC 6455, on a thread of the test (blocking sockets)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(TIMEOUT)
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None
        self.buf = b""

    def accept(self) -> dict[str, str]:
        """Accept and read the HTTP request; returns its headers (lower-case names)."""
        if self.conn is not None:
            self.conn.close()  # the previous connection
        self.buf = b""
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(TIMEOUT)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {"request-line": lines[0]}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            # A repeated header's values, comma-separated (RFC 9110 section 5.3).
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return headers

    def answer(
        self, headers: dict[str, str], *, accept: bytes | None = None, protocol: str = "mqtt"
    ) -> None:
        key = headers["sec-websocket-key"].encode()
        self.send_raw(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + (accept or accept_key(key)) + b"\r\n"
            b"Sec-WebSocket-Protocol: " + protocol.encode() + b"\r\n\r\n"
        )

    def send_raw(self, data: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(data)

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        n = len(payload)
        first = (0x80 if fin else 0) | opcode
        if n < 126:
            head = struct.pack("!BB", first, n)
        elif n < 65536:
            head = struct.pack("!BBH", first, 126, n)
        else:
            head = struct.pack("!BBQ", first, 127, n)
        self.send_raw(head + payload)

    def read_frame(self) -> tuple[int, bytes]:
        """The next client frame (opcode, unmasked payload); asserts it is masked and final."""
        while len(self.buf) < 2:
            self.buf += self._recv()
        b0, b1 = self.buf[0], self.buf[1]
        assert b1 & 0x80, "client frames must be masked"
        assert b0 & 0x80, "mqttkit sends final frames"
        n, pos = b1 & 0x7F, 2
        if n == 126:
            while len(self.buf) < 4:
                self.buf += self._recv()
            n, pos = struct.unpack_from("!H", self.buf, 2)[0], 4
        elif n == 127:
            while len(self.buf) < 10:
                self.buf += self._recv()
            n, pos = struct.unpack_from("!Q", self.buf, 2)[0], 10
        while len(self.buf) < pos + 4 + n:
            self.buf += self._recv()
        key = self.buf[pos : pos + 4]
        payload = mask(self.buf[pos + 4 : pos + 4 + n], key)
        self.buf = self.buf[pos + 4 + n :]
        return b0 & 0x0F, payload

    def read_mqtt(self) -> object:
        """The next MQTT packet the client sent (it may span frames)."""
        packets = PacketBuffer()
        for _ in range(100):
            opcode, payload = self.read_frame()
            assert opcode == 0x2, f"MQTT travels in binary frames, got opcode {opcode}"
            frames = packets.feed(payload)
            if frames:
                return decode_packet(*frames[0], MQTT_3_1_1)
        raise AssertionError("no whole MQTT packet in 100 frames")

    def _recv(self) -> bytes:
        assert self.conn is not None
        chunk = self.conn.recv(65536)
        if not chunk:
            raise EOFError("the client closed the connection")
        return chunk

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


def serve(
    script: Callable[[WSServer], None],
) -> tuple[WSServer, threading.Thread, list[BaseException]]:
    server = WSServer()
    errors: list[BaseException] = []

    def body() -> None:
        try:
            script(server)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return server, thread, errors


def finish(server: WSServer, thread: threading.Thread, errors: list[BaseException]) -> None:
    thread.join(TIMEOUT)
    server.close()
    assert not thread.is_alive(), "the scripted server did not finish"
    if errors:
        raise errors[0]


def errors_until_closed(script: Callable[[WSServer], None]) -> list[BaseException]:
    """Run a blocking client (no reconnect) against ``script`` until the connection closes;
    the errors it reported."""
    server, thread, errors = serve(script)
    client = mqttkit.Client(url=f"ws://127.0.0.1:{server.port}", reconnect_period=0)
    errors_seen: list[BaseException] = []
    closed = threading.Event()
    client.on("error", errors_seen.append)
    client.on("close", closed.set)
    client.connect()
    try:
        assert closed.wait(TIMEOUT)
        finish(server, thread, errors)
    finally:
        client.close(force=True).wait(TIMEOUT)
    return errors_seen


def test_handshake_request_and_fragmented_frames_and_ping() -> None:
    seen: dict[str, object] = {}

    def script(server: WSServer) -> None:
        headers = server.accept()
        seen["headers"] = headers
        server.answer(headers)
        connect = server.read_mqtt()
        assert isinstance(connect, Connect)
        server.send_frame(0x9, b"are you there")  # ping before anything else
        seen["pong"] = server.read_frame()
        connack = encode_packet(ConnAck(False, 0), MQTT_3_1_1)
        message = encode_packet(Publish("frag/t", b"x" * 300, 0), MQTT_3_1_1)
        stream = connack + message
        # One MQTT stream cut across a fragmented binary message: first, continuation, final.
        server.send_frame(0x2, stream[:3], fin=False)
        server.send_frame(0x0, stream[3:100], fin=False)
        server.send_frame(0x0, stream[100:], fin=True)
        seen["publish"] = server.read_mqtt()

    server, thread, errors = serve(script)

    async def main() -> None:
        url = f"ws://127.0.0.1:{server.port}/some/path?x=1"
        async with Client(url, reconnect_period=0, client_id="ws-frag") as client:
            async for message in client.messages():
                assert (message.topic, message.payload) == ("frag/t", b"x" * 300)
                break
            await client.publish("back/t", b"y" * 70_000)  # a frame with a 64-bit length

    run(main())
    finish(server, thread, errors)
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert headers["request-line"] == "GET /some/path?x=1 HTTP/1.1"
    assert headers["host"] == f"127.0.0.1:{server.port}"
    assert headers["upgrade"].lower() == "websocket"
    assert headers["sec-websocket-version"] == "13"
    assert headers["sec-websocket-protocol"] == "mqtt"
    assert len(base64.b64decode(headers["sec-websocket-key"])) == 16
    assert seen["pong"] == (0xA, b"are you there")
    assert seen["publish"] == Publish("back/t", b"y" * 70_000, 0)


@pytest.mark.parametrize(
    ("response", "match"),
    [
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "refused the WebSocket upgrade"),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n",
            "Sec-WebSocket-Accept does not match",
        ),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "did not answer with HTTP"),
    ],
)
def test_a_failed_handshake_is_a_clear_error(response: bytes, match: str) -> None:
    def script(server: WSServer) -> None:
        server.accept()
        server.send_raw(response)
        try:
            server._recv()  # the client closes; nothing MQTT arrives
        except EOFError:
            return
        raise AssertionError("the client sent data after a failed handshake")

    server, thread, errors = serve(script)

    async def main() -> None:
        client = Client(f"ws://127.0.0.1:{server.port}", reconnect_period=0, connect_timeout=5)
        with pytest.raises(mqttkit.MQTTConnectionError, match=match):
            await client.connect()

    run(main())
    finish(server, thread, errors)


def test_a_text_frame_is_a_protocol_error_that_closes_the_connection() -> None:
    def script(server: WSServer) -> None:
        headers = server.accept()
        server.answer(headers)
        server.read_mqtt()
        server.send_frame(0x2, encode_packet(ConnAck(False, 0), MQTT_3_1_1))
        server.send_frame(0x1, b"not binary")
        opcode, payload = server.read_frame()
        assert opcode == 0x8  # close, with code 1002 (protocol error)
        assert struct.unpack("!H", payload[:2])[0] == 1002

    errors_seen = errors_until_closed(script)
    assert [type(e) for e in errors_seen] == [mqttkit.ProtocolError]
    assert "binary frames" in str(errors_seen[0])


def test_a_close_frame_from_the_server_is_answered_and_ends_the_connection() -> None:
    def script(server: WSServer) -> None:
        headers = server.accept()
        server.answer(headers)
        server.read_mqtt()
        server.send_frame(0x2, encode_packet(ConnAck(False, 0), MQTT_3_1_1))
        server.send_frame(0x8, struct.pack("!H", 1001) + b"going away")
        opcode, payload = server.read_frame()
        assert opcode == 0x8
        assert struct.unpack("!H", payload[:2])[0] == 1001  # the server's code, echoed

    errors_seen = errors_until_closed(script)
    assert any("code 1001" in str(e) and "going away" in str(e) for e in errors_seen)


def test_a_server_that_never_answers_the_upgrade_times_out() -> None:
    def script(server: WSServer) -> None:
        server.accept()  # reads the request, answers nothing
        try:
            server._recv()  # until the client gives up and closes
        except (EOFError, OSError):
            return

    server, thread, errors = serve(script)

    async def main() -> None:
        url = f"ws://127.0.0.1:{server.port}"
        client = Client(url, reconnect_period=0, connect_timeout=0.5)
        with pytest.raises(mqttkit.ConnectTimeoutError):
            await client.connect()

    run(main())
    finish(server, thread, errors)


# -- the handshake options: headers, path, subprotocols, the URL hook ------------------------------


def serve_connections(
    count: int, *, protocol: str = "mqtt"
) -> tuple[WSServer, threading.Thread, list[BaseException], list[dict[str, str]]]:
    """A scripted server that takes ``count`` connections in turn: records each handshake,
    accepts it (answering ``protocol``), reads CONNECT, answers CONNACK, and drops every
    connection but the last (the client reconnects)."""
    seen: list[dict[str, str]] = []

    def script(server: WSServer) -> None:
        for n in range(count):
            headers = server.accept()
            seen.append(headers)
            server.answer(headers, protocol=protocol)
            assert isinstance(server.read_mqtt(), Connect)
            server.send_frame(0x2, encode_packet(ConnAck(False, 0), MQTT_3_1_1))
            if n + 1 < count:
                assert server.conn is not None
                server.conn.close()
                server.conn = None

    server, thread, errors = serve(script)
    return server, thread, errors, seen


def connect_times(url: str, count: int, **options: Any) -> list[BaseException]:
    """A blocking client connecting to ``url`` until it has been connected ``count`` times;
    the errors it reported."""
    client = mqttkit.Client(url=url, reconnect_period=0.05, reconnect_max=0.2, **options)
    connects: list[object] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def on_connect(connack: object) -> None:
        connects.append(connack)
        if len(connects) == count:
            done.set()

    client.on("connect", on_connect)
    client.on("error", errors.append)
    client.connect()
    try:
        assert done.wait(TIMEOUT), f"connected {len(connects)} times of {count}: {errors}"
    finally:
        client.close(force=True).wait(TIMEOUT)
    return errors


def test_headers_path_and_subprotocol_reach_the_server() -> None:
    server, thread, errors, seen = serve_connections(1)
    headers = [("Authorization", "Bearer abc.def"), ("X-Api-Key", "k1"), ("X-Api-Key", "k2")]

    async def main() -> None:
        async with Client(
            f"ws://127.0.0.1:{server.port}",
            ws_path="/custom/path?tenant=7",
            ws_headers=headers,
            reconnect_period=0,
        ) as client:
            assert client.connected

    run(main())
    finish(server, thread, errors)
    (request,) = seen
    assert request["request-line"] == "GET /custom/path?tenant=7 HTTP/1.1"
    assert request["authorization"] == "Bearer abc.def"
    assert request["x-api-key"] == "k1, k2"  # a repeated header, in order
    assert request["sec-websocket-protocol"] == "mqtt"
    assert request["host"] == f"127.0.0.1:{server.port}"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_headers_function_is_called_before_every_connection(kind: str) -> None:
    server, thread, errors, seen = serve_connections(3)
    calls: list[str] = []

    def fresh() -> dict[str, str]:
        calls.append(threading.current_thread().name)
        return {"Authorization": f"Bearer token-{len(calls)}"}

    async def fresh_async() -> dict[str, str]:
        return fresh()

    connect_times(
        f"ws://127.0.0.1:{server.port}", 3, ws_headers=fresh if kind == "sync" else fresh_async
    )
    finish(server, thread, errors)
    assert [h["authorization"] for h in seen] == [f"Bearer token-{n}" for n in (1, 2, 3)]
    if kind == "sync":  # on a thread of its own, never the loop thread of every client
        assert all(name.startswith("mqttkit-call-") for name in calls)


def test_the_url_hook_is_called_before_every_connection_and_may_move_it() -> None:
    server, thread, errors, seen = serve_connections(2)
    nowhere = free_port()  # nothing listens here: the hook sends the client elsewhere
    given: list[str] = []

    async def presign(url: str) -> str:
        given.append(url)
        return f"ws://127.0.0.1:{server.port}/mqtt?X-Amz-Signature=sig{len(given)}"

    connect_times(f"ws://127.0.0.1:{nowhere}/mqtt", 2, transform_ws_url=presign)
    finish(server, thread, errors)
    assert given == [f"ws://127.0.0.1:{nowhere}/mqtt"] * 2
    assert [h["request-line"] for h in seen] == [
        f"GET /mqtt?X-Amz-Signature=sig{n} HTTP/1.1" for n in (1, 2)
    ]
    assert {h["host"] for h in seen} == {f"127.0.0.1:{server.port}"}


def test_a_url_hook_that_changes_the_scheme_is_an_error() -> None:
    async def main() -> None:
        client = Client(
            "ws://127.0.0.1:9/mqtt",
            transform_ws_url=lambda url: url.replace("ws://", "wss://"),
            reconnect_period=0,
        )
        with pytest.raises(mqttkit.MQTTConnectionError, match="the scheme cannot change"):
            await client.connect()

    run(main())


def test_mqtt_3_1_offers_the_old_subprotocol_first() -> None:
    server, thread, errors, seen = serve_connections(1, protocol="mqttv3.1")
    connect_times(f"ws://127.0.0.1:{server.port}", 1, protocol_version=3, client_id="old")
    finish(server, thread, errors)
    assert seen[0]["sec-websocket-protocol"] == "mqttv3.1, mqtt"


def test_ws_subprotocols_replaces_the_offer() -> None:
    server, thread, errors, seen = serve_connections(1, protocol="mqtt-custom")
    connect_times(f"ws://127.0.0.1:{server.port}", 1, ws_subprotocols=["mqtt-custom"])
    finish(server, thread, errors)
    assert seen[0]["sec-websocket-protocol"] == "mqtt-custom"


def test_a_subprotocol_the_client_did_not_offer_is_refused() -> None:
    def script(server: WSServer) -> None:
        headers = server.accept()
        server.answer(headers, protocol="stomp")
        with contextlib.suppress(EOFError, OSError):
            server._recv()  # the client closes

    server, thread, errors = serve(script)

    async def main() -> None:
        client = Client(f"ws://127.0.0.1:{server.port}", reconnect_period=0, connect_timeout=5)
        with pytest.raises(mqttkit.MQTTConnectionError, match="did not offer: 'stomp'"):
            await client.connect()

    run(main())
    finish(server, thread, errors)


@pytest.mark.parametrize(
    ("headers", "match"),
    [
        ({"Host": "elsewhere"}, "writes 'Host' itself"),
        ({"Sec-WebSocket-Protocol": "x"}, "use ws_subprotocols"),
        ({"Bad Name": "x"}, "not a valid HTTP header name"),
        ({"Authorization": "Bearer s3cret\r\nX: y"}, "contains a line break"),
        ("Authorization: x", "must be a dict"),
    ],
)
def test_bad_ws_headers_are_refused_without_showing_values(headers: Any, match: str) -> None:
    with pytest.raises(mqttkit.InvalidOptionError, match=match) as info:
        mqttkit.Client(url="ws://broker", ws_headers=headers)
    assert "s3cret" not in str(info.value)


def test_without_wsproto_a_ws_url_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wsproto", None)  # as if not installed
    with pytest.raises(mqttkit.InvalidOptionError, match=r"pip install 'mqttkit\[ws\]'"):
        mqttkit.Client(url="ws://broker/mqtt")
    mqttkit.Client(url="mqtt://broker")  # TCP needs no wsproto


# -- the frame parser against arbitrary bytes ------------------------------------------------------


class _Inner(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.calls = 0
        self.lost: list[BaseException | None] = []

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.calls += 1

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


class _Raw(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _upgraded_adapter() -> tuple[WebSocketAdapter, _Inner, _Raw]:
    inner, raw = _Inner(), _Raw()
    adapter = WebSocketAdapter(inner, Handshake("h"))
    adapter.connection_made(raw)
    request = bytes(raw.written).decode("latin-1")
    key = next(
        line.partition(":")[2].strip().encode()
        for line in request.split("\r\n")
        if line.lower().startswith("sec-websocket-key:")
    )
    adapter.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n"
    )
    assert adapter.transport is not None
    return adapter, inner, raw


def _server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        return struct.pack("!BB", first, n) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=8))
def test_arbitrary_bytes_after_the_upgrade_never_raise(data: bytes, cuts: list[int]) -> None:
    async def main() -> None:
        adapter, _inner, raw = _upgraded_adapter()
        points = sorted({c % (len(data) + 1) for c in cuts})
        for a, b in zip([0, *points], [*points, len(data)], strict=True):
            adapter.data_received(data[a:b])  # may close the connection, never raises
        if adapter._error is not None:
            assert isinstance(adapter._error, (mqttkit.ProtocolError, mqttkit.MQTTError))
            assert raw.closed

    asyncio.run(main())


@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=6),
    st.lists(st.integers(0, 2000), max_size=10),
    st.booleans(),
)
def test_binary_frames_in_any_cut_pass_their_payload_through(
    payloads: list[bytes], cuts: list[int], fragment: bool
) -> None:
    # Whole messages or one message fragmented into continuation frames, with pings between,
    # cut anywhere: the MQTT side sees exactly the payload bytes, in order.
    if fragment:
        frames = [
            _server_frame(0x2 if i == 0 else 0x0, p, fin=i == len(payloads) - 1)
            for i, p in enumerate(payloads)
        ]
    else:
        frames = [_server_frame(0x2, p) for p in payloads]
    stream = b"".join(f + _server_frame(0x9, b"p%d" % i) for i, f in enumerate(frames))

    async def main() -> None:
        adapter, inner, raw = _upgraded_adapter()
        written_before = len(raw.written)
        points = sorted({c % (len(stream) + 1) for c in cuts})
        for a, b in zip([0, *points], [*points, len(stream)], strict=True):
            adapter.data_received(stream[a:b])
        assert bytes(inner.data) == b"".join(payloads)
        assert adapter._error is None
        assert not raw.closed
        assert len(raw.written) > written_before  # the pongs

    asyncio.run(main())


def test_the_frames_of_one_read_reach_the_mqtt_protocol_in_one_call() -> None:
    # A broker sends a frame per packet; each call into the MQTT protocol is a turn of the
    # engine, so one read's frames go in one call (a ping between them changes nothing).
    frames = [_server_frame(0x2, b"packet-%d" % i) for i in range(50)]
    read = b"".join(frames[:25]) + _server_frame(0x9, b"ping") + b"".join(frames[25:])

    async def main() -> None:
        adapter, inner, _raw = _upgraded_adapter()
        adapter.data_received(read)
        assert inner.calls == 1
        assert bytes(inner.data) == b"".join(b"packet-%d" % i for i in range(50))

    asyncio.run(main())
