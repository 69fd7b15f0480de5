"""ClientSession: the MQTT client state machine, sans I/O.

Theory of operation
-------------------
A :class:`ClientSession` is one MQTT *session*: it outlives network connections. The driver
tells it when a connection is made (:meth:`connection_made`) and lost (:meth:`connection_lost`),
feeds it the bytes that arrive (:meth:`receive_data`), sends what :meth:`data_to_send` returns,
and reacts to :meth:`events_received`. Time is passed in as ``now`` (seconds, any monotonic
origin); :meth:`next_deadline` says when :meth:`handle_timer` must be called. The session never
reads a clock, never touches a socket and never raises from the receive path: whatever the broker
sends, the outcome is events, bytes to send and possibly a :class:`ConnectionClosing` event
carrying the cause.

States (:class:`State`)::

    DISCONNECTED --connection_made--> CONNECTING --CONNACK ok--> CONNECTED
         ^                                 |  CONNACK refused,        |  disconnect(), protocol
         |                                 |  protocol error          |  error, keepalive timeout,
         |                                 v                          v  server DISCONNECT
         +--------connection_lost------ CLOSING <---------------------+

Which packets may arrive in which state is the table ``_ACCEPTED``; anything else, and any
packet a server may never send, is a protocol error.

The session is composed of two parts: :class:`~mqttkit.protocol.outgoing.Outgoing`
(``outgoing.py``: the queue and its policy, store keys, restart and fall back; with its
:class:`~mqttkit.protocol.flows.Flows`, ``flows.py``: packet ids, the windows, the QoS 1/2
sender flows, SUBSCRIBE / UNSUBSCRIBE in flight, resume, strikes) and
:class:`~mqttkit.protocol.incoming.Incoming` (``incoming.py``: acknowledgement order, QoS 2
exactly-once, inbound Topic Aliases). They share one :class:`~mqttkit.protocol.events.Output`
for bytes and events, and take the settings and small callables, never the session. The
session itself owns the connection: its state, CONNECT / CONNACK, keepalive, DISCONNECT and
AUTH, the receive path (framing, then one dispatch per packet), and closing. Each public method
is the one entry point of its operation; nothing outside the session calls its parts. It never
builds a wire byte (``codec`` does), reads a clock or does I/O.

Keepalive: PINGREQ goes out when nothing was sent or nothing was received for ``keepalive``
seconds; if nothing at all arrives within ``keepalive / 2`` after it, the link is dead. A dead
link is therefore noticed within 1.5 x keepalive of the last packet received.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import Any, Final

from . import codec
from .config import SessionConfig
from .errors import (
    CONNACK_V3_MESSAGES,
    ConnectionLostError,
    ConnectRefusedError,
    InvalidArgumentError,
    KeepaliveTimeoutError,
    MalformedPacketError,
    MQTTError,
    ProtocolError,
    PublishError,
    ReasonCode,
    ServerDisconnectError,
)
from .events import (
    Ack,
    AuthReceived,
    Connected,
    ConnectionClosing,
    ConnectionRefused,
    Event,
    MessageDropped,
    MessageReceived,
    Output,
    PacketReceived,
    PacketSent,
    PublishCompleted,
    PublishResult,
    ServerDisconnected,
    SubscribeCompleted,
    UnsubscribeCompleted,
)
from .incoming import Incoming

# MAX_STRIKES and STRIKE_WINDOW stay importable from here, as before the split.
from .outgoing import MAX_STRIKES, OUT_LIMIT, STRIKE_WINDOW, Outgoing  # noqa: F401
from .packets import (
    MQTT_3_1_1,
    MQTT_5,
    NO_PROPERTIES,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscription,
    UnsubAck,
)
from .requests import (
    PublishRequest,
    SubscribeRequest,
    UnsubscribeRequest,
    normalize_payload,
    prepare_publish,
    prepare_subscribe,
    prepare_unsubscribe,
    record_publish,
)

__all__ = [
    "Ack",
    "AuthReceived",
    "ClientSession",
    "Connected",
    "ConnectionClosing",
    "ConnectionRefused",
    "Event",
    "MessageDropped",
    "MessageReceived",
    "PacketReceived",
    "PacketSent",
    "PublishCompleted",
    "PublishRequest",
    "PublishResult",
    "ServerDisconnected",
    "SessionConfig",
    "State",
    "SubscribeCompleted",
    "SubscribeRequest",
    "UnsubscribeCompleted",
    "UnsubscribeRequest",
    "normalize_payload",
    "prepare_publish",
    "prepare_subscribe",
    "prepare_unsubscribe",
    "record_publish",
]


class State(enum.Enum):
    """Where the current network connection stands."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSING = "closing"


