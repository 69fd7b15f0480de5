"""A fault-injecting, packet-aware TCP proxy between an MQTT client and a broker.

This module owns network faults on demand: cut every connection (RST or FIN), blackhole the link
(sockets stay open, data vanishes), stall and resume forwarding, refuse new connections, and cut
a connection right after (or instead of) the n-th packet of a given type in one direction, to
reproduce a cut after each step of a QoS 1 or QoS 2 flow.

Theory of operation
-------------------
One thread runs a selector loop over non-blocking sockets; it alone touches sockets. Control
methods (:meth:`FaultProxy.cut`, ...) run their change on that thread and return once it is
done, so "from now on" means from the moment the call returns.

Each direction of each connection is framed with the codec's
:class:`~mqttkit.protocol.codec.PacketBuffer` and forwarded one whole packet at a time, byte for
byte (a packet is held until its last byte arrived; nothing is re-encoded). That is what makes a
cut exact: the bytes of the chosen packet go out, or not, and nothing after it. Every packet is
recorded (:class:`PacketRecord`: first byte, type, flags, size, the decoded packet, time, whether
it was forwarded) so tests can assert, say, that a resent PUBLISH carried DUP. A stream that does
not frame as MQTT (TLS, WebSocket) is forwarded raw from the first unframeable byte on; so is
everything when ``parse=False``.

Memory is bounded: a direction stops reading when more than ``high_water`` bytes wait to be
written (TCP back-pressure does the rest), except for the one packet being assembled.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Literal, TypeVar

from mqttkit.protocol.codec import PacketBuffer, decode_packet
from mqttkit.protocol.errors import MQTTError
from mqttkit.protocol.packets import MQTT_3_1_1, Connect, Packet, PacketType

__all__ = [
    "CutRule",
    "Direction",
    "FaultProxy",
    "PacketRecord",
    "ProxyConnection",
]

Direction = Literal["c2s", "s2c"]
T = TypeVar("T")
_DIRECTIONS: Final = ("c2s", "s2c")

#: Seconds a control call waits for the proxy thread, and the default of every wait.
DEFAULT_TIMEOUT: Final = 5.0

_CHUNK: Final = 256 * 1024
_LINGER_RESET: Final = struct.pack("ii", 1, 0)
_READ: Final = selectors.EVENT_READ
_WRITE: Final = selectors.EVENT_WRITE


def _packet_type_of(value: int | type[Packet]) -> PacketType:
    if isinstance(value, type):
        return value.TYPE
    return PacketType(value)


@dataclass(frozen=True)
class PacketRecord:
    """One packet the proxy saw on one connection, in one direction."""

    connection: int
    """The id of the :class:`ProxyConnection` (0, 1, ... in accept order)."""
    direction: Direction
    """``"c2s"`` (client to server) or ``"s2c"``."""
    index: int
    """Position among the packets of this direction of this connection, from 0."""
    first_byte: int
    """The first byte of the fixed header: type in the high nibble, flags in the low one."""
    size: int
    """Bytes of the whole packet, fixed header included."""
    time: float
    """``time.monotonic()`` when the packet's last byte arrived."""
    packet: Packet | None
    """The decoded packet, or None when it did not decode (see ``error``)."""
    error: str | None
    """Why decoding failed; None when it did not."""
    forwarded: bool
    """False when the packet was dropped (blackhole, or the packet a rule cut before)."""

    @property
    def packet_type(self) -> int:
        """The packet type (a :class:`PacketType` value for every valid type)."""
        return self.first_byte >> 4

    @property
    def type_name(self) -> str:
        """``"PUBLISH"``, ``"PUBACK"``... (``"RESERVED"`` for type 0)."""
        try:
            return PacketType(self.packet_type).name
        except ValueError:
            return "RESERVED"

    @property
    def flags(self) -> int:
        """The low nibble of the first byte."""
        return self.first_byte & 0x0F

    @property
    def dup(self) -> bool:
        """The DUP flag of a PUBLISH."""
        return self.packet_type == PacketType.PUBLISH and bool(self.first_byte & 0x08)

    @property
    def qos(self) -> int:
        """The QoS of a PUBLISH (0 for other packets)."""
        return (self.first_byte >> 1) & 0x03 if self.packet_type == PacketType.PUBLISH else 0

    @property
    def retain(self) -> bool:
        """The RETAIN flag of a PUBLISH."""
        return self.packet_type == PacketType.PUBLISH and bool(self.first_byte & 0x01)

    def __repr__(self) -> str:
        extra = f" {self.packet!r}" if self.packet is not None else f" error={self.error!r}"
        dropped = "" if self.forwarded else " DROPPED"
        return (
            f"<#{self.connection} {self.direction} {self.index}: {self.type_name}"
            f" 0x{self.first_byte:02X} {self.size}B{dropped}{extra}>"
        )


