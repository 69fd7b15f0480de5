"""The asyncio client: ``async with Client(url) as c``, ``await c.publish(...)``,
``async for message in c.messages()``.

A thin front over :class:`~mqttkit.aio.engine.Engine`: it turns operation tokens into awaitables
and message events into an async iterator. The engine reports to a private listener (``_Inbox``:
the queue of messages and the consumers waiting on it), not to the public class. Incoming QoS
1/2 messages are acknowledged when the consumer asks for the next message (or leaves the loop),
so the broker only considers a message delivered once the application's loop body has run for
it.

Any number of tasks may iterate ``messages()`` at once; they share one queue. A message event
appends to the queue and wakes the longest-waiting consumer (one per message); a consumer takes
the queue's head when it runs, with no await between taking it and yielding it, so a message is
either queued or in a loop body, never in between. A woken consumer that is cancelled before it
runs passes its wake-up on, so the message it was woken for goes to another consumer. The
session sends acknowledgements in arrival order whatever order the consumers finish in.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from .._api import (
    Granted,
    ackable,
    auth_properties,
    check_ack_reason,
    filters_from,
    granted_from,
    subscriptions_from,
)
from ..options import ClientOptions, Server, parse_disconnect, parse_options
from ..protocol import session as s
from ..protocol.errors import ClientClosedError, MQTTConnectionError, MQTTError
from ..protocol.packets import ConnAck, Properties, Publish
from ..routing import RouteTable
from .engine import Engine

__all__ = [
    "MAX_STATE_EVENTS",
    "Client",
    "Connected",
    "ConnectionEvent",
    "Disconnected",
    "Reconnecting",
]

log = logging.getLogger("mqttkit")

_T = TypeVar("_T")


class _Token(asyncio.Future[_T]):
    """An awaitable operation result that the engine completes (``_T``: what it resolves to;
    for type checkers only, never subscripted at run time)."""

    def resolve(self, value: Any) -> None:
        if not self.done():
            self.set_result(value)

    def reject(self, error: BaseException) -> None:
        if not self.done():
            self.set_exception(error)


class _Inbox:
    """The engine's listener for one asyncio client: incoming messages queued for the
    consumers of ``messages()``, the consumers waiting for one, and the wait for CONNACK."""

    __slots__ = (
        "connect_waiter",
        "dropped",
        "ended",
        "engine",
        "manual",
        "max_buffered",
        "messages",
        "queues",
        "routes",
        "waiters",
        "watchers",
    )

    def __init__(self, max_buffered: int) -> None:
        self.max_buffered = max_buffered
        #: Messages not taken by a consumer yet, with their acknowledgement; made on first use.
        self.messages: deque[tuple[Publish, s.Ack | _Joint | None]] | None = None
        #: Consumers waiting for a message, longest-waiting first; made on first use.
        self.waiters: deque[asyncio.Future[None]] | None = None
        #: Set while connect() waits for the first CONNACK.
        self.connect_waiter: asyncio.Future[ConnAck] | None = None
        #: Incoming QoS 0 messages dropped because the consumer was ``max_buffered`` behind.
        self.dropped = 0
        #: The client ended (closed, or stopped): consumers drain the queue and leave.
        self.ended = False
        #: The engine this inbox listens to (set with it).
        self.engine: Engine | None = None
        #: manual_ack: messages are AckableMessages, their acks left to the application.
        self.manual = False
        #: The queues of the filtered ``messages(filter)`` loops, by filter.
        self.routes: RouteTable[_Queue] = RouteTable()
        self.queues: set[_Queue] = set()
        #: The queues of the ``connection_events()`` loops.
        self.watchers: list[_StateQueue] = []

    # -- the engine's Listener protocol ---------------------------------------------------------

    def message(self, message: Publish, ack: s.Ack | _Joint | None) -> None:
        """An incoming message: per message, so no detour through emit()."""
        if self.manual and self.engine is not None and not isinstance(ack, _Joint):
            message = ackable(message, _acknowledger(self.engine, ack))
            ack = None
        if self.queues:  # filtered loops exist (a set: a cheap test per message)
            targets = self.routes.targets(message.topic)
            if targets:
                if ack is not None and len(targets) > 1:
                    ack = _Joint(ack, len(targets))
                for queue in targets:
                    queue.put(message, ack)
                return
        messages = self.messages
        if messages is None:
            messages = self.messages = deque()
        if ack is None and len(messages) >= self.max_buffered:
            self._drop_qos0(len(messages))
            return
        messages.append((message, ack))
        if self.waiters:
            self.wake_one()

    def emit(self, name: str, *args: Any) -> None:
        """A client event."""
        if self.watchers and name in ("connect", "close", "reconnect"):
            self._state_event(name, args)
        if name == "message":
            self.message(args[0], args[1])
        elif name == "connect":
            waiter = self.connect_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(args[0])
        elif name == "error":
            # Not logged here: the engine has logged the error, once (see Engine._log_end).
            waiter = self.connect_waiter
            engine = self.engine
            # One server of several failed: connect() waits for the others.
            if (engine is None or not engine.trying_next_server) and (
                waiter is not None and not waiter.done()
            ):
                waiter.set_exception(args[0])
        elif name == "end":
            self.ended = True
            self._wake_consumers()

    def _state_event(self, name: str, args: tuple[Any, ...]) -> None:
        engine = self.engine
        event: ConnectionEvent
        if name == "connect":
            event = Connected(args[0], args[1])
        elif name == "reconnect":
            attempt = engine.reconnect_attempt if engine is not None else 0
            event = Reconnecting(attempt, engine.reconnect_delay if engine is not None else 0.0)
        else:
            event = Disconnected(engine.last_error if engine is not None else None)
        for watcher in self.watchers:
            watcher.put(event)

    def events_done(self) -> None:
        """The end of a batch of engine events: nothing to do, delivery is direct."""

    def stopped(self) -> None:
        """The engine stopped."""
        self.ended = True
        self._wake_consumers()
        waiter = self.connect_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ClientClosedError("the client stopped before it connected"))

    # -- consumers ------------------------------------------------------------------------------

    def wake_one(self) -> None:
        """Wake the longest-waiting consumer still waiting, for one message (a cancelled one's
        future is done already; it removes itself when it runs)."""
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def abandon_wait(self, waiter: asyncio.Future[None]) -> None:
        """A consumer was cancelled while it waited for a message."""
        if waiter.done() and not waiter.cancelled():
            # Woken for a message but cancelled before it ran: pass the wake-up on, or that
            # message would wait in the queue for the next one to arrive.
            if self.messages:
                self.wake_one()
        elif self.waiters is not None and waiter in self.waiters:
            self.waiters.remove(waiter)

    def _drop_qos0(self, waiting: int) -> None:
        # QoS 0 and the consumer is max_buffered behind: drop it (QoS 1/2 wait, never
        # acknowledged until consumed, so the broker holds the rest).
        self.dropped += 1
        if self.dropped % 10_000 == 1:
            (self.engine.log if self.engine is not None else log).warning(
                "dropping incoming QoS 0 messages: %d wait for the consumer (max_buffered); "
                "%d dropped so far",
                waiting,
                self.dropped,
            )

    def _wake_consumers(self) -> None:
        # The end: every waiting consumer drains what is queued, then leaves its loop.
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        for queue in self.queues:
            queue.wake_all()
        for watcher in self.watchers:
            watcher.put(None)  # the end


def _acknowledger(engine: Engine, ack: s.Ack | None) -> Callable[[int], None]:
    """``message.ack(reason_code)`` for a message with ``manual_ack``: from the engine's loop,
    or from any other thread."""
    level = engine.options.protocol_version

    def acknowledge(reason_code: int = 0) -> None:
        check_ack_reason(reason_code, level)
        if ack is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is engine.loop:
            engine.acknowledge(ack, reason_code)
        else:
            engine.loop.call_soon_threadsafe(engine.acknowledge, ack, reason_code)

    return acknowledge


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection was accepted: its CONNACK and the server it is on."""

    connack: ConnAck
    server: Server


