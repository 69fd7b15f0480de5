"""A Node-style EventEmitter, safe to use from any thread.

This module owns listener registration (``on``, ``once``, ``off``), calling listeners with as
many arguments as they take, and the **hold rule** that makes the seed example race-free:

    An event that fires before any listener for it was ever registered is kept, and delivered
    to the first listener registered for it.

So ``client = mqttkit.connect(url)`` followed by ``client.on("connect", ...)`` always sees the
first ``connect``, however fast the broker answered: a deterministic rule, not a timing margin.
Once a listener has been registered for an event, the event behaves as in Node (no listener at
that moment: nobody hears it). Held events are bounded (:data:`MAX_HELD` per event, oldest dropped).

Where held events are delivered is up to the subclass (:meth:`EventEmitter._replay`); the sync
client delivers them on its dispatch thread, in order with everything else. Incoming messages,
the hot path, have a fast way in of their own (:meth:`EventEmitter._emit_message`).

:class:`ClientEvents` adds, for type checkers only, the listener signature of each event of the
seed client (``MessageListener``...): ``client.on("message", fn)`` with a ``fn`` that takes the
wrong arguments, or an event name the client does not emit, is a type error. Nothing of it
exists at run time beyond the aliases: the methods are :class:`EventEmitter`'s.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import threading
from collections import deque
from collections.abc import Callable
from inspect import CO_VARARGS
from types import FunctionType, MethodType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias, TypeVar, overload

from .._api import AckableMessage
from ..options import Server
from ..protocol.errors import InvalidArgumentError, MQTTError
from ..protocol.packets import Auth, ConnAck, Disconnect, Packet, Publish

__all__ = [
    "MAX_HELD",
    "AuthListener",
    "ClientEvents",
    "ConnectListener",
    "DisconnectListener",
    "DroppedListener",
    "ErrorListener",
    "EventEmitter",
    "EventName",
    "MessageListener",
    "NoArgListener",
    "PacketListener",
]

log = logging.getLogger("mqttkit")

F = TypeVar("F", bound=Callable[..., Any])

#: Most events of one name kept for a listener that has not been registered yet.
MAX_HELD = 1000

#: Events never held: their listeners switch tracing on, so nothing fires before them.
_NOT_HELD = frozenset({"packetsend", "packetreceive", "newListener", "removeListener"})


def arity(fn: Callable[..., Any]) -> int | None:
    """How many positional arguments ``fn`` takes; None if it takes any number."""
    # A plain function or a method of one, with nothing in its __dict__ (no __wrapped__ or
    # __signature__ that inspect.signature would follow): read its code object. A per-call
    # callback asks this once per operation, and inspect.signature costs ~10 us.
    kind = type(fn)
    if kind is MethodType:
        function, bound = fn.__func__, 1  # type: ignore[attr-defined]
    else:
        function, bound = fn, 0
    if type(function) is FunctionType and not function.__dict__:
        code = function.__code__
        if code.co_flags & CO_VARARGS:
            return None
        if code.co_argcount >= bound:
            return code.co_argcount - bound
    return arity_by_signature(fn)


def arity_by_signature(fn: Callable[..., Any]) -> int | None:
    """:func:`arity` the general way, through ``inspect.signature`` (any callable)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature
        return None
    count = 0
    for param in sig.parameters.values():
        if param.kind is param.VAR_POSITIONAL:
            return None
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


class _Listener:
    __slots__ = ("arity", "fn", "once")

    def __init__(self, fn: Callable[..., Any], once: bool) -> None:
        self.fn = fn
        self.once = once
        self.arity = arity(fn)