@dataclass
class CutRule:
    """A one-shot rule installed by :meth:`FaultProxy.cut_after`."""

    direction: Direction
    """The direction whose packets are counted."""
    packet_type: PacketType
    """The packet type counted."""
    count: int
    """Cut at the ``count``-th such packet seen after the rule was installed (any connection)."""
    before: bool
    """True: the packet is not forwarded; False: it is forwarded, then the cut follows."""
    seen: int = 0
    """Matching packets seen so far."""
    record: PacketRecord | None = None
    """The packet that triggered the cut."""
    fired: threading.Event = field(default_factory=threading.Event)
    """Set once the connection has been cut."""

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> PacketRecord:
        """Wait until the rule has cut its connection; return the triggering packet's record.

        Raises:
            AssertionError: the rule did not fire within ``timeout`` seconds.
        """
        if not self.fired.wait(timeout):
            raise AssertionError(
                f"cut_after({self.direction!r}, {self.packet_type.name}, count={self.count}) "
                f"did not fire within {timeout} s ({self.seen} seen)"
            )
        assert self.record is not None
        return self.record


class _Framer:
    """Cuts one direction's stream into whole frames without ever altering or losing a byte.

    The PacketBuffer is emptied after every feed and the unfinished tail kept here, so that a
    large packet is joined once when complete instead of once per chunk.
    """

    __slots__ = ("_buffer", "_held", "_held_len", "_need")

    def __init__(self) -> None:
        self._buffer = PacketBuffer()
        self._held: list[bytes] = []
        self._held_len = 0
        self._need = 0

    def feed(self, data: bytes) -> tuple[bytes, list[tuple[int, int, int]], int | None, str]:
        """Add ``data``; return ``(buffer, frames, unframeable_at, reason)``.

        Each frame is ``(frame_start, body_start, end)`` in ``buffer``. When the stream stops
        being MQTT, ``unframeable_at`` is the offset in ``buffer`` from which everything must
        be forwarded raw (``reason`` says why) and the framer must not be fed again.
        """
        self._held.append(data)
        self._held_len += len(data)
        if self._held_len < self._need:
            return b"", [], None, ""
        joined = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held = []
        self._held_len = 0
        self._need = 0
        try:
            frames = self._buffer.feed(joined)
        except MQTTError as exc:
            # The PacketBuffer drops the frames it had cut before the bad header: cut them
            # again here, so that only what follows them goes raw.
            cut = []
            position = 0
            for _ in range(len(joined)):
                header, size = _frame_header(joined[position : position + 5])
                if not size or position + size > len(joined):
                    break
                cut.append((position, position + header, position + size))
                position += size
            return joined, cut, position, str(exc)
        finally:
            self._buffer.clear()
        out = []
        previous = 0
        for _first, buf, start, end in frames:
            # Nothing is held inside the PacketBuffer between feeds, so ``buf`` is ``joined``
            # and the frames are contiguous from offset 0.
            assert buf is joined
            out.append((previous, start, end))
            previous = end
        if previous < len(joined):
            rest = joined[previous:]
            self._held = [rest]
            self._held_len = len(rest)
            self._need = _frame_header(rest[:5])[1]
        return joined, out, None, ""


