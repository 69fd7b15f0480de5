"""The outgoing flows on the wire: packet identifiers, the windows, and the acknowledgements.

Theory of operation
-------------------
An outgoing PUBLISH, SUBSCRIBE or UNSUBSCRIBE is an :class:`Entry`. When it leaves the queue
(``outgoing.py``) it gets a packet identifier, never reused while its flow is unfinished and
wrapping from 65,535 to 1, and :class:`Flows` keeps it until the broker's acknowledgement. A
QoS 1/2 PUBLISH moves from ``Flow.QUEUED`` to ``Flow.SENT`` (PUBLISH written) and, at QoS 2, to
``Flow.RELEASED`` (PUBREC came, PUBREL written); its stored form follows it: the PUBLISH (packet
id 0 while queued), then the PUBREL. It is written to the outgoing store before its bytes
leave, and removed when its flow completes. QoS 1/2 PUBLISH go out only while the in-flight
window (our ``max_inflight``, MQTT 5: the broker's Receive Maximum) and the QoS 2 window have
room.

On reconnect with the session kept, unacknowledged PUBLISH are resent with DUP and PUBREL
re-sent [MQTT-4.4.0-1] (:meth:`Flows.resume`); when the broker lost the session, the flows go
back to the queue as new messages (:meth:`Flows.restart`). A connection that ends right after a
PUBLISH was sent, with nothing after it acknowledged, gives that message a strike
(:meth:`Flows.connection_ended`): a server that refuses a message by closing the connection
would otherwise see it forever.

:class:`Flows` owns the entries in flight, packet identifiers, the windows, the broker's limits,
the progress marks and strikes, the outgoing Topic Aliases of the connection (the
application's, and with ``auto_topic_alias`` the automatic ones of :mod:`.aliases`), and the
subscriptions SUBACK confirmed. It never holds queued work (``outgoing.py`` does), decides
nothing about the connection's state, builds no wire bytes (``codec`` does) and does no I/O.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from . import codec
from .aliases import AutoAliases
from .config import SessionConfig
from .errors import (
    ConnectionLostError,
    MQTTError,
    PacketTooLargeError,
    ProtocolError,
    PublishError,
    QueueFullError,
    ReasonCode,
    ServerDisconnectError,
    SubscribeError,
    UnsubscribeError,
)
from .events import Output, PacketSent, PublishCompleted, SubscribeCompleted, UnsubscribeCompleted
from .packets import (
    MQTT_5,
    NO_PROPERTIES,
    Packet,
    Properties,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
)
from .requests import PublishRequest, SubscribeRequest, encode_request

__all__ = ["MAX_STRIKES", "STRIKE_WINDOW", "Flow", "Flows", "Kind"]


#: Connections in a row that may end right after a message was (re)sent, with nothing after it
#: acknowledged, before that message fails (see :meth:`Flows.connection_ended`).
MAX_STRIKES: Final = 3
#: How soon after a message was (re)sent a connection must end for that to count ("right
#: after": a server that refuses a message closes the connection at once; a network that
#: fails does so at any time).
STRIKE_WINDOW: Final = 2.0


class Kind(enum.IntEnum):
    """What an outgoing entry is."""

    PUBLISH = 1
    SUBSCRIBE = 2
    UNSUBSCRIBE = 3


class Flow(enum.IntEnum):
    """Where an outgoing entry stands."""

    QUEUED = 0
    """In the queue (a stored QoS 1/2 PUBLISH has packet id 0 there)."""
    SENT = 1
    """Written: a PUBLISH awaits PUBACK / PUBREC, a SUBSCRIBE its SUBACK..."""
    RELEASED = 2
    """QoS 2: PUBREC came and PUBREL was written; it awaits PUBCOMP."""


# The members as module constants: a global lookup on the hot paths, not an attribute of the
# class (measured: IntEnum members compare at int speed).
_PUBLISH, _SUBSCRIBE, _UNSUBSCRIBE = Kind.PUBLISH, Kind.SUBSCRIBE, Kind.UNSUBSCRIBE
_QUEUED, _SENT, _RELEASED = Flow.QUEUED, Flow.SENT, Flow.RELEASED


class Entry:
    """One outgoing PUBLISH, SUBSCRIBE or UNSUBSCRIBE."""

    __slots__ = (
        "data",
        "key",
        "kind",
        "packet_id",
        "qos",
        "request",
        "sent_at",
        "sent_mark",
        "seq",
        "state",
        "token",
    )

    # Set when the entry is sent (or restored in flight): the session's send counter then
    # (see Flows.connection_ended) and the time. Not set before: a queued entry has neither.
    sent_mark: int
    sent_at: float

    def __init__(
        self, kind: Kind, seq: int, qos: int, request: Any, token: Any, key: int = 0
    ) -> None:
        self.kind = kind
        #: The session's order of work (FIFO among publishes, subscribes, unsubscribes).
        self.seq = seq
        #: The outgoing store's key of a QoS 1/2 PUBLISH (0: not stored under its own key yet).
        self.key = key
        self.qos = qos
        self.request = request
        self.token = token
        self.packet_id = 0
        self.state: Flow = _QUEUED
        self.data = b""


class _Limits:
    """What the broker's CONNACK allows us to send on this connection (MQTT 5)."""

    __slots__ = ("max_packet", "max_qos", "retain_available", "topic_alias_maximum")

    def __init__(self) -> None:
        self.max_packet = codec.MAX_PACKET_SIZE
        self.max_qos = 2
        self.retain_available = True
        self.topic_alias_maximum = 0

    def check(self, request: PublishRequest) -> None:
        """Raise the error of a PUBLISH over these limits [MQTT-3.2.2-11, -14, -15]."""
        if request.qos > self.max_qos:
            raise PublishError(
                f"the broker supports QoS up to {self.max_qos}; cannot publish at QoS "
                f"{request.qos}",
                ReasonCode.QOS_NOT_SUPPORTED,
            )
        if request.retain and not self.retain_available:
            raise PublishError(
                "the broker does not support retained messages", ReasonCode.RETAIN_NOT_SUPPORTED
            )
        alias = request.properties.topic_alias
        if alias is not None and alias > self.topic_alias_maximum:
            # [MQTT-3.3.2-9]: no Topic Alias above the broker's Topic Alias Maximum (absent: 0).
            raise PublishError(
                f"topic alias {alias} exceeds the broker's Topic Alias Maximum "
                f"{self.topic_alias_maximum}",
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
        if size > self.max_packet:
            raise PacketTooLargeError(
                f"this PUBLISH is {size:,} bytes; the broker accepts at most "
                f"{self.max_packet:,} (its Maximum Packet Size)"
            )


class Flows:
    """The outgoing flows of a session (see the module docstring), for :class:`Outgoing`.

    Args:
        config: the session's settings (read live).
        output: where packets and events go.
        queue: the outgoing queue, only to see whether work waits after an acknowledgement.
        pump: called then, to send what waits.
        restored: the queue's entries loaded from the store and not yet claimed by
            ``publish()``; an entry that completes leaves it.
        record_queued: the outgoing store records queued messages too (a store someone else
            may read): a flow the broker lost goes back to it in its queued form.
    """

    __slots__ = (
        "_acked_mark",
        "_config",
        "_conn_mark",
        "_inflight",
        "_level",
        "_next_id",
        "_out_aliases",
        "_output",
        "_pump",
        "_qos2_inflight",
        "_queue",
        "_record_queued",
        "_requests",
        "_restored",
        "_sent_count",
        "_strikes",
        "_sub_properties",
        "_warned_downgrade",
        "_window",
        "_window_qos2",
        "aliases",
        "limits",
        "subscriptions",
    )

    def __init__(
        self,
        config: SessionConfig,
        output: Output,
        queue: deque[Entry],
        pump: Callable[[float], None],
        restored: dict[int, Entry],
        record_queued: bool,
    ) -> None:
        self._config = config
        self._output = output
        self._queue = queue
        self._pump = pump
        self._restored = restored
        self._record_queued = record_queued
        self._level = config.protocol_level
        self._inflight: dict[int, Entry] = {}  # QoS 1/2 PUBLISH by packet id, in send order
        self._requests: dict[int, Entry] = {}  # SUBSCRIBE / UNSUBSCRIBE by packet id
        self._next_id = 1
        self._qos2_inflight = 0  # QoS 2 entries in _inflight
        # Per-connection values, set by connection_made() and connection_accepted().
        self._window = config.max_inflight
        self._window_qos2 = config.max_inflight_qos2 or 65_535
        #: What the broker's CONNACK allows (MQTT 5).
        self.limits = _Limits()
        self._out_aliases: dict[int, str] = {}  # Topic Aliases set on this connection
        #: The automatic Topic Aliases of this connection (``auto_topic_alias``, MQTT 5, a
        #: broker that takes aliases), else None.
        self.aliases: AutoAliases | None = None
        #: Filters subscribed (from SUBACK), restored when the broker lost the session.
        self.subscriptions: dict[str, Subscription] = {}
        # The SUBSCRIBE properties of filters subscribed with some (restored with them).
        self._sub_properties: dict[str, Properties] = {}
        # Progress marks (see connection_ended): every PUBLISH/SUBSCRIBE/UNSUBSCRIBE sent
        # takes the next _sent_count; _acked_mark is the highest mark acknowledged since.
        self._sent_count = 0
        self._acked_mark = 0
        self._conn_mark = 0  # _sent_count when the current connection was made
        # Connections in a row that ended right after a message was (re)sent, by its key.
        self._strikes: dict[int, int] = {}
        self._warned_downgrade = False

    # -- inspection -------------------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        """QoS 1/2 PUBLISH sent and not yet completely acknowledged."""
        return len(self._inflight)

    @property
    def requests(self) -> int:
        """SUBSCRIBE / UNSUBSCRIBE sent and not yet acknowledged."""
        return len(self._requests)

    def entries(self) -> list[Entry]:
        """Every entry in flight: PUBLISH in send order, then SUBSCRIBE / UNSUBSCRIBE."""
        return [*self._inflight.values(), *self._requests.values()]

    def publishes(self) -> list[Entry]:
        """The PUBLISH in flight, in send order (released ones in PUBREC order)."""
        return list(self._inflight.values())

    def has_room(self) -> bool:
        """True if one more QoS 1/2 PUBLISH may go: the in-flight window, and the QoS 2 window
        (MQTT 3.x brokers keep QoS 2 messages in flight on their side until PUBREL;
        Mosquitto drops those beyond its window)."""
        # A full QoS 2 window holds QoS 1 back too: Mosquitto counts both against one incoming
        # quota and answers a QoS 1 PUBLISH beyond it with a PUBACK (0x97, which MQTT 3.1.1
        # cannot carry: a plain PUBACK) and drops the message. The window is never more than
        # the packet identifiers SUBSCRIBE / UNSUBSCRIBE leave free: an identifier is not
        # reused while in flight [MQTT-2.2.1-3].
        if len(self._inflight) >= min(self._window, 65_535 - len(self._requests)):
            return False
        return self._qos2_inflight < self._window_qos2

    def ids_free(self) -> bool:
        """True if a packet identifier is free for a SUBSCRIBE / UNSUBSCRIBE."""
        return len(self._inflight) + len(self._requests) < 65_535

    # -- sending ----------------------------------------------------------------------------------

    def add(self, entry: Entry) -> None:
        """Take ``entry``, a flow loaded from the store in flight (``Flow.SENT`` or
        ``Flow.RELEASED``)."""
        self._inflight[entry.packet_id] = entry
        if entry.qos == 2:
            self._qos2_inflight += 1

    def wire_topic_field(self, request: PublishRequest) -> bytes:
        """The topic field to send now for a PUBLISH with a Topic Alias: empty for an
        alias-only message whose alias this connection already maps to its topic (MQTT 5.0,
        3.3.2.3.4); otherwise the topic, which sets the alias for the rest of this connection
        (mappings never carry over to another one)."""
        alias: int = request.properties.topic_alias  # type: ignore[assignment]
        if self.aliases is not None:
            self.aliases.reserve(alias)  # the application's alias wins over an automatic one
        if request.alias_only and self._out_aliases.get(alias) == request.topic:
            return codec.EMPTY_TOPIC_FIELD
        self._out_aliases[alias] = request.topic
        return request.topic_field

    def wire_parts(self, request: PublishRequest) -> tuple[bytes, bytes | None]:
        """The topic field and property block to send ``request`` with on this connection: an
        MQTT 5 PUBLISH with a Topic Alias of its own (:meth:`wire_topic_field`), or one that
        :attr:`aliases` may send by an automatic alias."""
        if request.properties.topic_alias:
            return self.wire_topic_field(request), request.properties_bytes
        assert self.aliases is not None
        return self.aliases.wire_parts(request)

    def _allocate_id(self) -> int:
        # [MQTT-2.2.1-3]: a packet identifier is not reused while its flow is unfinished.
        inflight, requests = self._inflight, self._requests
        packet_id = self._next_id
        for _ in range(65_535):
            if packet_id not in inflight and packet_id not in requests:
                self._next_id = packet_id % 65_535 + 1
                return packet_id
            packet_id = packet_id % 65_535 + 1
        raise QueueFullError("all 65,535 packet identifiers are in use")  # pragma: no cover

    def send_publish(self, entry: Entry, now: float) -> None:
        """Write the PUBLISH of ``entry``; at QoS 1/2 it is stored first, then in flight.

        Raises:
            Whatever the outgoing store raises (nothing was written then).
        """
        request: PublishRequest = entry.request
        # MQTT 5 under a Topic Alias, the application's or an automatic one: the bytes on the
        # wire differ from the stored form (which keeps the topic, to be valid on any
        # connection).
        aliased = request.properties_bytes is not None and (
            request.properties.topic_alias or self.aliases is not None
        )
        output = self._output
        if not entry.qos:
            if aliased:
                topic_field, props = self.wire_parts(request)
                data = codec.encode_publish_parts(
                    request.first, topic_field, 0, props, request.payload
                )
            else:
                data = encode_request(request, 0)
            output.size += len(data)
            output.data.append(data)
            output.last_sent = now
            if self._config.trace_packets:
                output.events.append(PacketSent(codec.decode(data, self._level)))
            if entry.token is not None:
                output.events.append(PublishCompleted(entry.token))
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
        self._config.outgoing_store.put(entry.key, data)
        self._inflight[packet_id] = entry
        if entry.qos == 2:
            self._qos2_inflight += 1
        if aliased:
            # Stored with its topic (a resend on another connection must carry it); on the wire
            # without it when the alias is already set on this connection.
            topic_field, props = self.wire_parts(request)
            if topic_field is not request.topic_field or props is not request.properties_bytes:
                data = codec.encode_publish_parts(
                    request.first, topic_field, packet_id, props, request.payload
                )
        output.size += len(data)
        output.data.append(data)
        output.last_sent = now
        if self._config.trace_packets:
            output.events.append(PacketSent(codec.decode(data, self._level)))

    def send_request(self, entry: Entry, now: float) -> None:
        """Write the SUBSCRIBE / UNSUBSCRIBE of ``entry`` under a new packet identifier."""
        packet_id = self._allocate_id()
        entry.packet_id = packet_id
        self._sent_count += 1
        entry.sent_mark = self._sent_count
        self._requests[packet_id] = entry
        self._write_request(entry, now)

    def _write_request(self, entry: Entry, now: float) -> None:
        # The SUBSCRIBE / UNSUBSCRIBE of ``entry`` (holding its packet id), unless it is over
        # the broker's Maximum Packet Size [MQTT-3.1.2-24, -25]: then it is not sent, and its
        # operation completes with the error.
        request = entry.request
        packet: Packet
        if entry.kind == _SUBSCRIBE:
            packet = Subscribe(entry.packet_id, request.subscriptions, request.properties)
        else:
            packet = Unsubscribe(entry.packet_id, request.topic_filters, request.properties)
        data = codec.encode_packet(packet, self._level)
        maximum = self.limits.max_packet
        if len(data) <= maximum:
            self._output.write(data, now, packet)
            return
        del self._requests[entry.packet_id]
        what = "SUBSCRIBE" if entry.kind == _SUBSCRIBE else "UNSUBSCRIBE"
        error = PacketTooLargeError(
            f"this {what} is {len(data):,} bytes; the broker accepts at most "
            f"{maximum:,} (its Maximum Packet Size)"
        )
        self.complete(entry, error)

    def complete(self, entry: Entry, error: MQTTError | None, reason_code: int = 0) -> None:
        """The operation of ``entry`` is over (``error`` None: it succeeded); the event says
        so. A finished QoS 1/2 message leaves the store."""
        events = self._output.events
        if entry.kind == _PUBLISH:
            if self._restored:
                self._restored.pop(entry.key, None)
            if entry.qos and error is None:
                self.store_delete(entry.key)
            if entry.token is not None:
                events.append(PublishCompleted(entry.token, error, reason_code))
        elif entry.kind == _SUBSCRIBE:
            subs = entry.request.subscriptions
            events.append(SubscribeCompleted(entry.token, subs, (), error))
        else:
            filters = entry.request.topic_filters
            events.append(UnsubscribeCompleted(entry.token, filters, (), error))

    def store_delete(self, key: int) -> None:
        """Delete ``key`` from the outgoing store; a failure is logged, not raised.

        A failed delete leaves a finished message in a durable store, to be sent again (with
        DUP) after a restart: a duplicate, never a loss. Not worth dropping the connection for.
        """
        try:
            self._config.outgoing_store.delete(key)
        except Exception:
            self._output.log.exception("outgoing store failed to delete entry %d", key)

    def forget(self, entry: Entry) -> None:
        """Take the in-flight PUBLISH ``entry`` out (it will not complete): its identifier is
        free, its record deleted."""
        del self._inflight[entry.packet_id]
        if entry.qos == 2:
            self._qos2_inflight -= 1
        self.store_delete(entry.key)

    def clear(self) -> None:
        """Forget every flow (their operations have been completed)."""
        self._inflight.clear()
        self._qos2_inflight = 0
        self._requests.clear()

    # -- acknowledgements -------------------------------------------------------------------------

    def puback(self, packet_id: int, reason_code: int, now: float) -> None:
        """PUBACK arrived: a QoS 1 flow is complete."""
        entry = self._inflight.get(packet_id)
        if entry is None or (entry.qos != 1 and entry.state != _SENT):
            self._output.log.info(
                "ignored PUBACK for packet id %d, which is not in flight", packet_id
            )
            return
        del self._inflight[packet_id]
        if entry.qos == 2:
            # A broker that downgrades QoS 2 to 1 (RabbitMQ) answers with PUBACK: the message
            # was delivered at QoS 1. The flow is over; its result says so.
            if not self._warned_downgrade:
                self._warned_downgrade = True
                self._output.log.warning(
                    "the broker answered a QoS 2 PUBLISH (packet id %d) with PUBACK: it "
                    "delivers QoS 2 messages at QoS 1 (at least once, not exactly once)",
                    packet_id,
                )
            self._finish_publish(entry, reason_code, downgraded=True)
        else:
            self._finish_publish(entry, reason_code)
        if self._queue:
            self._pump(now)

    def _finish_publish(self, entry: Entry, reason_code: int, *, downgraded: bool = False) -> None:
        # The entry has just left _inflight.
        if entry.qos == 2:
            self._qos2_inflight -= 1
        if entry.sent_mark > self._acked_mark:  # noqa: PLR1730 - per message: no call
            self._acked_mark = entry.sent_mark
        if self._strikes:
            self._strikes.pop(entry.key, None)
        if self._restored:
            self._restored.pop(entry.key, None)
        self.store_delete(entry.key)
        error = None
        if reason_code >= 0x80:
            error = PublishError("the broker refused the message", reason_code)
        if entry.token is not None:
            self._output.events.append(
                PublishCompleted(entry.token, error, reason_code, downgraded)
            )

    def pubrec(self, packet_id: int, reason_code: int, now: float) -> None:
        """PUBREC arrived: release the QoS 2 message with PUBREL (or end its flow)."""
        entry = self._inflight.get(packet_id)
        if entry is None or entry.qos != 2:
            self._output.log.info("PUBREC for packet id %d, which is not in flight", packet_id)
            if reason_code < 0x80:
                # Let the broker finish its side [MQTT-4.3.3-4]; MQTT 5 says why.
                reason = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND if self._level == MQTT_5 else 0
                rel = PubRel(packet_id, reason)
                self._output.write(codec.encode_packet(rel, self._level), now, rel)
            return
        if reason_code >= 0x80:
            # A failed PUBREC ends the flow; the identifier is free again (MQTT 5.0, 2.2.1).
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
                self._config.outgoing_store.put(entry.key, rel_bytes)
            except Exception:
                # The PUBLISH form stays stored: after a restart it is resent with DUP, which
                # the broker answers with PUBREC again. Logged, and the flow goes on.
                self._output.log.exception(
                    "outgoing store failed to record PUBREC of entry %d", entry.key
                )
            # Keep released flows in PUBREC order, the order PUBREL must go in [MQTT-4.6.0-4].
            self._inflight[packet_id] = self._inflight.pop(packet_id)
        output = self._output
        output.data.append(rel_bytes)
        output.last_sent = now
        if self._config.trace_packets:
            output.events.append(PacketSent(PubRel(packet_id)))

    def pubcomp(self, packet_id: int, now: float) -> None:
        """PUBCOMP arrived: a QoS 2 flow is complete."""
        entry = self._inflight.get(packet_id)
        if entry is None or entry.state != _RELEASED:
            self._output.log.info(
                "ignored PUBCOMP for packet id %d, which is not in flight", packet_id
            )
            return
        del self._inflight[packet_id]
        self._finish_publish(entry, 0)
        if self._queue:
            self._pump(now)

    def suback(self, packet: SubAck, now: float) -> None:
        """SUBACK arrived.

        Raises:
            ProtocolError: not one return code per topic filter [MQTT-3.9.3-1].
        """
        entry = self._requests.get(packet.packet_id)
        if entry is None or entry.kind != _SUBSCRIBE:
            self._output.log.info(
                "ignored SUBACK for packet id %d, which is not pending", packet.packet_id
            )
            return
        subs: tuple[Subscription, ...] = entry.request.subscriptions
        if len(packet.reason_codes) != len(subs):
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
        self._output.events.append(
            SubscribeCompleted(entry.token, subs, packet.reason_codes, error)
        )
        self._pump(now)

    def unsuback(self, packet: UnsubAck, now: float) -> None:
        """UNSUBACK arrived.

        Raises:
            ProtocolError: not one reason code per topic filter (MQTT 5).
        """
        entry = self._requests.get(packet.packet_id)
        if entry is None or entry.kind != _UNSUBSCRIBE:
            self._output.log.info(
                "ignored UNSUBACK for packet id %d, which is not pending", packet.packet_id
            )
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
        self._output.events.append(UnsubscribeCompleted(entry.token, filters, codes, error))
        self._pump(now)

    # -- connections ------------------------------------------------------------------------------

    def connection_made(self, level: int) -> None:
        """A new connection at protocol ``level``: back to our own limits until CONNACK."""
        cfg = self._config
        self._level = level
        self._window = cfg.max_inflight
        self._window_qos2 = cfg.max_inflight_qos2 or 65_535
        self.limits = _Limits()
        # Never carried over to another connection [MQTT-3.3.2-7].
        self._out_aliases = {}
        self.aliases = None
        self._conn_mark = self._sent_count

    def connection_accepted(self, properties: Properties) -> None:
        """An MQTT 5 CONNACK with these ``properties`` accepted the connection: the broker's
        limits bind what we send on it."""
        if properties.receive_maximum is not None:
            self._window = min(self._config.max_inflight, properties.receive_maximum)
        limits = self.limits
        if properties.maximum_packet_size is not None:
            limits.max_packet = properties.maximum_packet_size
        if properties.maximum_qos is not None:
            limits.max_qos = properties.maximum_qos
        if properties.retain_available is not None:
            limits.retain_available = bool(properties.retain_available)
        limits.topic_alias_maximum = maximum = properties.topic_alias_maximum or 0
        if self._config.auto_topic_alias and maximum:
            self.aliases = AutoAliases(maximum, limits.max_packet)

    def fall_back(self, level: int) -> None:
        """From now on, packets are written at protocol ``level``."""
        self._level = level

    def resume(self, now: float) -> None:
        """The broker kept our session: resend what it has not acknowledged, in the original
        order [MQTT-4.4.0-1], with DUP on PUBLISH [MQTT-3.3.1-1]. SUBSCRIBE / UNSUBSCRIBE are
        not session state: sent again too, same identifiers, in their place among the PUBLISH
        (one FIFO order for all work, as the application asked)."""
        pending = sorted(self.entries(), key=lambda e: e.seq)
        # PUBREL go in the order their PUBREC came [MQTT-4.6.0-4] (_inflight keeps it), in the
        # places the released messages had.
        released = iter([e for e in self._inflight.values() if e.state == _RELEASED])
        pending = [next(released) if e.state == _RELEASED else e for e in pending]
        output = self._output
        for entry in pending:
            if entry.kind != _PUBLISH:
                self._write_request(entry, now)
                continue
            if entry.state == _RELEASED:
                output.write(entry.data, now, PubRel(entry.packet_id))
                continue
            if self._level == MQTT_5:
                try:
                    # This CONNACK's limits bind the resent messages too [MQTT-3.2.2-11,
                    # -14], [MQTT-3.1.2-24]: one over them completes with the error.
                    self.limits.check(entry.request)
                except MQTTError as exc:
                    self.forget(entry)
                    self.complete(entry, exc)
                    continue
            entry.data = data = codec.set_dup(entry.data)
            self._sent_count += 1
            entry.sent_mark = self._sent_count
            entry.sent_at = now
            request = entry.request
            if request.properties_bytes is not None and request.properties.topic_alias:
                # Resent with its topic (stored forms always carry it): the alias is set. (An
                # automatic alias is never stored: such a message goes with its topic alone.)
                self._out_aliases[request.properties.topic_alias] = request.topic
                if self.aliases is not None:
                    self.aliases.reserve(request.properties.topic_alias)
            output.write(data, now)
            if self._config.trace_packets:
                output.events.append(PacketSent(codec.decode(data, self._level)))

    def restart(self) -> tuple[list[Entry], list[SubscribeRequest]]:
        """A new session on the broker (clean start, or it lost ours) [MQTT-3.2.2-5]. Returns
        the unfinished work, in its original order, to queue again as new (packet id 0,
        stored in its queued form), and the SUBSCRIBE that restore the subscriptions (one per
        distinct set of properties, MQTT 5: a Subscription Identifier, user properties)."""
        requeue: list[Entry] = []
        store = self._config.outgoing_store
        for entry in self._inflight.values():
            if entry.state == _RELEASED:
                # PUBREC came back: the broker owned the message, so it is delivered.
                self.complete(entry, None)
                continue
            entry.state = _QUEUED
            entry.packet_id = 0
            if self._record_queued:
                # Stored again in its queued form (packet id 0, no DUP): a restart before it is
                # sent must find it queued, not in flight under an identifier of the lost
                # session.
                entry.data = encode_request(entry.request, 0)
                store.put(entry.key, entry.data)
            else:
                entry.data = b""  # encoded again, with its new identifier, when sent
                store.delete(entry.key)
            requeue.append(entry)
        for entry in self._requests.values():
            entry.packet_id = 0
            requeue.append(entry)
        self.clear()
        requeue.sort(key=lambda e: e.seq)
        groups: list[tuple[Properties, list[Subscription]]] = []
        for topic_filter, sub in self.subscriptions.items():
            props = self._sub_properties.get(topic_filter, NO_PROPERTIES)
            for known, members in groups:
                if known == props:
                    members.append(sub)
                    break
            else:
                groups.append((props, [sub]))
        return requeue, [SubscribeRequest(tuple(members), props) for props, members in groups]

    def connection_ended(self, error: MQTTError | None, now: float) -> MQTTError:
        """The server ended the connection (end of stream, reset, or DISCONNECT). If that came
        within ``STRIKE_WINDOW`` of sending the oldest unacknowledged PUBLISH of this
        connection, and nothing sent after it was acknowledged, that PUBLISH may be what the
        server refuses (a QoS, topic or size it does not take): it gets a strike, and fails
        after ``MAX_STRIKES`` connections in a row end so (it would otherwise be resent
        forever). Returns the error that reports this end."""
        suspect: Entry | None = None
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
                # The server closed the connection each time this message was sent: give up
                # on it, free its identifier, and let the rest of the queue go.
                self.forget(suspect)
                self.complete(
                    suspect,
                    PublishError(
                        f"the server closed the connection each time this message was sent "
                        f"({strikes} times in a row; QoS {suspect.qos}, topic "
                        f"{request.topic!r}, {len(request.payload):,} bytes payload): the "
                        "QoS, the topic or the size may be refused by this server",
                        ReasonCode.UNSPECIFIED_ERROR,
                    ),
                )
        if error is not None:
            if detail and not isinstance(error, ServerDisconnectError):
                error = ConnectionLostError(f"{error}{detail}")
            return error
        return ConnectionLostError(f"the server closed the connection{detail}")
