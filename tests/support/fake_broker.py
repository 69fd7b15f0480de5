"""A scripted fake MQTT broker, and a packet-level socket for raw MQTT conversations.

This module owns the test-only networking a real broker will not give on demand: a broker that
accepts and never answers, answers CONNACK with any code, sends a first packet that is not a
CONNACK, sends malformed bytes, closes or resets the connection at a chosen step. It is built on
blocking sockets and threads, listens on 127.0.0.1 only, and bounds every wait by a timeout:
a wait that runs out raises ``AssertionError`` saying what did not arrive.

Two ways to drive it:

* from the test thread: ``conn = broker.accept()`` then ``conn.handshake()``,
  ``conn.expect(Publish)``, ``conn.send(PubAck(1))``...;
* from a handler thread per connection, ``FakeBroker(handler)``, for tests whose own thread is
  busy (an asyncio event loop must not block on ``recv``). A handler's exception is kept and
  raised by :meth:`FakeBroker.close` (so leaving the ``with`` block fails the test).

:class:`PacketSocket` is also the client side of codec-driven conversations with a real broker
(:func:`connect_client`). :func:`unresponsive_listener` gives an address whose SYNs go unanswered.
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TypeVar

from mqttkit.protocol.codec import PacketBuffer, decode_packet, encode_packet
from mqttkit.protocol.errors import MQTTError
from mqttkit.protocol.packets import (
    MQTT_3_1_1,
    NO_PROPERTIES,
    ConnAck,
    Connect,
    Packet,
    Properties,
    Will,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "FakeBroker",
    "FakeConnection",
    "PacketSocket",
    "connect_client",
    "unresponsive_listener",
]

#: Seconds any single wait may take unless the caller says otherwise.
DEFAULT_TIMEOUT = 5.0

P = TypeVar("P", bound=Packet)

_LINGER_RESET = struct.pack("ii", 1, 0)


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST instead of a FIN (SO_LINGER with a zero timeout)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    sock.close()


class PacketSocket:
    """A connected blocking TCP socket that sends and receives MQTT packets via the codec.

    The protocol level used to encode and decode follows the conversation: it is set by sending
    or receiving a CONNECT, and can be overridden per call.

    Args:
        sock: a connected TCP socket; this object owns it from now on.
        protocol_level: the level before any CONNECT is seen (4: MQTT 3.1.1).
        name: who is at the other end, for error messages.
    """

    def __init__(
        self, sock: socket.socket, protocol_level: int = MQTT_3_1_1, name: str = "peer"
    ) -> None:
        self.sock = sock
        self.protocol_level = protocol_level
        self.name = name
        #: Every packet received so far, in order (decoded ones only).
        self.received: list[Packet] = []
        self._buffer = PacketBuffer()
        self._frames: deque[bytes] = deque()
        self._eof = False
        self._closed = False
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # already reset by the peer: reads will say so
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- receiving -------------------------------------------------------------------------------

    def _fill(self, deadline: float, what: str, timeout: float) -> None:
        """Read once; raise AssertionError on timeout or EOF."""
        if self._eof:
            raise AssertionError(f"{self.name} closed the connection while waiting for {what}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {what} from {self.name} within {timeout} s")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"no {what} from {self.name} within {timeout} s") from None
        except ConnectionResetError:
            self._eof = True
            raise AssertionError(
                f"{self.name} reset the connection while waiting for {what}"
            ) from None
        if not data:
            self._eof = True
            raise AssertionError(f"{self.name} closed the connection while waiting for {what}")
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        try:
            frames = self._buffer.feed(data)
        except MQTTError as exc:
            raise AssertionError(f"unframeable bytes from {self.name}: {exc}") from exc
        previous = 0
        for _first, buf, _start, end in frames:
            # Frames of one feed are contiguous from offset 0 of the returned buffer.
            self._frames.append(buf[previous:end])
            previous = end

    def recv_frame(self, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Return the next whole packet as raw bytes (fixed header included), undecoded.

        Raises:
            AssertionError: nothing whole arrived within ``timeout`` seconds, or EOF.
        """
        deadline = time.monotonic() + timeout
        while not self._frames:
            self._fill(deadline, "packet", timeout)
        return self._frames.popleft()

    def recv_packet(
        self, timeout: float = DEFAULT_TIMEOUT, protocol_level: int | None = None
    ) -> Packet:
        """Return the next packet, decoded at ``protocol_level`` (default: the conversation's).

        Raises:
            AssertionError: timeout, EOF, or bytes that do not decode (the message says which).
        """
        raw = self.recv_frame(timeout)
        level = self.protocol_level if protocol_level is None else protocol_level
        try:
            packet = decode_packet(raw[0], raw, _body_start(raw), len(raw), level)
        except MQTTError as exc:
            raise AssertionError(
                f"malformed packet from {self.name}: {exc} (bytes: {raw.hex()})"
            ) from exc
        if isinstance(packet, Connect):
            self.protocol_level = packet.protocol_level
        self.received.append(packet)
        return packet

    def expect(
        self, cls: type[P], timeout: float = DEFAULT_TIMEOUT, protocol_level: int | None = None
    ) -> P:
        """Receive the next packet and assert that it is a ``cls``; return it.

        Raises:
            AssertionError: another packet type came (shown in the message), timeout, or EOF.
        """
        packet = self.recv_packet(timeout, protocol_level)
        if not isinstance(packet, cls):
            raise AssertionError(f"expected {cls.__name__} from {self.name}, got {packet!r}")
        return packet

    def expect_silence(self, duration: float) -> None:
        """Assert that no packet arrives during ``duration`` seconds (EOF is allowed).

        A negative check: it waits the whole ``duration``, so keep it short.
        """
        deadline = time.monotonic() + duration
        for _ in range(1_000_000):
            if self._frames:
                raise AssertionError(
                    f"expected silence from {self.name}, got {self._frames[0].hex()}"
                )
            if self._eof or time.monotonic() >= deadline:
                return
            try:
                self._fill(deadline, "packet", duration)
            except AssertionError:
                return

    def closed(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """Wait until the peer closes (EOF) or resets the connection; False on timeout.

        Packets that arrive meanwhile are kept for :meth:`recv_packet`.
        """
        deadline = time.monotonic() + timeout
        for _ in range(1_000_000):
            if self._eof:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return False
            except (ConnectionResetError, BrokenPipeError):
                self._eof = True
                return True
            if not data:
                self._eof = True
                return True
            with contextlib.suppress(AssertionError):
                self._feed(data)
        return False  # pragma: no cover - the loop ends by time long before

    # -- sending ---------------------------------------------------------------------------------

    def send(self, packet: Packet | bytes, protocol_level: int | None = None) -> None:
        """Encode and send a packet (or send bytes as they are).

        Sending a :class:`Connect` sets the conversation's protocol level to its own.
        """
        if isinstance(packet, Packet):
            if isinstance(packet, Connect):
                self.protocol_level = packet.protocol_level
            level = self.protocol_level if protocol_level is None else protocol_level
            data = encode_packet(packet, level)
        else:
            data = bytes(packet)
        self.send_raw(data)

    def send_raw(self, data: bytes) -> None:
        """Send ``data`` exactly as given (malformed packets, split packets, junk)."""
        self.sock.settimeout(DEFAULT_TIMEOUT)
        self.sock.sendall(data)

    def mqtt_connect(
        self,
        client_id: str = "",
        *,
        protocol_level: int | None = None,
        clean_start: bool = True,
        keepalive: int = 60,
        username: str | None = None,
        password: bytes | None = None,
        will: Will | None = None,
        properties: Properties = NO_PROPERTIES,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> ConnAck:
        """Send CONNECT (client side) and return the CONNACK, whatever its code."""
        level = self.protocol_level if protocol_level is None else protocol_level
        self.send(
            Connect(client_id, level, clean_start, keepalive, username, password, will, properties)
        )
        return self.expect(ConnAck, timeout)

    # -- closing ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection normally (FIN). Idempotent."""
        if not self._closed:
            self._closed = True
            self.sock.close()

    def abort(self) -> None:
        """Close the connection with a TCP RST (SO_LINGER 0). Idempotent."""
        if not self._closed:
            self._closed = True
            _reset(self.sock)

    def shutdown_write(self) -> None:
        """Half-close: send FIN but keep reading (the peer sees EOF)."""
        self.sock.shutdown(socket.SHUT_WR)

    def __enter__(self) -> PacketSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _body_start(raw: bytes) -> int:
    """Offset of the body in a whole frame: after the first byte and the Remaining Length."""
    index = 1
    while raw[index] & 0x80:
        index += 1
    return index + 1


def connect_client(
    host: str, port: int, *, protocol_level: int = MQTT_3_1_1, timeout: float = DEFAULT_TIMEOUT
) -> PacketSocket:
    """Open a TCP connection to a broker and wrap it in a :class:`PacketSocket` (client side)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        return PacketSocket(sock, protocol_level, name=f"broker {host}:{port}")
    except BaseException:
        sock.close()
        raise


class FakeConnection(PacketSocket):
    """The broker side of one connection to a :class:`FakeBroker`."""

    def handshake(
        self,
        session_present: bool = False,
        reason_code: int = 0,
        properties: Properties = NO_PROPERTIES,
        protocol_level: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Connect:
        """Read the client's CONNECT, answer CONNACK, return the CONNECT.

        The CONNACK is encoded at the CONNECT's own protocol level unless ``protocol_level``
        says otherwise. To send something else first, use :meth:`expect` and :meth:`send`.
        """
        connect = self.expect(Connect, timeout)
        self.send(ConnAck(session_present, reason_code, properties), protocol_level)
        return connect


#: A per-connection script; its return value is ignored.
Handler = Callable[[FakeConnection], object]


class FakeBroker:
    """A scripted MQTT server on 127.0.0.1 (a free port), for one test.

    Args:
        handler: run in a new thread for each accepted connection; without one, connections
            queue up for :meth:`accept`.
        silent: accept and hold every connection, never read or answer; :meth:`accept` still
            returns them for inspection. Cannot be combined with ``handler``.
        backlog: the listen backlog.

    The listener is open as soon as the object exists; :meth:`close` (or the end of the
    ``with`` block) closes every connection and raises the first handler error, if any.
    """

    def __init__(
        self, handler: Handler | None = None, *, silent: bool = False, backlog: int = 16
    ) -> None:
        if silent and handler is not None:
            raise ValueError("a silent broker has no handler")
        self.handler = handler
        self.silent = silent
        #: Every connection accepted so far, in order.
        self.connections: list[FakeConnection] = []
        #: Exceptions raised by handlers (before :meth:`close` began).
        self.errors: list[BaseException] = []
        self._queue: queue.Queue[FakeConnection] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._accepted = threading.Condition(self._lock)
        self._closing = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._listener.bind(("127.0.0.1", 0))
            self._listener.listen(backlog)
            self._listener.setblocking(False)
            self._wake_r, self._wake_w = socket.socketpair()
        except BaseException:
            self._listener.close()
            raise
        self.host: str = "127.0.0.1"
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"FakeBroker:{self.port}", daemon=True
        )
        self._acceptor.start()

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<port>``."""
        return f"mqtt://{self.host}:{self.port}"

    def accept(self, timeout: float = DEFAULT_TIMEOUT) -> FakeConnection:
        """Return the next connection not handled by a handler, in arrival order.

        Raises:
            AssertionError: no client connected within ``timeout`` seconds.
        """
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no client connected to the fake broker within {timeout} s"
            ) from None

    def wait_connections(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until at least ``count`` connections have been accepted in total.

        Raises:
            AssertionError: fewer arrived within ``timeout`` seconds.
        """
        with self._accepted:
            if not self._accepted.wait_for(lambda: len(self.connections) >= count, timeout):
                raise AssertionError(
                    f"expected {count} connections, got {len(self.connections)} in {timeout} s"
                )

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            # Runs until close() writes to the wake-up socket.
            while not self._closing:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r:
                        return
                    self._accept_ready()

    def _accept_ready(self) -> None:
        for _ in range(64):
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # pragma: no cover - listener closed under us
                return
            sock.setblocking(True)
            conn = FakeConnection(sock, name=f"client {address[0]}:{address[1]}")
            with self._accepted:
                if self._closing:
                    conn.close()
                    return
                if self.handler is None:
                    self._queue.put(conn)
                else:
                    thread = threading.Thread(
                        target=self._run_handler,
                        args=(conn,),
                        name=f"FakeBroker handler for {conn.name}",
                        daemon=True,
                    )
                    thread.start()
                    self._threads.append(thread)
                # Last: whoever waits for the connection finds its handler registered.
                self.connections.append(conn)
                self._accepted.notify_all()

    def _run_handler(self, conn: FakeConnection) -> None:
        assert self.handler is not None
        try:
            self.handler(conn)
        except BaseException as exc:
            # Errors caused by close() tearing the sockets down are not the handler's fault.
            if not self._closing:
                self.errors.append(exc)

    def check(self) -> None:
        """Raise the first handler error now (it is raised by :meth:`close` anyway)."""
        if self.errors:
            raise self.errors[0]

    def wait_handlers(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until every handler started so far has returned, then raise its first error.

        Call it at the end of a scripted conversation to assert that the script ran to its
        end: :meth:`close` tears down handlers still running and ignores what they raise then.

        Raises:
            AssertionError: a handler was still running after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._accepted:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise AssertionError(f"{thread.name} still running after {timeout} s")
        self.check()

    def close(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Stop accepting, close every connection, end the handlers; raise a handler error.

        Handlers still blocked in a wait see their socket closed and end; their errors from
        then on are ignored (use :meth:`wait_handlers` first to let them finish).
        """
        if not self._closing:
            deadline = time.monotonic() + timeout
            with self._accepted:
                self._closing = True
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
            self._acceptor.join(timeout)
            for conn in self.connections:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
                conn.close()
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()
        self.check()

    def __enter__(self) -> FakeBroker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            # Do not hide the test's own failure behind a handler's.
            with contextlib.suppress(BaseException):
                self.close()

    def __repr__(self) -> str:
        return f"<FakeBroker port={self.port} connections={len(self.connections)}>"


@contextlib.contextmanager
def unresponsive_listener(timeout: float = DEFAULT_TIMEOUT) -> Iterator[tuple[str, int]]:
    """Yield ``(host, port)`` of a listener that never accepts and whose backlog is full.

    New TCP connections to it get no SYN-ACK: ``connect()`` hangs until the caller's own
    timeout (the NodeMCU ``CONN_FAIL_TIMEOUT_SENDING`` case). Linux drops SYNs once the accept
    queue (backlog 0: one connection) is full, so filler connections are made until one hangs.

    Raises:
        AssertionError: the backlog could not be filled (another TCP stack's behaviour).
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        deadline = time.monotonic() + timeout
        for _ in range(16):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            fillers.append(filler)
            filler.setblocking(False)
            filler.connect_ex(address)
            # A filler that does not complete within a short wait shows the queue is full.
            if not _writable_within(filler, 0.2):
                break
            if time.monotonic() > deadline:
                raise AssertionError("could not fill the listen backlog in time")
        else:
            raise AssertionError("the listen backlog never filled up")
        yield address[0], address[1]
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def _writable_within(sock: socket.socket, timeout: float) -> bool:
    """True when a non-blocking connect completes (the socket turns writable) in time."""
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_WRITE)
        return bool(selector.select(timeout))
