"""MQTT over WebSocket (``ws://``, ``wss://``): the client side of RFC 6455, as MQTT section 6
asks for it.

:class:`WebSocketAdapter` is the asyncio protocol on the socket. It sends the HTTP Upgrade
request (subprotocol ``mqtt``), checks the server's answer (status 101, ``Sec-WebSocket-Accept``,
the subprotocol), and then hands the MQTT protocol a transport (:class:`WebSocketTransport`)
whose ``write`` sends binary frames. Incoming binary frames are passed on as they arrive, even
part of a frame (the MQTT framing does not care where the WebSocket frames end); ping is
answered with pong; a text frame, a masked frame or a reserved opcode is a protocol error that
closes the connection [MQTT-6.0.0-1]; a close frame is answered and ends the connection.

No dependency: the framing is small, and payload masking XORs whole integers, not bytes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from typing import Any

from ..protocol.errors import ConnectionLostError, MQTTConnectionError, ProtocolError, ReasonCode

__all__ = ["WebSocketAdapter", "WebSocketTransport", "accept_key", "mask"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_RESPONSE_HEAD = 16 * 1024  # an HTTP response head longer than this is not a WebSocket server

# Opcodes (RFC 6455 section 5.2).
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def accept_key(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` value a server must answer to ``Sec-WebSocket-Key: key``."""
    return base64.b64encode(hashlib.sha1(key + _GUID, usedforsecurity=False).digest())