# Packets a server may send, by state; anything else is a protocol error. [MQTT-3.2.0-1]: the
# first packet from the server is CONNACK (or AUTH during extended authentication).
_ACCEPTED: Final[dict[State, frozenset[int]]] = {
    State.CONNECTING: frozenset({PacketType.CONNACK, PacketType.AUTH}),
    State.CONNECTED: frozenset(
        {
            PacketType.PUBLISH,
            PacketType.PUBACK,
            PacketType.PUBREC,
            PacketType.PUBREL,
            PacketType.PUBCOMP,
            PacketType.SUBACK,
            PacketType.UNSUBACK,
            PacketType.PINGRESP,
            PacketType.DISCONNECT,
            PacketType.AUTH,
        }
    ),
}
_ACCEPTED_CONNECTED: Final = _ACCEPTED[State.CONNECTED]
_ACCEPTED_CONNECTING: Final = _ACCEPTED[State.CONNECTING]
#: Packets only a client sends.
_CLIENT_ONLY: Final = frozenset(
    {PacketType.CONNECT, PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE, PacketType.PINGREQ}
)
# The receive fast path's tables: the first bytes of every PUBLISH, and those of the four
# acknowledgements (their packet types).
_PUBLISH_FIRST_BYTES: Final = codec.PUBLISH_FIRST_BYTES
_SHORT_ACK_TYPES: Final = codec.SHORT_ACK_TYPES
_PUBACK: Final = PacketType.PUBACK
_PUBREC: Final = PacketType.PUBREC
_PUBCOMP: Final = PacketType.PUBCOMP