class EventEmitter:
    """``on`` / ``once`` / ``off`` / ``emit``, as in Node.js, plus the hold rule.

    A subclass that knows every event it emits lists them in :attr:`event_names`: ``on`` and
    ``once`` then refuse any other name (a typo such as ``"mesage"`` would otherwise wait
    forever for an event that never comes).
    """

    #: The events this emitter emits (None: any name is accepted, as in Node.js).
    event_names: ClassVar[frozenset[str] | None] = None

    def __init__(self) -> None:
        self._listeners: dict[str, tuple[_Listener, ...]] = {}
        self._ever: set[str] = set()
        self._held: dict[str, deque[tuple[Any, ...]]] = {}
        self._replaying: set[str] = set()
        self._emitter_lock = threading.Lock()
        #: Where a raising listener is logged (a client puts its own log here).
        self._log: logging.Logger | logging.LoggerAdapter[logging.Logger] = log

    @overload
    def on(self, event: str) -> Callable[[F], F]: ...

    @overload
    def on(self, event: str, listener: F) -> F: ...

    def on(self, event: str, listener: Any = None) -> Any:
        """Call ``listener`` each time ``event`` fires. Usable as a decorator.

        Returns:
            The listener (so ``@client.on("message")`` leaves the function as it is).
        """
        if listener is None:
            return lambda fn: self._add(event, fn, once=False)
        return self._add(event, listener, once=False)

    add_listener = on

    @overload
    def once(self, event: str) -> Callable[[F], F]: ...

    @overload
    def once(self, event: str, listener: F) -> F: ...

    def once(self, event: str, listener: Any = None) -> Any:
        """Call ``listener`` the next time ``event`` fires, then forget it."""
        if listener is None:
            return lambda fn: self._add(event, fn, once=True)
        return self._add(event, listener, once=True)

    def off(self, event: str, listener: Callable[..., Any]) -> None:
        """Remove one registration of ``listener`` for ``event`` (no error if absent)."""
        with self._emitter_lock:
            current = self._listeners.get(event, ())
            for i, entry in enumerate(current):
                if entry.fn == listener:
                    self._listeners[event] = current[:i] + current[i + 1 :]
                    break

    remove_listener = off

    def remove_all_listeners(self, event: str | None = None) -> None:
        """Remove every listener of ``event``, or of every event."""
        with self._emitter_lock:
            if event is None:
                self._listeners.clear()
            else:
                self._listeners.pop(event, None)

    def listeners(self, event: str) -> list[Callable[..., Any]]:
        """The functions registered for ``event``, in order."""
        return [entry.fn for entry in self._listeners.get(event, ())]

    def listener_count(self, event: str) -> int:
        """How many listeners ``event`` has."""
        return len(self._listeners.get(event, ()))

    def _add(self, event: str, fn: Any, *, once: bool) -> Any:
        if not isinstance(event, str):
            raise TypeError(f"event name must be a str, not {type(event).__name__}")
        names = self.event_names
        if names is not None and event not in names:
            close = difflib.get_close_matches(event, sorted(names), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InvalidArgumentError(
                f"unknown event {event!r}: {hint}the events are {', '.join(sorted(names))}"
            )
        if not callable(fn):
            raise TypeError(f"listener must be callable, not {type(fn).__name__}")
        with self._emitter_lock:
            self._listeners[event] = (*self._listeners.get(event, ()), _Listener(fn, once))
            first = event not in self._ever
            self._ever.add(event)
            replay = first and event in self._held
            if replay:
                # Until the held events are out, newer ones queue behind them (order kept).
                self._replaying.add(event)
        self._listener_added(event)
        if replay:
            self._replay(event)
        return fn

    def _listener_added(self, event: str) -> None:
        """Hook: a listener for ``event`` was registered."""

    def _replay(self, event: str) -> None:
        """Hook: deliver the held events of ``event``; by default, right here."""
        self._deliver_held(event)

    def _deliver_held(self, event: str) -> None:
        while True:
            with self._emitter_lock:
                held = self._held.get(event)
                if not held:
                    self._held.pop(event, None)
                    self._replaying.discard(event)
                    return
                args = held.popleft()
            self._call_listeners(event, args)

    def emit(self, event: str, *args: Any) -> bool:
        """Call the listeners of ``event`` with ``args``; True if there were any.

        A listener taking fewer positional arguments gets the leading ones. A listener that
        raises is logged and does not stop the others.
        """
        if event in self._replaying:
            with self._emitter_lock:
                if event in self._replaying:
                    self._held[event].append(args)
                    return True
        entries = self._listeners.get(event)
        if not entries:
            if event not in self._ever and event not in _NOT_HELD:
                with self._emitter_lock:
                    if event not in self._ever:
                        held = self._held.setdefault(event, deque(maxlen=MAX_HELD))
                        held.append(args)
                        if event == "error":
                            # DEBUG: whoever emitted it has logged the error itself.
                            self._log.debug("'error' event with no listener yet: %s", args[0])
                        return False
                entries = self._listeners.get(event)
            if not entries:
                if event == "error":
                    self._log.debug("'error' event with no listener: %s", args[0] if args else "")
                return False
        return self._call_listeners(event, args)

    def _emit_message(self, topic: str, payload: bytes, packet: Any) -> None:
        """``emit("message", topic, payload, packet)`` for one incoming message, the hot path:
        one plain listener (the usual case) is called directly, with as many arguments as it
        takes; anything else (several listeners, a ``once``, held or no listeners) goes through
        :meth:`emit`."""
        entries = self._listeners.get("message")
        if entries and len(entries) == 1 and "message" not in self._replaying:
            entry = entries[0]
            if not entry.once:
                fn = entry.fn
                n = entry.arity
                try:
                    if n == 2:
                        fn(topic, payload)
                    elif n is None or n >= 3:
                        fn(topic, payload, packet)
                    else:
                        fn(*(topic, payload)[:n])
                except Exception:
                    self._log.exception("listener %r for event 'message' raised", fn)
                return
        self.emit("message", topic, payload, packet)

    def _call_listeners(self, event: str, args: tuple[Any, ...]) -> bool:
        entries = self._listeners.get(event, ())
        for entry in entries:
            if entry.once:
                with self._emitter_lock:
                    current = self._listeners.get(event, ())
                    if entry not in current:
                        continue  # another thread ran it already
                    self._listeners[event] = tuple(e for e in current if e is not entry)
            n = entry.arity
            try:
                if n is None or n >= len(args):
                    entry.fn(*args)
                else:
                    entry.fn(*args[:n])
            except Exception:
                self._log.exception("listener %r for event %r raised", entry.fn, event)
        return bool(entries)


# -- the seed client's events, typed -------------------------------------------------------------
# A listener may take fewer trailing arguments than its event offers (see emit()): each alias is
# the union of the signatures a listener may have. ``object`` as the return type: whatever a
# listener returns is ignored.

#: The events of :class:`mqttkit.Client`.
EventName: TypeAlias = Literal[
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
]
#: ``reconnect()``, ``close()``, ``offline()``, ``end()``.
NoArgListener: TypeAlias = Callable[[], object]
#: ``connect(connack, server)``.
ConnectListener: TypeAlias = (
    Callable[[ConnAck, Server], object] | Callable[[ConnAck], object] | Callable[[], object]
)
#: ``error(err)``: every error the client reports is an :class:`~mqttkit.MQTTError`.
ErrorListener: TypeAlias = Callable[[MQTTError], object] | Callable[[], object]
#: ``message(topic, payload, packet)``, also a route's (``on_message``). With
#: ``manual_ack=True`` the packet is an :class:`~mqttkit.AckableMessage`: a type checker cannot
#: see the option, so a listener may declare either (declaring ``AckableMessage`` without
#: ``manual_ack`` is a mistake it does not catch).
MessageListener: TypeAlias = (
    Callable[[str, bytes, Publish], object]
    | Callable[[str, bytes, AckableMessage], object]
    | Callable[[str, bytes], object]
    | Callable[[str], object]
    | Callable[[], object]
)
#: ``disconnect(packet)`` (MQTT 5: the server's DISCONNECT).
DisconnectListener: TypeAlias = Callable[[Disconnect], object] | Callable[[], object]
#: ``auth(packet)`` (MQTT 5: the server's AUTH).
AuthListener: TypeAlias = Callable[[Auth], object] | Callable[[], object]
#: ``dropped(packet)``: a message dropped by a full queue (outgoing) or a slow application
#: (incoming QoS 0).
DroppedListener: TypeAlias = Callable[[Publish], object] | Callable[[], object]
#: ``packetsend(packet)``, ``packetreceive(packet)``.
PacketListener: TypeAlias = Callable[[Packet], object] | Callable[[], object]

# One per alias: ``on`` returns the listener with its own type (a decorator keeps the function).
_NoArgT = TypeVar("_NoArgT", bound=NoArgListener)
_ConnectT = TypeVar("_ConnectT", bound=ConnectListener)
_ErrorT = TypeVar("_ErrorT", bound=ErrorListener)
MessageListenerT = TypeVar("MessageListenerT", bound=MessageListener)
_DisconnectT = TypeVar("_DisconnectT", bound=DisconnectListener)
_AuthT = TypeVar("_AuthT", bound=AuthListener)
_DroppedT = TypeVar("_DroppedT", bound=DroppedListener)
_PacketT = TypeVar("_PacketT", bound=PacketListener)

_NoArgEvent: TypeAlias = Literal["reconnect", "close", "offline", "end"]
_PacketEvent: TypeAlias = Literal["packetsend", "packetreceive"]


class ClientEvents(EventEmitter):
    """:class:`EventEmitter` with the seed client's events and listener signatures, for type
    checkers (at run time it adds nothing).

    ``on``, ``once`` and ``off`` accept only the names of :data:`EventName`, each with a
    listener of its event's signature (one of the unions above: fewer trailing arguments are
    fine). A name held in a plain ``str`` variable needs ``typing.cast(EventName, name)``.
    """

    if TYPE_CHECKING:
        # Narrower than EventEmitter's ``on(str, Callable[..., Any])`` on purpose: the client
        # refuses any other event name at run time too (InvalidArgumentError).
        @overload  # type: ignore[override]
        def on(self, event: _NoArgEvent) -> Callable[[_NoArgT], _NoArgT]: ...
        @overload
        def on(self, event: _NoArgEvent, listener: _NoArgT) -> _NoArgT: ...
        @overload
        def on(self, event: Literal["connect"]) -> Callable[[_ConnectT], _ConnectT]: ...
        @overload
        def on(self, event: Literal["connect"], listener: _ConnectT) -> _ConnectT: ...
        @overload
        def on(self, event: Literal["error"]) -> Callable[[_ErrorT], _ErrorT]: ...
        @overload
        def on(self, event: Literal["error"], listener: _ErrorT) -> _ErrorT: ...
        @overload
        def on(
            self, event: Literal["message"]
        ) -> Callable[[MessageListenerT], MessageListenerT]: ...
        @overload
        def on(self, event: Literal["message"], listener: MessageListenerT) -> MessageListenerT: ...
        @overload
        def on(self, event: Literal["disconnect"]) -> Callable[[_DisconnectT], _DisconnectT]: ...
        @overload
        def on(self, event: Literal["disconnect"], listener: _DisconnectT) -> _DisconnectT: ...
        @overload
        def on(self, event: Literal["auth"]) -> Callable[[_AuthT], _AuthT]: ...
        @overload
        def on(self, event: Literal["auth"], listener: _AuthT) -> _AuthT: ...
        @overload
        def on(self, event: Literal["dropped"]) -> Callable[[_DroppedT], _DroppedT]: ...
        @overload
        def on(self, event: Literal["dropped"], listener: _DroppedT) -> _DroppedT: ...
        @overload
        def on(self, event: _PacketEvent) -> Callable[[_PacketT], _PacketT]: ...
        @overload
        def on(self, event: _PacketEvent, listener: _PacketT) -> _PacketT: ...
        def on(self, event: str, listener: Any = None) -> Any: ...

        add_listener = on  # type: ignore[assignment]  # narrowed with on, as above

        @overload  # type: ignore[override]
        def once(self, event: _NoArgEvent) -> Callable[[_NoArgT], _NoArgT]: ...
        @overload
        def once(self, event: _NoArgEvent, listener: _NoArgT) -> _NoArgT: ...
        @overload
        def once(self, event: Literal["connect"]) -> Callable[[_ConnectT], _ConnectT]: ...
        @overload
        def once(self, event: Literal["connect"], listener: _ConnectT) -> _ConnectT: ...
        @overload
        def once(self, event: Literal["error"]) -> Callable[[_ErrorT], _ErrorT]: ...
        @overload
        def once(self, event: Literal["error"], listener: _ErrorT) -> _ErrorT: ...
        @overload
        def once(
            self, event: Literal["message"]
        ) -> Callable[[MessageListenerT], MessageListenerT]: ...
        @overload
        def once(
            self, event: Literal["message"], listener: MessageListenerT
        ) -> MessageListenerT: ...
        @overload
        def once(self, event: Literal["disconnect"]) -> Callable[[_DisconnectT], _DisconnectT]: ...
        @overload
        def once(self, event: Literal["disconnect"], listener: _DisconnectT) -> _DisconnectT: ...
        @overload
        def once(self, event: Literal["auth"]) -> Callable[[_AuthT], _AuthT]: ...
        @overload
        def once(self, event: Literal["auth"], listener: _AuthT) -> _AuthT: ...
        @overload
        def once(self, event: Literal["dropped"]) -> Callable[[_DroppedT], _DroppedT]: ...
        @overload
        def once(self, event: Literal["dropped"], listener: _DroppedT) -> _DroppedT: ...
        @overload
        def once(self, event: _PacketEvent) -> Callable[[_PacketT], _PacketT]: ...
        @overload
        def once(self, event: _PacketEvent, listener: _PacketT) -> _PacketT: ...
        def once(self, event: str, listener: Any = None) -> Any: ...

        @overload  # type: ignore[override]
        def off(self, event: _NoArgEvent, listener: NoArgListener) -> None: ...
        @overload
        def off(self, event: Literal["connect"], listener: ConnectListener) -> None: ...
        @overload
        def off(self, event: Literal["error"], listener: ErrorListener) -> None: ...
        @overload
        def off(self, event: Literal["message"], listener: MessageListener) -> None: ...
        @overload
        def off(self, event: Literal["disconnect"], listener: DisconnectListener) -> None: ...
        @overload
        def off(self, event: Literal["auth"], listener: AuthListener) -> None: ...
        @overload
        def off(self, event: Literal["dropped"], listener: DroppedListener) -> None: ...
        @overload
        def off(self, event: _PacketEvent, listener: PacketListener) -> None: ...
        def off(self, event: str, listener: Callable[..., Any]) -> None: ...

        remove_listener = off  # type: ignore[assignment]  # narrowed with off, as above
