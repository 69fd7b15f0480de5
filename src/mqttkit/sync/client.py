"""The blocking / threaded front and the seed-000 (node.lua ``mqtt``) API.

Theory of operation
-------------------
Three kinds of threads meet here:

* the **caller's threads**: any number, calling ``publish``/``subscribe``/... They validate
  arguments (bad input raises right there) and hand the work to the engine with
  :meth:`Engine.submit`, which batches: one loop wake-up per burst, not per message;
* the **loop thread**: one daemon thread per process, running the asyncio
  :class:`~mqttkit.aio.engine.Engine` of every sync client (see :func:`engine_loop`). It never
  runs user code;
* one **dispatch thread** per client: runs the listeners and callbacks, in order, with the
  events the loop thread hands over in batches. A slow or blocking listener therefore never
  delays keepalive or the reading of the socket. Incoming QoS 1/2 messages are acknowledged to
  the broker after their listeners have returned.

The dispatch thread is not a daemon and lives while the client is active (connecting,
connected or reconnecting): as in Node.js, a script that only registers listeners keeps running
until the client is closed (or stops for good, e.g. on a refused login).

Listeners registered right after :func:`connect` returns never miss the first events: see the
hold rule in :mod:`mqttkit.sync.events`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Callable, Mapping
from queue import SimpleQueue
from types import TracebackType
from typing import Any

from .._api import auth_properties, filters_from, granted_from, subscriptions_from
from ..aio.engine import RUNNING as _ENGINE_RUNNING
from ..aio.engine import Engine
from ..options import ClientOptions, parse_options
from ..protocol import session as s
from ..protocol.errors import OperationTimeoutError, StoreError, UnknownOptionError
from ..protocol.packets import Publish
from ..protocol.store import MemoryStore, is_private
from .events import EventEmitter, _arity

__all__ = ["Client", "Handle", "connect", "engine_loop"]

log = logging.getLogger("mqttkit")

# ---------------------------------------------------------------------------------------------
# The loop thread
# ---------------------------------------------------------------------------------------------

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_thread: threading.Thread | None = None


def engine_loop() -> asyncio.AbstractEventLoop:
    """The process-wide event loop that runs every sync client's engine (started on demand)."""
    global _loop, _loop_thread
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=run, name="mqttkit-loop", daemon=True)
            thread.start()
            ready.wait()
            _loop = loop
            _loop_thread = thread
        return _loop


def _check_not_on_loop_thread(what: str) -> None:
    """Waiting on the loop thread (an inline listener) would wait for itself: raise instead."""
    if threading.current_thread() is _loop_thread:
        raise RuntimeError(
            f"{what} on the loop thread would wait forever: a listener run with "
            "dispatch='inline' must not wait on a client (use a callback, or dispatch='thread')"
        )


# ---------------------------------------------------------------------------------------------
# Handles
# ---------------------------------------------------------------------------------------------

_PUBLISH, _SUBSCRIBE, _UNSUBSCRIBE, _CLOSE = range(4)
_handle_lock = threading.Lock()