class ClientSession:
    """The MQTT client protocol state machine. See the module docstring.

    Args:
        config: settings; the session keeps the object and reads it on each connection.
        new_key: where the outgoing store's keys come from (a callable returning a new int
            each call, safe from any thread). A driver that replaces its session passes the
            old session's :attr:`new_key` so keys never repeat; by default the session counts
            on from the largest key in the outgoing store.
    """

    __slots__ = (
        "_buffer",
        "_incoming",
        "_keepalive",
        "_last_received",
        "_level",
        "_outgoing",
        "_output",
        "_ping_sent",
        "config",
        "connack",
        "error",
        "state",
    )

    def __init__(
        self, config: SessionConfig | None = None, new_key: Callable[[], int] | None = None
    ) -> None:
        self.config = config if config is not None else SessionConfig()
        self.state = State.DISCONNECTED
        #: The cause of the last connection's end, if it was an error.
        self.error: MQTTError | None = None
        #: The last CONNACK accepted.
        self.connack: ConnAck | None = None
        self._output = Output(self.config)
        self._buffer = codec.PacketBuffer(self.config.max_packet_size)
        # The outgoing store is read first, then the incoming one (a restart's order).
        self._outgoing = Outgoing(self.config, self._output, new_key)
        self._incoming = Incoming(self.config, self._output)
        # Per-connection values, set by _reset_connection().
        self._level = self.config.protocol_level
        self._keepalive = float(self.config.keepalive)
        self._last_received = 0.0
        self._ping_sent: float | None = None

    # -- inspection -----------------------------------------------------------------------------

    @property
    def new_key(self) -> Callable[[], int]:
        """A new outgoing-store key per call; safe from any thread (see :func:`record_publish`)."""
        return self._outgoing.new_key

    @property
    def protocol_level(self) -> int:
        """The protocol level of the current (or next) connection."""
        return self._level

    @property
    def connected(self) -> bool:
        """True between an accepted CONNACK and the end of that connection."""
        return self.state is State.CONNECTED

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        """Filters subscribed (from SUBACK), restored when the broker lost the session."""
        return self._outgoing.subscriptions

    @property
    def queued(self) -> int:
        """Requests waiting to be sent."""
        return self._outgoing.queued

    @property
    def inflight(self) -> int:
        """Outgoing QoS 1/2 PUBLISH sent and not yet completely acknowledged."""
        return self._outgoing.inflight

    @property
    def pending(self) -> int:
        """Outgoing work not finished: queued, in flight, and awaiting SUBACK/UNSUBACK."""
        return self._outgoing.pending

    @property
    def unacknowledged(self) -> int:
        """Incoming QoS 1/2 messages the application has not acknowledged yet."""
        return self._incoming.unacknowledged

    @property
    def _received_qos2(self) -> AbstractSet[int]:
        # Incoming QoS 2 ids awaiting PUBREL, for white-box tests written before the split.
        return self._incoming.received_qos2

    @property
    def output_full(self) -> bool:
        """True once a whole batch (about 256 KB) of messages waits in :meth:`data_to_send`:
        a driver in the middle of a long burst of calls should write it now, so that the
        burst streams out instead of leaving when it ends."""
        return self._output.size >= OUT_LIMIT

    @property
    def wants_to_send(self) -> bool:
        """True when queued work waits only for room in :meth:`data_to_send`'s output."""
        return self._outgoing.wants_to_send

    # -- I/O interface ---------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Bytes to write to the transport now (may be empty). Clears the buffer."""
        output = self._output
        out = output.data
        if not out:
            return b""
        output.data = []
        output.size = 0
        return out[0] if len(out) == 1 else b"".join(out)

    def events_received(self) -> list[Event]:
        """Events since the last call, in order. Clears the list."""
        output = self._output
        events = output.events
        if events:
            output.events = []
        return events

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must be called next, or None."""
        if self.state is not State.CONNECTED or not self._keepalive:
            return None
        if self._ping_sent is not None:
            return self._ping_sent + self._keepalive / 2
        return min(self._output.last_sent, self._last_received) + self._keepalive

    def handle_timer(self, now: float) -> None:
        """Run time-based work: keepalive PINGREQ and dead-link detection."""
        if self.state is not State.CONNECTED or not self._keepalive:
            return
        if self._ping_sent is not None:
            if self._last_received >= self._ping_sent:
                self._ping_sent = None
            elif now >= self._ping_sent + self._keepalive / 2:
                self._close(
                    KeepaliveTimeoutError(
                        f"no answer from the broker within {self._keepalive * 1.5:g} s "
                        f"(1.5 x keepalive {self._keepalive:g} s); the connection is dead"
                    ),
                    ReasonCode.KEEP_ALIVE_TIMEOUT,
                    send_disconnect=False,
                )
                return
        if self._ping_sent is None and now >= min(self._output.last_sent, self._last_received) + (
            self._keepalive
        ):
            self._output.write(codec.PINGREQ, now, PingReq())
            self._ping_sent = now

    def connection_made(self, now: float) -> None:
        """A transport is open: send CONNECT."""
        if self.state is not State.DISCONNECTED:
            raise RuntimeError(f"connection_made() in state {self.state.name}")
        self._reset_connection()
        self._set_state(State.CONNECTING)
        self.error = None
        cfg = self.config
        connect = Connect(
            client_id=cfg.client_id,
            protocol_level=cfg.protocol_level,
            clean_start=cfg.clean_start,
            keepalive=cfg.keepalive,
            username=cfg.username,
            password=cfg.password,
            will=cfg.will,
            properties=cfg.properties if cfg.protocol_level == MQTT_5 else NO_PROPERTIES,
        )
        self._output.write(codec.encode_packet(connect, cfg.protocol_level), now, connect)
        self._last_received = now

    def connection_lost(self, now: float, error: MQTTError | None = None) -> None:
        """The transport is closed. In-flight state is kept for the next connection."""
        if self.state is State.DISCONNECTED:
            return
        if self.error is None:
            if error is None and len(self._buffer) and self.state is not State.CLOSING:
                error = MalformedPacketError(
                    f"the connection closed in the middle of a packet ({len(self._buffer)} "
                    "bytes of it had arrived)"
                )
            if (error is None and self.state is State.CONNECTED) or isinstance(
                error, ConnectionLostError
            ):
                error = self._outgoing.connection_ended(error, now)
            self.error = error
        elif isinstance(self.error, ServerDisconnectError):
            self._outgoing.connection_ended(self.error, now)
        self._set_state(State.DISCONNECTED)
        self._output.clear()
        self._buffer.clear()
        self._ping_sent = None

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes arrived from the broker. Never raises."""
        state = self.state
        if (state is not State.CONNECTED and state is not State.CONNECTING) or not data:
            return
        self._last_received = now
        try:
            frames = self._buffer.feed(data)
            if state is State.CONNECTED and not self.config.trace_packets:
                self._receive_connected(frames, now)
                return
            for first, buf, start, end in frames:
                if state is State.CONNECTING and self._level == MQTT_5:
                    code = codec.v3_connack_code(first, buf, start, end)
                    if code is not None:
                        self._refused_as_v3(code)
                        break
                packet = codec.decode_packet(first, buf, start, end, self._level)
                if self.config.trace_packets:
                    self._output.events.append(PacketReceived(packet))
                self._handle(packet, now)
                if self.state is State.CLOSING:
                    break
        except ProtocolError as exc:
            self._close(exc, exc.reason_code)
        except Exception as exc:  # a bug of ours must not escape into the driver
            self._output.log.exception("internal error while handling incoming data")
            error = ProtocolError(
                f"internal error: {exc!r}", ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR
            )
            error.__cause__ = exc
            self._close(error, ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR)

    def _receive_connected(self, frames: list[codec.Frame], now: float) -> None:
        # The hot path of receive_data(): connected, no tracing. PUBLISH skips the generic
        # dispatch; a QoS 0 message of MQTT 3.x is a decode and an event.
        level = self._level
        events = self._output.events
        incoming, outgoing = self._incoming, self._outgoing
        decode_publish = codec.decode_publish
        short_ack_id = codec.short_ack_id
        for first, buf, start, end in frames:
            if first in _PUBLISH_FIRST_BYTES:
                message = decode_publish(first, buf, start, end, level)
                if message.qos == 0 and level != MQTT_5:
                    events.append(MessageReceived(message, None))
                else:
                    incoming.receive(message, now)
                continue
            ptype = _SHORT_ACK_TYPES.get(first)
            if ptype is not None:
                # PUBACK / PUBREC / PUBREL / PUBCOMP with success and no properties: the
                # flows' packets, decoded in place.
                packet_id = short_ack_id(buf, start, end)
                if packet_id:
                    if ptype is _PUBACK:
                        outgoing.puback(packet_id, 0, now)
                    elif ptype is _PUBREC:
                        outgoing.pubrec(packet_id, 0, now)
                    elif ptype is _PUBCOMP:
                        outgoing.pubcomp(packet_id, now)
                    else:
                        incoming.pubrel(packet_id, now)
                    continue
            self._handle(codec.decode_packet(first, buf, start, end, level), now)
            if self.state is not State.CONNECTED:
                return

    def _refused_as_v3(self, code: int) -> None:
        # MQTT 5 CONNECT answered with an MQTT 3.1.1 CONNACK: a server that does not speak 5.
        what = CONNACK_V3_MESSAGES.get(code, f"return code {code}")
        error = ConnectRefusedError(
            code,
            MQTT_3_1_1,
            f"the server does not speak MQTT 5: it answered the MQTT 5 CONNECT with an MQTT "
            f"3.1.1 CONNACK ({what}); connect with protocol_version=4, or pass "
            "protocol_fallback=True to fall back to 3.1.1 by itself",
        )
        connack = ConnAck(False, code)
        if self.config.trace_packets:
            self._output.events.append(PacketReceived(connack))
        self._output.events.append(ConnectionRefused(connack, error))
        self._close(error, None, send_disconnect=False)

    def fall_back(self, level: int) -> None:
        """Speak protocol ``level`` (3.1.1) from the next connection on, after the server
        refused MQTT 5: queued and stored messages are re-encoded for it; those that need
        MQTT 5 (properties, a Topic Alias) fail with :class:`InvalidArgumentError`, as do
        subscriptions with MQTT 5 options. Call while disconnected."""
        if self.state is not State.DISCONNECTED:
            raise RuntimeError(f"fall_back() in state {self.state.name}")
        self.config.protocol_level = level
        self._level = level
        self._outgoing.fall_back(level)

    # -- application interface -----------------------------------------------------------------

    def publish(self, request: PublishRequest, now: float, token: Any = None, key: int = 0) -> None:
        """Queue a message; it is sent at once when connected and the window has room.

        Completion is reported by a :class:`PublishCompleted` event carrying ``token``.

        Args:
            key: nonzero when the message is already in the outgoing store under ``key`` (put
                there by :func:`record_publish` in the publishing thread). If this call raises,
                the record is deleted.

        Raises:
            QueueFullError: ``max_queued`` messages are already waiting.
            PacketTooLargeError: larger than the broker's Maximum Packet Size.
            InvalidArgumentError: properties with an older protocol level.
        """
        self._outgoing.publish(request, now, token, key)

    def publish_now(self, request: PublishRequest, now: float) -> bool:
        """The fast path for QoS 0 (MQTT 3.x): if the message can go right now (connected,
        nothing queued before it, room in the output), put it in :meth:`data_to_send` and
        return True: it is done, and no :class:`PublishCompleted` event follows. Otherwise
        return False, having changed nothing: call :meth:`publish`."""
        return self._outgoing.publish_now(request, now)

    def admission_error(
        self, size: int, waiting: int, waiting_bytes: int, queued: int | None = None
    ) -> MQTTError | None:
        """For a driver whose calls reach the session later (from another thread): the
        :class:`QueueFullError` that :meth:`publish` of a message of ``size`` payload bytes
        would raise with ``waiting`` messages (``waiting_bytes`` payload bytes) still on their
        way to it, or None. Only the ``reject`` policy refuses. Reads counters only: safe to
        call from any thread (an estimate there, exact for one publishing thread).

        ``queued``: the :attr:`queued` the caller read *before* it counted ``waiting``, used
        instead of a fresh read. Counted in that order, a message the session's thread takes
        in between is counted at most once; a fresh read after ``waiting`` could count it
        twice (as still on its way, and as queued) and refuse a message that fits."""
        return self._outgoing.admission_error(size, waiting, waiting_bytes, queued)

    def check_topic_alias(self, request: PublishRequest) -> None:
        """Raise :class:`PublishError` if ``request`` uses a Topic Alias above the connected
        broker's Topic Alias Maximum [MQTT-3.3.2-9] (nothing is known while disconnected).
        Reads one attribute: safe from any thread, for a front that checks before handing the
        request to the session's thread."""
        connack = self.connack
        alias = request.properties.topic_alias
        if alias is None or connack is None or self.state is not State.CONNECTED:
            return
        maximum = connack.properties.topic_alias_maximum or 0
        if alias > maximum:
            raise PublishError(
                f"topic alias {alias} exceeds the broker's Topic Alias Maximum {maximum}",
                ReasonCode.TOPIC_ALIAS_INVALID,
            )

    def subscribe(self, request: SubscribeRequest, now: float, token: Any = None) -> None:
        """Queue a SUBSCRIBE; a :class:`SubscribeCompleted` event carries ``token``."""
        self._outgoing.subscribe(request, now, token)

    def unsubscribe(self, request: UnsubscribeRequest, now: float, token: Any = None) -> None:
        """Queue an UNSUBSCRIBE; an :class:`UnsubscribeCompleted` event carries ``token``."""
        self._outgoing.unsubscribe(request, now, token)

    def acknowledge(self, ack: Ack, now: float) -> None:
        """The application has the message of ``ack``: send PUBACK/PUBREC, in arrival order."""
        self._incoming.acknowledge(ack, now)

    def disconnect(
        self, now: float, reason_code: int = 0, properties: Properties = NO_PROPERTIES
    ) -> None:
        """Send DISCONNECT and ask for the connection to close."""
        if self.state not in (State.CONNECTED, State.CONNECTING):
            return
        packet = Disconnect(reason_code, properties)
        self._output.write(codec.encode_packet(packet, self._level), now, packet)
        self._set_state(State.CLOSING)
        self._output.events.append(ConnectionClosing(None))

    def abort(self, error: MQTTError, reason_code: int = ReasonCode.UNSPECIFIED_ERROR) -> None:
        """End the connection because of ``error`` (the application's, e.g. its authentication
        step failed): with MQTT 5 a DISCONNECT with ``reason_code`` first. ``error`` becomes the
        session's :attr:`error`, reported as the cause of the closed connection."""
        if self.state not in (State.CONNECTED, State.CONNECTING):
            return
        self._close(error, reason_code)

    def send_auth(
        self, now: float, reason_code: int = 0, properties: Properties = NO_PROPERTIES
    ) -> None:
        """Send AUTH (MQTT 5 extended authentication)."""
        if self._level != MQTT_5:
            raise InvalidArgumentError("AUTH needs MQTT 5")
        packet = Auth(reason_code, properties)
        self._output.write(codec.encode_packet(packet, MQTT_5), now, packet)

    def pause_writing(self) -> None:
        """The transport's buffer is full: keep new work queued until :meth:`resume_writing`.

        Acknowledgements and keepalive still go out; only PUBLISH/SUBSCRIBE/UNSUBSCRIBE wait,
        which bounds memory when the application publishes faster than the network drains.
        """
        self._outgoing.pause_writing()

    def resume_writing(self, now: float) -> None:
        """The transport can take more: send what waited."""
        self._outgoing.resume_writing(now)

    def pump(self, now: float) -> None:
        """Send queued work, now that :meth:`data_to_send` has made room (the driver calls it
        after writing, while :attr:`wants_to_send`)."""
        self._outgoing.pump(now)

    def fail_pending(self, error: MQTTError, *, forget: bool = True) -> None:
        """Complete every unfinished operation with ``error`` (the client is closing).

        Args:
            error: what the operations' waiters receive.
            forget: also remove the QoS 1/2 messages from the outgoing store. Pass False with a
                durable store so that the next run finishes them.
        """
        self._outgoing.fail_pending(error, forget=forget)

    # -- internals: receiving ---------------------------------------------------------------------

    def _handle(self, packet: Packet, now: float) -> None:
        ptype = packet.TYPE
        accepted = _ACCEPTED_CONNECTED if self.state is State.CONNECTED else _ACCEPTED_CONNECTING
        if ptype not in accepted:
            if ptype in _CLIENT_ONLY:
                raise ProtocolError(f"the server sent {ptype.name}, which only a client may send")
            if self.state is State.CONNECTING:
                raise ProtocolError(f"expected CONNACK, got {ptype.name}")
            raise ProtocolError(f"unexpected {ptype.name} after the connection was accepted")
        if ptype == PacketType.DISCONNECT and self._level != MQTT_5:
            # MQTT 3.1.1 section 2.2.1 (Table 2.1): DISCONNECT goes from client to server only;
            # a server that sends one breaks the protocol [MQTT-4.8.0-1].
            raise ProtocolError("the server sent DISCONNECT, which MQTT 3.1.1 does not allow")
        # One isinstance chain, the most frequent packets first (a dict of the handlers, a class
        # attribute, would name the class's own methods in its body: mypyc compiles no such body).
        if isinstance(packet, Publish):
            self._on_publish(packet, now)
        elif isinstance(packet, PubAck):
            self._on_puback(packet, now)
        elif isinstance(packet, PubRec):
            self._on_pubrec(packet, now)
        elif isinstance(packet, PubRel):
            self._on_pubrel(packet, now)
        elif isinstance(packet, PubComp):
            self._on_pubcomp(packet, now)
        elif isinstance(packet, PingResp):
            self._on_pingresp(packet, now)
        elif isinstance(packet, SubAck):
            self._on_suback(packet, now)
        elif isinstance(packet, UnsubAck):
            self._on_unsuback(packet, now)
        elif isinstance(packet, ConnAck):
            self._on_connack(packet, now)
        elif isinstance(packet, Disconnect):
            self._on_disconnect(packet, now)
        elif isinstance(packet, Auth):
            self._on_auth(packet, now)

    def _on_connack(self, packet: ConnAck, now: float) -> None:
        level = self._level
        if packet.reason_code != 0:
            props = packet.properties
            error = ConnectRefusedError(
                packet.reason_code, level, props.reason_string or "", props.server_reference
            )
            self._output.events.append(ConnectionRefused(packet, error))
            self._close(error, None, send_disconnect=False)
            return
        clean = self.config.clean_start
        if packet.session_present and clean:
            # [MQTT-3.2.2-4]: a client without session state must close on Session Present 1.
            raise ProtocolError(
                "CONNACK has Session Present set although we asked for a clean start"
            )
        props = packet.properties
        if level == MQTT_5:
            self._outgoing.connection_accepted(props)
            if props.server_keep_alive is not None:
                self._keepalive = float(props.server_keep_alive)
            if props.assigned_client_identifier and not self.config.client_id:
                # Keep it so that a resumed session reconnects under the same identity.
                self.config.client_id = props.assigned_client_identifier
        self.connack = packet
        self._set_state(State.CONNECTED)
        self._ping_sent = None
        self._last_received = now
        if packet.session_present:
            self._outgoing.resume(now)
        else:
            # A new session on the broker: the old one's incoming state goes first, then the
            # outgoing work is queued again as new.
            self._incoming.restart()
            self._outgoing.restart()
        self._output.events.append(Connected(packet))
        self._outgoing.pump(now)

    def _on_publish(self, packet: Publish, now: float) -> None:
        self._incoming.receive(packet, now)

    def _on_puback(self, packet: PubAck, now: float) -> None:
        self._outgoing.puback(packet.packet_id, packet.reason_code, now)

    def _on_pubrec(self, packet: PubRec, now: float) -> None:
        self._outgoing.pubrec(packet.packet_id, packet.reason_code, now)

    def _on_pubrel(self, packet: PubRel, now: float) -> None:
        self._incoming.pubrel(packet.packet_id, now)

    def _on_pubcomp(self, packet: PubComp, now: float) -> None:
        self._outgoing.pubcomp(packet.packet_id, now)

    def _on_suback(self, packet: SubAck, now: float) -> None:
        self._outgoing.suback(packet, now)

    def _on_unsuback(self, packet: UnsubAck, now: float) -> None:
        self._outgoing.unsuback(packet, now)

    def _on_pingresp(self, packet: PingResp, now: float) -> None:
        del packet, now
        self._ping_sent = None

    def _on_disconnect(self, packet: Disconnect, now: float) -> None:
        del now
        self._output.events.append(ServerDisconnected(packet))
        props = packet.properties
        error = ServerDisconnectError(
            packet.reason_code, props.reason_string or "", props.server_reference
        )
        self._close(error, None, send_disconnect=False)

    def _on_auth(self, packet: Auth, now: float) -> None:
        del now
        self._output.events.append(AuthReceived(packet))

    # -- internals: the connection ----------------------------------------------------------------

    def _set_state(self, state: State) -> None:
        # The parts may write PUBLISH, SUBSCRIBE and acknowledgements while CONNECTED only.
        self.state = state
        self._output.connected = state is State.CONNECTED

    def _close(
        self, error: MQTTError, reason_code: int | None, *, send_disconnect: bool = True
    ) -> None:
        """End the connection because of ``error``; MQTT 5 tells the server why."""
        if self.state is State.CLOSING:
            return
        if send_disconnect and self._level == MQTT_5 and reason_code is not None:
            # [MQTT-4.13.1-1]: on a protocol error, send DISCONNECT with the reason, then close.
            packet = Disconnect(reason_code)
            self._output.data.append(codec.encode_packet(packet, MQTT_5))
        self.error = error
        self._set_state(State.CLOSING)
        self._output.events.append(ConnectionClosing(error))

    def _reset_connection(self) -> None:
        cfg = self.config
        self._level = level = cfg.protocol_level
        self._keepalive = float(cfg.keepalive)
        props = cfg.properties if level == MQTT_5 else NO_PROPERTIES
        if props.maximum_packet_size:
            self._buffer.max_packet_size = min(cfg.max_packet_size, props.maximum_packet_size)
        else:
            self._buffer.max_packet_size = cfg.max_packet_size
        self._buffer.clear()
        self._output.clear()
        self._ping_sent = None
        self._outgoing.connection_made(level)
        self._incoming.connection_made(level, props)

    def __repr__(self) -> str:
        return (
            f"<ClientSession {self.state.name} client_id={self.config.client_id!r} "
            f"queued={self.queued} inflight={self.inflight}>"
        )
