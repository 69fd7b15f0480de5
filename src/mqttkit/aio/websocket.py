"""MQTT over WebSocket (``ws://``, ``wss://``): the client side of RFC 6455, as MQTT section 6
asks for it, on wsproto (the optional extra ``mqttkit[ws]``).

wsproto is a sans-IO WebSocket implementation (bytes in, events out), so it fits the driver the
way the MQTT session does: :class:`WebSocketAdapter` is the asyncio protocol on the socket; it
feeds wsproto what arrives and writes what wsproto produces. It sends the HTTP Upgrade request
(:class:`Handshake`: path, ``Host``, the subprotocols offered, the user's extra headers), and
once wsproto has checked the answer (status 101, ``Sec-WebSocket-Accept``, a subprotocol we
offered) hands the MQTT protocol a transport (:class:`WebSocketTransport`) whose ``write``
sends one binary message. Incoming binary data is passed on as it arrives, even part of a
frame (the MQTT framing does not care where the WebSocket frames end); a ping is answered with
a pong; a text frame or anything wsproto rejects (a masked frame, a reserved opcode or bit) is
a protocol error that closes the connection with code 1002 [MQTT-6.0.0-1]; the server's close
frame is answered (its code echoed) and ends the connection.

What this module decides (wsproto leaves it to the user): the error messages of a failed
handshake, text frames as errors, and closing the socket at once after our close frame (MQTT
has nothing more to say, and waiting for the server's answer would only delay a reconnect).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import ProtocolError as WSProtocolError

from ..protocol.errors import ConnectionLostError, MQTTConnectionError, ProtocolError, ReasonCode

__all__ = ["Handshake", "WebSocketAdapter", "WebSocketTransport"]

_NORMAL, _GOING_AWAY, _PROTOCOL_ERROR, _NO_STATUS = 1000, 1001, 1002, 1005


@dataclass(frozen=True, slots=True)
class Handshake:
    """The HTTP Upgrade request of one WebSocket connection."""

    host: str
    """The ``Host`` header: the host, with ``:port`` unless it is the scheme's default."""
    target: str = "/mqtt"
    """The request path, with its ``?query``."""
    subprotocols: tuple[str, ...] = ("mqtt",)
    """The subprotocols offered, in order of preference."""
    headers: tuple[tuple[str, str], ...] = ()
    """Extra headers (checked by :func:`mqttkit.netoptions.check_ws_headers`)."""