def _frame_header(head: bytes) -> tuple[int, int]:
    """``(header size, whole size)`` of the frame starting at ``head[0]``.

    ``(0, 0)`` while the fixed header is incomplete, or when it is not valid at all.
    """
    value = 0
    shift = 0
    for i in range(1, min(len(head), 5)):
        byte = head[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return i + 1, i + 1 + value
        shift += 7
    return 0, 0


class _Flow:
    """One direction of one connection."""

    def __init__(self, direction: Direction, src: socket.socket, dst: socket.socket, raw: bool):
        self.direction: Direction = direction
        self.src = src
        self.dst = dst
        self.framer = _Framer()
        self.raw = raw
        self.out: deque[memoryview] = deque()
        self.out_bytes = 0
        self.eof = False
        self.shut = False
        # How the source ended while blackholed ("eof" or "reset"), not yet passed on.
        self.hidden: str | None = None
        self.bytes_in = 0
        self.records: list[PacketRecord] = []

    def enqueue(self, data: memoryview) -> None:
        if data:
            self.out.append(data)
            self.out_bytes += len(data)

    def drop_pending(self) -> None:
        self.out.clear()
        self.out_bytes = 0


class ProxyConnection:
    """One client connection through the proxy, and what was seen on it.

    Attributes:
        id: 0, 1, ... in accept order.
        client_address: the client's (host, port).
        close_reason: why the proxy closed it (``"cut"``, ``"client closed"``...), or None.
    """

    def __init__(self, proxy: FaultProxy, conn_id: int, client_address: tuple[str, int]):
        self._proxy = proxy
        self.id = conn_id
        self.client_address = client_address
        self.protocol_level = MQTT_3_1_1
        self.close_reason: str | None = None
        self._closed = threading.Event()
        self._flows: dict[str, _Flow] = {}

    def records(self, direction: Direction | None = None) -> list[PacketRecord]:
        """The packets seen on this connection (one direction, or both in arrival order)."""
        with self._proxy._cond:
            return [
                r
                for r in self._proxy._records
                if r.connection == self.id and (direction is None or r.direction == direction)
            ]

    def packets(self, direction: Direction) -> list[Packet]:
        """The decoded packets of one direction, in order."""
        return [r.packet for r in self.records(direction) if r.packet is not None]

    @property
    def closed(self) -> bool:
        """True once the proxy has closed both sockets of this connection."""
        return self._closed.is_set()

    def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """Wait until this connection is closed; False on timeout."""
        return self._closed.wait(timeout)

    def __repr__(self) -> str:
        state = f"closed ({self.close_reason})" if self.closed else "open"
        return f"<ProxyConnection #{self.id} {state}>"


class _Link:
    """Loop-thread state of one connection."""

    def __init__(
        self, view: ProxyConnection, client: socket.socket, server: socket.socket, raw: bool
    ):
        self.view = view
        self.client = client
        self.server = server
        self.connecting = True
        self.c2s = _Flow("c2s", client, server, raw)
        self.s2c = _Flow("s2c", server, client, raw)
        self.flows = (self.c2s, self.s2c)
        self.cut_flow: _Flow | None = None
        self.cut_rules: list[CutRule] = []
        self.interest: dict[socket.socket, int] = {client: 0, server: 0}
        self.closed = False


class FaultProxy:
    """A TCP proxy on 127.0.0.1 (a free port) to ``(target_host, target_port)``, with faults.

    Args:
        target_host: where to forward to (a broker).
        target_port: its port.
        parse: frame and record MQTT packets (False: forward raw, record nothing, no rules).
        high_water: bytes waiting per direction above which the proxy stops reading it.

    Use as a context manager, or call :meth:`close`. Point clients at :attr:`port` / :attr:`url`.
    ``target`` may be reassigned (another broker): new connections go there.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        parse: bool = True,
        high_water: int = 4 * 1024 * 1024,
    ) -> None:
        self.target = (target_host, target_port)
        self.parse = parse
        self.high_water = high_water
        #: Every connection accepted (and not refused), in order.
        self.connections: list[ProxyConnection] = []
        #: Connections closed at once because of :meth:`refuse`.
        self.refused_count = 0
        #: Unexpected exceptions on the proxy thread (raised again by :meth:`close`).
        self.errors: list[BaseException] = []
        self._cond = threading.Condition()
        self._records: list[PacketRecord] = []
        self._links: list[_Link] = []
        self._rules: list[CutRule] = []
        self._blackholed = False
        self._stalled = False
        self._refusing = False
        self._stopping = threading.Event()
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._selector = selectors.DefaultSelector()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._listener.bind(("127.0.0.1", 0))
            self._listener.listen(128)
            self._listener.setblocking(False)
            self._wake_r, self._wake_w = socket.socketpair()
        except BaseException:
            self._listener.close()
            self._selector.close()
            raise
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._listener, _READ)
        self._selector.register(self._wake_r, _READ)
        self.host: str = "127.0.0.1"
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(
            target=self._run, name=f"FaultProxy:{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<port>``."""
        return f"mqtt://{self.host}:{self.port}"

    # -- controls --------------------------------------------------------------------------------

    def cut(self, reset: bool = True) -> int:
        """Close every current connection on both sides at once; return how many.

        Args:
            reset: True sends RST to both ends (a crash or a lost network); False sends FIN
                (both ends see EOF).
        """

        def action() -> int:
            links = [link for link in self._links if not link.closed]
            for link in links:
                self._close_link(link, "cut", reset=reset)
            return len(links)

        return self._call(action)

    def blackhole(self) -> None:
        """From now on drop all data in both directions, on every connection, new ones too.

        Sockets stay open: no RST, no FIN. Data already waiting to be written is dropped too.
        Dropped packets are recorded with ``forwarded=False``. Undo with :meth:`restore`.
        """

        def action() -> None:
            self._blackholed = True
            for link in self._links:
                for flow in link.flows:
                    flow.drop_pending()
                self._update_interest(link)

        self._call(action)

    def restore(self) -> None:
        """End :meth:`blackhole`: forward again (what was dropped stays lost)."""

        def action() -> None:
            self._blackholed = False
            for link in list(self._links):
                for flow in link.flows:
                    hidden, flow.hidden = flow.hidden, None
                    if hidden == "reset":
                        self._close_link(link, link.view.close_reason or "reset", reset=True)
                    elif hidden == "eof":
                        self._flush(link, flow)
                self._update_interest(link)

        self._call(action)

    def stall(self) -> None:
        """Stop writing in both directions; keep reading and buffering (up to ``high_water``)."""

        def action() -> None:
            self._stalled = True
            for link in self._links:
                self._update_interest(link)

        self._call(action)

    def resume(self) -> None:
        """End :meth:`stall`: flush what was buffered, in order, and forward again."""

        def action() -> None:
            self._stalled = False
            for link in list(self._links):
                for flow in link.flows:
                    self._flush(link, flow)
                self._update_interest(link)

        self._call(action)

    def refuse(self, on: bool = True) -> None:
        """While on, close every new connection at once with a RST (existing ones go on)."""

        def action() -> None:
            self._refusing = on

        self._call(action)

    def cut_after(
        self,
        direction: Direction,
        packet_type: int | type[Packet],
        count: int = 1,
        before: bool = False,
    ) -> CutRule:
        """Install a one-shot rule: cut the connection at the ``count``-th matching packet.

        Packets are counted from now on, over every connection, in ``direction`` (``"c2s"``
        client to server, ``"s2c"`` server to client). With ``before=False`` the packet is
        forwarded (every byte written), then both sockets are reset; with ``before=True`` it is
        not forwarded at all. Nothing after it is forwarded in either direction. Packets
        dropped by :meth:`blackhole` do not count.

        Args:
            packet_type: a :class:`PacketType` (or its int) or a packet class like ``PubRec``.

        Returns:
            the rule; ``rule.wait()`` returns the triggering record once the cut is done.
        """
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be 'c2s' or 's2c', not {direction!r}")
        if count < 1:
            raise ValueError("count must be at least 1")
        if not self.parse:
            raise ValueError("cut_after needs parse=True")
        rule = CutRule(direction, _packet_type_of(packet_type), count, before)

        def action() -> None:
            self._rules.append(rule)

        self._call(action)
        return rule

    # -- observation -----------------------------------------------------------------------------

    def records(
        self,
        direction: Direction | None = None,
        packet_type: int | type[Packet] | None = None,
    ) -> list[PacketRecord]:
        """Every packet seen so far on every connection, in order, optionally filtered."""
        wanted = None if packet_type is None else _packet_type_of(packet_type)
        with self._cond:
            return [
                r
                for r in self._records
                if (direction is None or r.direction == direction)
                and (wanted is None or r.packet_type == wanted)
            ]

    def wait_for_packet(
        self,
        direction: Direction,
        packet_type: int | type[Packet],
        count: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
        predicate: Callable[[PacketRecord], bool] | None = None,
    ) -> PacketRecord:
        """Wait until the ``count``-th matching packet (since the proxy started) was seen.

        Raises:
            AssertionError: fewer were seen within ``timeout`` seconds (the message lists them).
        """
        wanted = _packet_type_of(packet_type)

        def matching() -> list[PacketRecord]:
            return [
                r
                for r in self._records
                if r.direction == direction
                and r.packet_type == wanted
                and (predicate is None or predicate(r))
            ]

        with self._cond:
            if not self._cond.wait_for(lambda: len(matching()) >= count, timeout):
                raise AssertionError(
                    f"expected {count} {wanted.name} {direction} within {timeout} s; "
                    f"seen: {self._records!r}"
                )
            return matching()[count - 1]

    def wait_for_connections(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until at least ``count`` connections have been accepted (refused ones excluded).

        Raises:
            AssertionError: fewer within ``timeout`` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.connections) >= count, timeout):
                raise AssertionError(
                    f"expected {count} connections, got {len(self.connections)} in {timeout} s"
                )

    @property
    def active_connections(self) -> list[ProxyConnection]:
        """The connections not closed yet."""
        with self._cond:
            return [c for c in self.connections if not c.closed]

    # -- life cycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the proxy: reset every connection, close the listener, join the thread.

        Raises:
            the first unexpected error of the proxy thread, if any.
        """
        if not self._stopping.is_set():
            self._stopping.set()
            self._wake()
            self._thread.join(DEFAULT_TIMEOUT)
            for link in list(self._links):
                self._close_link(link, "proxy closed", reset=True)
            self._selector.close()
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()
        if self.errors:
            raise self.errors[0]

    def __enter__(self) -> FaultProxy:
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
            with contextlib.suppress(BaseException):
                self.close()

    def __repr__(self) -> str:
        return f"<FaultProxy :{self.port} -> {self.target[0]}:{self.target[1]}>"

    # -- the proxy thread ------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"x")

    def _call(self, action: Callable[[], T]) -> T:
        """Run ``action`` on the proxy thread and return its result."""
        if self._stopping.is_set():
            raise RuntimeError("the proxy is closed")
        done = threading.Event()
        result: list[T] = []
        failure: list[BaseException] = []

        def command() -> None:
            try:
                result.append(action())
            except BaseException as exc:
                failure.append(exc)
            finally:
                done.set()

        self._commands.put(command)
        self._wake()
        if not done.wait(DEFAULT_TIMEOUT):
            raise AssertionError("the proxy thread did not run a control call in time")
        if failure:
            raise failure[0]
        return result[0]

    def _run(self) -> None:
        # Runs until close(): every select either returns events or is woken by a command.
        while not self._stopping.is_set():
            try:
                events = self._selector.select()
            except OSError as exc:  # pragma: no cover - selector closed under us
                self.errors.append(exc)
                return
            for key, mask in events:
                if self._stopping.is_set():
                    return
                if key.fileobj is self._wake_r:
                    self._drain_wake()
                elif key.fileobj is self._listener:
                    try:
                        self._accept()
                    except Exception as exc:  # pragma: no cover - kept for close()
                        self.errors.append(exc)
                else:
                    link: _Link = key.data
                    if not link.closed:
                        self._guard(link, key.fileobj, mask)
            self._run_commands()
        self._run_commands()

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._wake_r.recv(4096)

    def _run_commands(self) -> None:
        for _ in range(10_000):
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command()

    def _guard(self, link: _Link, sock: object, mask: int) -> None:
        try:
            self._on_event(link, sock, mask)
        except Exception as exc:
            # A bug here must not kill the proxy thread silently: keep it for close().
            self.errors.append(exc)
            self._close_link(link, f"proxy error: {exc!r}", reset=True)

    def _accept(self) -> None:
        for _ in range(64):
            try:
                client, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            if self._refusing:
                self.refused_count += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                client.close()
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.setblocking(False)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._cond:
                view = ProxyConnection(self, len(self.connections), address)
                link = _Link(view, client, server, raw=not self.parse)
                view._flows = {"c2s": link.c2s, "s2c": link.s2c}
                self.connections.append(view)
                self._links.append(link)
                self._cond.notify_all()
            code = server.connect_ex(self.target)
            if code not in (0, errno.EINPROGRESS):
                self._close_link(link, f"upstream connect failed: {os.strerror(code)}", True)
                continue
            self._update_interest(link)

    def _on_event(self, link: _Link, sock: object, mask: int) -> None:
        if link.connecting and sock is link.server:
            code = link.server.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._close_link(link, f"upstream connect failed: {os.strerror(code)}", True)
                return
            link.connecting = False
            for flow in link.flows:
                self._flush(link, flow)
            self._update_interest(link)
            return
        if mask & _WRITE:
            for flow in link.flows:
                if flow.dst is sock:
                    self._flush(link, flow)
        if mask & _READ and not link.closed:
            for flow in link.flows:
                if flow.src is sock:
                    self._read(link, flow)
        if not link.closed:
            self._update_interest(link)

    def _read(self, link: _Link, flow: _Flow) -> None:
        if link.cut_flow is not None:
            return
        side = "client" if flow.src is link.client else "server"
        try:
            data = flow.src.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._source_ended(link, flow, f"{side} error: {exc.strerror or exc}", error=True)
            return
        if not data:
            self._source_ended(link, flow, f"{side} closed", error=False)
            return
        flow.bytes_in += len(data)
        if flow.raw:
            if not self._blackholed:
                flow.enqueue(memoryview(data))
        else:
            self._frame(link, flow, data)
        self._flush(link, flow)

    def _source_ended(self, link: _Link, flow: _Flow, reason: str, error: bool) -> None:
        if link.view.close_reason is None:
            link.view.close_reason = reason
        flow.eof = True
        if self._blackholed:
            # A blackhole swallows FIN and RST too: the other end learns of it on restore().
            flow.hidden = "reset" if error else "eof"
            if all(f.eof for f in link.flows):
                self._close_link(link, reason, reset=False)
            return
        if error:
            self._close_link(link, reason, reset=True)
        else:
            self._flush(link, flow)

    def _frame(self, link: _Link, flow: _Flow, data: bytes) -> None:
        joined, frames, raw_from, reason = flow.framer.feed(data)
        view = memoryview(joined)
        for frame_start, body_start, end in frames:
            packet, error = self._decode(link, flow, joined, body_start, end, frame_start)
            first = joined[frame_start]
            size = end - frame_start
            if self._blackholed:
                self._record(link, flow, first, size, packet, error, forwarded=False)
                continue
            fired = self._match_rules(flow.direction, first >> 4)
            before = any(rule.before for rule in fired)
            if not before:
                flow.enqueue(view[frame_start:end])
            record = self._record(link, flow, first, size, packet, error, not before)
            if fired:
                for rule in fired:
                    rule.record = record
                self._start_cut(link, flow, fired)
                return
        if raw_from is not None:
            # Not MQTT (TLS, WebSocket, junk): forward everything from here on untouched.
            flow.raw = True
            rest = view[raw_from:]
            self._record(link, flow, rest[0], len(rest), None, f"unframeable: {reason}")
            if not self._blackholed:
                flow.enqueue(rest)

    def _decode(
        self, link: _Link, flow: _Flow, data: bytes, start: int, end: int, frame_start: int
    ) -> tuple[Packet | None, str | None]:
        first = data[frame_start]
        try:
            packet = decode_packet(first, data, start, end, link.view.protocol_level)
        except MQTTError as exc:
            return None, str(exc)
        if isinstance(packet, Connect) and flow.direction == "c2s":
            link.view.protocol_level = packet.protocol_level
        return packet, None

    def _match_rules(self, direction: str, packet_type: int) -> list[CutRule]:
        """Count this packet for every rule on it; remove and return the rules it fires."""
        fired = []
        for rule in self._rules:
            if rule.direction == direction and rule.packet_type == packet_type:
                rule.seen += 1
                if rule.seen == rule.count:
                    fired.append(rule)
        for rule in fired:
            self._rules.remove(rule)
        return fired

    def _start_cut(self, link: _Link, flow: _Flow, rules: list[CutRule]) -> None:
        link.cut_flow = flow
        link.cut_rules = rules
        other = link.s2c if flow is link.c2s else link.c2s
        other.drop_pending()
        self._flush(link, flow)

    def _record(
        self,
        link: _Link,
        flow: _Flow,
        first: int,
        size: int,
        packet: Packet | None,
        error: str | None,
        forwarded: bool = True,
    ) -> PacketRecord:
        record = PacketRecord(
            link.view.id,
            flow.direction,
            len(flow.records),
            first,
            size,
            time.monotonic(),
            packet,
            error,
            forwarded,
        )
        with self._cond:
            flow.records.append(record)
            self._records.append(record)
            self._cond.notify_all()
        return record

    def _flush(self, link: _Link, flow: _Flow) -> None:
        """Write what ``flow`` holds, as far as the socket takes it; finish EOF and cuts."""
        if link.closed or link.connecting or (self._stalled and link.cut_flow is not flow):
            return
        out = flow.out
        for _ in range(len(out)):
            chunk = out[0]
            try:
                sent = flow.dst.send(chunk)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                side = "server" if flow.dst is link.server else "client"
                self._close_link(link, f"{side} error: {exc.strerror or exc}", reset=True)
                return
            flow.out_bytes -= sent
            if sent < len(chunk):
                out[0] = chunk[sent:]
                break
            out.popleft()
        if out:
            return
        if link.cut_flow is flow:
            self._close_link(link, "cut_after", reset=True)
        elif flow.eof and not flow.shut and flow.hidden is None:
            flow.shut = True
            with contextlib.suppress(OSError):
                flow.dst.shutdown(socket.SHUT_WR)
            if all(f.shut for f in link.flows):
                self._close_link(link, link.view.close_reason or "closed", reset=False)

    def _update_interest(self, link: _Link) -> None:
        if link.closed:
            return
        for sock in (link.client, link.server):
            events = 0
            if sock is link.server and link.connecting:
                events = _WRITE
            else:
                for flow in link.flows:
                    if (
                        flow.src is sock
                        and not flow.eof
                        and link.cut_flow is None
                        and flow.out_bytes < self.high_water
                        and not (flow.src is link.server and link.connecting)
                    ):
                        events |= _READ
                    if (
                        flow.dst is sock
                        and flow.out
                        and not link.connecting
                        and (not self._stalled or link.cut_flow is flow)
                    ):
                        events |= _WRITE
            registered = link.interest[sock]
            if events == registered:
                continue
            if registered == 0:
                self._selector.register(sock, events, link)
            elif events == 0:
                self._selector.unregister(sock)
            else:
                self._selector.modify(sock, events, link)
            link.interest[sock] = events

    def _close_link(self, link: _Link, reason: str, reset: bool) -> None:
        if link.closed:
            return
        link.closed = True
        for sock in (link.client, link.server):
            if link.interest[sock]:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(sock)
                link.interest[sock] = 0
            if reset:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            sock.close()
        if link.view.close_reason is None or reason in ("cut", "cut_after"):
            link.view.close_reason = reason
        with self._cond:
            if link in self._links:
                self._links.remove(link)
            self._cond.notify_all()
        link.view._closed.set()
        for rule in link.cut_rules:
            rule.fired.set()
