"""The fuzz target for :class:`ClientSession`: broker bytes in, every invariant checked after every
call.

What it does
------------
:func:`run_case` builds a session in one of the :data:`STARTS` states with a scripted,
well-behaved broker, then plays a fuzzed broker: it cuts ``case.data`` at ``case.cuts`` and feeds
the chunks to ``receive_data``. Before each chunk it moves the clock (``case.steps``), fires every
deadline on the way (``handle_timer`` at the deadline's own time, then once more at the new
``now``), acknowledges delivered messages as ``case.ack_policy`` says, and may make one
application call (publish, subscribe, disconnect...). After every call into the session it reads
``data_to_send()`` and ``events_received()`` and checks the invariants below. Last, the *drain*:
the connection is lost, a new one is made, and a well-behaved broker answers everything, which
must finish every operation the application started and leave both stores empty.

Invariants (a failure raises :class:`InvariantViolation`, an ``AssertionError``):

1. ``receive_data``, ``handle_timer``, ``connection_*`` and ``acknowledge`` never raise; sending
   calls raise only the documented refusals; a deadline always moves on once fired.
2. Every event is of a documented type, in a legal place: ``Connected`` / ``ConnectionRefused``
   only while connecting, ``ServerDisconnected`` / ``AuthReceived`` only in MQTT 5, trace events
   only with ``trace_packets``, and ``ConnectionClosing`` last.
3. ``ConnectionClosing`` carries a :class:`ProtocolError` (``MalformedPacketError`` included; never
   the 0x83 of an internal error) from received data, a ``KeepaliveTimeoutError`` from the timer,
   a ``ServerDisconnectError`` right after ``ServerDisconnected``, a ``ConnectionRefusedError``
   right after ``ConnectionRefused``, or None after the application's own ``disconnect()``.
   MQTT 5 protocol errors put one DISCONNECT, last, with the error's reason code (a valid
   DISCONNECT reason >= 0x80) in the output; nothing else sends DISCONNECT. After it the session
   writes nothing, processes no data (its books and buffer do not change) and emits nothing but
   what the application's own ``publish()`` causes (a full queue dropping a message).
4. Whatever is written is whole, valid client packets. PUBACK / PUBREC go only for messages the
   application acknowledged (or an already-received QoS 2 id, answered again).
5. ``MessageReceived`` carries a valid PUBLISH: a valid topic name, QoS 0-2, a packet id in
   1..65,535 with an ``Ack`` for QoS 1/2 (none for QoS 0), no DUP at QoS 0. An incoming QoS 2
   packet id is never delivered again while its flow is open (until the session's PUBCOMP once
   it holds the id as received, or a new broker session).
6. Outgoing work is never lost: the operations the application started and that have not
   completed are exactly those in the session's books (queue, in flight, awaiting SUBACK /
   UNSUBACK); each completes once; ``pending`` only drops by completions.
7. The stores match the books: outgoing store keys == unfinished QoS 1/2 PUBLISH (those sent only,
   with the session's private default store; its value the
   PUBLISH under the in-flight id, or the PUBREL once released); incoming store keys == QoS 2 ids
   acknowledged by the application and not yet released; packet ids are unique across flows.
8. MQTT 5: nothing written exceeds the limits of the CONNACK accepted: Maximum Packet Size
   [MQTT-3.1.2-24] (below 5 bytes, only for PUBLISH / SUBSCRIBE / UNSUBSCRIBE: the fixed-size
   acks cannot shrink), Maximum QoS [MQTT-3.2.2-11], Retain Available [MQTT-3.2.2-14], Topic
   Alias Maximum; a PUBLISH goes by Topic Alias alone only once a PUBLISH with its topic has set
   the alias on the same connection (MQTT 5.0, 3.3.2.3.4).

Inputs: ``arbitrary`` bytes, and ``mutated`` valid streams: server packets chosen by
:data:`KINDS` specs (CONNACK, PUBLISH QoS 0/1/2 with or without DUP, the four acks for ids in
flight or not, SUBACK, UNSUBACK, PINGRESP, DISCONNECT and AUTH of MQTT 5, client-only packets),
encoded with ``codec.encode_packet`` at the case's level, then mutated (:data:`MUTATIONS`: bit
flips, byte set / insert / delete, truncation, random splices, duplicated, dropped or swapped
packets, corrupted Remaining Length). :func:`random_case` draws cases from a ``random.Random``
(``tools/fuzz.py``); :func:`cases` is the Hypothesis strategy (the CI run). A case holds the final
bytes, so ``FuzzCase.to_json()`` reproduces it exactly.

The harness reads private session state (:func:`_books`) to compare the books with the stores.
It changes none, except that the ``restored`` start gives the entries a restart loaded from the
stores a token each (as a front would), so that their completion can be followed.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from hypothesis import strategies as st

from mqttkit.protocol import codec
from mqttkit.protocol import flows as flows_module
from mqttkit.protocol import session as session_module
from mqttkit.protocol.errors import (
    ConnectionRefusedError,
    InvalidArgumentError,
    KeepaliveTimeoutError,
    MQTTError,
    PacketTooLargeError,
    ProtocolError,
    PublishError,
    QueueFullError,
    ReasonCode,
    ServerDisconnectError,
)
from mqttkit.protocol.packets import (
    MQTT_3_1,
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
)
from mqttkit.protocol.session import (
    Ack,
    AuthReceived,
    ClientSession,
    Connected,
    ConnectionClosing,
    ConnectionRefused,
    Event,
    MessageDropped,
    MessageReceived,
    PacketReceived,
    PacketSent,
    PublishCompleted,
    ServerDisconnected,
    SessionConfig,
    State,
    SubscribeCompleted,
    UnsubscribeCompleted,
    prepare_publish,
    prepare_subscribe,
    prepare_unsubscribe,
)
from mqttkit.protocol.store import MemoryStore, is_private
from mqttkit.protocol.topics import validate_topic_name

__all__ = [
    "ACK_POLICIES",
    "DOCUMENTED_EVENTS",
    "DTS",
    "FAMILIES",
    "KINDS",
    "LEVELS",
    "MUTATIONS",
    "OPS",
    "STARTS",
    "FuzzCase",
    "InvariantViolation",
    "Outcome",
    "build_start",
    "cases",
    "context_ids",
    "random_case",
    "render_stream",
    "run_case",
]

LEVELS: Final = (MQTT_3_1, MQTT_3_1_1, MQTT_5)
#: Where the session stands when the fuzzed broker starts talking.
STARTS: Final = (
    "connecting",  # CONNECT sent, clean start; publish/subscribe/unsubscribe queued offline
    "reconnecting",  # CONNECT sent again, clean_start=False, QoS 1/2 both ways unfinished
    "idle",  # connected, nothing pending, no incoming packet size limit
    "outgoing",  # connected; QoS 1/2 in flight (one QoS 2 released), SUBSCRIBE/UNSUBSCRIBE out
    "incoming",  # connected; incoming QoS 2 awaiting PUBREL, QoS 1/2 awaiting the application
    "resumed",  # "reconnecting" after CONNACK with Session Present: everything resent
    "restored",  # a new process loaded the stores, then CONNACK with Session Present
    "full_queue",  # connected, window full, queue at max_queued: publishing drops the oldest
    "aliased",  # MQTT 5: connected with Topic Aliases allowed, QoS 1 messages by alias in flight
)
CONNECTING_STARTS: Final = frozenset({"connecting", "reconnecting"})
FAMILIES: Final = ("arbitrary", "mutated")
#: When the application acknowledges delivered messages.
ACK_POLICIES: Final = ("immediate", "deferred", "reverse", "never")
#: Application calls a step may make before its chunk.
OPS: Final = (
    "none",
    "publish0",
    "publish1",
    "publish2",
    "subscribe",
    "unsubscribe",
    "pause",
    "resume",
    "pump",
    "disconnect",
)
#: Clock moves per step (seconds); keepalive is 10 s.
DTS: Final = (0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 3.0, 6.0, 12.0, 30.0)
#: Packet kinds of a mutated-valid stream; a spec is ``(kind, a, b, c)``, see :func:`render_packet`.
KINDS: Final = (
    "connack",
    "publish",
    "puback",
    "pubrec",
    "pubrel",
    "pubcomp",
    "suback",
    "unsuback",
    "pingresp",
    "disconnect",
    "auth",
    "client",
)
#: Mutations; one is ``(kind, a, b)``. Packet-level ones apply first, then byte-level ones.
MUTATIONS: Final = (
    "flip",
    "set",
    "insert",
    "delete",
    "truncate",
    "splice",
    "duplicate",
    "swap",
    "drop",
    "length",
)
_PACKET_MUTATIONS: Final = frozenset({"duplicate", "swap", "drop", "length"})

Spec = tuple[int, int, int, int]
Mutation = tuple[int, int, int]
Step = tuple[float, int]

_NOW: Final = 1000.0
_KEEPALIVE: Final = 10
#: The subscription the application makes (two filters: SUBACK must carry two codes).
_SUBS: Final = (Subscription("in/#", 1), Subscription("in/+/x", 2))
_UNSUBS: Final = ("in/#",)
_OUR_TOPICS: Final = frozenset({"out/0", "out/1", "out/2"})

# The session's private entry kinds and states (see flows.py), for reading its books.
_PUBLISH: Final = flows_module._PUBLISH
_SUBSCRIBE: Final = flows_module._SUBSCRIBE
_SENT: Final = flows_module._SENT
_RELEASED: Final = flows_module._RELEASED

#: Every event type the session documents: the Event subclasses it exports.
DOCUMENTED_EVENTS: Final = frozenset(
    obj
    for obj in (getattr(session_module, name) for name in session_module.__all__)
    if isinstance(obj, type) and issubclass(obj, Event) and obj is not Event
)
#: Packets a client may write after CONNECT (the harness never calls send_auth()).
_CLIENT_PACKETS: Final = (
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    Unsubscribe,
    PingReq,
    Disconnect,
)
_DISCONNECT_REASONS: Final = codec.REASON_CODES[PacketType.DISCONNECT]


class InvariantViolation(AssertionError):
    """The session broke an invariant of the module docstring."""


@dataclass(frozen=True)
class FuzzCase:
    """One fuzz input: everything needed to reproduce a run."""

    level: int
    """Protocol level: 3, 4 or 5."""
    start: str
    """One of :data:`STARTS`."""
    data: bytes
    """What the broker sends."""
    cuts: tuple[int, ...] = ()
    """Chunk boundaries (taken modulo ``len(data) + 1``)."""
    steps: tuple[Step, ...] = ()
    """Per chunk, cycled: (seconds the clock moves first, index into :data:`OPS`)."""
    ack_policy: str = "immediate"
    """One of :data:`ACK_POLICIES`."""
    trace: bool = False
    """Run with ``trace_packets`` (the generic receive path instead of the hot path)."""
    tail: float = 0.0
    """Seconds the clock moves after the last chunk (deadlines fire on the way)."""
    family: str = "mutated"
    """Where the bytes came from (reporting only)."""

    def chunks(self) -> list[bytes]:
        """``data`` cut at ``cuts``."""
        n = len(self.data)
        points = sorted({c % (n + 1) for c in self.cuts} | {0, n})
        return [self.data[i:j] for i, j in itertools.pairwise(points)] or [b""]

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict; :meth:`from_json` gives the case back."""
        return {
            "level": self.level,
            "start": self.start,
            "data": self.data.hex(),
            "cuts": list(self.cuts),
            "steps": [list(s) for s in self.steps],
            "ack_policy": self.ack_policy,
            "trace": self.trace,
            "tail": self.tail,
            "family": self.family,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> FuzzCase:
        """The case :meth:`to_json` wrote."""
        return cls(
            level=int(obj["level"]),
            start=str(obj["start"]),
            data=bytes.fromhex(obj["data"]),
            cuts=tuple(int(c) for c in obj.get("cuts", ())),
            steps=tuple((float(dt), int(op)) for dt, op in obj.get("steps", ())),
            ack_policy=str(obj.get("ack_policy", "immediate")),
            trace=bool(obj.get("trace", False)),
            tail=float(obj.get("tail", 0.0)),
            family=str(obj.get("family", "mutated")),
        )


@dataclass
class Outcome:
    """How one case ended (before the drain), for the outcome table."""

    closed: str = "open"
    """Class name of the ConnectionClosing error, "orderly" (our disconnect()) or "open"."""
    reason_code: int | None = None
    """The error's reason / return code, when it has one."""
    disconnect_sent: int | None = None
    """Reason code of the DISCONNECT the session sent on closing (MQTT 5), if any."""
    connected: bool = False
    """A CONNACK was accepted during the fuzzed phase (connecting starts)."""
    delivered: int = 0
    """MessageReceived events."""
    completed: int = 0
    """Operations completed (PublishCompleted, SubscribeCompleted, UnsubscribeCompleted)."""
    refused: int = 0
    """Sending calls refused at once (documented errors)."""

    def label(self) -> str:
        """``"MalformedPacketError 0x81"``, ``"KeepaliveTimeoutError"``, ``"open"``..."""
        if self.reason_code is None:
            return self.closed
        return f"{self.closed} 0x{self.reason_code:02X}"


# ---------------------------------------------------------------------------------------------
# Start states: a session and a well-behaved broker, scripted
# ---------------------------------------------------------------------------------------------


@dataclass
class _Start:
    session: ClientSession
    pending_acks: list[Ack] = field(default_factory=list)
    #: Topic Aliases the setup's PUBLISH packets set on the current connection.
    wire_aliases: dict[int, str] = field(default_factory=dict)


class _Script:
    """A session plus a scripted broker, for building a start state (no checks here)."""

    def __init__(
        self,
        level: int,
        *,
        clean: bool,
        window: int,
        max_packet: int,
        own_stores: bool = False,
        **extra: Any,
    ) -> None:
        props = (
            Properties(topic_alias_maximum=4, receive_maximum=8)
            if level == MQTT_5
            else NO_PROPERTIES
        )
        self.level = level
        if own_stores:
            # Stores the application passed in: queued messages are recorded too. Otherwise
            # the session's private ones, which record a message once it is sent.
            extra.setdefault("outgoing_store", MemoryStore())
            extra.setdefault("incoming_store", MemoryStore())
        self.config = SessionConfig(
            client_id="fuzz",
            protocol_level=level,
            clean_start=clean,
            keepalive=_KEEPALIVE,
            properties=props,
            max_inflight=window,
            max_packet_size=max_packet,
            **extra,
        )
        self.session = ClientSession(self.config)
        self.events: list[Event] = []
        self.tokens = 0
        self.wire_aliases: dict[int, str] = {}

    def _token(self) -> str:
        self.tokens += 1
        return f"setup-{self.tokens}"

    def flush(self) -> None:
        data = self.session.data_to_send()
        if data and self.level == MQTT_5:
            for frame in codec.PacketBuffer().feed(data):
                packet = codec.decode_packet(*frame, MQTT_5)
                alias = packet.properties.topic_alias if isinstance(packet, Publish) else None
                if alias is not None and packet.topic:  # type: ignore[attr-defined]
                    self.wire_aliases[alias] = packet.topic  # type: ignore[attr-defined]
        self.events += self.session.events_received()

    def feed(self, *packets: Packet) -> None:
        data = b"".join(codec.encode_packet(p, self.level) for p in packets)
        self.session.receive_data(data, _NOW)
        self.flush()

    def connect(
        self, *, session_present: bool | None = None, properties: Properties = NO_PROPERTIES
    ) -> None:
        self.wire_aliases = {}
        self.session.connection_made(_NOW)
        self.flush()
        if session_present is not None:
            self.feed(ConnAck(session_present, 0, properties))

    def publish_by_alias(self, qos: int, alias: int, *, with_topic: bool) -> None:
        props = Properties(topic_alias=alias)
        topic = f"out/{qos}" if with_topic else ""
        request = prepare_publish(topic, b"a", qos, False, props, self.level)
        self.session.publish(request, _NOW, self._token())
        self.flush()

    def publish(self, qos: int, payload: bytes = b"m", *, retain: bool = False) -> None:
        request = prepare_publish(f"out/{qos}", payload, qos, retain, None, self.level)
        self.session.publish(request, _NOW, self._token())
        self.flush()

    def subscribe(self) -> None:
        request = prepare_subscribe(_SUBS, None, self.level)
        self.session.subscribe(request, _NOW, self._token())
        self.flush()

    def unsubscribe(self) -> None:
        request = prepare_unsubscribe(_UNSUBS, None, self.level)
        self.session.unsubscribe(request, _NOW, self._token())
        self.flush()

    def outgoing(self) -> None:
        """Window 4: SUBSCRIBE 1 granted; QoS 1 ids 2, 3 (retained); QoS 2 id 4 released
        (PUBREC came), SUBSCRIBE 5 and UNSUBSCRIBE 6 awaiting their acks, QoS 2 id 7 sent (20
        bytes: over a Maximum Packet Size of 16); QoS 2 and QoS 1 queued behind the window."""
        self.subscribe()
        self.feed(SubAck(1, (1, 2)))
        self.publish(1)
        self.publish(1, retain=True)
        self.publish(2)
        self.subscribe()
        self.unsubscribe()
        self.publish(2, b"m" * 8)
        self.publish(2, retain=True)
        self.publish(1, b"m" * 8)
        self.feed(PubRec(4))

    def incoming(self) -> None:
        """QoS 2 ids 20 and 21 acknowledged (PUBREC sent, awaiting PUBREL); QoS 1 id 22 and
        QoS 2 id 23 delivered, not yet acknowledged by the application."""
        self.feed(Publish("in/a", b"1", 2, packet_id=20), Publish("in/b", b"2", 2, packet_id=21))
        for event in self.take_acks():
            self.session.acknowledge(event, _NOW)
        self.flush()
        self.feed(Publish("in/c", b"3", 1, packet_id=22), Publish("in/d", b"4", 2, packet_id=23))

    def take_acks(self) -> list[Ack]:
        acks = [e.ack for e in self.events if isinstance(e, MessageReceived) and e.ack]
        self.events = [e for e in self.events if not isinstance(e, MessageReceived)]
        return acks


def build_start(level: int, start: str) -> _Start:
    """The session of ``start`` at protocol ``level``; its output and events are consumed."""
    if start == "connecting":
        sc = _Script(level, clean=True, window=65_535, max_packet=4096, own_stores=True)
        sc.subscribe()
        sc.publish(0)
        sc.publish(1, retain=True)
        sc.publish(2, b"m" * 8)
        sc.unsubscribe()
        sc.connect()
    elif start == "idle":
        sc = _Script(level, clean=True, window=65_535, max_packet=codec.MAX_PACKET_SIZE)
        sc.connect(session_present=False)
    elif start == "outgoing":
        sc = _Script(level, clean=True, window=4, max_packet=4096)
        sc.connect(session_present=False)
        sc.outgoing()
    elif start == "incoming":
        sc = _Script(level, clean=True, window=65_535, max_packet=4096)
        sc.connect(session_present=False)
        sc.incoming()
    elif start == "full_queue":
        sc = _Script(
            level,
            clean=False,
            window=2,
            max_packet=4096,
            max_queued=3,
            max_queued_bytes=40,
            queue_policy="drop_oldest",
            own_stores=True,
        )
        sc.connect(session_present=False)
        sc.publish(1)
        sc.publish(2)
        sc.publish(2, b"m" * 8)
        sc.publish(0, b"m" * 20)
        sc.publish(1, b"m" * 8)
    elif start == "aliased":
        sc = _Script(level, clean=False, window=4, max_packet=4096)
        if level == MQTT_5:
            sc.connect(session_present=False, properties=Properties(topic_alias_maximum=2))
            sc.publish_by_alias(1, 1, with_topic=True)
            sc.publish_by_alias(1, 1, with_topic=False)
            sc.publish_by_alias(0, 2, with_topic=True)
            sc.publish_by_alias(0, 2, with_topic=False)
        else:
            sc.connect(session_present=False)
            sc.publish(1)
    elif start in ("reconnecting", "resumed", "restored"):
        # A restart needs stores that outlive the process: the application's own.
        sc = _Script(level, clean=False, window=4, max_packet=4096, own_stores=start == "restored")
        sc.connect(session_present=False)
        sc.outgoing()
        sc.incoming()
        sc.session.connection_lost(_NOW)
        if start == "restored":
            # A new process on the same stores: the application's acks died with the old one.
            sc.session = ClientSession(sc.config)
            sc.take_acks()
            for entry in [
                *sc.session._outgoing._queue,
                *sc.session._outgoing._flows._inflight.values(),
            ]:
                entry.token = f"restored-{entry.seq}"
        sc.connect(session_present=None if start == "reconnecting" else True)
    else:
        raise ValueError(f"unknown start state {start!r}; one of {STARTS}")
    closing = [e for e in sc.events if isinstance(e, ConnectionClosing)]
    assert not closing, f"the {start} script closed the connection: {closing}"
    return _Start(sc.session, sc.take_acks(), dict(sc.wire_aliases))


@functools.cache
def context_ids(level: int, start: str) -> tuple[int, ...]:
    """Packet ids worth aiming at in ``start``: those in flight either way, the next ones the
    session will allocate, and the edges 1 and 65,535."""
    s = build_start(level, start).session
    ids = {
        1,
        2,
        65_535,
        *s._outgoing._flows._inflight,
        *s._outgoing._flows._requests,
        *s._incoming._received_qos2,
    }
    ids.update(a.packet_id for a in s._incoming._acks)
    n = s._outgoing._flows._next_id
    ids.update({n, n % 65_535 + 1, (n + 1) % 65_535 + 1})
    return tuple(sorted(ids))


# ---------------------------------------------------------------------------------------------
# Mutated valid streams
# ---------------------------------------------------------------------------------------------

#: Topic names; the empty one is valid only with a topic alias (MQTT 5).
_TOPICS: Final = ("in/a", "in/x/x", "é/ü/∑", "$SYS/load", "in/b", "", "a", "t" * 200)
#: Payloads; the last one is over the 4,096-byte packet limit of most starts.
_PAYLOADS: Final = (
    *(b"", b"p", b"\xff\xfe\x00", b"{}", bytes(300), b"q" * 40, b"z", b"m" * 7),
    *(b"", b"pp", b"\x00", b"x" * 100, b"\xc3\xa9", b"y" * 16, b"0", bytes(5000)),
)
_PUBLISH_PROPS: Final = (
    NO_PROPERTIES,
    Properties(topic_alias=1),
    Properties(topic_alias=4),
    Properties(topic_alias=5),  # above our Topic Alias Maximum of 4
    Properties(message_expiry_interval=60, content_type="text/plain"),
    Properties(response_topic="r/t", correlation_data=b"\x00\x01"),
    Properties(subscription_identifier=(1, 7)),
    Properties(payload_format_indicator=1, user_property=(("k", "v"),)),
)
_CONNACK_PROPS: Final = (
    NO_PROPERTIES,
    Properties(receive_maximum=1),
    Properties(receive_maximum=2),
    Properties(maximum_qos=0),
    Properties(maximum_qos=1),
    Properties(retain_available=0),
    Properties(server_keep_alive=1),
    Properties(server_keep_alive=0),
    Properties(maximum_packet_size=16),
    Properties(topic_alias_maximum=2, session_expiry_interval=60),
    Properties(assigned_client_identifier="srv-id", reason_string="welcome"),
    Properties(wildcard_subscription_available=0, user_property=(("a", "b"),)),
)
_CONNACK_CODES_V5: Final = tuple(sorted(codec.REASON_CODES[PacketType.CONNACK]))
_ACK_PROPS: Final = (
    NO_PROPERTIES,
    Properties(reason_string="why"),
    Properties(user_property=(("x", "y"),)),
)


def _pick_id(ids: Sequence[int], sel: int) -> int:
    # Mostly an interesting id; sometimes any 16-bit value (0 included: malformed).
    if sel % 64 < 56:
        return ids[sel % len(ids)]
    return (sel >> 6) % 65_536


def _reason(ptype: int, sel: int) -> int:
    # Mostly success; else any valid code of the packet, now and then an invalid one.
    if sel % 3 == 0:
        return 0
    if sel % 17 == 16:
        return 0x42
    codes = sorted(codec.REASON_CODES[ptype])
    return codes[(sel // 3) % len(codes)]


def render_packet(level: int, spec: Spec, ids: Sequence[int]) -> bytes:
    """Encode the server packet ``spec`` = ``(kind, a, b, c)`` at ``level``.

    ``kind`` indexes :data:`KINDS`; ``a``, ``b``, ``c`` choose the fields (packet id among
    ``ids``, flags, reason codes, properties, topic, payload).
    """
    kind, a, b, c = spec
    name = KINDS[kind % len(KINDS)]
    v5 = level == MQTT_5
    packet: Packet
    if name == "connack":
        if b % 4:
            code = 0
        else:
            codes = _CONNACK_CODES_V5 if v5 else (0, 1, 2, 3, 4, 5)
            code = codes[(b >> 2) % len(codes)]
        props = _CONNACK_PROPS[c % len(_CONNACK_PROPS)] if v5 else NO_PROPERTIES
        packet = ConnAck(bool(a & 1), code, props)
    elif name == "publish":
        qos = a % 3
        dup = bool((a >> 2) & 1) if qos else (a >> 2) & 7 == 7  # DUP at QoS 0: malformed
        props = _PUBLISH_PROPS[(c >> 6) % len(_PUBLISH_PROPS)] if v5 else NO_PROPERTIES
        topic = _TOPICS[c % len(_TOPICS)]
        if props.topic_alias is not None and (c >> 9) & 1:
            topic = ""  # use the alias an earlier PUBLISH set (or fail: not set yet)
        packet = Publish(
            topic,
            _PAYLOADS[(c >> 3) % len(_PAYLOADS)],
            qos,
            bool((a >> 5) & 1),
            dup,
            _pick_id(ids, b) if qos else None,
            props,
        )
    elif name in ("puback", "pubrec", "pubrel", "pubcomp"):
        cls = {"puback": PubAck, "pubrec": PubRec, "pubrel": PubRel, "pubcomp": PubComp}[name]
        packet = cls(
            _pick_id(ids, a),
            _reason(cls.TYPE, b) if v5 else 0,
            _ACK_PROPS[c % len(_ACK_PROPS)] if v5 else NO_PROPERTIES,
        )
    elif name == "suback":
        valid = sorted(codec.REASON_CODES[PacketType.SUBACK] if v5 else (0, 1, 2, 0x80))
        codes = tuple(valid[(c >> (4 * i)) % len(valid)] for i in range(1 + b % 3))
        props = _ACK_PROPS[(b >> 2) % len(_ACK_PROPS)] if v5 else NO_PROPERTIES
        packet = SubAck(_pick_id(ids, a), codes, props)
    elif name == "unsuback":
        valid = sorted(codec.REASON_CODES[PacketType.UNSUBACK])
        codes = tuple(valid[(c >> (4 * i)) % len(valid)] for i in range(1 + b % 3)) if v5 else ()
        packet = UnsubAck(_pick_id(ids, a), codes)
    elif name == "pingresp":
        packet = PingResp()
    elif name == "disconnect":
        if not v5:
            return b"\xe0\x00"  # a server may not send DISCONNECT in 3.x
        reasons = sorted(_DISCONNECT_REASONS)
        props = (
            NO_PROPERTIES,
            Properties(reason_string="bye"),
            Properties(server_reference="other:1883"),
        )[c % 3]
        packet = Disconnect(reasons[b % len(reasons)], props)
    elif name == "auth":
        if not v5:
            return b"\xf0\x00"  # AUTH does not exist before MQTT 5
        props = NO_PROPERTIES
        if c % 2:
            props = Properties(authentication_method="SCRAM", authentication_data=b"d")
        packet = Auth((0x00, 0x18, 0x19)[b % 3], props)
    else:  # packets only a client may send
        pid = _pick_id(ids, a) or 1
        packet = (
            PingReq(),
            Subscribe(pid, (Subscription("x", 0),)),
            Unsubscribe(pid, ("x",)),
            Connect("srv", level),
        )[b % 4]
    return codec.encode_packet(packet, level)


def _corrupt_length(packet: bytes, sel: int) -> bytes:
    # Replace the Remaining Length of one packet (it was valid: the encoder wrote it).
    i, remaining, shift = 1, 0, 0
    while i < min(len(packet), 5):  # an earlier mutation may have left five bytes
        byte = packet[i]
        remaining |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            break
        shift += 7
    remaining = min(remaining, codec.MAX_REMAINING_LENGTH - 1)
    variant = sel % 6
    if variant == 0:
        new = codec.encode_varint(remaining + 1)
    elif variant == 1:
        new = codec.encode_varint(max(remaining - 1, 0))
    elif variant == 2:
        new = codec.encode_varint((sel >> 3) % 16_384)
    elif variant == 3:
        new = b"\xff\xff\xff\xff\x7f"  # five bytes: malformed
    elif variant == 4:
        new = codec.encode_varint(remaining)
        if len(new) < 4:  # the same value, one byte longer than needed
            new = new[:-1] + bytes((new[-1] | 0x80, 0x00))
    else:
        new = b"\xff\xff\xff\x7f"  # the largest length: over any packet size limit
    return packet[:1] + new + packet[i:]


def mutate(packets: Sequence[bytes], mutations: Sequence[Mutation]) -> bytes:
    """Apply ``mutations``: packet-level ones first (in order), then byte-level ones."""
    pk = list(packets)
    for kind, a, b in mutations:
        name = MUTATIONS[kind % len(MUTATIONS)]
        if name not in _PACKET_MUTATIONS or not pk:
            continue
        k = a % len(pk)
        if name == "duplicate":
            pk.insert(b % (len(pk) + 1), pk[k])
        elif name == "swap":
            j = (k + 1) % len(pk)
            pk[k], pk[j] = pk[j], pk[k]
        elif name == "drop":
            del pk[k]
        else:
            pk[k] = _corrupt_length(pk[k], b)
    data = bytearray(b"".join(pk))
    for kind, a, b in mutations:
        name = MUTATIONS[kind % len(MUTATIONS)]
        n = len(data)
        if name in _PACKET_MUTATIONS:
            continue
        if name == "insert":
            data.insert(a % (n + 1), b & 0xFF)
        elif name == "truncate":
            del data[a % (n + 1) :]
        elif name == "splice":
            pos = a % (n + 1)
            data[pos:pos] = random.Random(b).randbytes(1 + b % 24)
        elif not n:
            continue
        elif name == "flip":
            data[a % n] ^= 1 << (b % 8)
        elif name == "set":
            data[a % n] = b & 0xFF
        else:  # delete
            pos = a % n
            del data[pos : pos + 1 + b % 4]
    return bytes(data)


def render_stream(
    level: int, start: str, specs: Sequence[Spec], mutations: Sequence[Mutation] = ()
) -> bytes:
    """The broker bytes of a mutated-valid case: ``specs`` encoded, then ``mutations``."""
    ids = context_ids(level, start)
    return mutate([render_packet(level, spec, ids) for spec in specs], mutations)


def _connack_first(session_present: bool, sel: int) -> Spec:
    # The CONNACK a connecting start needs first: accepted, unless ``sel % 8 == 0``; MQTT 5
    # properties (the broker's limits) chosen by ``sel >> 3``.
    code_sel = 1 if sel % 8 else (sel >> 3) << 2  # see render_packet
    return (KINDS.index("connack"), int(session_present), code_sel, sel >> 3)


# ---------------------------------------------------------------------------------------------
# Case generation: plain random (tools/fuzz.py) and Hypothesis (CI)
# ---------------------------------------------------------------------------------------------

_KIND_WEIGHTS: Final = {
    "connack": 1,
    "publish": 10,
    "puback": 4,
    "pubrec": 4,
    "pubrel": 4,
    "pubcomp": 4,
    "suback": 3,
    "unsuback": 3,
    "pingresp": 3,
    "disconnect": 1,
    "auth": 1,
    "client": 1,
}


def random_case(rng: random.Random, family: str | None = None) -> FuzzCase:
    """A case drawn from ``rng`` (of ``family``, else either)."""
    family = family or rng.choice(("arbitrary", "mutated", "mutated"))
    level = rng.choice(LEVELS)
    start = rng.choice(STARTS)
    if family == "arbitrary":
        data = rng.randbytes(rng.choice((rng.randrange(16), rng.randrange(64), rng.randrange(512))))
    else:
        weights = [_KIND_WEIGHTS[k] for k in KINDS]
        specs: list[Spec] = [
            (
                rng.choices(range(len(KINDS)), weights)[0],
                rng.randrange(1 << 22),
                rng.randrange(1 << 22),
                rng.randrange(1 << 22),
            )
            for _ in range(rng.randrange(13))
        ]
        if start in CONNECTING_STARTS and rng.random() < 0.85:
            present = start == "reconnecting" and rng.random() < 0.5
            specs.insert(0, _connack_first(present, rng.randrange(1 << 12)))
        mutations: list[Mutation] = []
        if rng.random() < 0.7:
            mutations = [
                (rng.randrange(len(MUTATIONS)), rng.randrange(1 << 16), rng.randrange(1 << 16))
                for _ in range(rng.randint(1, 4))
            ]
        data = render_stream(level, start, specs, mutations)
    steps = tuple(
        (rng.choice(DTS), rng.randrange(len(OPS)) if rng.random() < 0.3 else 0)
        for _ in range(rng.randint(1, 4))
    )
    return FuzzCase(
        level=level,
        start=start,
        data=data,
        cuts=tuple(rng.randrange(1 << 16) for _ in range(rng.randrange(7))),
        steps=steps,
        ack_policy=rng.choice(ACK_POLICIES),
        trace=rng.random() < 0.2,
        tail=rng.choice((0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 16.0, 60.0)),
        family=family,
    )


_SPEC: Final = st.tuples(
    st.integers(0, len(KINDS) - 1),
    st.integers(0, (1 << 22) - 1),
    st.integers(0, (1 << 22) - 1),
    st.integers(0, (1 << 22) - 1),
)
_MUTATION: Final = st.tuples(
    st.integers(0, len(MUTATIONS) - 1), st.integers(0, 65_535), st.integers(0, 65_535)
)


@st.composite
def cases(
    draw: st.DrawFn,
    family: str | None = None,
    levels: Sequence[int] = LEVELS,
    starts: Sequence[str] = STARTS,
) -> FuzzCase:
    """Hypothesis strategy: a :class:`FuzzCase` of ``family`` (else either)."""
    family = family or draw(st.sampled_from(FAMILIES))
    level = draw(st.sampled_from(levels))
    start = draw(st.sampled_from(starts))
    if family == "arbitrary":
        data = draw(st.binary(max_size=300))
    else:
        specs: list[Spec] = draw(st.lists(_SPEC, max_size=10))
        if start in CONNECTING_STARTS and draw(st.booleans()):
            present = start == "reconnecting" and draw(st.booleans())
            specs.insert(0, _connack_first(present, draw(st.integers(0, (1 << 12) - 1))))
        mutations: list[Mutation] = draw(st.lists(_MUTATION, max_size=4))
        data = render_stream(level, start, specs, mutations)
    return FuzzCase(
        level=level,
        start=start,
        data=data,
        cuts=tuple(draw(st.lists(st.integers(0, 65_535), max_size=6))),
        steps=tuple(
            draw(
                st.lists(st.tuples(st.sampled_from(DTS), st.integers(0, len(OPS) - 1)), max_size=4)
            )
        ),
        ack_policy=draw(st.sampled_from(ACK_POLICIES)),
        trace=draw(st.booleans()),
        tail=draw(st.sampled_from((0.0, 5.0, 16.0, 60.0))),
        family=family,
    )


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def run_case(case: FuzzCase) -> Outcome:
    """Run ``case`` against a fresh session; check every invariant.

    Returns:
        How the fuzzed phase ended.

    Raises:
        InvariantViolation: the session broke an invariant (the message says which, where).
    """
    return _Run(case).run()


def _stored_id(value: bytes) -> int:
    # The packet id of a stored QoS 1/2 PUBLISH (0 while it waits in the queue).
    offset = codec._publish_id_offset(value)
    return int.from_bytes(value[offset : offset + 2], "big")


def _books(s: ClientSession) -> tuple[list[Any], dict[int, Any], dict[int, Any]]:
    # The session's private bookkeeping: queue, in-flight PUBLISH, pending SUBSCRIBE/UNSUBSCRIBE.
    return list(s._outgoing._queue), s._outgoing._flows._inflight, s._outgoing._flows._requests


class _Run:
    """One case: the session, the model of what it must do, and the checks."""

    def __init__(self, case: FuzzCase) -> None:
        if case.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}")
        if case.ack_policy not in ACK_POLICIES:
            raise ValueError(f"ack_policy must be one of {ACK_POLICIES}")
        self.case = case
        self.level = case.level
        self.v5 = case.level == MQTT_5
        self.now = _NOW
        start = build_start(case.level, case.start)
        self.s = s = start.session
        s.config.trace_packets = case.trace
        self.pending_acks: list[Ack] = start.pending_acks
        queue, inflight, requests = _books(s)
        #: Tokens of operations started and not completed: must equal the books' tokens.
        self.outstanding: set[Any] = {
            e.token for e in [*queue, *inflight.values(), *requests.values()] if e.token is not None
        }
        #: Incoming QoS 2 flows open, by packet id: "delivered", "acked" (by the application)
        #: or "recd" (the session holds it as received: the application's ack reached it, in
        #: order, or PUBREC went out); closed by our PUBCOMP while "recd".
        self.qos2: dict[int, str] = dict.fromkeys(s._incoming._received_qos2, "recd")
        for ack in self.pending_acks:
            if ack.qos == 2:
                self.qos2[ack.packet_id] = "delivered"
        #: PUBACKs the session may write: the application acknowledged these QoS 1 ids.
        self.puback_credit: Counter[int] = Counter()
        self.generation = s._incoming._generation
        self.closed = False
        self.connected_now = s.state is State.CONNECTED
        self.ops = 0
        self.where = "setup"
        self.last_op = "none"
        self.outcome = Outcome()
        #: The MQTT 5 limits of the last CONNACK accepted (only "aliased" starts with some).
        self.limits: Properties = NO_PROPERTIES
        if self.v5 and s.state is State.CONNECTED and s.connack is not None:
            self.limits = s.connack.properties
        #: Outgoing Topic Aliases the session's PUBLISH packets set on this connection.
        self.wire_aliases: dict[int, str] = dict(start.wire_aliases)
        self.sizes: list[int] = []
        self._pending_before = s.pending
        self._check_books()

    # -- driving --------------------------------------------------------------------------------

    def run(self) -> Outcome:
        case = self.case
        chunks = case.chunks()
        for i, chunk in enumerate(chunks):
            dt, op = case.steps[i % len(case.steps)] if case.steps else (0.0, 0)
            self.where = f"chunk {i} of {len(chunks)}"
            self._advance(dt)
            if case.ack_policy in ("deferred", "reverse"):
                self._acknowledge(reverse=case.ack_policy == "reverse")
            self._app(OPS[op % len(OPS)])
            self._receive(chunk)
            if case.ack_policy == "immediate":
                self._acknowledge()
        self.where = "tail"
        self._advance(case.tail)
        outcome = dataclasses.replace(self.outcome)
        self._drain()
        return outcome

    def _fail(self, message: str) -> InvariantViolation:
        return InvariantViolation(
            f"{message} [at {self.where}; level {self.level}, start {self.case.start}, "
            f"state {self.s.state.name}]"
        )

    def _call(self, what: str, fn: Callable[..., object], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            raise self._fail(f"{what} raised {exc!r}") from exc

    def _signature(self) -> tuple[Any, ...]:
        s = self.s
        queue, inflight, requests = _books(s)
        return (
            s.state,
            len(s._buffer),
            [id(e) for e in queue],
            list(inflight),
            list(requests),
            list(s.config.outgoing_store.iterate()),
            list(s.config.incoming_store.iterate()),
            len(s._incoming._acks),
        )

    def _advance(self, dt: float) -> None:
        """Move the clock by ``dt``, firing each deadline at its own time on the way."""
        s = self.s
        target = self.now + dt
        for _ in range(64):
            deadline = s.next_deadline()
            if deadline is None or deadline > target:
                break
            self.now = max(self.now, deadline)
            self._timer()
            after = s.next_deadline()
            if after is not None and after <= self.now:
                raise self._fail(f"handle_timer({self.now}) left the deadline at {after}")
        else:
            raise self._fail("64 deadlines fired within one step: the timer does not move on")
        self.now = target
        self._timer()  # an early call must be harmless

    def _timer(self) -> None:
        before = self._signature() if self.closed else None
        self._call("handle_timer", self.s.handle_timer, self.now)
        self._collect("timer")
        if before is not None and self._signature() != before:
            raise self._fail("handle_timer changed the session after ConnectionClosing")

    def _receive(self, chunk: bytes) -> None:
        before = self._signature() if self.closed else None
        self._call("receive_data", self.s.receive_data, chunk, self.now)
        self._collect("receive")
        if before is not None and self._signature() != before:
            raise self._fail("receive_data processed data after ConnectionClosing")

    def _acknowledge(self, *, reverse: bool = False) -> None:
        acks, self.pending_acks = self.pending_acks, []
        if not acks:
            return
        s = self.s
        for ack in reversed(acks) if reverse else acks:
            if not ack.done and ack.generation == s._incoming._generation:
                if ack.qos == 1:
                    self.puback_credit[ack.packet_id] += 1
                elif self.qos2.get(ack.packet_id) == "delivered":
                    self.qos2[ack.packet_id] = "acked"
            self._call("acknowledge", s.acknowledge, ack, self.now)
        self._collect("ack")

    def _token(self) -> str:
        self.ops += 1
        return f"op-{self.ops}"

    def _app(self, op: str) -> None:
        s, level, now = self.s, self.level, self.now
        self.last_op = op
        if op == "none":
            return
        if op.startswith("publish"):
            qos = int(op[-1])
            token = self._token()
            self.outstanding.add(token)
            payload = b"x" * (1 + self.ops % 7)
            retain = self.ops % 3 == 0  # refused at once when the broker has no retain (MQTT 5)
            topic, props = f"out/{qos}", None
            if self.v5 and self.ops % 4 and (self.limits.topic_alias_maximum or 0) >= 2:
                # By Topic Alias, where the broker allows them: set with the topic, or the empty
                # topic (refused at once when the alias never had a topic).
                alias = 1 + self.ops % 2
                props = Properties(topic_alias=alias)
                if self.ops % 4 >= 2:
                    topic = ""
            request = prepare_publish(topic, payload, qos, retain, props, level)
            if not qos and self.ops % 2:
                # The drivers' fast path first: it may only take a message that can go now,
                # behind nothing (the order of QoS 0 messages must not change).
                queued_before, pending_before = len(s._outgoing._queue), s.pending
                out_before = len(s._output.data)
                try:
                    sent_now = s.publish_now(request, now)
                except Exception as exc:
                    raise self._fail(f"publish_now raised {exc!r}") from exc
                if sent_now:
                    if s.state is not State.CONNECTED or queued_before or not s._outgoing._writable:
                        raise self._fail("publish_now sent a message that could not go now")
                    if len(s._output.data) != out_before + 1 or s.pending != pending_before:
                        raise self._fail("publish_now did not put exactly its message out")
                    self.outstanding.discard(token)
                    self.outcome.completed += 1
                    self._collect("app")
                    return
                if len(s._output.data) != out_before or s.pending != pending_before:
                    raise self._fail("publish_now declined but changed the session")
            try:
                s.publish(request, now, token)
            except (QueueFullError, PublishError, PacketTooLargeError, InvalidArgumentError):
                # Documented refusals, raised at once: nothing may have been queued.
                self.outstanding.discard(token)
                self.outcome.refused += 1
            except Exception as exc:
                raise self._fail(f"publish raised {exc!r}") from exc
        elif op == "subscribe":
            token = self._token()
            self.outstanding.add(token)
            self._call("subscribe", s.subscribe, prepare_subscribe(_SUBS, None, level), now, token)
        elif op == "unsubscribe":
            token = self._token()
            self.outstanding.add(token)
            unsubscribe = prepare_unsubscribe(_UNSUBS, None, level)
            self._call("unsubscribe", s.unsubscribe, unsubscribe, now, token)
        elif op == "pause":
            s.pause_writing()
        elif op == "resume":
            self._call("resume_writing", s.resume_writing, now)
        elif op == "pump":
            self._call("pump", s.pump, now)
        else:  # disconnect
            self._call("disconnect", s.disconnect, now)
        self._collect("app")

    # -- checking -------------------------------------------------------------------------------

    def _collect(self, what: str) -> list[Packet]:
        s = self.s
        pending_before = self._pending_before
        data = s.data_to_send()
        events = s.events_received()
        if self.closed:
            if data or (events and what != "app"):
                raise self._fail(
                    f"after ConnectionClosing the session wrote {data!r} / emitted {events!r}"
                )
            self._check_drops(events)
            self._pending_before = s.pending
            return []
        packets = self._decode_output(data, what)
        for event in events:
            if isinstance(event, Connected):
                self.limits = event.connack.properties if self.v5 else NO_PROPERTIES
        self._check_output(packets)
        completions = self._check_events(events, packets, what)
        if s._incoming._generation != self.generation:
            raise self._fail("the incoming session restarted without a Connected event")
        if s.pending < pending_before - completions:
            raise self._fail(
                f"pending dropped from {pending_before} to {s.pending} with only "
                f"{completions} completions"
            )
        self._check_books()
        return packets

    def _check_drops(self, events: list[Event]) -> None:
        # After ConnectionClosing only the application's own publish() may still cause events:
        # a full queue dropping a message (queue_policy drop_oldest / drop_newest).
        for event in events:
            if isinstance(event, PublishCompleted) and isinstance(event.error, QueueFullError):
                if event.token not in self.outstanding:
                    raise self._fail(f"{event!r}: unknown token, or completed twice")
                self.outstanding.discard(event.token)
            elif not isinstance(event, MessageDropped) or event.message.topic not in _OUR_TOPICS:
                raise self._fail(f"after ConnectionClosing the session emitted {event!r}")

    def _decode_output(self, data: bytes, what: str) -> list[Packet]:
        self.sizes = []
        if not data:
            return []
        buffer = codec.PacketBuffer()
        try:
            frames = buffer.feed(data)
            packets = [codec.decode_packet(f, b, i, j, self.level) for f, b, i, j in frames]
            # Whole frames of one buffer, back to back: each one's size is its end minus the
            # previous end.
            ends = [0] + [j for _f, _b, _i, j in frames]
            self.sizes = [b - a for a, b in itertools.pairwise(ends)]
        except ProtocolError as exc:
            raise self._fail(f"the session wrote an invalid packet ({exc}): {data.hex()}") from exc
        if len(buffer):
            raise self._fail(f"the session wrote a partial packet: {data.hex()}")
        for packet in packets:
            if isinstance(packet, Connect) and what == "connect":
                continue
            if not isinstance(packet, _CLIENT_PACKETS):
                raise self._fail(f"the session wrote {packet!r}, which it may not send here")
        return packets

    def _check_output(self, packets: list[Packet]) -> None:
        limits = self.limits
        for packet, size in zip(packets, self.sizes, strict=True):
            # [MQTT-3.1.2-24]: nothing larger than the broker's Maximum Packet Size (MQTT 5).
            # Below 5 bytes no QoS 1/2 flow can work at all; the session still writes its
            # fixed 2-5 byte acks, PINGREQ and DISCONNECT then (a degenerate limit, not checked).
            maximum = limits.maximum_packet_size
            sized = isinstance(packet, Publish | Subscribe | Unsubscribe)
            if maximum is not None and size > maximum and (maximum >= 5 or sized):
                raise self._fail(
                    f"wrote {size} bytes over the broker's Maximum Packet Size "
                    f"{limits.maximum_packet_size}: {packet!r}"
                )
            if isinstance(packet, Publish):
                alias = packet.properties.topic_alias
                topic = packet.topic
                if alias is not None:
                    # A Topic Alias is set by a PUBLISH with the topic on this connection, and
                    # only then may a PUBLISH go by the alias alone (MQTT 5.0, 3.3.2.3.4).
                    if topic:
                        self.wire_aliases[alias] = topic
                    elif alias not in self.wire_aliases:
                        raise self._fail(f"PUBLISH by alias {alias}, not set on this connection")
                    else:
                        topic = self.wire_aliases[alias]
                    if alias > (limits.topic_alias_maximum or 0):
                        raise self._fail(f"Topic Alias over the broker's maximum: {packet!r}")
                if topic not in _OUR_TOPICS or (packet.qos and not packet.packet_id):
                    raise self._fail(f"the session wrote a PUBLISH nobody asked for: {packet!r}")
                # [MQTT-3.2.2-11], [MQTT-3.2.2-14]: the broker's Maximum QoS, Retain Available.
                if limits.maximum_qos is not None and packet.qos > limits.maximum_qos:
                    raise self._fail(f"PUBLISH over the broker's Maximum QoS: {packet!r}")
                if limits.retain_available == 0 and packet.retain:
                    raise self._fail(f"retained PUBLISH, the broker has none: {packet!r}")
            elif isinstance(packet, PubAck):
                pid = packet.packet_id
                if self.puback_credit[pid] <= 0:
                    raise self._fail(f"PUBACK {pid} for a message the application did not ack")
                self.puback_credit[pid] -= 1
            elif isinstance(packet, PubRec):
                pid = packet.packet_id
                if self.qos2.get(pid) not in ("acked", "recd"):
                    raise self._fail(
                        f"PUBREC {pid} for a QoS 2 message the application did not ack"
                    )
                self.qos2[pid] = "recd"
            elif (
                isinstance(packet, PubComp)
                and packet.reason_code == 0
                and self.qos2.get(packet.packet_id) == "recd"
            ):
                del self.qos2[packet.packet_id]  # the flow is over: the id may come again

    def _check_events(self, events: list[Event], packets: list[Packet], what: str) -> int:
        """Check one call's events; returns how many operations completed."""
        s = self.s
        completions = 0
        real = [e for e in events if not isinstance(e, PacketSent | PacketReceived)]
        closing: ConnectionClosing | None = None
        for i, event in enumerate(real):
            if type(event) not in DOCUMENTED_EVENTS:
                raise self._fail(f"undocumented event {event!r}")
            if closing is not None:
                raise self._fail(f"{event!r} after ConnectionClosing")
            before = real[i - 1] if i else None
            if isinstance(event, Connected):
                if self.connected_now or event.connack.reason_code:
                    raise self._fail(f"{event!r} while connected or for a refusal")
                self.connected_now = True
                self.outcome.connected = True
                if s._incoming._generation != self.generation:
                    # A new broker session (no Session Present): incoming flows start over.
                    self.generation = s._incoming._generation
                    self.qos2 = {}
                    self.puback_credit.clear()
            elif isinstance(event, ConnectionRefused):
                if self.connected_now or not event.connack.reason_code:
                    raise self._fail(f"{event!r} while connected or for a success")
            elif isinstance(event, MessageReceived):
                if not self.connected_now:
                    raise self._fail(f"{event!r} before CONNACK")
                self._check_message(event)
            elif isinstance(event, PublishCompleted | SubscribeCompleted | UnsubscribeCompleted):
                completions += 1
                token = event.token
                if token is None:
                    if not isinstance(event, SubscribeCompleted):
                        raise self._fail(f"{event!r} completes an operation nobody started")
                elif token not in self.outstanding:
                    raise self._fail(f"{event!r}: unknown token, or completed twice")
                else:
                    self.outstanding.discard(token)
                    self.outcome.completed += 1
            elif isinstance(event, MessageDropped):
                if event.message.topic not in _OUR_TOPICS:
                    raise self._fail(f"{event!r} drops a message nobody published")
            elif isinstance(event, ServerDisconnected | AuthReceived):
                if not self.v5:
                    raise self._fail(f"{event!r} in MQTT {self.level}")
            elif isinstance(event, ConnectionClosing):
                closing = event
                self._check_closing(event, before, packets, what)
        if any(isinstance(e, PacketSent | PacketReceived) for e in events) and not self.case.trace:
            raise self._fail("trace events without trace_packets")
        if closing is None:
            if any(isinstance(p, Disconnect) for p in packets):
                raise self._fail("DISCONNECT written without ConnectionClosing")
            if s.state is State.CLOSING:
                raise self._fail("the session is closing but said nothing")
        return completions

    def _check_message(self, event: MessageReceived) -> None:
        m, ack = event.message, event.ack
        if not isinstance(m, Publish) or not isinstance(m.payload, bytes):
            raise self._fail(f"MessageReceived carries {m!r}")
        try:
            validate_topic_name(m.topic)
        except MQTTError as exc:
            raise self._fail(f"delivered a message with an invalid topic: {exc}") from exc
        if m.qos == 0:
            if m.packet_id is not None or ack is not None or m.dup:
                raise self._fail(f"QoS 0 message with a packet id, an Ack or DUP: {event!r}")
        elif m.qos in (1, 2):
            pid = m.packet_id
            if type(pid) is not int or not 1 <= pid <= 65_535:
                raise self._fail(f"QoS {m.qos} message without a valid packet id: {m!r}")
            if ack is None or ack.packet_id != pid or ack.qos != m.qos or ack.done:
                raise self._fail(f"QoS {m.qos} message with a wrong Ack: {event!r}")
            if m.qos == 2:
                if pid in self.qos2:
                    raise self._fail(
                        f"QoS 2 packet id {pid} delivered twice while its flow is open"
                    )
                self.qos2[pid] = "delivered"
            self.pending_acks.append(ack)
        else:
            raise self._fail(f"delivered a message at QoS {m.qos}")
        if not self.v5 and m.properties:
            raise self._fail(f"MQTT {self.level} message with properties: {m!r}")
        self.outcome.delivered += 1

    def _check_closing(
        self, event: ConnectionClosing, before: Event | None, packets: list[Packet], what: str
    ) -> None:
        s, error = self.s, event.error
        outcome = self.outcome
        if error is None:
            if what != "app" or self.last_op != "disconnect":
                raise self._fail("ConnectionClosing without an error, and without disconnect()")
            outcome.closed = "orderly"
        elif isinstance(error, ConnectionRefusedError):
            if not isinstance(before, ConnectionRefused) or before.error is not error:
                raise self._fail(f"{error!r} without its ConnectionRefused event")
        elif isinstance(error, ServerDisconnectError):
            if not isinstance(before, ServerDisconnected) or (
                before.packet.reason_code != error.reason_code
            ):
                raise self._fail(f"{error!r} without its ServerDisconnected event")
        elif isinstance(error, KeepaliveTimeoutError):
            if what != "timer":
                raise self._fail(f"{error!r} outside handle_timer")
        elif isinstance(error, ProtocolError):
            if what != "receive":
                raise self._fail(f"{error!r} outside receive_data")
            if error.reason_code == ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR:
                raise self._fail(f"an internal error escaped as {error!r}") from error.__cause__
        else:
            raise self._fail(f"ConnectionClosing with an undocumented error {error!r}")
        if error is not None:
            outcome.closed = type(error).__name__
            outcome.reason_code = getattr(error, "reason_code", None)
            if s.error is not error:
                raise self._fail(f"session.error is {s.error!r}, the event says {error!r}")
        if s.state is not State.CLOSING:
            raise self._fail(f"ConnectionClosing but the session is {s.state.name}")
        disconnects = [p for p in packets if isinstance(p, Disconnect)]
        if (self.v5 and isinstance(error, ProtocolError)) or error is None:
            if len(disconnects) != 1 or packets[-1] is not disconnects[0]:
                raise self._fail(f"closing must write one DISCONNECT, last: {packets!r}")
            code = disconnects[0].reason_code
            if error is None:
                if code != 0:
                    raise self._fail(f"disconnect() wrote DISCONNECT 0x{code:02X}")
            else:
                if code != getattr(error, "reason_code", None):
                    raise self._fail(f"DISCONNECT 0x{code:02X} does not match {error!r}")
                if code not in _DISCONNECT_REASONS or code < 0x80:
                    raise self._fail(f"DISCONNECT with reason 0x{code:02X}, not a valid error")
                outcome.disconnect_sent = code
        elif disconnects:
            raise self._fail(f"{error!r} must not write DISCONNECT: {packets!r}")
        self.closed = True

    def _check_books(self) -> None:
        s = self.s
        queue, inflight, requests = _books(s)
        self._pending_before = s.pending
        tokens: list[Any] = []
        for entry in queue:
            tokens.append(entry.token)
        for pid, entry in inflight.items():
            if entry.packet_id != pid or entry.kind != _PUBLISH or entry.qos not in (1, 2):
                raise self._fail(f"bad in-flight entry under id {pid}")
            if entry.state not in (_SENT, _RELEASED):
                raise self._fail(f"in-flight entry {pid} in state {entry.state}")
            tokens.append(entry.token)
        for pid, entry in requests.items():
            if entry.packet_id != pid or entry.kind == _PUBLISH:
                raise self._fail(f"bad request entry under id {pid}")
            tokens.append(entry.token)
        if set(inflight) & set(requests):
            raise self._fail(
                f"packet ids both in flight and requested: {set(inflight) & set(requests)}"
            )
        for entry in [*queue, *inflight.values(), *requests.values()]:
            if entry.token is None and entry.kind != _SUBSCRIBE:
                raise self._fail("an application operation lost its token")
        named = [t for t in tokens if t is not None]
        if len(named) != len(set(named)) or set(named) != self.outstanding:
            lost = sorted(map(str, self.outstanding - set(named)))
            extra = sorted(map(str, set(named) - self.outstanding))
            raise self._fail(f"books and operations differ: lost {lost}, unexpected {extra}")
        if s._outgoing._flows._qos2_inflight != sum(1 for e in inflight.values() if e.qos == 2):
            raise self._fail("the QoS 2 in-flight count is off")
        # Outgoing store == unfinished QoS 1/2 PUBLISH, each in its current wire form.
        stored = dict(s.config.outgoing_store.iterate())
        expected = set()
        if not is_private(s.config.outgoing_store):  # a private store holds only what was sent
            expected.update(e.key for e in queue if e.kind == _PUBLISH and e.qos)
        expected.update(e.key for e in inflight.values())
        if set(stored) != expected:
            raise self._fail(
                f"outgoing store keys {sorted(stored)} != unfinished QoS 1/2 {sorted(expected)}"
            )
        for pid, entry in inflight.items():
            value = stored[entry.key]
            if entry.state == _RELEASED:
                if value != b"\x62\x02" + pid.to_bytes(2, "big"):
                    raise self._fail(f"stored form of released id {pid} is {value.hex()}")
            elif value[0] >> 4 != PacketType.PUBLISH or _stored_id(value) != pid:
                raise self._fail(f"stored form of in-flight id {pid} is {value.hex()}")
        # Incoming store == QoS 2 ids the application acknowledged and PUBREL did not release.
        incoming = {key for key, _ in s.config.incoming_store.iterate()}
        released = set(s._incoming._received_qos2)
        released.update(a.packet_id for a in s._incoming._acks if a.done and a.qos == 2)
        if incoming != released:
            raise self._fail(
                f"incoming store {sorted(incoming)} != acknowledged {sorted(released)}"
            )
        if set(s._incoming._ack_by_id) != {a.packet_id for a in s._incoming._acks} or len(
            s._incoming._acks
        ) != len(s._incoming._ack_by_id):
            raise self._fail("the Ack queue and its index differ")
        for pid in s._incoming._received_qos2:
            if self.qos2.get(pid) not in ("acked", "recd"):
                raise self._fail(f"QoS 2 id {pid} received but not acknowledged by the application")
            # Held as received, PUBREC written or not (the ack may have come while offline): a
            # PUBREL now releases it, and the id may then carry a new message.
            self.qos2[pid] = "recd"
        for pid, state in self.qos2.items():
            if state == "recd" and pid not in s._incoming._received_qos2:
                raise self._fail(f"QoS 2 id {pid} left the received set without PUBCOMP")

    # -- the drain: a good broker finishes everything ---------------------------------------------

    def _drain(self) -> None:
        s = self.s
        self.where = "drain"
        self._call("connection_lost", s.connection_lost, self.now)
        self._collect("drain")
        self.closed = False
        self.connected_now = False
        self.last_op = "none"
        self.limits = NO_PROPERTIES  # a new connection: no CONNACK yet
        self.wire_aliases = {}  # and no Topic Alias set on it
        self._call("connection_made", s.connection_made, self.now)
        out = self._collect("connect")
        if not out or not isinstance(out[0], Connect):
            raise self._fail(f"connection_made wrote {out!r}, not CONNECT")
        self._call("resume_writing", s.resume_writing, self.now)
        self._collect("drain")
        # MQTT 5: Topic Aliases allowed, so that publishing by alias is exercised.
        accept = Properties(topic_alias_maximum=2) if self.v5 else NO_PROPERTIES
        replies: list[Packet] = [ConnAck(not s.config.clean_start, 0, accept)]
        released: set[int] = set()
        for _ in range(200):
            if not replies:
                break
            data = b"".join(codec.encode_packet(p, self.level) for p in replies)
            self._call("receive_data", s.receive_data, data, self.now)
            out = self._collect("receive")
            self._acknowledge()
            if self.closed:
                raise self._fail("a well-behaved broker got the connection closed")
            if s.wants_to_send:
                self._call("pump", s.pump, self.now)
            out += self._collect("drain")
            replies = [r for p in out for r in self._reply(p)]
            for pid in sorted(s._incoming._received_qos2 - released):
                released.add(pid)
                replies.append(PubRel(pid))
        else:
            raise self._fail("the drain did not finish in 200 rounds")
        self._acknowledge()
        if not s.connected:
            raise self._fail("not connected after the drain")
        leftovers = {
            "pending": s.pending,
            "unacknowledged": s.unacknowledged,
            "outgoing store": len(list(s.config.outgoing_store.iterate())),
            "incoming store": len(list(s.config.incoming_store.iterate())),
            "incomplete operations": len(self.outstanding),
        }
        if any(leftovers.values()):
            raise self._fail(f"a good broker could not finish everything: {leftovers}")

    def _reply(self, packet: Packet) -> list[Packet]:
        if isinstance(packet, Publish):
            if packet.qos == 1:
                return [PubAck(packet.packet_id or 0)]
            if packet.qos == 2:
                return [PubRec(packet.packet_id or 0)]
        elif isinstance(packet, PubRel):
            return [PubComp(packet.packet_id)]
        elif isinstance(packet, Subscribe):
            return [SubAck(packet.packet_id, tuple(sub.qos for sub in packet.subscriptions))]
        elif isinstance(packet, Unsubscribe):
            codes = (0,) * len(packet.topic_filters) if self.v5 else ()
            return [UnsubAck(packet.packet_id, codes)]
        elif isinstance(packet, PingReq):
            return [PingResp()]
        return []