@dataclass(frozen=True, slots=True)
class Disconnected:
    """A connection (or a connection attempt) ended; ``error`` says why (None: closed)."""

    error: MQTTError | None


@dataclass(frozen=True, slots=True)
class Reconnecting:
    """Reconnection attempt number ``attempt`` (1, 2... since the last accepted connection)
    starts, after waiting ``delay`` seconds of backoff (0: at once, e.g. the next server)."""

    attempt: int
    delay: float


ConnectionEvent = Connected | Disconnected | Reconnecting

#: Most connection events a ``connection_events()`` loop may fall behind; older ones are
#: dropped beyond (the newest say where the connection stands).
MAX_STATE_EVENTS = 100


class _StateQueue:
    """The events of one ``connection_events()`` loop, and the loop waiting for one."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: deque[ConnectionEvent | None] = deque(maxlen=MAX_STATE_EVENTS)
        self.waiter: asyncio.Future[None] | None = None

    def put(self, event: ConnectionEvent | None) -> None:
        self.items.append(event)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Joint:
    """The acknowledgement of a message several ``messages(filter)`` loops received: sent
    once the last of them has taken it."""

    __slots__ = ("ack", "left")

    def __init__(self, ack: s.Ack | _Joint, left: int) -> None:
        self.ack: s.Ack = ack.ack if isinstance(ack, _Joint) else ack
        self.left = left


class _Queue:
    """The messages of one ``messages(filter)`` loop, and the loop waiting for one."""

    __slots__ = ("dropped", "items", "max_buffered", "waiter")

    def __init__(self, max_buffered: int) -> None:
        self.max_buffered = max_buffered
        self.items: deque[tuple[Publish, s.Ack | _Joint | None]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.dropped = 0

    def put(self, message: Publish, ack: s.Ack | _Joint | None) -> None:
        if ack is None and len(self.items) >= self.max_buffered:
            self.dropped += 1  # QoS 0 behind a slow loop (QoS 1/2 wait unacknowledged)
            return
        self.items.append((message, ack))
        self.wake_all()

    def wake_all(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Client:
    """An MQTT client for asyncio.

    Args:
        url: ``mqtt://``, ``mqtts://``, ``unix://`` URL of the broker (user:password allowed).
        options: a dict with the seed / MQTT.js option names (``clientId``, ``keepalive``...).
        **kwargs: any :class:`~mqttkit.options.ClientOptions` field (``client_id``,
            ``keepalive``, ``protocol_version``, ``cafile``...), durations in seconds.

    Raises:
        UnknownOptionError: an option that does not exist.
        InvalidOptionError: an option value out of range.

    Use ``async with Client(url) as client:`` or ``await client.connect()`` /
    ``await client.close()``. After the first connection, a lost connection is re-established in
    the background (``reconnect_period``); operations issued meanwhile are queued.
    """

    def __init__(
        self, url: str | None = None, options: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        self.options: ClientOptions = parse_options(url, options, **kwargs)
        self._engine: Engine | None = None
        self._written: _Token[int] | None = None  # the completed future of QoS 0 sent at once
        self._inbox = _Inbox(self.options.max_buffered)

    # -- public API -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while connected to the broker."""
        return self._engine is not None and self._engine.connected

    @property
    def dropped(self) -> int:
        """Incoming QoS 0 messages dropped because the consumer was ``max_buffered`` behind."""
        return self._inbox.dropped

    @property
    def client_id(self) -> str:
        """The client identifier in use: the one given, a random one, or (MQTT 5, given empty)
        the one the server assigned, once connected."""
        if self._engine is not None and self._engine.session.config.client_id:
            return self._engine.session.config.client_id
        return self.options.client_id

    @property
    def protocol_version(self) -> int:
        """The protocol level: 3, 4 or 5."""
        return self.options.protocol_version

    @property
    def server(self) -> Server:
        """The server of the current connection, or of the last attempt (the first of
        ``servers`` before any): a :class:`mqttkit.Server` (``host``, ``port``, ``transport``,
        ``url``)."""
        if self._engine is None:
            return self.options.servers[0]
        return self._engine.server

    @property
    def stop_error(self) -> MQTTError | None:
        """Why the client stopped by itself, for good (a refused login when reconnecting, or
        a lost connection with ``reconnect_period=0``), or None. Its ``messages()`` loops have
        ended then, and new operations fail with this error."""
        return None if self._engine is None else self._engine.stop_error

    async def connect(self) -> ConnAck:
        """Connect, and return the broker's CONNACK.

        Raises:
            MQTTConnectionError: the first connection attempt failed (DNS, refused, TLS,
                timeout, CONNACK refusal...); with ``servers``, the attempt at each of them
                (this is the last one's error; each is logged). The client does not retry in
                the background then; call ``connect()`` again.
        """
        loop = asyncio.get_running_loop()
        if self._engine is None:
            self._engine = Engine(self.options, self._inbox, loop)
            self._inbox.engine = self._engine
            self._inbox.manual = self.options.manual_ack
        elif self._engine.loop is not loop:
            raise RuntimeError("this client belongs to another event loop")
        engine = self._engine
        if engine.connected:
            assert engine.session.connack is not None
            return engine.session.connack
        inbox = self._inbox
        inbox.ended = False
        waiter: asyncio.Future[ConnAck] = loop.create_future()
        inbox.connect_waiter = waiter
        engine.start()
        try:
            return await waiter
        except BaseException:
            await self.close(force=True)
            raise
        finally:
            inbox.connect_waiter = None

    async def close(
        self,
        force: bool = False,
        *,
        reason_code: int = 0,
        properties: Properties | Mapping[str, Any] | None = None,
    ) -> None:
        """Close: wait (up to ``close_timeout``) for outstanding acknowledgements, send
        DISCONNECT and close the connection; ``force=True`` does not wait.

        MQTT 5: the DISCONNECT carries ``reason_code`` (e.g. 0x04, "disconnect with Will
        message") and ``properties`` (``session_expiry_interval``, ``reason_string``,
        ``user_property``).

        Raises:
            InvalidArgumentError: a reason code or property DISCONNECT cannot carry, or either
                with MQTT 3.x.
        """
        code, props = parse_disconnect(self.options, reason_code, properties)
        engine = self._engine
        if engine is None:
            return
        token: _Token[None] = _Token(loop=engine.loop)
        engine.close(force, token, code, props)
        await token

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(force=exc_type is not None and not issubclass(exc_type, Exception))

    def _require_engine(self) -> Engine:
        if self._engine is None:
            raise ClientClosedError("call connect() (or use 'async with') first")
        return self._engine

    def publish(
        self,
        topic: str,
        payload: str | bytes | bytearray | memoryview = b"",
        qos: int = 0,
        retain: bool = False,
        properties: Any = None,
    ) -> asyncio.Future[int]:
        """Publish a message: queued at once; the returned future completes when its QoS flow
        has (QoS 0: when written). ``await client.publish(...)`` waits for it; not awaiting it
        is fire-and-forget (the message is sent all the same). A QoS 0 message that goes out
        at once gets a future that is already done (the same one for all of them).

        Returns:
            A future of the PUBACK / PUBREC reason code (MQTT 5; 0 otherwise): an ``int``, a
            :class:`~mqttkit.PublishResult` (an ``int`` with the ``qos`` it was delivered at)
            when the broker acknowledged a QoS 2 message at QoS 1.

        Raises:
            InvalidTopicError, InvalidQoSError, PayloadTypeError: at once, for bad arguments.
            QueueFullError: ``max_queued`` messages already wait.
            PublishError: the broker refused the message (MQTT 5 reason code).
            ClientClosedError: the client was closed before the flow completed.
        """
        engine = self._require_engine()
        request = s.prepare_publish(
            topic, payload, qos, retain, properties, self.options.protocol_version
        )
        if not request.qos and engine.publish_now(request):
            # Written at once (QoS 0): done already. One completed future serves them all.
            written = self._written
            if written is None or written.get_loop() is not engine.loop:
                written = self._written = _Token(loop=engine.loop)
                written.set_result(0)
            return written
        token: _Token[int] = _Token(loop=engine.loop)
        engine.publish(request, token)
        if token.done() and token.exception() is not None:
            raise token.exception()  # type: ignore[misc]  # refused at once: queue full, closed
        return token

    def reauthenticate(self, properties: Any) -> None:
        """MQTT 5: re-authenticate on the current connection: sends AUTH (reason 0x19) with
        ``properties`` (``authentication_method``, ``authentication_data``); the broker's
        challenges go to the ``authenticate`` option's function.

        Raises:
            InvalidArgumentError: not MQTT 5, or no ``authentication_method``.
            MQTTConnectionError: not connected.
        """
        engine = self._require_engine()
        props = auth_properties(properties, self.options.protocol_version)
        if not engine.connected:
            raise MQTTConnectionError("not connected: re-authentication needs a connection")
        engine.reauthenticate(props)

    async def flush(self) -> None:
        """Wait until every operation issued so far has completed: QoS 0 messages written,
        QoS 1/2 flows acknowledged, SUBACK/UNSUBACK received. Cheaper than gathering the
        futures of a burst of publishes."""
        engine = self._require_engine()
        token: _Token[None] = _Token(loop=engine.loop)
        engine.flush(token)
        await token

    async def subscribe(
        self,
        topic: Any,
        qos: int = 0,
        *,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        properties: Any = None,
    ) -> list[Granted]:
        """Subscribe to a filter, a list of filters or a dict ``{filter: qos}``.

        Returns:
            One :class:`Granted` ``(topic, qos)`` per filter; qos >= 128 means refused.

        Raises:
            InvalidTopicError, InvalidQoSError: at once, for bad arguments.
            SubscribeError: the broker refused every filter.
        """
        engine = self._require_engine()
        subs = subscriptions_from(
            topic,
            qos,
            no_local=no_local,
            retain_as_published=retain_as_published,
            retain_handling=retain_handling,
        )
        request = s.prepare_subscribe(subs, properties, self.options.protocol_version)
        token: _Token[s.SubscribeCompleted] = _Token(loop=engine.loop)
        engine.subscribe(request, token)
        event = await token
        return granted_from(event)

    async def unsubscribe(self, topic: Any, properties: Any = None) -> tuple[int, ...]:
        """Unsubscribe from a filter or a list of filters.

        Returns:
            MQTT 5 reason codes, one per filter (empty for MQTT 3.x).
        """
        engine = self._require_engine()
        request = s.prepare_unsubscribe(
            filters_from(topic), properties, self.options.protocol_version
        )
        token: _Token[s.UnsubscribeCompleted] = _Token(loop=engine.loop)
        engine.unsubscribe(request, token)
        event = await token
        return event.reason_codes

    def reconnect(self) -> None:
        """Drop the current connection and connect again now (a backoff is cut short); the
        session, and what is queued, carry over as after any lost connection."""
        self._require_engine().reconnect()

    def connection_events(self) -> AsyncIterator[ConnectionEvent]:
        """The connection's ups and downs, in order, until the client is closed:
        :class:`Connected` (with the CONNACK and the server), :class:`Disconnected` (with the
        cause), :class:`Reconnecting` (attempt number, backoff waited). In effect from this
        call on; several loops may run at once, each sees every event. A loop that falls
        more than :data:`MAX_STATE_EVENTS` behind loses the oldest.

        Raises:
            ClientClosedError: the client was never connected.
        """
        self._require_engine()
        watcher = _StateQueue()
        self._inbox.watchers.append(watcher)
        return self._connection_events(watcher)

    async def _connection_events(self, watcher: _StateQueue) -> AsyncIterator[ConnectionEvent]:
        inbox = self._inbox
        try:
            while True:
                while not watcher.items:
                    if inbox.ended:
                        return
                    watcher.waiter = waiter = asyncio.get_running_loop().create_future()
                    try:
                        await waiter
                    finally:
                        watcher.waiter = None
                event = watcher.items.popleft()
                if event is None:
                    return
                yield event
        finally:
            if watcher in inbox.watchers:
                inbox.watchers.remove(watcher)

    def messages(
        self, topic_filter: str | None = None, *, max_buffered: int | None = None
    ) -> AsyncIterator[Publish]:
        """Incoming messages, in order, until the client is closed.

        Each QoS 1/2 message is acknowledged to the broker when the loop asks for the next
        one (or ends), i.e. after the loop body has handled it.

        Args:
            topic_filter: only the messages whose topic matches it (wildcards and
                ``$share/<group>/<filter>`` work). It routes, it does not subscribe. Several
                filtered loops may run at once: a message goes to every one whose filter
                matches (acknowledged once the last has taken it), and only a message no
                filtered loop matches goes to the unfiltered loops. The filter is in effect
                from this call on, before the loop starts.
            max_buffered: QoS 0 messages a filtered loop may fall behind before new ones are
                dropped for it (default: the client's ``max_buffered``). QoS 1/2 messages are
                never dropped: they wait unacknowledged.

        Several tasks may iterate the unfiltered loop at once: each message goes to exactly
        one of them, taken in arrival order, and waiting loops are woken in the order they
        started waiting. A loop that is cancelled or left loses no message (a filtered
        loop's leftovers go to the unfiltered loops). Acknowledgements still reach the broker
        in arrival order: one held by a slow loop body holds back those after it.

        Raises:
            InvalidTopicError: not a valid topic filter.
            ClientClosedError: the client was never connected.
        """
        engine = self._require_engine()
        if topic_filter is None:
            return self._all_messages(engine)
        if max_buffered is not None and (isinstance(max_buffered, bool) or max_buffered < 1):
            raise ValueError(f"max_buffered must be an int >= 1, not {max_buffered!r}")
        queue = _Queue(max_buffered or self.options.max_buffered)
        self._inbox.routes.add(topic_filter, queue)  # raises on a bad filter
        self._inbox.queues.add(queue)
        return self._filtered_messages(engine, topic_filter, queue)

    def _acknowledge(self, engine: Engine, ack: s.Ack | _Joint) -> None:
        if isinstance(ack, _Joint):
            ack.left -= 1
            if ack.left:
                return
            ack = ack.ack
        engine.acknowledge(ack)

    async def _all_messages(self, engine: Engine) -> AsyncIterator[Publish]:
        inbox = self._inbox
        pending_ack: s.Ack | _Joint | None = None
        try:
            while True:
                if pending_ack is not None:
                    self._acknowledge(engine, pending_ack)
                    pending_ack = None
                while not inbox.messages:
                    if inbox.messages is None:
                        inbox.messages = deque()
                    if inbox.ended:
                        return
                    waiters = inbox.waiters
                    if waiters is None:
                        waiters = inbox.waiters = deque()
                    waiter = engine.loop.create_future()
                    waiters.append(waiter)
                    try:
                        await waiter
                    except BaseException:
                        inbox.abandon_wait(waiter)
                        raise
                message, pending_ack = inbox.messages.popleft()
                yield message
        finally:
            if pending_ack is not None and self._engine is not None:
                self._acknowledge(self._engine, pending_ack)

    async def _filtered_messages(
        self, engine: Engine, topic_filter: str, queue: _Queue
    ) -> AsyncIterator[Publish]:
        inbox = self._inbox
        pending_ack: s.Ack | _Joint | None = None
        try:
            while True:
                if pending_ack is not None:
                    self._acknowledge(engine, pending_ack)
                    pending_ack = None
                while not queue.items:
                    if inbox.ended:
                        return
                    queue.waiter = waiter = engine.loop.create_future()
                    try:
                        await waiter
                    finally:
                        queue.waiter = None
                message, pending_ack = queue.items.popleft()
                yield message
        finally:
            inbox.routes.remove(topic_filter, queue)
            inbox.queues.discard(queue)
            if pending_ack is not None:
                self._acknowledge(engine, pending_ack)
            # What this loop did not take: a share of a message others also took is given
            # up; the rest goes on to the other loops.
            for message, ack in queue.items:
                if isinstance(ack, _Joint) and ack.left > 1:
                    ack.left -= 1
                else:
                    inbox.message(message, ack.ack if isinstance(ack, _Joint) else ack)
            queue.items.clear()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<mqttkit.aio.Client {self.options.url} {state}>"