class Handle:
    """The outcome of one operation: wait for it, or get a callback.

    ``publish`` resolves to the PUBACK/PUBREC reason code (0 for MQTT 3.x), ``subscribe`` to the
    list of :class:`~mqttkit.Granted`, ``unsubscribe`` to the MQTT 5 reason codes, ``close``
    to None. Completion is set on the loop thread; callbacks run on the client's dispatch
    thread, in order with the client's events.
    """

    __slots__ = ("_callback", "_client", "_done", "_error", "_event", "_kind", "_value")

    def __init__(self, kind: int, callback: Callable[..., Any] | None, client: Client) -> None:
        self._kind = kind
        self._callback = callback
        self._client = client
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._event: threading.Event | None = None

    # Token protocol, called by the engine on the loop thread.
    def resolve(self, value: Any) -> None:
        """Complete with a value (engine side)."""
        if self._kind == _SUBSCRIBE:
            value = granted_from(value)
        elif self._kind == _UNSUBSCRIBE:
            value = value.reason_codes
        self._finish(value, None)

    def reject(self, error: BaseException) -> None:
        """Complete with an error (engine side)."""
        self._finish(None, error)

    def _finish(self, value: Any, error: BaseException | None) -> None:
        # Only the loop thread finishes a handle, so no lock here: the result is stored, then
        # ``_done`` set, then ``_event`` read. A waiter creates ``_event`` and then reads
        # ``_done`` (see wait()), so one of the two always sees the other's write.
        if self._done:
            return
        self._value = value
        self._error = error
        self._done = True
        event = self._event
        if event is not None:
            event.set()
        if self._callback is not None:
            self._client._loop_listener.callback(self)
        elif error is not None:
            log.debug("operation failed with no callback: %s", error)

    def _fail_at_once(self, error: BaseException) -> None:
        # On the caller's thread, before anyone else has the handle: complete it, and run its
        # callback on the dispatch thread (never on the caller's, never through the loop's
        # non-thread-safe call_soon).
        self._error = error
        self._done = True
        if self._callback is not None:
            self._client._dispatcher.put([("_callback", self)])

    def _run_callback(self) -> None:
        callback = self._callback
        assert callback is not None
        kind = self._kind
        if kind == _CLOSE:
            args: tuple[Any, ...] = ()
        elif kind == _SUBSCRIBE:
            args = (self._error, self._value)
        else:
            args = (self._error,)
        arity = _arity(callback)
        if arity is not None and arity < len(args):
            args = args[:arity]
        try:
            callback(*args)
        except Exception:
            log.exception("mqttkit: callback %r raised", callback)

    # Public API.
    def done(self) -> bool:
        """True once the operation has completed (successfully or not)."""
        return self._done

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the operation completes; False if ``timeout`` (seconds) ran out.

        Raises:
            RuntimeError: called by a listener running inline on the loop thread, where the
                operation could never complete.
        """
        if self._done:
            return True
        _check_not_on_loop_thread("waiting on a handle")
        with _handle_lock:  # waiters only: several threads may wait on one handle
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return self._done or event.wait(timeout)

    def result(self, timeout: float | None = None) -> Any:
        """Wait, then return the operation's result or raise its error.

        Raises:
            OperationTimeoutError: ``timeout`` ran out (the operation itself goes on).
        """
        if not self.wait(timeout):
            raise OperationTimeoutError(f"the operation did not complete within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait, then return the operation's error (None if it succeeded)."""
        if not self.wait(timeout):
            raise OperationTimeoutError(f"the operation did not complete within {timeout} s")
        return self._error

    def __repr__(self) -> str:
        kind = ("publish", "subscribe", "unsubscribe", "close")[self._kind]
        state = "pending" if not self._done else ("failed" if self._error else "done")
        return f"<Handle {kind} {state}>"


# ---------------------------------------------------------------------------------------------
# Loop-side listener and the dispatch thread
# ---------------------------------------------------------------------------------------------

_STOP = object()


class _LoopListener:
    """Collects engine events on the loop thread and ships them to the dispatcher in batches."""

    __slots__ = ("_batch", "_client", "_dropped", "_scheduled", "shipped")

    def __init__(self, client: Client) -> None:
        self._client = client
        self._batch: list[tuple[Any, ...]] = []
        self._scheduled = False
        #: Messages handed to the dispatcher (written by the loop thread only); with the
        #: dispatcher's count of those it handled, the number waiting for the application.
        self.shipped = 0
        self._dropped = 0

    def emit(self, name: str, *args: Any) -> None:
        if self._client._inline:
            self._client._process([(name, *args)])
            return
        self._batch.append((name, *args))
        if not self._scheduled:
            self._scheduled = True
            self._client._loop.call_soon(self._ship)

    def message(self, message: Publish, ack: s.Ack | None) -> None:
        client = self._client
        if client._inline:
            client._process([("message", message, ack)])
            return
        if ack is None and self.shipped - client._handled >= client._max_buffered:
            # A QoS 0 message and the application is this far behind: drop it (QoS 1/2 wait
            # unacknowledged instead; the broker holds the rest).
            self._dropped += 1
            if self._dropped % 10_000 == 1:
                log.warning(
                    "dropping incoming QoS 0 messages: %d are waiting for the application "
                    "(max_buffered); %d dropped so far",
                    client._max_buffered,
                    self._dropped,
                )
            self.emit("dropped", message)
            return
        self.shipped += 1
        # No call_soon(self._ship) here: the engine ends every batch of messages with
        # events_done(), which ships it; scheduling one anyway cost an extra loop iteration
        # (an epoll_wait and a callback) per read.
        self._batch.append(("message", message, ack))

    def callback(self, handle: Handle) -> None:
        self.emit("_callback", handle)

    def stopped(self) -> None:
        self._ship()
        self._client._dispatcher.stop()

    def events_done(self) -> None:
        # Ship now rather than on the next loop iteration: one iteration fewer per read.
        if self._batch:
            self._ship()

    def _ship(self) -> None:
        self._scheduled = False
        batch = self._batch
        if batch:
            self._batch = []
            self._client._dispatcher.put(batch)


