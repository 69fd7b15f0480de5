"""The blocking / threaded front and the seed-000 (node.lua ``mqtt``) API.

Theory of operation
-------------------
Three kinds of threads meet here:

* the **caller's threads**: any number, calling ``publish``/``subscribe``/... They validate
  arguments (bad input raises right there) and hand the work to the engine through
  :class:`~mqttkit.sync.loop.Commands`, which batches: one loop wake-up per burst, not per
  message;
* the **loop thread**: one daemon thread per process, running the asyncio
  :class:`~mqttkit.aio.engine.Engine` of every sync client (see :mod:`mqttkit.sync.loop`). It
  never runs user code (unless ``dispatch="inline"``);
* one **dispatch thread** per client: runs the listeners and callbacks, in order, with the
  events the loop thread hands over in batches (see :mod:`mqttkit.sync.dispatch`). A slow or
  blocking listener therefore never delays keepalive or the reading of the socket. Incoming
  QoS 1/2 messages are acknowledged to the broker after their listeners have returned.

This module owns the client itself: options, argument checking, the operations and what a
batch of events means (:meth:`Client._process`: listeners, acknowledgements, callbacks).
Operations return a :class:`~mqttkit.sync.handle.Handle`.

The dispatch thread lives while the client is active (connecting, connected or reconnecting),
and while it does, the process lives on after its main thread has ended: as in Node.js, a script
that only registers listeners keeps running until the client is closed (or stops for good, e.g.
on a refused login). One Ctrl-C closes the clients and ends it (see :mod:`mqttkit.sync.lifetime`).

Listeners registered right after :func:`connect` returns never miss the first events: see the
hold rule in :mod:`mqttkit.sync.events`.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, ClassVar, overload

from .._api import (
    Granted,
    ackable,
    auth_properties,
    check_ack_reason,
    filters_from,
    subscriptions_from,
)
from ..aio.engine import RUNNING as _ENGINE_RUNNING
from ..aio.engine import Engine
from ..options import ClientOptions, Server, parse_disconnect, parse_options
from ..protocol import session as s
from ..protocol.errors import InvalidArgumentError, StoreError, UnknownOptionError
from ..protocol.packets import Properties, Publish
from ..protocol.store import MemoryStore, is_private
from ..routing import RouteTable
from .dispatch import CALL, Dispatcher, LoopListener
from .events import ClientEvents, MessageListener, MessageListenerT, arity
from .handle import Handle, Operation
from .loop import Commands, check_not_on_loop_thread, engine_loop, on_loop_thread

__all__ = ["Client", "Handle", "connect", "engine_loop"]

_PUBLISH = Operation.PUBLISH
_SUBSCRIBE = Operation.SUBSCRIBE
_UNSUBSCRIBE = Operation.UNSUBSCRIBE
_CLOSE = Operation.CLOSE

_PUBLISH_OPTIONS = frozenset({"qos", "retain", "properties", "dup"})
_SUBSCRIBE_OPTIONS = frozenset(
    {"qos", "properties", "nl", "rap", "rh", "no_local", "retain_as_published", "retain_handling"}
)


class Client(ClientEvents):
    """The seed-000 MQTT client: Node-style events, callbacks, and waitable handles.

    Args:
        options: a dict with the seed / MQTT.js option names (milliseconds for durations).
        url: the broker URL (``mqtt://host:port``, ``mqtts://``, ``unix://``).
        **kwargs: any :class:`~mqttkit.options.ClientOptions` field, in seconds.

        retry_first_connect: False: if the very first connection attempt fails, stop there
            instead of reconnecting (reconnect only once a CONNACK has accepted a connection).
        on_stopped: called when the client stops (closed, or stopped for good), on the loop
            thread, before the last events go to the dispatch thread: it must return quickly
            and must not wait on the client.

    ``retry_first_connect`` and ``on_stopped`` are for fronts built on this client (the
    NodeMCU module).

    Raises:
        UnknownOptionError: an option that does not exist (named in the message).
        InvalidOptionError: a bad value.

    Events: ``connect(connack, server)``, ``reconnect()``, ``close()``, ``offline()``,
    ``error(err)``, ``message(topic, message, packet)``, ``end()``, ``disconnect(packet)``
    (MQTT 5), ``auth(packet)`` (MQTT 5), ``dropped(packet)``, ``packetsend(packet)``,
    ``packetreceive(packet)``; any other name raises :class:`InvalidArgumentError`. Every
    method is safe from any thread.
    """

    event_names: ClassVar[frozenset[str] | None] = frozenset(
        {
            "auth",
            "close",
            "connect",
            "disconnect",
            "dropped",
            "end",
            "error",
            "message",
            "offline",
            "packetreceive",
            "packetsend",
            "reconnect",
        }
    )

    def __init__(
        self,
        options: Mapping[str, Any] | None = None,
        *,
        url: str | None = None,
        retry_first_connect: bool = True,
        on_stopped: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.options: ClientOptions = parse_options(url, options, **kwargs)
        loop = engine_loop()
        self._dispatcher = Dispatcher(
            self._process,
            lambda: f"mqttkit-dispatch-{self.options.client_id}",
            lambda force: self.close(force=force),
        )
        # dispatch="inline": listeners run on the loop thread, as the engine reports events.
        self._inline = self.options.dispatch == "inline"
        self._manual_ack = self.options.manual_ack
        self._loop_listener = LoopListener(
            loop,
            self._dispatcher,
            self._process,
            inline=self._inline,
            max_buffered=self.options.max_buffered,
            on_stopped=on_stopped,
        )
        self._engine = Engine(
            self.options, self._loop_listener, loop, retry_first_connect=retry_first_connect
        )
        self._log = self._engine.log
        self._commands = Commands(loop, self._engine.run_batch)
        self._submit = self._commands.submit  # bound once: publish() is the hot path
        #: Topic routes (on_message): filter -> listener, matched per incoming message.
        self._routes: RouteTable[Callable[..., Any]] = RouteTable()
        self._engine_publish = self._engine.publish
        # With a durable incoming store, each QoS 2 receipt is stored before the next listener
        # runs (see _process).
        self._durable_incoming = not isinstance(self.options.incoming_store, MemoryStore)
        # A store the user passed: publish() returns once it holds the message (the publishing
        # thread puts it there itself; see _record).
        self._record = not is_private(self.options.outgoing_store)
        # With queue_policy="reject", publish() raises QueueFullError itself: it counts the
        # calls still on their way to the loop thread as waiting too.
        self._max_queued = self.options.max_queued
        self._check_bytes = self.options.max_queued_bytes is not None
        # Publishes handed to the loop thread, a ticket each (see publish()).
        self._handed = itertools.count()
        if self.options.callback is not None:
            self.on("message", self.options.callback)

    # -- state -----------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while connected to the broker."""
        return self._engine.connected

    @property
    def client_id(self) -> str:
        """The client identifier in use: the one given, a random one, or (MQTT 5, given empty)
        the one the server assigned, once connected."""
        return self._engine.session.config.client_id or self.options.client_id

    @property
    def protocol_version(self) -> int:
        """The protocol level: 3, 4 or 5."""
        return self.options.protocol_version

    @property
    def server(self) -> Server:
        """The server of the current connection, or of the last attempt (the first of
        ``servers`` before any): a :class:`mqttkit.Server` (``host``, ``port``, ``transport``,
        ``url``). The ``connect`` event passes it too, after the CONNACK."""
        return self._engine.server

    # -- lifecycle -------------------------------------------------------------------------------

    def connect(self) -> Client:
        """Start connecting in the background (and reconnecting, per ``reconnect_period``).

        Returns:
            The client itself.
        """
        self._dispatcher.start()
        self._submit(self._engine.start)
        return self

    def reconnect(self) -> Client:
        """Reconnect now (after a ``reconnect_period`` of 0, or to cut a backoff short)."""
        self._dispatcher.start()
        self._submit(self._engine.reconnect)
        return self

    def close(
        self,
        force: bool | Mapping[str, Any] | Callable[..., Any] = False,
        options: Mapping[str, Any] | Callable[..., Any] | None = None,
        callback: Callable[..., Any] | None = None,
        *,
        reason_code: int = 0,
        properties: Properties | Mapping[str, Any] | None = None,
    ) -> Handle[None]:
        """Close the client: send what is queued and wait for outstanding acknowledgements
        (at most ``close_timeout`` seconds), then DISCONNECT; ``force=True`` closes at once.

        As MQTT.js's ``end([force], [options], [callback])``: each argument may be left out.

        Args:
            force: close without waiting. A callable here is taken as ``callback``, a dict as
                ``options``.
            options: MQTT.js's ``{"reasonCode": ..., "properties": {...}}``.
            callback: ``callback()`` once closed.
            reason_code: MQTT 5: the DISCONNECT's reason code, e.g. 0x04 "disconnect with Will
                message" (the broker publishes the Will all the same).
            properties: MQTT 5: the DISCONNECT's ``session_expiry_interval`` (a new expiry for
                the session, if CONNECT had one), ``reason_string``, ``user_property``.

        Returns:
            A :class:`Handle` that completes when the client is closed. Non-blocking: safe to
            call from a listener.

        Raises:
            InvalidArgumentError: a reason code or property DISCONNECT cannot carry, or either
                with MQTT 3.x.
        """
        if isinstance(force, Mapping):  # end(options[, callback])
            if callable(options):
                callback = options
            options = force
            force = False
        elif callable(force):
            callback, force = force, False
        if callable(options):
            callback, options = options, None
        if options is not None:
            if not isinstance(options, Mapping):
                raise InvalidArgumentError("close() options must be a dict")
            unknown = set(options) - {"reasonCode", "properties"}
            if unknown:
                raise InvalidArgumentError(
                    f"unknown close() option(s) {sorted(unknown)}; use reasonCode, properties"
                )
            reason_code = options.get("reasonCode", reason_code)
            properties = options.get("properties", properties)
        code, props = parse_disconnect(self.options, reason_code, properties)
        handle: Handle[None] = Handle(_CLOSE, callback, self._loop_listener)
        self._submit(self._engine.close, bool(force), handle, code, props)
        return handle

    end = close

    # -- routing ---------------------------------------------------------------------------------

    @overload
    def on_message(self, topic_filter: str) -> Callable[[MessageListenerT], MessageListenerT]: ...

    @overload
    def on_message(self, topic_filter: str, listener: MessageListenerT) -> MessageListenerT: ...

    def on_message(self, topic_filter: str, listener: Any = None) -> Any:
        """Route the messages whose topic matches ``topic_filter`` to ``listener(topic,
        message[, packet])`` (as the ``message`` event's listeners; also a decorator).

        Wildcards (``+``, ``#``) and ``$share/<group>/<filter>`` work. A message goes to every
        route that matches it, in the order they were added; a message no route matches goes
        to the ``message`` listeners. Routing does not subscribe: subscribe as usual.

        Returns:
            The listener.

        Raises:
            InvalidTopicError: not a valid topic filter.
        """

        def add(fn: MessageListenerT) -> MessageListenerT:
            if not callable(fn):
                raise TypeError(f"listener must be callable, not {type(fn).__name__}")
            self._routes.add(topic_filter, fn)
            return fn

        if listener is None:
            return add
        return add(listener)

    message_callback_add = on_message  # paho-mqtt's name

    def off_message(self, topic_filter: str, listener: MessageListener | None = None) -> int:
        """Remove the routes of ``topic_filter`` (to ``listener`` only, if given); returns
        how many were removed."""
        return self._routes.remove(topic_filter, listener)

    message_callback_remove = off_message  # paho-mqtt's name

    def __enter__(self) -> Client:
        if not self._engine.active:
            self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        handle = self.close()
        if threading.current_thread() is not self._dispatcher.thread:
            handle.wait(self.options.close_timeout + 5.0)

    # -- operations ------------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        message: str | bytes | bytearray | memoryview,
        options: Mapping[str, Any] | Callable[..., Any] | None = None,
        callback: Callable[..., Any] | None = None,
        *,
        qos: int | None = None,
        retain: bool | None = None,
        properties: Any = None,
    ) -> Handle[int]:
        """Publish ``message`` to ``topic``.

        Args:
            topic: a topic name (no wildcards).
            message: str (sent as UTF-8), bytes, bytearray or memoryview.
            options: seed dict ``{"qos": 0, "retain": False, "properties": ...}``; a callable
                here is taken as ``callback``.
            callback: ``callback(err)`` once the QoS flow completes (QoS 0: once written).
            qos, retain, properties: keyword spellings of the options.

        Returns:
            A ``Handle[int]``: ``handle.result(timeout)`` waits for the flow and returns the
            PUBACK / PUBREC reason code (0 for QoS 0 and MQTT 3.x; a
            :class:`~mqttkit.PublishResult` when the broker delivered a QoS 2 message at
            QoS 1).

        Raises:
            InvalidTopicError, InvalidQoSError, PayloadTypeError, UnknownOptionError: at once.
        """
        if options is None:
            request = s.prepare_publish(
                topic, message, qos or 0, retain or False, properties, self.options.protocol_version
            )
        else:
            if callable(options):
                callback, options = options, None
            opts = _options_dict(options, _PUBLISH_OPTIONS, "publish")
            request = s.prepare_publish(
                topic,
                message,
                opts.get("qos", 0) if qos is None else qos,
                opts.get("retain", False) if retain is None else retain,
                opts.get("properties") if properties is None else properties,
                self.options.protocol_version,
            )
        engine = self._engine
        if engine.state is not _ENGINE_RUNNING:
            refusal = engine.refusal()
            if refusal is not None:
                # Closed, or stopped for good: failed at once, with why; its callback runs on
                # the dispatch thread (never on the caller's, never through the loop).
                refused: Handle[int] = Handle(_PUBLISH, callback, self._dispatcher)
                refused.reject(refusal)
                return refused
        handle: Handle[int] = Handle(_PUBLISH, callback, self._loop_listener)
        submit = self._submit
        session = engine.session
        if request.properties_bytes is not None and request.properties.topic_alias:
            session.check_topic_alias(request)
        # Publishes on their way to the loop thread: tickets handed out here (next() is
        # atomic), minus those the engine has taken (Engine.publishes_taken). The queue is read
        # first: a publish the loop thread takes between the two reads is then counted at most
        # once (read after, it could be counted as on its way and as queued, and a message
        # that fits be refused: seen as "10168 messages waiting" of 10,000 published).
        queued = session.queued
        waiting = next(self._handed) - engine.publishes_taken
        if self._check_bytes or queued + waiting >= self._max_queued:
            error = session.admission_error(len(request.payload), waiting, 0, queued)
            if error is not None:
                submit(engine.take_ticket)  # so that the count stays true
                raise error
        key = 0
        if request.qos and self._record:
            try:
                key = self._store(request)
                if key < 0:
                    check_not_on_loop_thread("publishing by Topic Alias alone with a store")
            except BaseException:
                submit(engine.take_ticket)
                raise
            if key < 0:
                # Not recordable here (a message by Topic Alias alone): wait until the loop
                # thread's session has stored it, so that the rule holds all the same.
                stored = threading.Event()
                submit(self._engine_publish, request, handle)
                submit(stored.set)
                stored.wait()
                return handle
            submit(self._engine_publish, request, handle, key)
            return handle
        submit(self._engine_publish, request, handle)
        return handle

    def _store(self, request: s.PublishRequest) -> int:
        """Put a QoS 1/2 message in the user's outgoing store from the publishing thread; its
        key (-1: the loop thread must store it)."""
        engine = self._engine
        store = self.options.outgoing_store
        key = engine.session.new_key()
        try:
            if not s.record_publish(store, key, request):
                return -1
            if on_loop_thread():
                # An inline listener publishing: the loop turn holds the store's writes.
                commit = getattr(store, "commit", None)
                if callable(commit):
                    commit()
        except Exception as exc:
            error = StoreError(f"the outgoing store failed to record the message: {exc!r}")
            error.__cause__ = exc
            raise error from exc
        return key

    def subscribe(
        self,
        topic: Any,
        options: Mapping[str, Any] | Callable[..., Any] | None = None,
        callback: Callable[..., Any] | None = None,
        *,
        qos: int | None = None,
        no_local: bool | None = None,
        retain_as_published: bool | None = None,
        retain_handling: int | None = None,
        properties: Any = None,
    ) -> Handle[list[Granted]]:
        """Subscribe to a filter, a list of filters, or a dict ``{filter: qos}``.

        Args:
            topic: ``"a/+"``, ``["a", "b"]`` or ``{"a": 0, "b": 1}``.
            options: seed dict ``{"qos": 0}`` (MQTT 5: ``nl``, ``rap``, ``rh``, ``properties``);
                a callable here is taken as ``callback``.
            callback: ``callback(err, granted)`` with ``granted`` a list of ``(topic, qos)``.

        Returns:
            A ``Handle[list[Granted]]``: one :class:`~mqttkit.Granted` ``(topic, qos)`` per
            filter (qos >= 128: refused).
        """
        if callable(options):
            callback, options = options, None
        opts = _options_dict(options, _SUBSCRIBE_OPTIONS, "subscribe")

        def pick(keyword: Any, *names: str, default: Any) -> Any:
            if keyword is not None:
                return keyword
            for name in names:
                if name in opts:
                    return opts[name]
            return default

        subs = subscriptions_from(
            topic,
            pick(qos, "qos", default=0),
            no_local=bool(pick(no_local, "no_local", "nl", default=False)),
            retain_as_published=bool(
                pick(retain_as_published, "retain_as_published", "rap", default=False)
            ),
            retain_handling=pick(retain_handling, "retain_handling", "rh", default=0),
        )
        request = s.prepare_subscribe(
            subs, pick(properties, "properties", default=None), self.options.protocol_version
        )
        handle: Handle[list[Granted]] = Handle(_SUBSCRIBE, callback, self._loop_listener)
        self._submit(self._engine.subscribe, request, handle)
        return handle

    def unsubscribe(
        self,
        topic: Any,
        options: Mapping[str, Any] | Callable[..., Any] | None = None,
        callback: Callable[..., Any] | None = None,
        *,
        properties: Any = None,
    ) -> Handle[tuple[int, ...]]:
        """Unsubscribe from a filter or a list of filters; ``callback(err)`` on UNSUBACK.

        Returns:
            A ``Handle[tuple[int, ...]]``: the MQTT 5 reason codes, one per filter (empty for
            MQTT 3.x).
        """
        if callable(options):
            callback, options = options, None
        opts = _options_dict(options, frozenset({"properties"}), "unsubscribe")
        request = s.prepare_unsubscribe(
            filters_from(topic),
            opts.get("properties") if properties is None else properties,
            self.options.protocol_version,
        )
        handle: Handle[tuple[int, ...]] = Handle(_UNSUBSCRIBE, callback, self._loop_listener)
        self._submit(self._engine.unsubscribe, request, handle)
        return handle

    def reauthenticate(self, properties: Any) -> None:
        """MQTT 5: re-authenticate on the current connection: sends AUTH (reason 0x19) with
        ``properties`` (``authentication_method``, ``authentication_data``); the broker's
        challenges go to the ``authenticate`` option's function (and the ``auth`` event).

        Raises:
            InvalidArgumentError: not MQTT 5, or no ``authentication_method``.
        """
        props = auth_properties(properties, self.options.protocol_version)
        self._submit(self._engine.reauthenticate, props)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every operation issued so far has completed (QoS 0 messages written,
        QoS 1/2 flows acknowledged, SUBACK/UNSUBACK received).

        Returns:
            False if ``timeout`` (seconds) ran out first.
        """
        check_not_on_loop_thread("flush()")
        handle: Handle[None] = Handle(_CLOSE, None, self._loop_listener)
        self._submit(self._engine.flush, handle)
        return handle.wait(timeout)

    # -- events ----------------------------------------------------------------------------------

    def _listener_added(self, event: str) -> None:
        if event in ("packetsend", "packetreceive"):
            self._submit(self._engine.set_trace, True)

    def _replay(self, event: str) -> None:
        # Held events go through the dispatch thread, in order with everything else.
        self._dispatcher.call_soon(functools.partial(self._deliver_held, event))

    def _process(self, batch: list[tuple[Any, ...]]) -> None:
        """Run one batch of events: on the dispatch thread, or inline on the loop thread."""
        emit = self.emit
        emit_message = self._emit_message
        listener = self._loop_listener
        acknowledge = self._engine.acknowledge
        submit = self._submit
        inline = self._inline
        manual = self._manual_ack
        # Looked up once per batch (a route added meanwhile applies from the next batch):
        # without routes, a message pays one local test.
        routes = self._routes if self._routes else None
        for item in batch:
            name = item[0]
            if name == "message":
                message: Publish = item[1]
                ack = item[2]
                if manual:
                    message = ackable(message, self._acknowledger(ack))
                    ack = None  # the application acknowledges it
                routed = routes.targets(message.topic) if routes is not None else ()
                if routed:
                    _call_routes(routed, message, self._log)
                else:
                    emit_message(message.topic, message.payload, message)
                listener.handled += 1
                if ack is None:
                    continue
                if inline:
                    # On the loop thread, called by the engine: stored (QoS 2) at once, and
                    # written with the rest of this read's output.
                    acknowledge(ack)
                elif ack.qos == 2 and self._durable_incoming:
                    # The packet id goes into the durable store before the next listener runs
                    # (as in the asyncio front): a crash then delivers again at most the one
                    # message whose listener it interrupted, not every message handled while
                    # the loop thread was catching up (a whole broker window).
                    stored = threading.Event()
                    submit(_acknowledge_and_set, acknowledge, ack, stored)
                    if not stored.wait(30):
                        self._log.warning("the loop thread took over 30 s to store a QoS 2 receipt")
                else:
                    # Acknowledged as soon as its listeners have returned, not at the end of the
                    # batch: the broker refills its window while the rest are handled.
                    submit(acknowledge, ack)
            elif name == CALL:
                item[1]()
            else:
                emit(name, *item[1:])

    def _acknowledger(self, ack: s.Ack | None) -> Callable[[int], None]:
        """``message.ack(reason_code)`` for a message with ``manual_ack``."""
        level = self.options.protocol_version

        def acknowledge(reason_code: int = 0) -> None:
            check_ack_reason(reason_code, level)
            if ack is not None:
                self._submit(self._engine.acknowledge, ack, reason_code)

        return acknowledge

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<mqttkit.Client {self.options.url} client_id={self.options.client_id!r} {state}>"


def _call_routes(
    routed: tuple[Callable[..., Any], ...],
    message: Publish,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> None:
    args = (message.topic, message.payload, message)
    for fn in routed:
        n = arity(fn)
        try:
            if n is None or n >= 3:
                fn(*args)
            else:
                fn(*args[:n])
        except Exception:
            log.exception("route listener %r for %r raised", fn, message.topic)


def _acknowledge_and_set(
    acknowledge: Callable[[s.Ack], None], ack: s.Ack, done: threading.Event
) -> None:
    # On the loop thread: session.acknowledge() stores a QoS 2 packet id before it returns.
    try:
        acknowledge(ack)
    finally:
        done.set()


def _options_dict(options: Any, allowed: frozenset[str], what: str) -> Mapping[str, Any]:
    if type(options) is dict and allowed.issuperset(options):
        return options  # the common case, per publish: no ABC check, no set built
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise UnknownOptionError(
            f"{what} options must be a dict such as {{'qos': 1}}, not {type(options).__name__}"
        )
    unknown = set(options) - allowed
    if unknown:
        raise UnknownOptionError(
            f"unknown {what} option(s): {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    return options


def connect(
    url: str | Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Client:
    """Create a client and start connecting to ``url`` in the background (seed:
    ``mqtt.connect([url], options)``).

    Args:
        url: ``mqtt://[user:password@]host[:port]``, ``mqtts://``, ``unix:///path``; may be
            omitted, with the broker given in ``options`` (``hostname``, ``port``, ``protocol``).
        options: a dict with the seed's option names and units.
        **kwargs: snake_case options in seconds.

    Returns:
        The :class:`Client`, already connecting.
    """
    if isinstance(url, Mapping):
        if options is not None:
            raise TypeError("connect(options) takes the options once")
        url, options = None, url
    return Client(options, url=url, **kwargs).connect()
