"""The loop thread, and the way onto it from any other thread.

This module owns the one event loop per process that runs the asyncio engine of every blocking
client (:func:`engine_loop`: a daemon thread, started on demand), the rule that nothing may wait
for that loop on the loop itself (:func:`check_not_on_loop_thread`), and :class:`Commands`:
the thread-safe queue through which any thread hands calls to one engine, one loop wake-up per
burst. It runs no user code and knows nothing of clients, events or handles.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Commands", "check_not_on_loop_thread", "engine_loop", "on_loop_thread"]

log = logging.getLogger("mqttkit")

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


def on_loop_thread() -> bool:
    """True on the loop thread (in a listener run with ``dispatch="inline"``)."""
    return threading.current_thread() is _loop_thread


def check_not_on_loop_thread(what: str) -> None:
    """Waiting on the loop thread (an inline listener) would wait for itself: raise instead.

    Raises:
        RuntimeError: called on the loop thread; ``what`` names the wait in the message.
    """
    if threading.current_thread() is _loop_thread:
        raise RuntimeError(
            f"{what} on the loop thread would wait forever: a listener run with "
            "dispatch='inline' must not wait on a client (use a callback, or dispatch='thread')"
        )


class Commands:
    """Calls for one engine, from any thread, run on its loop in submission order.

    Calls are batched: the first of a burst wakes the loop, and every call queued until the loop
    gets to them runs in one turn of the engine (``run_batch``, see
    :meth:`mqttkit.aio.engine.Engine.run_batch`), whose events are dispatched and whose output
    is written once at its end: a thread publishing thousands of messages costs one wake-up and
    one write per batch, not per message.

    Args:
        loop: the loop the engine runs on.
        run_batch: runs a callable as one turn of the engine, on the loop.
    """

    __slots__ = ("_calls", "_lock", "_loop", "_run_batch", "_wakeup_pending")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        run_batch: Callable[[Callable[[], None]], None],
    ) -> None:
        self._loop = loop
        self._run_batch = run_batch
        self._calls: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._lock = threading.Lock()
        self._wakeup_pending = False

    @property
    def waiting(self) -> int:
        """Calls submitted and not run yet (any thread may read it)."""
        return len(self._calls)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop, from any thread, in submission order (batched)."""
        self._calls.append((fn, args))
        if not self._wakeup_pending:
            with self._lock:
                if not self._wakeup_pending:
                    self._wakeup_pending = True
                    self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._wakeup_pending = False
        self._run_batch(self._run_all)

    def _run_all(self) -> None:
        calls = self._calls
        while calls:
            fn, args = calls.popleft()
            try:
                fn(*args)
            except Exception:  # a call must not keep the others from running
                log.exception("error in submitted call %r", fn)
