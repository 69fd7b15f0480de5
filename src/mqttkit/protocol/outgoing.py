"""The outgoing half of a session: the queue, its policy, and what a new connection does to it.

Theory of operation
-------------------
Outgoing work (PUBLISH, SUBSCRIBE, UNSUBSCRIBE) goes through one FIFO queue so the broker sees
it in the order the application asked. A QoS 0 PUBLISH that can go at once (connected, nothing
queued before it, room in the output) skips the queue. The queue is bounded (``max_queued``,
``max_queued_bytes``); when it is full the policy decides: refuse the new message, or drop the
oldest or the newest waiting one. Work leaves the queue (:meth:`Outgoing.pump`) while connected,
writable and, for QoS 1/2, while the in-flight window has room; from then on :class:`Flows`
(``flows.py``) holds it until its acknowledgement. A store someone else may read records queued
QoS 1/2 messages too (packet id 0), so a restarted process finds them; the client's own
in-memory store records only what was sent.

When the broker kept the session, the flows are resent as they are (:meth:`Flows.resume`);
when it lost it, they come back to the front of the queue as new work, behind the SUBSCRIBE
that restore the subscriptions (:meth:`Outgoing.restart`). After a server refused MQTT 5,
:meth:`Outgoing.fall_back` converts the queued and stored messages to 3.1.1.

:class:`Outgoing` owns the queue and its policy, the store keys, the entries loaded from the
store at start, the application's Topic Alias topics, and :class:`Flows`; it is the session's
one door to outgoing work and to the acknowledgements of that work. It never reads incoming
messages, decides nothing about the connection's state (the session says it through
:class:`~mqttkit.protocol.events.Output` and the ``connection_*`` calls), builds no wire bytes
(``codec`` does) and does no I/O.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from . import codec
from .codec import encode_publish_parts
from .config import SessionConfig
from .errors import InvalidArgumentError, MQTTError, ProtocolError, QueueFullError, StoreError
from .events import MessageDropped, Output, PacketSent, PublishCompleted
from .flows import MAX_STRIKES, STRIKE_WINDOW, Entry, Flow, Flows, Kind
from .logs import ClientLog
from .packets import MQTT_5, Properties, Publish, PubRel, SubAck, Subscription, UnsubAck
from .requests import PublishRequest, SubscribeRequest, UnsubscribeRequest, encode_request
from .requests import prepare_publish as _prepare_publish
from .store import Store, is_private

__all__ = ["MAX_STRIKES", "OUT_LIMIT", "STRIKE_WINDOW", "Outgoing"]

# The members as module constants, as in flows.py (the hot paths).
_PUBLISH, _SUBSCRIBE, _UNSUBSCRIBE = Kind.PUBLISH, Kind.SUBSCRIBE, Kind.UNSUBSCRIBE
_QUEUED, _SENT, _RELEASED = Flow.QUEUED, Flow.SENT, Flow.RELEASED


#: PUBLISH bytes the session lets pile up in :meth:`ClientSession.data_to_send`'s output before
#: it keeps further messages in its queue: the driver writes, then calls ``pump()``. This bounds
#: the copies a burst of large messages makes to about one batch, not the whole burst.
OUT_LIMIT: Final = 256 * 1024


def _load(store: Store, level: int, log: ClientLog) -> tuple[int, int, list[Entry]]:
    """The unfinished flows in ``store`` (a durable one after a restart), in store order, with
    the largest key found (0: none) and how many entries were read (their ``seq``)."""
    last_key = seq = 0
    entries: list[Entry] = []
    for key, value in store.iterate():
        last_key = max(last_key, key)
        if not value:
            continue
        seq += 1
        try:
            packet = codec.decode_stored(value, level)
        except ProtocolError as exc:
            log.warning("outgoing store entry %d does not decode (%s); skipped", key, exc)
            continue
        if isinstance(packet, PubRel):
            entry = Entry(_PUBLISH, seq, 2, None, None, key)
            entry.packet_id, entry.state = packet.packet_id, _RELEASED
        else:
            request = PublishRequest(
                packet.topic,
                packet.topic.encode("utf-8"),
                packet.payload,
                packet.qos,
                packet.retain,
                packet.properties,
                codec.encode_properties(packet.properties, Publish.TYPE)
                if level == MQTT_5
                else None,
            )
            entry = Entry(_PUBLISH, seq, packet.qos, request, None, key)
            if packet.packet_id:  # 0: queued before it was sent
                entry.packet_id, entry.state = packet.packet_id, _SENT
        entry.data = value
        if entry.state != _QUEUED:
            entry.sent_mark, entry.sent_at = 0, 0.0
        entries.append(entry)
    return last_key, seq, entries


class Outgoing:
    """The outgoing half of a :class:`~mqttkit.protocol.session.ClientSession` (see the module
    docstring). The session calls it once per operation and per acknowledgement; it writes to
    ``output`` and reads ``config`` live. ``puback``, ``pubrec``, ``pubcomp``, ``suback``,
    ``unsuback``, ``resume``, ``connection_accepted`` and ``connection_ended`` are those of
    its :class:`Flows`.

    Args:
        config: the session's settings.
        output: where packets and events go.
        new_key: the outgoing store's keys (see :attr:`ClientSession.new_key`); None: count on
            from the largest key in the store.
    """

    __slots__ = (
        "_alias_topics",
        "_config",
        "_fell_back",
        "_flows",
        "_level",
        "_new_key",
        "_output",
        "_queue",
        "_queued_bytes",
        "_record_queued",
        "_restored",
        "_seq",
        "_writable",
        "connection_accepted",
        "connection_ended",
        "puback",
        "pubcomp",
        "pubrec",
        "resume",
        "suback",
        "unsuback",
    )

    puback: Callable[[int, int, float], None]
    pubrec: Callable[[int, int, float], None]
    pubcomp: Callable[[int, float], None]
    suback: Callable[[SubAck, float], None]
    unsuback: Callable[[UnsubAck, float], None]
    resume: Callable[[float], None]
    connection_accepted: Callable[[Properties], None]
    connection_ended: Callable[[MQTTError | None, float], MQTTError]

    def __init__(
        self, config: SessionConfig, output: Output, new_key: Callable[[], int] | None = None
    ) -> None:
        self._config = config
        self._output = output
        self._level = config.protocol_level
        self._queue: deque[Entry] = deque()
        self._queued_bytes = 0  # payload bytes of the PUBLISH entries in _queue
        self._writable = True
        # The topic the application last gave each outgoing Topic Alias.
        self._alias_topics: dict[int, str] = {}
        # A store someone else may read (the user's, a durable one) records queued messages
        # too; the client's own in-memory one only what has been sent.
        self._record_queued = not is_private(config.outgoing_store)
        self._fell_back = False  # fall_back() happened: MQTT 5 requests are converted
        # Queued entries loaded from the store, by key: a publisher thread may have recorded
        # a message (record_publish) that this session loaded before its publish() arrived.
        self._restored: dict[int, Entry] = {}
        self._flows = flows = Flows(
            config, output, self._queue, self.pump, self._restored, self._record_queued
        )
        # The flows' acknowledgements and connection steps, called by the session directly
        # (no extra call on the receive path).
        self.puback, self.pubrec, self.pubcomp = flows.puback, flows.pubrec, flows.pubcomp
        self.suback, self.unsuback = flows.suback, flows.unsuback
        self.resume, self.connection_accepted = flows.resume, flows.connection_accepted
        self.connection_ended = flows.connection_ended
        last_key, self._seq, entries = _load(
            config.outgoing_store, config.protocol_level, output.log
        )
        for entry in entries:
            if entry.state == _QUEUED:
                self._queue.append(entry)
                self._queued_bytes += len(entry.request.payload)
                self._restored[entry.key] = entry
            else:
                flows.add(entry)
        self._new_key: Callable[[], int] = (
            new_key if new_key is not None else itertools.count(last_key + 1).__next__
        )

    # -- inspection -------------------------------------------------------------------------------

    @property
    def new_key(self) -> Callable[[], int]:
        """A new outgoing-store key per call; safe from any thread."""
        return self._new_key

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        """Filters subscribed (from SUBACK), restored when the broker lost the session."""
        return self._flows.subscriptions

    @property
    def queued(self) -> int:
        """Requests waiting to be sent."""
        return len(self._queue)

    @property
    def inflight(self) -> int:
        """QoS 1/2 PUBLISH sent and not yet completely acknowledged."""
        return self._flows.inflight

    @property
    def pending(self) -> int:
        """Work not finished: queued, in flight, and awaiting SUBACK/UNSUBACK."""
        flows = self._flows
        return len(self._queue) + flows.inflight + flows.requests

    @property
    def wants_to_send(self) -> bool:
        """True when queued work waits only for room in the output."""
        return bool(self._queue) and self._writable and self._output.connected

    # -- operations (see the ClientSession methods of the same names) -----------------------------

    def publish(self, request: PublishRequest, now: float, token: Any = None, key: int = 0) -> None:
        """Queue a message, or send it at once (see :meth:`ClientSession.publish`)."""
        if key and self._restored:
            restored = self._restored.pop(key, None)
            if restored is not None:
                # This session loaded the record before the call arrived: that entry is it.
                restored.token = token
                return
        try:
            level = self._level
            if (request.properties_bytes is None) == (level == MQTT_5):
                if level == MQTT_5 or request.properties or not self._fell_back:
                    raise InvalidArgumentError(
                        f"this request was prepared for another protocol level than {level}"
                        + ("" if level == MQTT_5 else " (it needs MQTT 5)")
                    )
                # Prepared for MQTT 5 just before a fall back to 3.1.1 (fall_back()).
                request = _prepare_publish(
                    request.topic, request.payload, request.qos, request.retain, None, level
                )
                if key and self._record_queued:
                    self._config.outgoing_store.put(key, encode_request(request, 0))
            if request.properties_bytes is not None and request.properties.topic_alias is not None:
                request = self._resolve_alias(request)
            recorded = bool(key)
            output = self._output
            flows = self._flows
            connected = output.connected
            queue = self._queue
            if connected:
                if level == MQTT_5:
                    flows.limits.check(request)  # the limits only MQTT 5 announces
                if not request.qos and not queue and self._writable and output.size < OUT_LIMIT:
                    # The hot path: a QoS 0 message that can go right now needs no queue entry.
                    topic_field = request.topic_field
                    props = request.properties_bytes
                    if props is not None and (
                        request.properties.topic_alias or flows.aliases is not None
                    ):
                        topic_field, props = flows.wire_parts(request)  # MQTT 5: by alias
                    data = encode_publish_parts(
                        request.first, topic_field, 0, props, request.payload
                    )
                    output.data.append(data)
                    output.size += len(data)
                    output.last_sent = now
                    if self._config.trace_packets:
                        output.events.append(PacketSent(codec.decode(data, level)))
                    if token is not None:
                        output.events.append(PublishCompleted(token))
                    return
            self._seq += 1
            if request.qos and not key:
                # A store others may write (a publishing thread's record_publish) needs keys
                # from the shared counter; the client's own store can use the session's order.
                key = self._new_key() if self._record_queued else self._seq
            entry = Entry(_PUBLISH, self._seq, request.qos, request, token, key)
            if (
                connected
                and not queue
                and self._writable
                and output.size < OUT_LIMIT
                and (not request.qos or flows.has_room())
            ):
                flows.send_publish(entry, now)
                return
            if self._queue_full(len(request.payload)) and not self._make_room(entry):
                if recorded:
                    self._store_delete(key)
                return  # dropped (policy drop_newest)
            if request.qos and self._record_queued and not recorded:
                entry.data = encode_request(request, 0)
                self._config.outgoing_store.put(entry.key, entry.data)
            queue.append(entry)
            self._queued_bytes += len(request.payload)
        except BaseException:
            if key:
                self._store_delete(key)  # the publishing thread's record of a refused message
            raise

    def publish_now(self, request: PublishRequest, now: float) -> bool:
        """The QoS 0 fast path (see :meth:`ClientSession.publish_now`)."""
        output = self._output
        if (
            request.qos
            or request.properties_bytes is not None
            or self._level == MQTT_5
            or not output.connected
            or self._queue
            or not self._writable
            or output.size >= OUT_LIMIT
        ):
            return False
        data = encode_publish_parts(request.first, request.topic_field, 0, None, request.payload)
        output.data.append(data)
        output.size += len(data)
        output.last_sent = now
        if self._config.trace_packets:
            output.events.append(PacketSent(codec.decode(data, self._level)))
        return True

    def subscribe(self, request: SubscribeRequest, now: float, token: Any = None) -> None:
        """Queue a SUBSCRIBE."""
        self._seq += 1
        self._queue.append(Entry(_SUBSCRIBE, self._seq, 0, request, token))
        self.pump(now)

    def unsubscribe(self, request: UnsubscribeRequest, now: float, token: Any = None) -> None:
        """Queue an UNSUBSCRIBE."""
        self._seq += 1
        self._queue.append(Entry(_UNSUBSCRIBE, self._seq, 0, request, token))
        self.pump(now)

    def admission_error(
        self, size: int, waiting: int, waiting_bytes: int, queued: int | None = None
    ) -> MQTTError | None:
        """The error ``publish`` would raise (see :meth:`ClientSession.admission_error`)."""
        if queued is not None:
            waiting += queued - len(self._queue)  # count the caller's snapshot of the queue
        if self._config.queue_policy != "reject" or not self._queue_full(
            size, waiting, waiting_bytes
        ):
            return None
        return self._queue_full_error(waiting, waiting_bytes)

    def pause_writing(self) -> None:
        """Keep new work queued until :meth:`resume_writing`."""
        self._writable = False

    def resume_writing(self, now: float) -> None:
        """Send what waited."""
        self._writable = True
        self.pump(now)

    def fail_pending(self, error: MQTTError, *, forget: bool = True) -> None:
        """Complete every unfinished operation with ``error`` (see
        :meth:`ClientSession.fail_pending`)."""
        flows = self._flows
        for entry in [*self._queue, *flows.entries()]:
            if forget and entry.kind == _PUBLISH and entry.qos:
                self._store_delete(entry.key)
            flows.complete(entry, error)
        self._queue.clear()
        self._queued_bytes = 0
        flows.clear()

    def pump(self, now: float) -> None:
        """Move queued work to the wire while connected and the window allows."""
        if not self._output.connected or not self._writable:
            return
        output = self._output
        flows = self._flows
        queue = self._queue
        while queue:
            if output.size >= OUT_LIMIT:
                return  # the driver writes this out, then calls pump() again
            entry = queue[0]
            if entry.kind == _PUBLISH:
                if entry.qos and not flows.has_room():
                    return
                queue.popleft()
                self._queued_bytes -= len(entry.request.payload)
                try:
                    if self._level == MQTT_5:
                        flows.limits.check(entry.request)  # limits only MQTT 5 announces
                except MQTTError as exc:
                    # Refused for good (over the broker's limits [MQTT-3.2.2-11, -14, -15]): drop
                    # it from the store too, or every restart would load it again.
                    if entry.qos:
                        self._store_delete(entry.key)
                    flows.complete(entry, exc)
                    continue
                try:
                    flows.send_publish(entry, now)
                except Exception as exc:  # the store failed: this message cannot go safely
                    self._output.log.exception(
                        "outgoing store failed; message %d not sent", entry.key
                    )
                    error = StoreError(f"the outgoing store failed: {exc!r}")
                    error.__cause__ = exc
                    flows.complete(entry, error)
            else:
                if not flows.ids_free():
                    return  # every packet identifier is in use: wait for one to be freed
                queue.popleft()
                flows.send_request(entry, now)

    # -- the queue and its policy -----------------------------------------------------------------

    def _queue_full(self, size: int, waiting: int = 0, waiting_bytes: int = 0) -> bool:
        cfg = self._config
        if len(self._queue) + waiting >= cfg.max_queued:
            return True
        limit = cfg.max_queued_bytes
        return limit is not None and self._queued_bytes + waiting_bytes + size > limit

    def _queue_full_error(self, waiting: int = 0, waiting_bytes: int = 0) -> QueueFullError:
        cfg = self._config
        limit = f"max_queued={cfg.max_queued}"
        if cfg.max_queued_bytes is not None:
            limit += f", max_queued_bytes={cfg.max_queued_bytes}"
        return QueueFullError(
            f"{len(self._queue) + waiting} messages ({self._queued_bytes + waiting_bytes:,} "
            f"payload bytes) are already waiting to be sent ({limit}); wait for the "
            "connection, raise the limit, or choose queue_policy='drop_oldest' / 'drop_newest'"
        )

    def _make_room(self, entry: Entry) -> bool:
        """Apply the queue policy for ``entry``; True if it may be queued now."""
        policy = self._config.queue_policy
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

    def _drop(self, entry: Entry, policy: str) -> None:
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
        self._output.events.append(MessageDropped(message, policy))
        self._flows.complete(
            entry, QueueFullError(f"dropped: the queue was full (queue_policy={policy!r})")
        )

    # -- Topic Aliases ----------------------------------------------------------------------------

    def _resolve_alias(self, request: PublishRequest) -> PublishRequest:
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

    def _store_delete(self, key: int) -> None:
        self._flows.store_delete(key)

    # -- connections ------------------------------------------------------------------------------

    def connection_made(self, level: int) -> None:
        """A new connection at protocol ``level``."""
        self._level = level
        self._writable = True
        self._flows.connection_made(level)

    def restart(self) -> None:
        """A new session on the broker (clean start, or it lost ours) [MQTT-3.2.2-5]: the
        unfinished work goes back to the front of the queue as new, behind the SUBSCRIBE that
        restore the subscriptions (so nothing published to us in between is missed)."""
        requeue, resubscribe = self._flows.restart()
        queue = self._queue
        queue.extendleft(reversed(requeue))
        self._queued_bytes += sum(len(e.request.payload) for e in requeue if e.kind == _PUBLISH)
        for request in reversed(resubscribe):
            self._seq += 1
            queue.appendleft(Entry(_SUBSCRIBE, self._seq, 0, request, None))

    def fall_back(self, level: int) -> None:
        """Speak protocol ``level`` from now on (see :meth:`ClientSession.fall_back`)."""
        self._level = level
        self._fell_back = True
        flows = self._flows
        flows.fall_back(level)
        error = InvalidArgumentError(
            f"this needs MQTT 5, and the server speaks protocol level {level} only"
        )
        for entry in [*self._queue, *flows.publishes()]:
            if entry.kind != _PUBLISH:
                request = entry.request
                options = any(
                    sub.no_local or sub.retain_as_published or sub.retain_handling
                    for sub in getattr(request, "subscriptions", ())
                )
                if request.properties or options:
                    self._queue.remove(entry)
                    flows.complete(entry, error)
                continue
            if entry.state == _RELEASED:
                continue  # PUBREL is the same at both levels
            request = entry.request
            if request.properties:
                if entry.state == _QUEUED:
                    self._queue.remove(entry)
                    self._queued_bytes -= len(request.payload)
                    if entry.qos:
                        self._store_delete(entry.key)
                else:
                    flows.forget(entry)
                flows.complete(entry, error)
                continue
            entry.request = converted = _prepare_publish(
                request.topic, request.payload, request.qos, request.retain, None, level
            )
            if entry.data:
                data = encode_request(converted, entry.packet_id)
                entry.data = codec.set_dup(data) if codec.has_dup(entry.data) else data
                self._config.outgoing_store.put(entry.key, entry.data)
            elif entry.qos and self._record_queued:
                entry.data = encode_request(converted, 0)
                self._config.outgoing_store.put(entry.key, entry.data)
