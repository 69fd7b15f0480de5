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

Outgoing work (PUBLISH, SUBSCRIBE, UNSUBSCRIBE) goes through one FIFO queue so the broker sees
it in the order the application asked. A packet identifier is allocated when a packet leaves the
queue for the wire, never reused while in flight, and wraps from 65,535 to 1. QoS 1/2 PUBLISH
leave the queue only while the in-flight window (our ``max_inflight``, MQTT 5: the broker's
Receive Maximum) has room. Every QoS 1/2 message is written to the outgoing store before its bytes
leave, and removed when its flow completes, so a durable store can finish the flow after a
restart. On reconnect with the session kept, unacknowledged PUBLISH are resent with DUP and
PUBREL re-sent [MQTT-4.4.0-1]; when the broker lost the session, unacknowledged messages are sent
again as new messages (nothing lost) and subscriptions are restored.

Incoming QoS 1/2 messages are acknowledged only after the application acknowledges them
(:meth:`acknowledge`, which the fronts call once the handler has run), in the order they arrived
[MQTT-4.6.0-2, -3]. An incoming QoS 2 id stays in the incoming store from the application's
acknowledgement until PUBREL, so a resent PUBLISH is answered but never delivered twice.

Keepalive: PINGREQ goes out when nothing was sent or nothing was received for ``keepalive``
seconds; if nothing at all arrives within ``keepalive / 2`` after it, the link is dead. A dead
link is therefore noticed within 1.5 x keepalive of the last packet received.
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from . import codec
from .errors import (
    CONNACK_V3_MESSAGES,
    ConnectionLostError,
    ConnectRefusedError,
    InvalidArgumentError,
    KeepaliveTimeoutError,
    MalformedPacketError,
    MQTTError,
    PacketTooLargeError,
    ProtocolError,
    PublishError,
    QueueFullError,
    ReasonCode,
    ServerDisconnectError,
    StoreError,
    SubscribeError,
    UnsubscribeError,
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
    PacketReceived,
    PacketSent,
    PublishCompleted,
    PublishResult,
    ServerDisconnected,
    SubscribeCompleted,
    UnsubscribeCompleted,
)
from .outgoing import _PUBLISH, _QUEUED, _RELEASED, _SENT, _SUBSCRIBE, _UNSUBSCRIBE, _Entry
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
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from .requests import (
    PublishRequest,
    SubscribeRequest,
    UnsubscribeRequest,
    encode_request,
    normalize_payload,
    prepare_publish,
    prepare_subscribe,
    prepare_unsubscribe,
    record_publish,
)
from .store import Store, is_private, private_store

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

log = logging.getLogger("mqttkit")


#: Connections in a row that may end right after a message was (re)sent, with nothing after it
#: acknowledged, before that message fails (see ClientSession._note_connection_end).
MAX_STRIKES: Final = 3
#: How soon after a message was (re)sent a connection must end for that to count ("right
#: after": a server that refuses a message closes the connection at once; a network that
#: fails does so at any time).
STRIKE_WINDOW: Final = 2.0

#: PUBLISH bytes the session lets pile up in :meth:`ClientSession.data_to_send`'s output before
#: it keeps further messages in its queue: the driver writes, then calls ``pump()``. This bounds
#: the copies a burst of large messages makes to about one batch, not the whole burst.
OUT_LIMIT: Final = 256 * 1024