class WebSocketTransport(asyncio.Transport):
    """The transport the MQTT protocol sees: ``write`` sends one binary message; the rest is
    the socket transport's."""

    def __init__(self, adapter: WebSocketAdapter, raw: asyncio.Transport) -> None:
        super().__init__()
        self._adapter = adapter
        self._raw = raw

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            self._adapter.send_binary(data)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        """Send a close frame (normal closure) and close the connection."""
        self._adapter.close(_NORMAL)

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
        handshake: the Upgrade request to send.
    """

    def __init__(self, inner: asyncio.Protocol, handshake: Handshake) -> None:
        self.inner = inner
        self.handshake = handshake
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._raw: asyncio.Transport | None = None
        #: What the MQTT protocol writes to, once upgraded.
        self.transport: WebSocketTransport | None = None
        #: The subprotocol the server chose (None: it named none).
        self.subprotocol: str | None = None
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closing = False
        self._error: Exception | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._raw = transport
        handshake = self.handshake
        request = Request(
            host=handshake.host,
            target=handshake.target,
            subprotocols=list(handshake.subprotocols),
            extra_headers=[(n.encode("ascii"), v.encode("latin-1")) for n, v in handshake.headers],
        )
        transport.write(self._ws.send(request))

    def data_received(self, data: bytes) -> None:
        if not self._receiving():
            return
        # The binary data of one read goes to the MQTT protocol in one call, not one per frame
        # (a broker sends a frame per packet: per call, the engine runs a turn), and before
        # the close or error that follows it, as it arrived (a ping does not split it).
        data_events: list[bytes | bytearray] = []
        try:
            self._ws.receive_data(data)
            for event in self._ws.events():
                if type(event) is BytesMessage:  # most frequent first
                    data_events.append(event.data)
                    continue
                if data_events and not isinstance(event, Ping | Pong):  # a ping can wait
                    self._deliver(data_events)
                    data_events = []
                    if not self._receiving():
                        return
                self._handle(event)
                if not self._receiving():
                    return
            if data_events:
                self._deliver(data_events)
        except WSProtocolError as exc:
            if self.transport is None:
                self._refuse(_handshake_problem(exc))
            else:  # pragma: no cover - wsproto reports frame errors as a CloseConnection
                self._fail(ProtocolError(f"WebSocket protocol error: {exc}"))

    def _receiving(self) -> bool:
        # False once we closed, or were closed (after the close frames, nothing is read).
        return not self._closing

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

    # -- sending --------------------------------------------------------------------------------

    def send_binary(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as one binary message (dropped once the connection is closing)."""
        raw = self._raw
        if raw is None or self._closing or self._ws.state is not ConnectionState.OPEN:
            return
        raw.write(self._ws.send(BytesMessage(data=bytes(data))))

    def close(self, code: int) -> None:
        """Send a close frame with ``code`` (once) and close the connection."""
        raw = self._raw
        if raw is None or raw.is_closing():
            return
        if not self._closing:
            self._closing = True
            if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                raw.write(self._ws.send(CloseConnection(code=code)))
        raw.close()

    def _fail(self, error: ProtocolError, code: int = _PROTOCOL_ERROR) -> None:
        if self._error is None:
            self._error = error
        self.close(code)

    # -- events ---------------------------------------------------------------------------------

    def _deliver(self, pieces: list[bytes | bytearray]) -> None:
        self.inner.data_received(bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces))

    def _handle(self, event: object) -> None:
        if isinstance(event, Ping):
            assert self._raw is not None
            self._raw.write(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            self._closed_by(event)
        elif isinstance(event, TextMessage):
            self._fail(
                ProtocolError(
                    "WebSocket text frame: MQTT travels in binary frames [MQTT-6.0.0-1]",
                    ReasonCode.PROTOCOL_ERROR,
                )
            )
        elif isinstance(event, AcceptConnection):
            self._accepted(event)
        elif isinstance(event, RejectConnection):
            self._refuse(f"the server refused the WebSocket upgrade: HTTP {event.status_code}")
        # A Pong, or the body of a refusal: nothing to do.

    def _accepted(self, event: AcceptConnection) -> None:
        assert self._raw is not None
        if self.upgraded.done():  # the opener gave up meanwhile (connect timeout)
            self._closing = True
            self._raw.close()
            return
        self.subprotocol = event.subprotocol
        self.transport = WebSocketTransport(self, self._raw)
        self.upgraded.set_result(None)
        self.inner.connection_made(self.transport)

    def _closed_by(self, event: CloseConnection) -> None:
        if self._ws.state is ConnectionState.OPEN:
            # Not the server's close frame: wsproto found a protocol error in what arrived
            # (a masked frame, reserved bits or opcode, a bad control frame, bad UTF-8).
            self._fail(
                ProtocolError(f"WebSocket protocol error: {event.reason or event.code}"),
                event.code,
            )
            return
        code = event.code
        if self._error is None and code not in (_NORMAL, _NO_STATUS):
            reason = f" ({event.reason})" if event.reason else ""
            self._error = ConnectionLostError(
                f"the server closed the WebSocket: code {code}{reason}"
            )
        raw = self._raw
        self._closing = True
        if raw is not None and not raw.is_closing():
            if self._ws.state is ConnectionState.REMOTE_CLOSING:
                raw.write(self._ws.send(event.response()))  # the server's code, echoed
            raw.close()

    # -- the handshake -------------------------------------------------------------------------

    def _refuse(self, problem: str) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(
                MQTTConnectionError(f"WebSocket handshake failed: {problem}")
            )
        self._closing = True
        if self._raw is not None:
            self._raw.close()


def _handshake_problem(exc: WSProtocolError) -> str:
    """What a handshake error of wsproto means, in words for the user."""
    text = str(exc)
    if text == "Bad HTTP message":
        cause = exc.__context__
        return "the server did not answer with HTTP" + (f" ({cause})" if cause else "")
    if text == "Bad accept token":
        return "the server's Sec-WebSocket-Accept does not match our key"
    if text.startswith("Missing header"):
        return f"the server's 101 response lacks {text.partition(', ')[2]}"
    if text.startswith("unrecognized subprotocol"):
        return f"the server chose a subprotocol we did not offer: {text.rpartition(' ')[2]!r}"
    return text