class _Dispatcher:
    """The per-client thread that runs listeners and callbacks."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._queue: SimpleQueue[Any] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> None:
        if self._queue is not None:
            return
        queue: SimpleQueue[Any] = SimpleQueue()
        previous = self._thread
        thread = threading.Thread(
            target=self._run,
            args=(queue, previous),
            name=f"mqttkit-dispatch-{self._client.options.client_id}",
            daemon=False,
        )
        self._queue, self._thread = queue, thread
        thread.start()

    def put(self, batch: list[tuple[Any, ...]]) -> None:
        with self._lock:
            queue = self._queue
            if queue is None:
                # Nothing running (e.g. a callback after the client stopped): a thread just
                # for this batch, still in order after any earlier one.
                self._start_locked()
                assert self._queue is not None
                self._queue.put(batch)
                self._queue.put(_STOP)
                self._queue = None
            else:
                queue.put(batch)

    def stop(self) -> None:
        with self._lock:
            queue, self._queue = self._queue, None
        if queue is not None:
            queue.put(_STOP)

    @property
    def thread(self) -> threading.Thread | None:
        # Under the lock: _start_locked() sets and starts a new thread while holding it, so
        # a caller never gets a thread it cannot join yet.
        with self._lock:
            return self._thread

    def _run(self, queue: SimpleQueue[Any], previous: threading.Thread | None) -> None:
        if previous is not None and previous is not threading.current_thread():
            previous.join()  # keep order with what the previous dispatch thread still runs
        process = self._client._process
        while True:
            item = queue.get()
            if item is _STOP:
                return
            process(item)


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------

_PUBLISH_OPTIONS = frozenset({"qos", "retain", "properties", "dup"})
_SUBSCRIBE_OPTIONS = frozenset(
    {"qos", "properties", "nl", "rap", "rh", "no_local", "retain_as_published", "retain_handling"}
)


class Client(EventEmitter):
    """The seed-000 MQTT client: Node-style events, callbacks, and waitable handles.

    Args:
        options: a dict with the seed / MQTT.js option names (milliseconds for durations).
        url: the broker URL (``mqtt://host:port``, ``mqtts://``, ``unix://``).
        **kwargs: any :class:`~mqttkit.options.ClientOptions` field, in seconds.

    Raises:
        UnknownOptionError: an option that does not exist (named in the message).
        InvalidOptionError: a bad value.

    Events: ``connect(connack)``, ``reconnect()``, ``close()``, ``offline()``, ``error(err)``,
    ``message(topic, message, packet)``, ``end()``, ``disconnect(packet)`` (MQTT 5),
    ``packetsend(packet)``, ``packetreceive(packet)``. Every method is safe from any thread.
    """

    def __init__(
        self,
        options: Mapping[str, Any] | None = None,
        *,
        url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.options: ClientOptions = parse_options(url, options, **kwargs)
        self._loop = engine_loop()
        self._loop_listener = _LoopListener(self)
        self._dispatcher = _Dispatcher(self)
        self._engine = Engine(self.options, self._loop_listener, self._loop)
        self._engine_publish = self._engine.publish  # bound once: publish() is the hot path
        self._max_buffered = self.options.max_buffered
        # dispatch="inline": listeners run on the loop thread, as the engine reports events.
        self._inline = self.options.dispatch == "inline"
        self._handled = 0  # messages the dispatcher has handled (written by it only)
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

    # -- lifecycle -------------------------------------------------------------------------------

    def connect(self) -> Client:
        """Start connecting in the background (and reconnecting, per ``reconnect_period``).

        Returns:
            The client itself.
        """
        self._dispatcher.start()
        self._engine.submit(self._engine.start)
        return self

    def reconnect(self) -> Client:
        """Reconnect now (after a ``reconnect_period`` of 0, or to cut a backoff short)."""
        self._dispatcher.start()
        self._engine.submit(self._engine.reconnect)
        return self

    def close(
        self, force: bool | Callable[..., Any] = False, callback: Callable[..., Any] | None = None
    ) -> Handle:
        """Close the client: send what is queued and wait for outstanding acknowledgements
        (at most ``close_timeout`` seconds), then DISCONNECT; ``force=True`` closes at once.

        Args:
            force: close without waiting. A callable here is taken as ``callback``.
            callback: ``callback()`` once closed.

        Returns:
            A :class:`Handle` that completes when the client is closed. Non-blocking: safe to
            call from a listener.
        """
        if callable(force):
            callback, force = force, False
        handle = Handle(_CLOSE, callback, self)
        self._engine.submit(self._engine.close, bool(force), handle)
        return handle

    end = close

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
    ) -> Handle:
        """Publish ``message`` to ``topic``.

        Args:
            topic: a topic name (no wildcards).
            message: str (sent as UTF-8), bytes, bytearray or memoryview.
            options: seed dict ``{"qos": 0, "retain": False, "properties": ...}``; a callable
                here is taken as ``callback``.
            callback: ``callback(err)`` once the QoS flow completes (QoS 0: once written).
            qos, retain, properties: keyword spellings of the options.

        Returns:
            A :class:`Handle`; ``handle.result(timeout)`` waits for the flow.

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
        handle = Handle(_PUBLISH, callback, self)
        engine = self._engine
        if engine.state is not _ENGINE_RUNNING:
            refusal = engine.refusal()
            if refusal is not None:
                handle._fail_at_once(refusal)  # closed, or stopped for good: with why
                return handle
        session = engine.session
        if request.properties_bytes is not None and request.properties.topic_alias:
            session.check_topic_alias(request)
        # Publishes on their way to the loop thread: tickets handed out here (next() is
        # atomic), minus those the engine has taken (Engine.publishes_taken).
        waiting = next(self._handed) - engine.publishes_taken
        if self._check_bytes or session.queued + waiting >= self._max_queued:
            error = session.admission_error(len(request.payload), waiting, 0)
            if error is not None:
                engine.submit(engine.take_ticket)  # so that the count stays true
                raise error
        key = 0
        if request.qos and self._record:
            try:
                key = self._store(request)
                if key < 0:
                    _check_not_on_loop_thread("publishing by Topic Alias alone with a store")
            except BaseException:
                engine.submit(engine.take_ticket)
                raise
            if key < 0:
                # Not recordable here (a message by Topic Alias alone): wait until the loop
                # thread's session has stored it, so that the rule holds all the same.
                stored = threading.Event()
                engine.submit(self._engine_publish, request, handle)
                engine.submit(stored.set)
                stored.wait()
                return handle
            engine.submit(self._engine_publish, request, handle, key)
            return handle
        engine.submit(self._engine_publish, request, handle)
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
            if threading.current_thread() is _loop_thread:
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
    ) -> Handle:
        """Subscribe to a filter, a list of filters, or a dict ``{filter: qos}``.

        Args:
            topic: ``"a/+"``, ``["a", "b"]`` or ``{"a": 0, "b": 1}``.
            options: seed dict ``{"qos": 0}`` (MQTT 5: ``nl``, ``rap``, ``rh``, ``properties``);
                a callable here is taken as ``callback``.
            callback: ``callback(err, granted)`` with ``granted`` a list of ``(topic, qos)``.

        Returns:
            A :class:`Handle` resolving to the granted list.
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
        handle = Handle(_SUBSCRIBE, callback, self)
        self._engine.submit(self._engine.subscribe, request, handle)
        return handle

    def unsubscribe(
        self,
        topic: Any,
        options: Mapping[str, Any] | Callable[..., Any] | None = None,
        callback: Callable[..., Any] | None = None,
        *,
        properties: Any = None,
    ) -> Handle:
        """Unsubscribe from a filter or a list of filters; ``callback(err)`` on UNSUBACK."""
        if callable(options):
            callback, options = options, None
        opts = _options_dict(options, frozenset({"properties"}), "unsubscribe")
        request = s.prepare_unsubscribe(
            filters_from(topic),
            opts.get("properties") if properties is None else properties,
            self.options.protocol_version,
        )
        handle = Handle(_UNSUBSCRIBE, callback, self)
        self._engine.submit(self._engine.unsubscribe, request, handle)
        return handle

    def reauthenticate(self, properties: Any) -> None:
        """MQTT 5: re-authenticate on the current connection: sends AUTH (reason 0x19) with
        ``properties`` (``authentication_method``, ``authentication_data``); the broker's
        challenges go to the ``authenticate`` option's function (and the ``auth`` event).

        Raises:
            InvalidArgumentError: not MQTT 5, or no ``authentication_method``.
        """
        props = auth_properties(properties, self.options.protocol_version)
        self._engine.submit(self._engine.reauthenticate, props)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every operation issued so far has completed (QoS 0 messages written,
        QoS 1/2 flows acknowledged, SUBACK/UNSUBACK received).

        Returns:
            False if ``timeout`` (seconds) ran out first.
        """
        _check_not_on_loop_thread("flush()")
        handle = Handle(_CLOSE, None, self)
        self._engine.submit(self._engine.flush, handle)
        return handle.wait(timeout)

    # -- events ----------------------------------------------------------------------------------

    def _listener_added(self, event: str) -> None:
        if event in ("packetsend", "packetreceive"):
            self._engine.submit(self._engine.set_trace, True)

    def _replay(self, event: str) -> None:
        # Held events go through the dispatch thread, in order with everything else.
        self._dispatcher.put([("_replay", event)])

    def _process(self, batch: list[tuple[Any, ...]]) -> None:
        """Run one batch of events on the dispatch thread (internal)."""
        emit = self.emit
        submit = self._engine.submit
        acknowledge = self._engine.acknowledge
        inline = self._inline
        for item in batch:
            name = item[0]
            if name == "message":
                message: Publish = item[1]
                entries = self._listeners.get("message")
                if (
                    entries
                    and len(entries) == 1
                    and not entries[0].once
                    and ("message" not in self._replaying)
                ):
                    # One plain listener (the usual case): call it without emit()'s generality.
                    entry = entries[0]
                    arity = entry.arity
                    try:
                        if arity == 2:
                            entry.fn(message.topic, message.payload)
                        elif arity is None or arity >= 3:
                            entry.fn(message.topic, message.payload, message)
                        else:
                            entry.fn(*(message.topic, message.payload)[:arity])
                    except Exception:
                        log.exception("mqttkit: listener %r for event 'message' raised", entry.fn)
                else:
                    emit("message", message.topic, message.payload, message)
                self._handled += 1
                ack = item[2]
                if ack is not None and inline:
                    # On the loop thread: stored (QoS 2) and written with this read's output.
                    self._engine.acknowledge(ack)
                elif ack is not None and ack.qos == 2 and self._durable_incoming:
                    # The packet id goes into the durable store before the next listener runs
                    # (as in the asyncio front): a crash then delivers again at most the one
                    # message whose listener it interrupted, not every message handled while
                    # the loop thread was catching up (a whole broker window).
                    stored = threading.Event()
                    submit(_acknowledge_and_set, acknowledge, ack, stored)
                    if not stored.wait(30):
                        log.warning("the loop thread took over 30 s to store a QoS 2 receipt")
                elif ack is not None:
                    # Acknowledged as soon as its listeners have returned, not at the end of the
                    # batch: the broker refills its window while the rest are handled.
                    submit(acknowledge, ack)
            elif name == "_callback":
                item[1]._run_callback()
            elif name == "_replay":
                self._deliver_held(item[1])
            else:
                emit(name, *item[1:])

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<mqttkit.Client {self.options.url} client_id={self.options.client_id!r} {state}>"


def _acknowledge_and_set(
    acknowledge: Callable[[s.Ack], None], ack: s.Ack, done: threading.Event
) -> None:
    # On the loop thread: session.acknowledge() stores a QoS 2 packet id before it returns.
    try:
        acknowledge(ack)
    finally:
        done.set()


def _options_dict(options: Any, allowed: frozenset[str], what: str) -> Mapping[str, Any]:
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