def mask(data: bytes, key: bytes) -> bytes:
    """``data`` XORed with the 4-byte ``key`` repeated (RFC 6455 section 5.3): as integers,
    not byte by byte, and in 16 KB pieces (which stay in the CPU cache: about three times
    faster than one integer for a megabyte)."""
    n = len(data)
    if n <= _MASK_STEP:
        if not n:
            return b""
        value = int.from_bytes(data, "little") ^ int.from_bytes((key * (n // 4 + 1))[:n], "little")
        return value.to_bytes(n, "little")
    pattern = key * (_MASK_STEP // 4)
    whole = int.from_bytes(pattern, "little")
    view = memoryview(data)
    pieces = []
    for start in range(0, n - _MASK_STEP + 1, _MASK_STEP):
        piece = int.from_bytes(view[start : start + _MASK_STEP], "little") ^ whole
        pieces.append(piece.to_bytes(_MASK_STEP, "little"))
    rest = n % _MASK_STEP
    if rest:
        tail = int.from_bytes(view[n - rest :], "little") ^ int.from_bytes(pattern[:rest], "little")
        pieces.append(tail.to_bytes(rest, "little"))
    return b"".join(pieces)


_MASK_STEP = 16 * 1024  # a multiple of 4: every piece starts at key[0]


def _frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return b"".join((head, key, mask(payload, key)))


class WebSocketTransport(asyncio.Transport):
    """The transport the MQTT protocol sees: ``write`` sends one binary frame; the rest is the
    socket transport's."""

    def __init__(self, adapter: WebSocketAdapter, raw: asyncio.Transport) -> None:
        super().__init__()
        self._adapter = adapter
        self._raw = raw

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            self._raw.write(_frame(_BINARY, bytes(data)))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        """Send a close frame (normal closure) and close the connection."""
        self._adapter.close(1000)

    def abort(self) -> None:
        self._raw.abort()

    def is_closing(self) -> bool:
        return self._raw.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._raw.get_extra_info(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size()

    def pause_reading(self) -> None:
        self._raw.pause_reading()

    def resume_reading(self) -> None:
        self._raw.resume_reading()

    def is_reading(self) -> bool:
        return self._raw.is_reading()


class WebSocketAdapter(asyncio.Protocol):
    """The protocol on the socket: upgrade, then frames in and out for ``inner``.

    Args:
        inner: the MQTT protocol; it sees ``connection_made`` only once the upgrade succeeded.
        host: the ``Host`` header (host, with ``:port`` unless it is the scheme's default).
        path: the request path (``/mqtt`` by default).
    """

    def __init__(self, inner: asyncio.Protocol, host: str, path: str) -> None:
        self.inner = inner
        self._host = host
        self._path = path or "/mqtt"
        self._key = base64.b64encode(os.urandom(16))
        self._raw: asyncio.Transport | None = None
        #: What the MQTT protocol writes to, once upgraded.
        self.transport: WebSocketTransport | None = None
        self._head = bytearray()  # the HTTP response, until its end
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Frame parsing state.
        self._buf = b""  # an incomplete frame header, or an incomplete control frame
        self._left = 0  # payload bytes of the current data frame still to come
        self._message_opcode = 0  # opcode of the fragmented message in progress (0: none)
        self._closing = False
        self._error: Exception | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._raw = transport
        request = (
            f"GET {self._path} HTTP/1.1\r\n"
            f"Host: {self._host}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self._key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: mqtt\r\n"
            "\r\n"
        )
        transport.write(request.encode("latin-1"))

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            self._receive_head(data)
            return
        try:
            self._receive_frames(data)
        except ProtocolError as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(
                MQTTConnectionError(
                    "the server closed the connection during the WebSocket handshake"
                    + (f": {exc}" if exc else "")
                )
            )
            self.upgraded.exception()  # retrieved: the opener may be gone (timeout)
            return
        if self.transport is None:
            return  # refused at the handshake: the MQTT protocol never saw this connection
        self.inner.connection_lost(self._error or exc)

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.inner.resume_writing()

    # -- closing -------------------------------------------------------------------------------

    def close(self, code: int) -> None:
        """Send a close frame with ``code`` (once) and close the connection."""
        raw = self._raw
        if raw is None or raw.is_closing():
            return
        if not self._closing:
            self._closing = True
            raw.write(_frame(_CLOSE, struct.pack("!H", code)))
        raw.close()

    def _fail(self, error: ProtocolError) -> None:
        if self._error is None:
            self._error = error
        self.close(1002)  # protocol error

    # -- the handshake -------------------------------------------------------------------------

    def _receive_head(self, data: bytes) -> None:
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > _MAX_RESPONSE_HEAD:
                self._refuse("the server's HTTP response head is too long")
            return
        head = bytes(self._head[:end]).decode("latin-1")
        rest = bytes(self._head[end + 4 :])
        self._head = bytearray()
        problem = self._check_response(head)
        if problem:
            self._refuse(problem)
            return
        assert self._raw is not None
        if self.upgraded.done():  # the opener gave up meanwhile (connect timeout)
            self._raw.close()
            return
        self.transport = WebSocketTransport(self, self._raw)
        self.upgraded.set_result(None)
        self.inner.connection_made(self.transport)
        if rest:
            self.data_received(rest)

    def _check_response(self, head: str) -> str | None:
        lines = head.split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or not status[0].startswith("HTTP/"):
            return f"the server did not answer with HTTP: {lines[0][:80]!r}"
        if status[1] != "101":
            return f"the server refused the WebSocket upgrade: {lines[0][:120]}"
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("upgrade", "").lower() != "websocket":
            return "the server's 101 response lacks 'Upgrade: websocket'"
        if "upgrade" not in headers.get("connection", "").lower():
            return "the server's 101 response lacks 'Connection: Upgrade'"
        if headers.get("sec-websocket-accept", "").encode() != accept_key(self._key):
            return "the server's Sec-WebSocket-Accept does not match our key"
        protocol = headers.get("sec-websocket-protocol")
        if protocol is not None and protocol.lower() != "mqtt":
            return f"the server chose the subprotocol {protocol!r}, not 'mqtt'"
        return None

    def _refuse(self, problem: str) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(
                MQTTConnectionError(f"WebSocket handshake failed: {problem}")
            )
        if self._raw is not None:
            self._raw.close()

    # -- frames --------------------------------------------------------------------------------

    def _receive_frames(self, data: bytes) -> None:
        if self._buf:
            data = self._buf + data
            self._buf = b""
        view = memoryview(data)
        pos = 0
        size = len(data)
        while pos < size and not self._closing:
            if self._left:
                # Payload of a data frame: passed on as it arrives.
                take = min(self._left, size - pos)
                self._left -= take
                self.inner.data_received(data if take == size else bytes(view[pos : pos + take]))
                pos += take
                continue
            # A frame header (with, for a control frame, its payload), possibly incomplete.
            after = self._parse_header(data, pos)
            if after is None:
                self._buf = data[pos:]
                return
            pos = after

    def _parse_header(self, buf: bytes, start: int) -> int | None:
        """Parse the frame header at ``buf[start:]`` (and handle a whole control frame).
        Returns the position after what it consumed, or None when more bytes are needed."""
        have = len(buf) - start
        if have < 2:
            return None
        b0, b1 = buf[start], buf[start + 1]
        if b0 & 0x70:
            raise ProtocolError("WebSocket frame with reserved bits set", ReasonCode.PROTOCOL_ERROR)
        if b1 & 0x80:
            raise ProtocolError("masked WebSocket frame from the server", ReasonCode.PROTOCOL_ERROR)
        fin = bool(b0 & 0x80)
        opcode = b0 & 0x0F
        length = b1 & 0x7F
        pos = start + 2
        if length == 126:
            if have < 4:
                return None
            length = struct.unpack_from("!H", buf, pos)[0]
            pos += 2
        elif length == 127:
            if have < 10:
                return None
            length = struct.unpack_from("!Q", buf, pos)[0]
            pos += 8
        if opcode >= 0x8:  # control frame: whole, at most 125 bytes, never fragmented
            if length > 125 or not fin:
                raise ProtocolError("invalid WebSocket control frame", ReasonCode.PROTOCOL_ERROR)
            if len(buf) < pos + length:
                return None
            self._control(opcode, buf[pos : pos + length])
            return pos + length
        if opcode == _TEXT or (opcode == _CONTINUATION and self._message_opcode == _TEXT):
            raise ProtocolError(
                "WebSocket text frame: MQTT travels in binary frames [MQTT-6.0.0-1]",
                ReasonCode.PROTOCOL_ERROR,
            )
        if opcode == _BINARY:
            if self._message_opcode:
                raise ProtocolError(
                    "WebSocket data frame inside a fragmented message", ReasonCode.PROTOCOL_ERROR
                )
            if not fin:
                self._message_opcode = _BINARY
        elif opcode == _CONTINUATION:
            if not self._message_opcode:
                raise ProtocolError(
                    "WebSocket continuation frame without a message", ReasonCode.PROTOCOL_ERROR
                )
            if fin:
                self._message_opcode = 0
        else:
            raise ProtocolError(
                f"WebSocket opcode 0x{opcode:X} is reserved", ReasonCode.PROTOCOL_ERROR
            )
        self._left = length
        return pos

    def _control(self, opcode: int, payload: bytes) -> None:
        raw = self._raw
        if opcode == _PING:
            if raw is not None and not self._closing:
                raw.write(_frame(_PONG, payload))
        elif opcode == _CLOSE:
            code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
            if self._error is None and code not in (1000, 1005):
                reason = payload[2:].decode("utf-8", "replace")
                self._error = ConnectionLostError(
                    f"the server closed the WebSocket: code {code}"
                    + (f" ({reason})" if reason else "")
                )
            self.close(1000 if code in (1000, 1005) else code)
        elif opcode != _PONG:
            raise ProtocolError(
                f"WebSocket opcode 0x{opcode:X} is reserved", ReasonCode.PROTOCOL_ERROR
            )