class State(enum.Enum):
    """Where the current network connection stands."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSING = "closing"


# Packets a server may send, by state; anything else is a protocol error. [MQTT-3.1.4-?]: the
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

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class SessionConfig:
    """What the session needs to know; built by the options layer."""

    client_id: str = ""
    """Client identifier sent in CONNECT."""
    protocol_level: int = MQTT_3_1_1
    """3 (MQTT 3.1), 4 (MQTT 3.1.1) or 5 (MQTT 5.0)."""
    clean_start: bool = True
    """Start a new session on every connection (3.1.1: Clean Session)."""
    keepalive: int = 10
    """Seconds; 0 disables keepalive."""
    username: str | None = None
    """User name for CONNECT."""
    password: bytes | None = field(default=None, repr=False)
    """Password for CONNECT; never logged."""
    will: Will | None = None
    """Last Will and Testament."""
    properties: Properties = NO_PROPERTIES
    """MQTT 5 CONNECT properties (session expiry, receive maximum...)."""
    max_inflight: int = 65_535
    """Most outgoing QoS 1/2 PUBLISH awaiting acknowledgement at once."""
    max_inflight_qos2: int | None = None
    """Most outgoing QoS 2 PUBLISH awaiting PUBCOMP at once (None: only ``max_inflight``)."""
    max_queued: int = 100_000
    """Most messages waiting to be sent (offline, or behind a full window)."""
    max_queued_bytes: int | None = None
    """Most payload bytes waiting to be sent (None: no byte limit)."""
    queue_policy: str = "reject"
    """When the queue is full: ``reject`` (publish raises QueueFullError), ``drop_oldest``
    (the oldest waiting message is dropped), ``drop_newest`` (the new one is)."""
    max_packet_size: int = codec.MAX_PACKET_SIZE
    """Largest incoming packet accepted (bytes); larger ones close the connection."""
    outgoing_store: Store = field(default_factory=private_store)
    """Holds outgoing QoS 1/2 messages until their flow completes."""
    incoming_store: Store = field(default_factory=private_store)
    """Holds incoming QoS 2 packet ids between PUBREC and PUBREL."""
    trace_packets: bool = False
    """Emit PacketSent / PacketReceived events."""


# ---------------------------------------------------------------------------------------------
# The session
# ---------------------------------------------------------------------------------------------


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
        "_ack_by_id",
        "_acked_mark",
        "_acks",
        "_alias_max",
        "_alias_topics",
        "_aliases",
        "_buffer",
        "_conn_mark",
        "_events",
        "_fell_back",
        "_generation",
        "_inflight",
        "_keepalive",
        "_last_received",
        "_last_sent",
        "_level",
        "_max_out_packet",
        "_max_qos",
        "_new_key",
        "_next_id",
        "_out",
        "_out_aliases",
        "_out_size",
        "_ping_sent",
        "_qos2_inflight",
        "_queue",
        "_queued_bytes",
        "_receive_max",
        "_received_qos2",
        "_record_queued",
        "_requests",
        "_restored",
        "_retain_available",
        "_sent_count",
        "_seq",
        "_strikes",
        "_sub_properties",
        "_warned_downgrade",
        "_warned_receive_max",
        "_window",
        "_window_qos2",
        "_writable",
        "config",
        "connack",
        "error",
        "state",
        "subscriptions",
    )

    def __init__(
        self, config: SessionConfig | None = None, new_key: Callable[[], int] | None = None
    ) -> None:
        self.config = config if config is not None else SessionConfig()
        self.state = State.DISCONNECTED
        #: The cause of the last connection's end, if it was an error.
        self.error: MQTTError | None = None
        #: Filters subscribed (from SUBACK), restored when the broker lost the session.
        self.subscriptions: dict[str, Subscription] = {}
        # The SUBSCRIBE properties of filters subscribed with some (restored with them).
        self._sub_properties: dict[str, Properties] = {}
        #: The last CONNACK accepted.
        self.connack: ConnAck | None = None
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._buffer = codec.PacketBuffer(self.config.max_packet_size)
        self._queue: deque[_Entry] = deque()
        self._inflight: dict[int, _Entry] = {}  # QoS 1/2 PUBLISH by packet id, in send order
        self._requests: dict[int, _Entry] = {}  # SUBSCRIBE / UNSUBSCRIBE by packet id
        self._next_id = 1
        self._seq = 0
        self._acks: deque[Ack] = deque()
        self._ack_by_id: dict[int, Ack] = {}
        self._received_qos2: set[int] = set()
        self._generation = 0
        # Per-connection values, set by _reset_connection().
        self._level = self.config.protocol_level
        self._window = self.config.max_inflight
        self._window_qos2 = self.config.max_inflight_qos2 or 65_535
        self._qos2_inflight = 0  # QoS 2 entries in _inflight
        self._max_out_packet = codec.MAX_PACKET_SIZE
        self._max_qos = 2
        self._retain_available = True
        self._keepalive = float(self.config.keepalive)
        self._aliases: dict[int, str] = {}
        self._alias_max = 0
        # Outgoing Topic Aliases: the topic the application last gave each one, and those set
        # on the current connection.
        self._alias_topics: dict[int, str] = {}
        self._out_aliases: dict[int, str] = {}
        self._receive_max = 65_535
        self._last_sent = 0.0
        self._last_received = 0.0
        self._ping_sent: float | None = None
        self._writable = True
        self._warned_receive_max = False
        self._out_size = 0  # PUBLISH bytes in _out: above OUT_LIMIT, new ones wait in the queue
        self._queued_bytes = 0  # payload bytes of the PUBLISH entries in _queue
        # A store someone else may read (the user's, a durable one) records queued messages
        # too; the client's own in-memory one only what has been sent.
        self._record_queued = not is_private(self.config.outgoing_store)
        # Progress marks (see _note_connection_end): every PUBLISH/SUBSCRIBE/UNSUBSCRIBE sent
        # takes the next _sent_count; _acked_mark is the highest mark acknowledged since.
        self._sent_count = 0
        self._acked_mark = 0
        self._conn_mark = 0  # _sent_count when the current connection was made
        # Connections in a row that ended right after a message was (re)sent, by its key.
        self._strikes: dict[int, int] = {}
        self._warned_downgrade = False
        self._fell_back = False  # fall_back() happened: MQTT 5 requests are converted
        # Queued entries loaded from the store, by key: a publisher thread may have recorded
        # a message (record_publish) that this session loaded before its publish() arrived.
        self._restored: dict[int, _Entry] = {}
        last_key = self._restore()
        self._new_key: Callable[[], int] = (
            new_key if new_key is not None else itertools.count(last_key + 1).__next__
        )

    # -- inspection -----------------------------------------------------------------------------

    @property
    def new_key(self) -> Callable[[], int]:
        """A new outgoing-store key per call; safe from any thread (see :func:`record_publish`)."""
        return self._new_key

    @property
    def protocol_level(self) -> int:
        """The protocol level of the current (or next) connection."""
        return self._level

    @property
    def connected(self) -> bool:
        """True between an accepted CONNACK and the end of that connection."""
        return self.state is State.CONNECTED

    @property
    def queued(self) -> int:
        """Requests waiting to be sent."""
        return len(self._queue)

    @property
    def inflight(self) -> int:
        """Outgoing QoS 1/2 PUBLISH sent and not yet completely acknowledged."""
        return len(self._inflight)

    @property
    def pending(self) -> int:
        """Outgoing work not finished: queued, in flight, and awaiting SUBACK/UNSUBACK."""
        return len(self._queue) + len(self._inflight) + len(self._requests)

    @property
    def unacknowledged(self) -> int:
        """Incoming QoS 1/2 messages the application has not acknowledged yet."""
        return len(self._ack_by_id)

    # -- I/O interface ---------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Bytes to write to the transport now (may be empty). Clears the buffer."""
        out = self._out
        if not out:
            return b""
        self._out = []
        self._out_size = 0
        return out[0] if len(out) == 1 else b"".join(out)

    def events_received(self) -> list[Event]:
        """Events since the last call, in order. Clears the list."""
        events = self._events
        if events:
            self._events = []
        return events

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must be called next, or None."""
        if self.state is not State.CONNECTED or not self._keepalive:
            return None
        if self._ping_sent is not None:
            return self._ping_sent + self._keepalive / 2
        return min(self._last_sent, self._last_received) + self._keepalive

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
        if self._ping_sent is None and now >= min(self._last_sent, self._last_received) + (
            self._keepalive
        ):
            self._send(codec.PINGREQ, now, PingReq())
            self._ping_sent = now

    def connection_made(self, now: float) -> None:
        """A transport is open: send CONNECT."""
        if self.state is not State.DISCONNECTED:
            raise RuntimeError(f"connection_made() in state {self.state.name}")
        self._reset_connection()
        self._conn_mark = self._sent_count
        self.state = State.CONNECTING
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
        self._send(codec.encode_packet(connect, cfg.protocol_level), now, connect)
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
                error = self._note_connection_end(error, now)
            self.error = error
        elif isinstance(self.error, ServerDisconnectError):
            self._note_connection_end(self.error, now)
        self.state = State.DISCONNECTED
        self._out = []
        self._out_size = 0
        self._buffer.clear()
        self._ping_sent = None

    def _note_connection_end(self, error: MQTTError | None, now: float) -> MQTTError:
        """The server ended the connection (end of stream, reset, or DISCONNECT). If that came
        within ``STRIKE_WINDOW`` of sending the oldest unacknowledged PUBLISH of this
        connection, and nothing sent after it was acknowledged, that PUBLISH may be what the
        server refuses (a QoS, topic or size it does not take): it gets a strike, and fails
        after ``MAX_STRIKES`` connections in a row end so (it would otherwise be resent
        forever). Returns the error that reports this end."""
        suspect: _Entry | None = None
        for entry in self._inflight.values():
            if (
                entry.state == _SENT
                and entry.sent_mark > self._conn_mark
                and (suspect is None or entry.sent_mark < suspect.sent_mark)
            ):
                suspect = entry
        if suspect is not None and (
            self._acked_mark >= suspect.sent_mark or now - suspect.sent_at > STRIKE_WINDOW
        ):
            self._strikes.pop(suspect.key, None)  # it went on past it, or took its time
            suspect = None
        detail = ""
        if suspect is not None:
            strikes = self._strikes[suspect.key] = self._strikes.get(suspect.key, 0) + 1
            request: PublishRequest = suspect.request
            detail = (
                f" right after PUBLISH id {suspect.packet_id} (QoS {suspect.qos}, topic "
                f"{request.topic!r}, {len(request.payload):,} bytes payload)"
            )
            if strikes >= MAX_STRIKES:
                self._fail_refused(suspect, strikes)
        if error is not None:
            if detail and not isinstance(error, ServerDisconnectError):
                error = ConnectionLostError(f"{error}{detail}")
            return error
        return ConnectionLostError(f"the server closed the connection{detail}")

    def _fail_refused(self, entry: _Entry, strikes: int) -> None:
        # The server closed the connection each time this message was sent: give up on it,
        # free its identifier, and let the rest of the queue go.
        del self._inflight[entry.packet_id]
        if entry.qos == 2:
            self._qos2_inflight -= 1
        self._store_delete(entry.key)
        request: PublishRequest = entry.request
        self._complete(
            entry,
            PublishError(
                f"the server closed the connection each time this message was sent "
                f"({strikes} times in a row; QoS {entry.qos}, topic {request.topic!r}, "
                f"{len(request.payload):,} bytes payload): the QoS, the topic or the size may "
                "be refused by this server",
                ReasonCode.UNSPECIFIED_ERROR,
            ),
        )

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
                    self._events.append(PacketReceived(packet))
                self._handle(packet, now)
                if self._closing():
                    break
        except ProtocolError as exc:
            self._close(exc, exc.reason_code)
        except Exception as exc:  # a bug of ours must not escape into the driver
            log.exception("internal error while handling incoming data")
            error = ProtocolError(
                f"internal error: {exc!r}", ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR
            )
            error.__cause__ = exc
            self._close(error, ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR)

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
            self._events.append(PacketReceived(connack))
        self._events.append(ConnectionRefused(connack, error))
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
        self._fell_back = True
        error = InvalidArgumentError(
            f"this needs MQTT 5, and the server speaks protocol level {level} only"
        )
        for entry in list(self._queue) + list(self._inflight.values()):
            if entry.kind != _PUBLISH:
                request = entry.request
                options = any(
                    sub.no_local or sub.retain_as_published or sub.retain_handling
                    for sub in getattr(request, "subscriptions", ())
                )
                if request.properties or options:
                    self._queue.remove(entry)
                    self._complete(entry, error)
                continue
            if entry.state == _RELEASED:
                continue  # PUBREL is the same at both levels
            request = entry.request
            if request.properties:
                if entry.state == _QUEUED:
                    self._queue.remove(entry)
                    self._queued_bytes -= len(request.payload)
                else:
                    del self._inflight[entry.packet_id]
                    if entry.qos == 2:
                        self._qos2_inflight -= 1
                if entry.qos:
                    self._store_delete(entry.key)
                self._complete(entry, error)
                continue
            entry.request = converted = prepare_publish(
                request.topic, request.payload, request.qos, request.retain, None, level
            )
            if entry.data:
                data = encode_request(converted, entry.packet_id)
                entry.data = codec.set_dup(data) if codec.has_dup(entry.data) else data
                self._store_put(entry.key, entry.data)
            elif entry.qos and self._record_queued:
                entry.data = encode_request(converted, 0)
                self._store_put(entry.key, entry.data)

    def _closing(self) -> bool:
        return self.state is State.CLOSING

    def _receive_connected(self, frames: list[codec.Frame], now: float) -> None:
        # The hot path of receive_data(): connected, no tracing. PUBLISH skips the generic
        # dispatch; a QoS 0 message of MQTT 3.x is a decode and an event.
        level = self._level
        events = self._events
        decode_publish = codec.decode_publish
        short_ack_id = codec.short_ack_id
        for first, buf, start, end in frames:
            if first in _PUBLISH_FIRST_BYTES:
                message = decode_publish(first, buf, start, end, level)
                if message.qos == 0 and level != MQTT_5:
                    events.append(MessageReceived(message, None))
                else:
                    self._on_publish(message, now)
                continue
            ptype = _SHORT_ACK_TYPES.get(first)
            if ptype is not None:
                # PUBACK / PUBREC / PUBREL / PUBCOMP with success and no properties: the
                # flows' packets, decoded in place.
                packet_id = short_ack_id(buf, start, end)
                if packet_id:
                    if ptype is _PUBACK:
                        self._puback(packet_id, 0, now)
                    elif ptype is _PUBREC:
                        self._pubrec(packet_id, 0, now)
                    elif ptype is _PUBCOMP:
                        self._pubcomp(packet_id, now)
                    else:
                        self._pubrel(packet_id, now)
                    continue
            self._handle(codec.decode_packet(first, buf, start, end, level), now)
            if self.state is not State.CONNECTED:
                return

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
        if key and self._restored:
            restored = self._restored.pop(key, None)
            if restored is not None:
                # This session loaded the record before the call arrived: that entry is it.
                restored.token = token
                return
        try:
            if (request.properties_bytes is None) == (self._level == MQTT_5):
                if self._level == MQTT_5 or request.properties or not self._fell_back:
                    raise InvalidArgumentError(
                        f"this request was prepared for another protocol level than {self._level}"
                        + ("" if self._level == MQTT_5 else " (it needs MQTT 5)")
                    )
                # Prepared for MQTT 5 just before a fall back to 3.1.1 (fall_back()).
                request = prepare_publish(
                    request.topic, request.payload, request.qos, request.retain, None, self._level
                )
                if key and self._record_queued:
                    self._store_put(key, encode_request(request, 0))
            if request.properties_bytes is not None and request.properties.topic_alias is not None:
                request = self._resolve_outgoing_alias(request)
            recorded = bool(key)
            connected = self.state is State.CONNECTED
            queue = self._queue
            if connected:
                if self._level == MQTT_5:
                    self._check_sendable(request)  # the limits only MQTT 5 announces
                if not request.qos and not queue and self._writable and self._out_size < OUT_LIMIT:
                    # The hot path: a QoS 0 message that can go right now needs no queue entry.
                    topic_field = request.topic_field
                    if request.properties_bytes is not None and request.properties.topic_alias:
                        topic_field = self._wire_topic_field(request)
                    self._write_qos0(request, topic_field, now)
                    if token is not None:
                        self._events.append(PublishCompleted(token))
                    return
            self._seq += 1
            if request.qos and not key:
                # A store others may write (a publishing thread's record_publish) needs keys
                # from the shared counter; the client's own store can use the session's order.
                key = self._new_key() if self._record_queued else self._seq
            entry = _Entry(_PUBLISH, self._seq, request.qos, request, token, key)
            if (
                connected
                and not queue
                and self._writable
                and self._out_size < OUT_LIMIT
                and (not request.qos or self._has_room())
            ):
                self._send_publish(entry, now)
                return
            if self._queue_full(len(request.payload)) and not self._make_room(entry):
                if recorded:
                    self._store_delete(key)
                return  # dropped (policy drop_newest)
            if request.qos and self._record_queued and not recorded:
                entry.data = encode_request(request, 0)
                self.config.outgoing_store.put(entry.key, entry.data)
            queue.append(entry)
            self._queued_bytes += len(request.payload)
        except BaseException:
            if key:
                self._store_delete(key)  # the publishing thread's record of a refused message
            raise

    def publish_now(self, request: PublishRequest, now: float) -> bool:
        """The fast path for QoS 0 (MQTT 3.x): if the message can go right now (connected,
        nothing queued before it, room in the output), put it in :meth:`data_to_send` and
        return True: it is done, and no :class:`PublishCompleted` event follows. Otherwise
        return False, having changed nothing: call :meth:`publish`."""
        if (
            request.qos
            or request.properties_bytes is not None
            or self._level == MQTT_5
            or self.state is not State.CONNECTED
            or self._queue
            or not self._writable
            or self._out_size >= OUT_LIMIT
        ):
            return False
        self._write_qos0(request, request.topic_field, now)
        return True

    def _write_qos0(self, request: PublishRequest, topic_field: bytes, now: float) -> None:
        data = codec.encode_publish_parts(
            request.first, topic_field, 0, request.properties_bytes, request.payload
        )
        self._out.append(data)
        self._out_size += len(data)
        self._last_sent = now
        if self.config.trace_packets:
            self._events.append(PacketSent(codec.decode(data, self._level)))

    def _queue_full(self, size: int, waiting: int = 0, waiting_bytes: int = 0) -> bool:
        cfg = self.config
        if len(self._queue) + waiting >= cfg.max_queued:
            return True
        limit = cfg.max_queued_bytes
        return limit is not None and self._queued_bytes + waiting_bytes + size > limit

    def admission_error(self, size: int, waiting: int, waiting_bytes: int) -> MQTTError | None:
        """For a driver whose calls reach the session later (from another thread): the
        :class:`QueueFullError` that :meth:`publish` of a message of ``size`` payload bytes
        would raise with ``waiting`` messages (``waiting_bytes`` payload bytes) still on their
        way to it, or None. Only the ``reject`` policy refuses. Reads counters only: safe to
        call from any thread (an estimate there, exact for one publishing thread)."""
        if self.config.queue_policy != "reject" or not self._queue_full(
            size, waiting, waiting_bytes
        ):
            return None
        return self._queue_full_error(waiting, waiting_bytes)

    def _queue_full_error(self, waiting: int = 0, waiting_bytes: int = 0) -> QueueFullError:
        cfg = self.config
        limit = f"max_queued={cfg.max_queued}"
        if cfg.max_queued_bytes is not None:
            limit += f", max_queued_bytes={cfg.max_queued_bytes}"
        return QueueFullError(
            f"{len(self._queue) + waiting} messages ({self._queued_bytes + waiting_bytes:,} "
            f"payload bytes) are already waiting to be sent ({limit}); wait for the "
            "connection, raise the limit, or choose queue_policy='drop_oldest' / 'drop_newest'"
        )

    def _make_room(self, entry: _Entry) -> bool:
        """Apply the queue policy for ``entry``; True if it may be queued now."""
        cfg = self.config
        policy = cfg.queue_policy
        size = len(entry.request.payload)
        if policy == "drop_newest":
            self._drop(entry, "drop_newest")
            return False
        if policy == "drop_oldest":
            queue = self._queue
            for _ in range(len(queue)):
                if not self._queue_full(size):
                    break
                oldest = next((e for e in queue if e.kind == _PUBLISH), None)
                if oldest is None:
                    break
                queue.remove(oldest)
                self._queued_bytes -= len(oldest.request.payload)
                if oldest.qos:
                    self._store_delete(oldest.key)
                self._drop(oldest, "drop_oldest")
            if not self._queue_full(size):
                return True
        raise self._queue_full_error()

    def _drop(self, entry: _Entry, policy: str) -> None:
        request: PublishRequest = entry.request
        message = Publish(
            request.topic,
            request.payload,
            request.qos,
            request.retain,
            False,
            None,
            request.properties,
        )
        self._events.append(MessageDropped(message, policy))
        self._complete(
            entry, QueueFullError(f"dropped: the queue was full (queue_policy={policy!r})")
        )

    def subscribe(self, request: SubscribeRequest, now: float, token: Any = None) -> None:
        """Queue a SUBSCRIBE; a :class:`SubscribeCompleted` event carries ``token``."""
        self._seq += 1
        self._queue.append(_Entry(_SUBSCRIBE, self._seq, 0, request, token))
        self._pump(now)

    def unsubscribe(self, request: UnsubscribeRequest, now: float, token: Any = None) -> None:
        """Queue an UNSUBSCRIBE; an :class:`UnsubscribeCompleted` event carries ``token``."""
        self._seq += 1
        self._queue.append(_Entry(_UNSUBSCRIBE, self._seq, 0, request, token))
        self._pump(now)

    def acknowledge(self, ack: Ack, now: float) -> None:
        """The application has the message of ``ack``: send PUBACK/PUBREC, in arrival order."""
        if ack.done or ack.generation != self._generation:
            return
        ack.done = True
        if ack.qos == 2:
            # Recorded now, not when its PUBREC's turn comes: the application has it, and a
            # restart before then must not deliver it again [MQTT-4.3.3-10].
            try:
                self.config.incoming_store.put(ack.packet_id, b"")
            except Exception:
                log.exception("incoming store failed to record packet id %d", ack.packet_id)
        acks = self._acks
        while acks and acks[0].done:
            done = acks.popleft()
            packet_id = done.packet_id
            del self._ack_by_id[packet_id]
            if done.qos == 2:
                self._received_qos2.add(packet_id)
                if self.state is State.CONNECTED:
                    self._send(
                        codec.encode_pubrec(packet_id),
                        now,
                        PubRec(packet_id) if self.config.trace_packets else None,
                    )
            elif self.state is State.CONNECTED:
                self._send(
                    codec.encode_puback(packet_id),
                    now,
                    PubAck(packet_id) if self.config.trace_packets else None,
                )

    def disconnect(
        self, now: float, reason_code: int = 0, properties: Properties = NO_PROPERTIES
    ) -> None:
        """Send DISCONNECT and ask for the connection to close."""
        if self.state not in (State.CONNECTED, State.CONNECTING):
            return
        packet = Disconnect(reason_code, properties)
        self._send(codec.encode_packet(packet, self._level), now, packet)
        self.state = State.CLOSING
        self._events.append(ConnectionClosing(None))

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
        self._send(codec.encode_packet(packet, MQTT_5), now, packet)

    def pause_writing(self) -> None:
        """The transport's buffer is full: keep new work queued until :meth:`resume_writing`.

        Acknowledgements and keepalive still go out; only PUBLISH/SUBSCRIBE/UNSUBSCRIBE wait,
        which bounds memory when the application publishes faster than the network drains.
        """
        self._writable = False

    def resume_writing(self, now: float) -> None:
        """The transport can take more: send what waited."""
        self._writable = True
        self._pump(now)

    def fail_pending(self, error: MQTTError, *, forget: bool = True) -> None:
        """Complete every unfinished operation with ``error`` (the client is closing).

        Args:
            error: what the operations' waiters receive.
            forget: also remove the QoS 1/2 messages from the outgoing store. Pass False with a
                durable store so that the next run finishes them.
        """
        for entry in (
            list(self._queue) + list(self._inflight.values()) + list(self._requests.values())
        ):
            if forget and entry.kind == _PUBLISH and entry.qos:
                self._store_delete(entry.key)
            self._complete(entry, error)
        self._queue.clear()
        self._queued_bytes = 0
        self._inflight.clear()
        self._qos2_inflight = 0
        self._requests.clear()

    # -- internals: sending ----------------------------------------------------------------------

    def _send(self, data: bytes, now: float, packet: Packet | None = None) -> None:
        self._out.append(data)
        self._last_sent = now
        if self.config.trace_packets and packet is not None:
            self._events.append(PacketSent(packet))

    def _resolve_outgoing_alias(self, request: PublishRequest) -> PublishRequest:
        """A PUBLISH with a Topic Alias: remember the alias's topic, or resolve an empty topic
        to it. Every queued and stored form carries the topic, so it stays valid on any
        connection; the wire form drops it where it may (:meth:`_wire_topic_field`)."""
        alias: int = request.properties.topic_alias  # type: ignore[assignment]
        if request.topic:
            self._alias_topics[alias] = request.topic
            return request
        topic = self._alias_topics.get(alias)
        if topic is None:
            raise InvalidArgumentError(
                f"topic alias {alias} has no topic yet: publish once with the topic and the "
                "alias, then with an empty topic and the alias"
            )
        resolved = PublishRequest(
            topic,
            topic.encode("utf-8"),
            request.payload,
            request.qos,
            request.retain,
            request.properties,
            request.properties_bytes,
        )
        resolved.alias_only = True
        return resolved

    def _wire_topic_field(self, request: PublishRequest) -> bytes:
        """The topic field to send now: empty for an alias-only message whose alias this
        connection already maps to its topic (MQTT 5.0, 3.3.2.3.4); otherwise the topic, which sets
        the alias for the rest of this connection (mappings never carry over to another one)."""
        alias: int = request.properties.topic_alias  # type: ignore[assignment]
        if request.alias_only and self._out_aliases.get(alias) == request.topic:
            return codec.EMPTY_TOPIC_FIELD
        self._out_aliases[alias] = request.topic
        return request.topic_field

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

    def _check_sendable(self, request: PublishRequest) -> None:
        # Limits the broker announced in CONNACK (MQTT 5) [MQTT-3.2.2-11, -14, -15].
        if request.qos > self._max_qos:
            raise PublishError(
                f"the broker supports QoS up to {self._max_qos}; cannot publish at QoS "
                f"{request.qos}",
                ReasonCode.QOS_NOT_SUPPORTED,
            )
        if request.retain and not self._retain_available:
            raise PublishError(
                "the broker does not support retained messages", ReasonCode.RETAIN_NOT_SUPPORTED
            )
        alias = request.properties.topic_alias
        if alias is not None:
            # [MQTT-3.3.2-9]: no Topic Alias above the broker's Topic Alias Maximum (absent: 0).
            connack = self.connack
            maximum = (connack.properties.topic_alias_maximum or 0) if connack else 0
            if alias > maximum:
                raise PublishError(
                    f"topic alias {alias} exceeds the broker's Topic Alias Maximum {maximum}",
                    ReasonCode.TOPIC_ALIAS_INVALID,
                )
        # The exact size: a PUBLISH of exactly Maximum Packet Size is allowed [MQTT-3.2.2-15].
        props = request.properties_bytes
        size = codec.packet_size(
            codec.publish_remaining_length(
                len(request.topic_bytes),
                request.qos,
                len(request.payload),
                len(props) if props is not None else None,
            )
        )
        if size > self._max_out_packet:
            raise PacketTooLargeError(
                f"this PUBLISH is {size:,} bytes; the broker accepts at most "
                f"{self._max_out_packet:,} (its Maximum Packet Size)"
            )

    def _allocate_id(self) -> int:
        # [MQTT-2.2.1-?]: a packet identifier is not reused while its flow is unfinished.
        inflight, requests = self._inflight, self._requests
        packet_id = self._next_id
        for _ in range(65_535):
            if packet_id not in inflight and packet_id not in requests:
                self._next_id = packet_id % 65_535 + 1
                return packet_id
            packet_id = packet_id % 65_535 + 1
        raise QueueFullError("all 65,535 packet identifiers are in use")  # pragma: no cover

    def _send_publish(self, entry: _Entry, now: float) -> None:
        request: PublishRequest = entry.request
        aliased = request.properties_bytes is not None and request.properties.topic_alias
        if not entry.qos:
            if aliased:
                data = encode_request(request, 0, self._wire_topic_field(request))
            else:
                data = encode_request(request, 0)
            self._out_size += len(data)
            self._send(data, now)
            if self.config.trace_packets:
                self._events.append(PacketSent(codec.decode(data, self._level)))
            if entry.token is not None:
                self._events.append(PublishCompleted(entry.token))
            return
        packet_id = self._allocate_id()
        entry.packet_id = packet_id
        if entry.data:
            # Queued earlier with packet id 0: patch the identifier in place of re-encoding.
            props = request.properties_bytes
            tail = len(request.payload) + (len(props) if props else 0)
            data = codec.set_packet_id(entry.data, packet_id, tail)
        else:
            data = encode_request(request, packet_id)
        entry.data = data
        entry.state = _SENT
        self._sent_count += 1
        entry.sent_mark = self._sent_count
        entry.sent_at = now
        self.config.outgoing_store.put(entry.key, data)
        self._inflight[packet_id] = entry
        if entry.qos == 2:
            self._qos2_inflight += 1
        if aliased:
            # Stored with its topic (a resend on another connection must carry it); on the wire
            # without it when the alias is already set on this connection.
            topic_field = self._wire_topic_field(request)
            if topic_field is not request.topic_field:
                data = encode_request(request, packet_id, topic_field)
        self._out_size += len(data)
        self._send(data, now)
        if self.config.trace_packets:
            self._events.append(PacketSent(codec.decode(data, self._level)))

    def _send_request(self, entry: _Entry, now: float) -> None:
        packet_id = self._allocate_id()
        entry.packet_id = packet_id
        self._sent_count += 1
        entry.sent_mark = self._sent_count
        self._requests[packet_id] = entry
        request = entry.request
        packet: Packet
        if entry.kind == _SUBSCRIBE:
            packet = Subscribe(packet_id, request.subscriptions, request.properties)
        else:
            packet = Unsubscribe(packet_id, request.topic_filters, request.properties)
        data = codec.encode_packet(packet, self._level)
        if self._refuse_too_large(entry, data):
            return
        self._send(data, now, packet)

    def _refuse_too_large(self, entry: _Entry, data: bytes) -> bool:
        # [MQTT-3.1.2-24, -25]: a packet over the broker's Maximum Packet Size is not sent; its
        # operation completes with the error. True if ``entry`` (a SUBSCRIBE / UNSUBSCRIBE
        # holding its packet id) was refused.
        if len(data) <= self._max_out_packet:
            return False
        del self._requests[entry.packet_id]
        what = "SUBSCRIBE" if entry.kind == _SUBSCRIBE else "UNSUBSCRIBE"
        error = PacketTooLargeError(
            f"this {what} is {len(data):,} bytes; the broker accepts at most "
            f"{self._max_out_packet:,} (its Maximum Packet Size)"
        )
        self._complete(entry, error)
        return True

    def pump(self, now: float) -> None:
        """Send queued work, now that :meth:`data_to_send` has made room (the driver calls it
        after writing, while :attr:`wants_to_send`)."""
        self._pump(now)

    @property
    def output_full(self) -> bool:
        """True once a whole batch (about 256 KB) of messages waits in :meth:`data_to_send`:
        a driver in the middle of a long burst of calls should write it now, so that the
        burst streams out instead of leaving when it ends."""
        return self._out_size >= OUT_LIMIT

    @property
    def wants_to_send(self) -> bool:
        """True when queued work waits only for room in :meth:`data_to_send`'s output."""
        return bool(self._queue) and self._writable and self.state is State.CONNECTED

    def _pump(self, now: float) -> None:
        """Move queued work to the wire while connected and the window allows."""
        if self.state is not State.CONNECTED or not self._writable:
            return
        queue = self._queue
        while queue:
            if self._out_size >= OUT_LIMIT:
                return  # the driver writes this out, then calls pump() again
            entry = queue[0]
            if entry.kind == _PUBLISH:
                if entry.qos and not self._has_room():
                    return
                queue.popleft()
                self._queued_bytes -= len(entry.request.payload)
                try:
                    if self._level == MQTT_5:
                        self._check_sendable(entry.request)  # limits only MQTT 5 announces
                except MQTTError as exc:
                    # Refused for good (over the broker's limits [MQTT-3.2.2-11, -14, -15]): drop
                    # it from the store too, or every restart would load it again.
                    if entry.qos:
                        self._store_delete(entry.key)
                    self._complete(entry, exc)
                    continue
                try:
                    self._send_publish(entry, now)
                except Exception as exc:  # the store failed: this message cannot go safely
                    log.exception("outgoing store failed; message %d not sent", entry.key)
                    error = StoreError(f"the outgoing store failed: {exc!r}")
                    error.__cause__ = exc
                    self._complete(entry, error)
            else:
                if len(self._inflight) + len(self._requests) >= 65_535:
                    return  # every packet identifier is in use: wait for one to be freed
                queue.popleft()
                self._send_request(entry, now)

    def _store_put(self, key: int, value: bytes) -> None:
        self.config.outgoing_store.put(key, value)

    def _store_delete(self, key: int) -> None:
        # A failed delete leaves a finished message in a durable store, to be sent again
        # (with DUP) after a restart: a duplicate, never a loss. Not worth dropping the
        # connection for.
        try:
            self.config.outgoing_store.delete(key)
        except Exception:
            log.exception("outgoing store failed to delete entry %d", key)

    def _has_room(self) -> bool:
        # The in-flight window, and the QoS 2 window (MQTT 3.x brokers keep QoS 2 messages in
        # flight on their side until PUBREL; Mosquitto drops those beyond its window). A full
        # QoS 2 window holds QoS 1 back too: Mosquitto counts both against one incoming quota
        # and answers a QoS 1 PUBLISH beyond it with a PUBACK (0x97, which MQTT 3.1.1 cannot
        # carry: a plain PUBACK) and drops the message.
        if len(self._inflight) >= self._id_limited_window():
            return False
        return self._qos2_inflight < self._window_qos2

    def _id_limited_window(self) -> int:
        # The window, but never more than the packet identifiers that SUBSCRIBE / UNSUBSCRIBE
        # leave free: an identifier is not reused while in flight [MQTT-2.2.1-3].
        return min(self._window, 65_535 - len(self._requests))

    def _complete(self, entry: _Entry, error: MQTTError | None, reason_code: int = 0) -> None:
        if entry.kind == _PUBLISH:
            if self._restored:
                self._restored.pop(entry.key, None)
            if entry.qos and error is None:
                self._store_delete(entry.key)
            if entry.token is not None:
                self._events.append(PublishCompleted(entry.token, error, reason_code))
        elif entry.kind == _SUBSCRIBE:
            subs = entry.request.subscriptions
            self._events.append(SubscribeCompleted(entry.token, subs, (), error))
        else:
            filters = entry.request.topic_filters
            self._events.append(UnsubscribeCompleted(entry.token, filters, (), error))

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
        handler = _HANDLERS[ptype]
        handler(self, packet, now)

    def _on_connack(self, packet: ConnAck, now: float) -> None:
        level = self._level
        if packet.reason_code != 0:
            error = ConnectRefusedError(
                packet.reason_code, level, packet.properties.reason_string or ""
            )
            self._events.append(ConnectionRefused(packet, error))
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
            if props.receive_maximum is not None:
                self._window = min(self.config.max_inflight, props.receive_maximum)
            if props.maximum_packet_size is not None:
                self._max_out_packet = props.maximum_packet_size
            if props.maximum_qos is not None:
                self._max_qos = props.maximum_qos
            if props.retain_available is not None:
                self._retain_available = bool(props.retain_available)
            if props.server_keep_alive is not None:
                self._keepalive = float(props.server_keep_alive)
            if props.assigned_client_identifier and not self.config.client_id:
                # Keep it so that a resumed session reconnects under the same identity.
                self.config.client_id = props.assigned_client_identifier
        self.connack = packet
        self.state = State.CONNECTED
        self._ping_sent = None
        self._last_received = now
        if packet.session_present:
            self._resume(now)
        else:
            self._restart(now)
        self._events.append(Connected(packet))
        self._pump(now)

    def _resume(self, now: float) -> None:
        # The broker kept our session: resend what it has not acknowledged, in the original
        # order [MQTT-4.4.0-1], with DUP on PUBLISH [MQTT-3.3.1-1]. SUBSCRIBE / UNSUBSCRIBE are
        # not session state: send them again too, same identifiers, in their place among the
        # PUBLISH (one FIFO order for all work, as the application asked).
        pending = sorted([*self._inflight.values(), *self._requests.values()], key=lambda e: e.seq)
        # PUBREL go in the order their PUBREC came [MQTT-4.6.0-4] (_inflight keeps it), in the
        # places the released messages had.
        released = iter([e for e in self._inflight.values() if e.state == _RELEASED])
        pending = [next(released) if e.state == _RELEASED else e for e in pending]
        for entry in pending:
            packet_id = entry.packet_id
            if entry.kind == _PUBLISH:
                if entry.state == _RELEASED:
                    self._send(entry.data, now, PubRel(packet_id))
                    continue
                if self._level == MQTT_5:
                    try:
                        # This CONNACK's limits bind the resent messages too [MQTT-3.2.2-11,
                        # -14], [MQTT-3.1.2-24]: one over them completes with the error.
                        self._check_sendable(entry.request)
                    except MQTTError as exc:
                        del self._inflight[packet_id]
                        if entry.qos == 2:
                            self._qos2_inflight -= 1
                        self._store_delete(entry.key)
                        self._complete(entry, exc)
                        continue
                entry.data = data = codec.set_dup(entry.data)
                self._sent_count += 1
                entry.sent_mark = self._sent_count
                entry.sent_at = now
                request = entry.request
                if request.properties_bytes is not None and request.properties.topic_alias:
                    # Resent with its topic (stored forms always carry it): the alias is set.
                    self._out_aliases[request.properties.topic_alias] = request.topic
                self._send(data, now)
                if self.config.trace_packets:
                    self._events.append(PacketSent(codec.decode(data, self._level)))
                continue
            request = entry.request
            packet: Packet
            if entry.kind == _SUBSCRIBE:
                packet = Subscribe(packet_id, request.subscriptions, request.properties)
            else:
                packet = Unsubscribe(packet_id, request.topic_filters, request.properties)
            data = codec.encode_packet(packet, self._level)
            if not self._refuse_too_large(entry, data):
                self._send(data, now, packet)

    def _restart(self, now: float) -> None:
        # A new session on the broker (clean start, or it lost ours) [MQTT-3.2.2-5]: drop the
        # old session's incoming state, send unfinished messages again as new ones, and restore
        # subscriptions.
        self._generation += 1
        self._acks.clear()
        self._ack_by_id.clear()
        incoming = self.config.incoming_store
        for packet_id, _ in list(incoming.iterate()):  # acknowledged, PUBREC'd or not
            incoming.delete(packet_id)
        self._received_qos2.clear()
        requeue: list[_Entry] = []
        for entry in self._inflight.values():
            if entry.state == _RELEASED:
                # PUBREC came back: the broker owned the message, so it is delivered.
                self._complete(entry, None)
                continue
            entry.state = _QUEUED
            entry.packet_id = 0
            if self._record_queued:
                # Stored again in its queued form (packet id 0, no DUP): a restart before it is
                # sent must find it queued, not in flight under an identifier of the lost
                # session.
                entry.data = encode_request(entry.request, 0)
                self._store_put(entry.key, entry.data)
            else:
                entry.data = b""  # encoded again, with its new identifier, when sent
                self.config.outgoing_store.delete(entry.key)
            requeue.append(entry)
        self._inflight.clear()
        self._qos2_inflight = 0
        for entry in self._requests.values():
            entry.packet_id = 0
            requeue.append(entry)
        self._requests.clear()
        requeue.sort(key=lambda e: e.seq)
        self._queue.extendleft(reversed(requeue))
        self._queued_bytes += sum(len(e.request.payload) for e in requeue if e.kind == _PUBLISH)
        if self.subscriptions:
            # Subscribe before anything else so nothing published to us in between is missed.
            # Filters subscribed with properties (MQTT 5: a Subscription Identifier, user
            # properties) are restored with them, one SUBSCRIBE per distinct set.
            groups: list[tuple[Properties, list[Subscription]]] = []
            for topic_filter, sub in self.subscriptions.items():
                props = self._sub_properties.get(topic_filter, NO_PROPERTIES)
                for known, members in groups:
                    if known == props:
                        members.append(sub)
                        break
                else:
                    groups.append((props, [sub]))
            for props, members in reversed(groups):
                self._seq += 1
                request = SubscribeRequest(tuple(members), props)
                self._queue.appendleft(_Entry(_SUBSCRIBE, self._seq, 0, request, None))
        del now

    def _on_publish(self, packet: Publish, now: float) -> None:
        if self._level == MQTT_5:
            packet = self._resolve_alias(packet)
        qos = packet.qos
        if not qos:
            self._events.append(MessageReceived(packet, None))
            return
        packet_id: int = packet.packet_id  # type: ignore[assignment]
        if qos == 2 and packet_id in self._received_qos2:
            # Already delivered; the broker did not get our PUBREC [MQTT-4.3.3-?]: answer again.
            self._send(
                codec.encode_pubrec(packet_id),
                now,
                PubRec(packet_id) if self.config.trace_packets else None,
            )
            return
        if packet_id in self._ack_by_id:
            # The application has it and has not finished; the acknowledgement will follow.
            return
        if self._level == MQTT_5 and not self._warned_receive_max:
            limit = self._receive_max
            if len(self._ack_by_id) + len(self._received_qos2) >= limit:
                # [MQTT-3.3.4-9] forbids this, and section 4.13 says the client SHOULD then
                # close with 0x93. Tolerated instead (and logged once per connection): Mosquitto
                # 2.0 exceeds the client's Receive Maximum once acknowledgements flow, and
                # closing would turn a broker's bookkeeping slip into a reconnect loop.
                self._warned_receive_max = True
                log.warning(
                    "the broker exceeded our Receive Maximum of %d (tolerated; the messages "
                    "are delivered)",
                    limit,
                )
        ack = Ack(packet_id, qos, self._generation)
        self._acks.append(ack)
        self._ack_by_id[packet_id] = ack
        self._events.append(MessageReceived(packet, ack))

    def _resolve_alias(self, packet: Publish) -> Publish:
        alias = packet.properties.topic_alias
        if alias is None:
            return packet
        if alias > self._alias_max:
            # [MQTT-3.3.2-11] (the server's duty; -9 is ours)
            raise ProtocolError(
                f"topic alias {alias} exceeds our Topic Alias Maximum {self._alias_max}",
                ReasonCode.TOPIC_ALIAS_INVALID,
            )
        if packet.topic:
            self._aliases[alias] = packet.topic
            return packet
        topic = self._aliases.get(alias)
        if topic is None:
            raise ProtocolError(
                f"topic alias {alias} used before it was set", ReasonCode.TOPIC_ALIAS_INVALID
            )
        return Publish(
            topic,
            packet.payload,
            packet.qos,
            packet.retain,
            packet.dup,
            packet.packet_id,
            packet.properties,
        )

    def _on_puback(self, packet: PubAck, now: float) -> None:
        self._puback(packet.packet_id, packet.reason_code, now)

    def _puback(self, packet_id: int, reason_code: int, now: float) -> None:
        entry = self._inflight.get(packet_id)
        if entry is None or (entry.qos != 1 and entry.state != _SENT):
            log.info("ignored PUBACK for packet id %d, which is not in flight", packet_id)
            return
        del self._inflight[packet_id]
        if entry.qos == 2:
            # A broker that downgrades QoS 2 to 1 (RabbitMQ) answers with PUBACK: the message
            # was delivered at QoS 1. The flow is over; its result says so.
            if not self._warned_downgrade:
                self._warned_downgrade = True
                log.warning(
                    "the broker answered a QoS 2 PUBLISH (packet id %d) with PUBACK: it "
                    "delivers QoS 2 messages at QoS 1 (at least once, not exactly once)",
                    packet_id,
                )
            self._finish_publish(entry, reason_code, downgraded=True)
        else:
            self._finish_publish(entry, reason_code)
        if self._queue:
            self._pump(now)

    def _finish_publish(self, entry: _Entry, reason_code: int, *, downgraded: bool = False) -> None:
        # The entry has just left _inflight.
        if entry.qos == 2:
            self._qos2_inflight -= 1
        if entry.sent_mark > self._acked_mark:  # noqa: PLR1730 - per message: no call
            self._acked_mark = entry.sent_mark
        if self._strikes:
            self._strikes.pop(entry.key, None)
        if self._restored:
            self._restored.pop(entry.key, None)
        self._store_delete(entry.key)
        error = None
        if reason_code >= 0x80:
            error = PublishError("the broker refused the message", reason_code)
        if entry.token is not None:
            self._events.append(PublishCompleted(entry.token, error, reason_code, downgraded))

    def _on_pubrec(self, packet: PubRec, now: float) -> None:
        self._pubrec(packet.packet_id, packet.reason_code, now)

    def _pubrec(self, packet_id: int, reason_code: int, now: float) -> None:
        entry = self._inflight.get(packet_id)
        if entry is None or entry.qos != 2:
            log.info("PUBREC for packet id %d, which is not in flight", packet_id)
            if reason_code < 0x80:
                # Let the broker finish its side [MQTT-4.3.3-?]; MQTT 5 says why.
                reason = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND if self._level == MQTT_5 else 0
                rel = PubRel(packet_id, reason)
                self._send(codec.encode_packet(rel, self._level), now, rel)
            return
        if reason_code >= 0x80:
            # A failed PUBREC ends the flow [MQTT-4.3.3-?]; the identifier is free again.
            del self._inflight[packet_id]
            self._finish_publish(entry, reason_code)
            self._pump(now)
            return
        if entry.sent_mark > self._acked_mark:  # noqa: PLR1730 - per message: no call
            self._acked_mark = entry.sent_mark
        rel_bytes = codec.encode_pubrel(packet_id)
        if entry.state != _RELEASED:
            entry.state = _RELEASED
            entry.data = rel_bytes
            try:
                self._store_put(entry.key, rel_bytes)
            except Exception:
                # The PUBLISH form stays stored: after a restart it is resent with DUP, which
                # the broker answers with PUBREC again. Logged, and the flow goes on.
                log.exception("outgoing store failed to record PUBREC of entry %d", entry.key)
            # Keep released flows in PUBREC order, the order PUBREL must go in [MQTT-4.6.0-4].
            self._inflight[packet_id] = self._inflight.pop(packet_id)
        self._send(rel_bytes, now, PubRel(packet_id) if self.config.trace_packets else None)

    def _on_pubrel(self, packet: PubRel, now: float) -> None:
        self._pubrel(packet.packet_id, now)

    def _pubrel(self, packet_id: int, now: float) -> None:
        reason = 0
        if packet_id in self._received_qos2:
            self._received_qos2.discard(packet_id)
            try:
                self.config.incoming_store.delete(packet_id)
            except Exception:
                log.exception("incoming store failed to delete packet id %d", packet_id)
        elif self._level == MQTT_5:
            reason = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
        if not reason:
            self._send(
                codec.encode_pubcomp(packet_id),
                now,
                PubComp(packet_id) if self.config.trace_packets else None,
            )
        else:
            comp = PubComp(packet_id, reason)
            self._send(codec.encode_packet(comp, self._level), now, comp)

    def _on_pubcomp(self, packet: PubComp, now: float) -> None:
        self._pubcomp(packet.packet_id, now)

    def _pubcomp(self, packet_id: int, now: float) -> None:
        entry = self._inflight.get(packet_id)
        if entry is None or entry.state != _RELEASED:
            log.info("ignored PUBCOMP for packet id %d, which is not in flight", packet_id)
            return
        del self._inflight[packet_id]
        self._finish_publish(entry, 0)
        if self._queue:
            self._pump(now)

    def _on_suback(self, packet: SubAck, now: float) -> None:
        entry = self._requests.get(packet.packet_id)
        if entry is None or entry.kind != _SUBSCRIBE:
            log.info("ignored SUBACK for packet id %d, which is not pending", packet.packet_id)
            return
        subs: tuple[Subscription, ...] = entry.request.subscriptions
        if len(packet.reason_codes) != len(subs):
            # [MQTT-3.9.3-1]: one return code per topic filter.
            raise ProtocolError(
                f"SUBACK has {len(packet.reason_codes)} return codes for {len(subs)} filters"
            )
        del self._requests[packet.packet_id]
        self._acked_mark = max(self._acked_mark, entry.sent_mark)
        props: Properties = entry.request.properties
        for sub, code in zip(subs, packet.reason_codes, strict=True):
            if code < 0x80:
                self.subscriptions[sub.topic_filter] = sub
                if props:
                    self._sub_properties[sub.topic_filter] = props
                else:
                    self._sub_properties.pop(sub.topic_filter, None)
        error = None
        if all(code >= 0x80 for code in packet.reason_codes):
            error = SubscribeError("the broker refused the subscription", packet.reason_codes[0])
        self._events.append(SubscribeCompleted(entry.token, subs, packet.reason_codes, error))
        self._pump(now)

    def _on_unsuback(self, packet: UnsubAck, now: float) -> None:
        entry = self._requests.get(packet.packet_id)
        if entry is None or entry.kind != _UNSUBSCRIBE:
            log.info("ignored UNSUBACK for packet id %d, which is not pending", packet.packet_id)
            return
        filters: tuple[str, ...] = entry.request.topic_filters
        codes = packet.reason_codes
        if codes and len(codes) != len(filters):
            raise ProtocolError(
                f"UNSUBACK has {len(codes)} reason codes for {len(filters)} filters"
            )
        del self._requests[packet.packet_id]
        self._acked_mark = max(self._acked_mark, entry.sent_mark)
        for i, topic_filter in enumerate(filters):
            if not codes or codes[i] < 0x80:
                self.subscriptions.pop(topic_filter, None)
                self._sub_properties.pop(topic_filter, None)
        error = None
        if codes and all(code >= 0x80 for code in codes):
            error = UnsubscribeError("the broker refused to unsubscribe", codes[0])
        self._events.append(UnsubscribeCompleted(entry.token, filters, codes, error))
        self._pump(now)

    def _on_pingresp(self, packet: PingResp, now: float) -> None:
        del packet, now
        self._ping_sent = None

    def _on_disconnect(self, packet: Disconnect, now: float) -> None:
        del now
        self._events.append(ServerDisconnected(packet))
        error = ServerDisconnectError(packet.reason_code, packet.properties.reason_string or "")
        self._close(error, None, send_disconnect=False)

    def _on_auth(self, packet: Auth, now: float) -> None:
        del now
        self._events.append(AuthReceived(packet))

    # -- internals: closing ----------------------------------------------------------------------

    def _close(
        self, error: MQTTError, reason_code: int | None, *, send_disconnect: bool = True
    ) -> None:
        """End the connection because of ``error``; MQTT 5 tells the server why."""
        if self.state is State.CLOSING:
            return
        if send_disconnect and self._level == MQTT_5 and reason_code is not None:
            # [MQTT-4.13.1-1]: on a protocol error, send DISCONNECT with the reason, then close.
            packet = Disconnect(reason_code)
            self._out.append(codec.encode_packet(packet, MQTT_5))
        self.error = error
        self.state = State.CLOSING
        self._events.append(ConnectionClosing(error))

    def _reset_connection(self) -> None:
        cfg = self.config
        self._level = cfg.protocol_level
        self._window = cfg.max_inflight
        self._window_qos2 = cfg.max_inflight_qos2 or 65_535
        self._max_out_packet = codec.MAX_PACKET_SIZE
        self._max_qos = 2
        self._retain_available = True
        self._keepalive = float(cfg.keepalive)
        self._aliases = {}
        self._out_aliases = {}  # never carried over to another connection (MQTT 5.0, 3.3.2.3.4)
        props = cfg.properties if cfg.protocol_level == MQTT_5 else NO_PROPERTIES
        self._alias_max = props.topic_alias_maximum or 0
        self._receive_max = props.receive_maximum or 65_535
        if props.maximum_packet_size:
            self._buffer.max_packet_size = min(cfg.max_packet_size, props.maximum_packet_size)
        else:
            self._buffer.max_packet_size = cfg.max_packet_size
        self._buffer.clear()
        self._out = []
        self._out_size = 0
        self._ping_sent = None
        self._writable = True
        self._warned_receive_max = False

    def _restore(self) -> int:
        """Load unfinished flows from the stores (a durable store after a restart); return the
        largest outgoing key found (0: none)."""
        cfg = self.config
        last_key = 0
        for key, value in cfg.outgoing_store.iterate():
            last_key = max(last_key, key)
            if not value:
                continue
            self._seq += 1
            try:
                packet = codec.decode_stored(value, cfg.protocol_level)
            except ProtocolError as exc:
                log.warning("outgoing store entry %d does not decode (%s); skipped", key, exc)
                continue
            if isinstance(packet, PubRel):
                packet_id = packet.packet_id
                entry = _Entry(_PUBLISH, self._seq, 2, None, None, key)
                entry.packet_id, entry.state, entry.data = packet_id, _RELEASED, value
                entry.sent_mark, entry.sent_at = 0, 0.0
                self._inflight[packet_id] = entry
                self._qos2_inflight += 1
                continue
            request = PublishRequest(
                packet.topic,
                packet.topic.encode("utf-8"),
                packet.payload,
                packet.qos,
                packet.retain,
                packet.properties,
                codec.encode_properties(packet.properties, PacketType.PUBLISH)
                if cfg.protocol_level == MQTT_5
                else None,
            )
            entry = _Entry(_PUBLISH, self._seq, packet.qos, request, None, key)
            entry.data = value
            if packet.packet_id:  # 0: queued before it was sent
                entry.packet_id, entry.state = packet.packet_id, _SENT
                entry.sent_mark, entry.sent_at = 0, 0.0
                self._inflight[packet.packet_id] = entry
                if packet.qos == 2:
                    self._qos2_inflight += 1
            else:
                self._queue.append(entry)
                self._queued_bytes += len(request.payload)
                self._restored[key] = entry
        for key, _value in cfg.incoming_store.iterate():
            self._received_qos2.add(key)
        return last_key

    def __repr__(self) -> str:
        return (
            f"<ClientSession {self.state.name} client_id={self.config.client_id!r} "
            f"queued={len(self._queue)} inflight={len(self._inflight)}>"
        )


# The receive fast path's tables: the first bytes of every PUBLISH, and those of the four
# acknowledgements (their packet types).
_PUBLISH_FIRST_BYTES: Final = codec.PUBLISH_FIRST_BYTES
_SHORT_ACK_TYPES: Final = codec.SHORT_ACK_TYPES
_PUBACK: Final = PacketType.PUBACK
_PUBREC: Final = PacketType.PUBREC
_PUBCOMP: Final = PacketType.PUBCOMP

_HANDLERS: Final[dict[int, Any]] = {
    PacketType.CONNACK: ClientSession._on_connack,
    PacketType.PUBLISH: ClientSession._on_publish,
    PacketType.PUBACK: ClientSession._on_puback,
    PacketType.PUBREC: ClientSession._on_pubrec,
    PacketType.PUBREL: ClientSession._on_pubrel,
    PacketType.PUBCOMP: ClientSession._on_pubcomp,
    PacketType.SUBACK: ClientSession._on_suback,
    PacketType.UNSUBACK: ClientSession._on_unsuback,
    PacketType.PINGRESP: ClientSession._on_pingresp,
    PacketType.DISCONNECT: ClientSession._on_disconnect,
    PacketType.AUTH: ClientSession._on_auth,
}
