"""From the loop thread to the listeners: the blocking front's two halves of event delivery.

This module owns

* :class:`LoopListener`, the engine's listener (on the loop thread): it collects a client's
  events in batches, ships each batch to the dispatch thread once the engine has reported it
  (``events_done``), drops incoming QoS 0 messages the application is too far behind on
  (``max_buffered``), and with ``dispatch="inline"`` hands events over at once instead;
* :class:`Dispatcher`, the client's dispatch thread: it runs the batches, in order.

What a batch means (listeners, acknowledgements, callbacks) is up to the ``process`` function
each is given; neither knows the client. A batch is a list of ``(name, *args)``: a client event,
``("message", message, ack)``, or ``(CALL, fn)`` to run ``fn()`` in order with the events (a
handle's callback, held events replayed).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

from ..protocol import session as s
from ..protocol.packets import Publish
from . import lifetime

__all__ = ["CALL", "Dispatcher", "LoopListener"]

log = logging.getLogger("mqttkit")

#: The name of a batch item that runs a function: ``(CALL, fn)``.
CALL = "_call"

#: Runs one batch of events.
Process = Callable[[list[tuple[Any, ...]]], None]

_STOP = object()


class Dispatcher:
    """The per-client thread that runs batches of events, in order.

    While it runs, the process lives on after its main thread has ended, and one Ctrl-C closes
    the client through ``close`` (see :mod:`mqttkit.sync.lifetime`).

    Args:
        process: runs one batch (on this thread).
        name: the thread's name, read when a thread starts.
        close: ``close(force)`` closes the client (must not block).
    """

    def __init__(
        self,
        process: Process,
        name: Callable[[], str],
        close: lifetime.Close = lambda force: None,
    ) -> None:
        self._process = process
        self._name = name
        self._close = close
        self._lock = threading.Lock()
        self._queue: SimpleQueue[Any] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (a no-op while one runs)."""
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
            name=self._name(),
            daemon=lifetime.daemon_threads(),
        )
        self._queue, self._thread = queue, thread
        lifetime.started(thread, self._close)
        thread.start()

    def put(self, batch: list[tuple[Any, ...]]) -> None:
        """Run ``batch`` on the dispatch thread after the batches put before it (any thread)."""
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

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the dispatch thread after what was put before it (any thread)."""
        self.put([(CALL, fn)])

    def stop(self) -> None:
        """Let the thread end once it has run what it was given."""
        with self._lock:
            queue, self._queue = self._queue, None
        if queue is not None:
            queue.put(_STOP)

    @property
    def thread(self) -> threading.Thread | None:
        """The latest dispatch thread (None before the first start)."""
        # Under the lock: _start_locked() sets and starts a new thread while holding it, so
        # a caller never gets a thread it cannot join yet.
        with self._lock:
            return self._thread

    def _run(self, queue: SimpleQueue[Any], previous: threading.Thread | None) -> None:
        try:
            if previous is not None and previous is not threading.current_thread():
                previous.join()  # keep order with what the previous dispatch thread still runs
            process = self._process
            while True:
                item = queue.get()
                if item is _STOP:
                    return
                process(item)
        finally:
            lifetime.ended(threading.current_thread())


class LoopListener:
    """The engine's listener for one blocking client; runs on the loop thread.

    Args:
        loop: the engine's loop.
        dispatcher: where batches go.
        process: runs a batch at once instead (``inline``).
        inline: ``dispatch="inline"``: every event is processed as the engine reports it.
        max_buffered: incoming QoS 0 messages waiting for the application beyond which new
            ones are dropped (``dropped`` event).
        on_stopped: called (on the loop thread) when the engine stops, before the last batch
            is shipped.
    """

    __slots__ = (
        "_batch",
        "_dispatcher",
        "_dropped",
        "_inline",
        "_loop",
        "_max_buffered",
        "_on_stopped",
        "_process",
        "_scheduled",
        "handled",
        "shipped",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        dispatcher: Dispatcher,
        process: Process,
        *,
        inline: bool,
        max_buffered: int,
        on_stopped: Callable[[], None] | None = None,
    ) -> None:
        self._loop = loop
        self._dispatcher = dispatcher
        self._process = process
        self._inline = inline
        self._max_buffered = max_buffered
        self._on_stopped = on_stopped
        self._batch: list[tuple[Any, ...]] = []
        self._scheduled = False
        #: Messages handed over for processing (written by the loop thread only).
        self.shipped = 0
        #: Messages processed (written by whoever runs the batches: the dispatch thread, or
        #: the loop thread inline); ``shipped - handled`` wait for the application.
        self.handled = 0
        self._dropped = 0

    # -- the engine's Listener protocol ---------------------------------------------------------

    def emit(self, name: str, *args: Any) -> None:
        """A client event."""
        self._add((name, *args))

    def _add(self, item: tuple[Any, ...]) -> None:
        if self._inline:
            self._process([item])
            return
        self._batch.append(item)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._ship)

    def message(self, message: Publish, ack: s.Ack | None) -> None:
        """An incoming message (per message: the hot path)."""
        if self._inline:
            self._process([("message", message, ack)])
            return
        if ack is None and self.shipped - self.handled >= self._max_buffered:
            # A QoS 0 message and the application is this far behind: drop it (QoS 1/2 wait
            # unacknowledged instead; the broker holds the rest).
            self._dropped += 1
            if self._dropped % 10_000 == 1:
                log.warning(
                    "dropping incoming QoS 0 messages: %d are waiting for the application "
                    "(max_buffered); %d dropped so far",
                    self._max_buffered,
                    self._dropped,
                )
            self.emit("dropped", message)
            return
        self.shipped += 1
        # No call_soon(self._ship) here: the engine ends every batch of messages with
        # events_done(), which ships it; scheduling one anyway cost an extra loop iteration
        # (an epoll_wait and a callback) per read.
        self._batch.append(("message", message, ack))

    def stopped(self) -> None:
        """The engine stopped: ship what is left, and let the dispatch thread end."""
        if self._on_stopped is not None:
            self._on_stopped()
        self._ship()
        self._dispatcher.stop()

    def events_done(self) -> None:
        """The end of a batch of engine events."""
        # Ship now rather than on the next loop iteration: one iteration fewer per read.
        if self._batch:
            self._ship()

    # -- callbacks ------------------------------------------------------------------------------

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the dispatch thread in order with the events reported so far (loop
        thread only: a handle completed by the engine)."""
        self._add((CALL, fn))  # per publish with a callback: no *args to pack

    def _ship(self) -> None:
        self._scheduled = False
        batch = self._batch
        if batch:
            self._batch = []
            self._dispatcher.put(batch)
