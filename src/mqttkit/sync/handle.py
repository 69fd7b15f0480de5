"""Handles: the waitable outcome of one operation of the blocking front.

This module owns :class:`Handle` (the engine completes it as a token, any thread may wait on
it) and the kinds of operation. Where a handle's callback runs is not its business: it hands the
callback to a :class:`CallbackRunner` given at creation (the client's loop-side listener, which
runs it on the dispatch thread in order with the client's events).
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from .._api import granted_from
from ..protocol.errors import OperationTimeoutError
from .events import arity
from .loop import check_not_on_loop_thread

__all__ = ["CallbackRunner", "Handle", "Operation"]

log = logging.getLogger("mqttkit")

#: What a handle resolves to: ``int`` (publish), ``list[Granted]`` (subscribe),
#: ``tuple[int, ...]`` (unsubscribe), ``None`` (close, flush).
T = TypeVar("T")


class Operation(enum.Enum):
    """What a handle is the outcome of (it decides what the result and the callback get)."""

    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    CLOSE = "close"


_SUBSCRIBE = Operation.SUBSCRIBE
_UNSUBSCRIBE = Operation.UNSUBSCRIBE
_CLOSE = Operation.CLOSE


class CallbackRunner(Protocol):
    """Runs a completed handle's callback on the dispatch thread."""

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the dispatch thread, after what was handed over before it."""


_handle_lock = threading.Lock()


class Handle(Generic[T]):
    """The outcome of one operation: wait for it, or get a callback.

    ``publish`` returns a ``Handle[int]``: the PUBACK/PUBREC reason code (0 for QoS 0 and for
    MQTT 3.x), a :class:`~mqttkit.PublishResult` (an ``int`` that also carries the ``qos`` it
    was delivered at) when the broker acknowledged a QoS 2 message at QoS 1. ``subscribe``:
    ``Handle[list[Granted]]``; ``unsubscribe``: ``Handle[tuple[int, ...]]`` (the MQTT 5 reason
    codes, empty for MQTT 3.x); ``close``: ``Handle[None]``. Completion is set on the loop
    thread; callbacks run on the client's dispatch thread, in order with the client's events.

    The type parameter is for type checkers only: nothing subscripts it at run time.
    """

    __slots__ = ("_callback", "_done", "_error", "_event", "_kind", "_runner", "_value")

    def __init__(
        self, kind: Operation, callback: Callable[..., Any] | None, runner: CallbackRunner
    ) -> None:
        self._kind = kind
        self._callback = callback
        self._runner = runner
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._event: threading.Event | None = None

    # Token protocol, called by the engine on the loop thread (or by the front, before it has
    # returned the handle, to fail it at once).
    def resolve(self, value: Any) -> None:
        """Complete with a value (engine side)."""
        if self._kind is _SUBSCRIBE:
            value = granted_from(value)
        elif self._kind is _UNSUBSCRIBE:
            value = value.reason_codes
        self._finish(value, None)

    def reject(self, error: BaseException) -> None:
        """Complete with an error (engine side)."""
        self._finish(None, error)

    def _finish(self, value: Any, error: BaseException | None) -> None:
        # One thread finishes a handle (the loop thread; or the caller's, before anyone else has
        # the handle), so no lock here: the result is stored, then ``_done`` set, then
        # ``_event`` read. A waiter creates ``_event`` and then reads ``_done`` (see wait()),
        # so one of the two always sees the other's write.
        if self._done:
            return
        self._value = value
        self._error = error
        self._done = True
        event = self._event
        if event is not None:
            event.set()
        if self._callback is not None:
            self._runner.call_soon(self._run_callback)
        elif error is not None:
            log.debug("operation failed with no callback: %s", error)

    def _run_callback(self) -> None:
        callback = self._callback
        assert callback is not None
        kind = self._kind
        if kind is _CLOSE:
            args: tuple[Any, ...] = ()
        elif kind is _SUBSCRIBE:
            args = (self._error, self._value)
        else:
            args = (self._error,)
        n = arity(callback)
        if n is not None and n < len(args):
            args = args[:n]
        try:
            callback(*args)
        except Exception:
            log.exception("callback %r raised", callback)

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
        check_not_on_loop_thread("waiting on a handle")
        with _handle_lock:  # waiters only: several threads may wait on one handle
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return self._done or event.wait(timeout)

    def result(self, timeout: float | None = None) -> T:
        """Wait, then return the operation's result or raise its error.

        Returns:
            What the operation resolved to (see the class docstring).

        Raises:
            OperationTimeoutError: ``timeout`` ran out (the operation itself goes on).
        """
        if not self.wait(timeout):
            raise OperationTimeoutError(f"the operation did not complete within {timeout} s")
        if self._error is not None:
            raise self._error
        value: T = self._value  # stored untyped by resolve(); its kind decides the type
        return value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait, then return the operation's error (None if it succeeded)."""
        if not self.wait(timeout):
            raise OperationTimeoutError(f"the operation did not complete within {timeout} s")
        return self._error

    def __repr__(self) -> str:
        state = "pending" if not self._done else ("failed" if self._error else "done")
        return f"<Handle {self._kind.value} {state}>"
