"""How long the process lives while blocking clients are open: Node semantics, and one Ctrl-C.

This module owns two rules and nothing else (it knows dispatch threads and a way to close
each one's client, not clients):

* **Node semantics.** As in Node.js, a script whose clients are open keeps running after its
  main thread has ended (the seed example only registers listeners), until every client is
  closed or has stopped for good;
* **one Ctrl-C ends it.** A SIGINT while the process only waits for its clients closes them
  (gracefully for :data:`GRACE` seconds, then forced) and ends the process as an unhandled
  :exc:`KeyboardInterrupt` does: exit status 130 in a shell (-2 for :mod:`subprocess`). A main
  thread that ends by an unhandled exception (a Ctrl-C while it ran among them) does not wait
  for the clients either: they are closed likewise and the interpreter exits as it does for
  that exception.

Theory of operation
-------------------
Dispatch threads are daemon threads. What keeps the process alive is :func:`_at_shutdown`, which
the interpreter calls in the main thread once the main module has finished, before it joins
non-daemon threads (``threading._register_atexit``, the hook :mod:`concurrent.futures` uses for
its own workers). It waits there for the registered dispatch threads, interruptibly: the
SIGINT's :exc:`KeyboardInterrupt` is raised in that wait, where it is handled. With non-daemon
dispatch threads (the fallback where the hook cannot be installed) the interrupt lands in
``threading._shutdown`` instead: "Exception ignored in: <module 'threading'>", exit status 0,
and the clients never closed (no DISCONNECT: the broker publishes their Wills); and when the
main thread had been interrupted already, the join waited for a second Ctrl-C.

A test run (pytest) that forgets ``close()`` would wait the same way after its summary:
:func:`close_all` is what the ``mqttkit.testing`` plugin calls at the end of the session.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["CLOSE_WAIT", "GRACE", "close_all", "daemon_threads", "ended", "open_threads", "started"]

#: Seconds clients get to close gracefully (queued messages, outstanding acknowledgements,
#: DISCONNECT) when the process is interrupted, before their close is forced.
GRACE = 0.5
#: Seconds, after forcing, to wait for the dispatch threads to run their last events
#: (``close``, ``end``, close callbacks); a listener that never returns is left behind.
CLOSE_WAIT = 1.0

#: Closes one client: ``close(force)``; must not block.
Close = Callable[[bool], object]

_cond = threading.Condition()
_active: dict[threading.Thread, Close] = {}
_hook: bool | None = None  # None: not tried yet; False: cannot be installed (non-daemon threads)


def daemon_threads() -> bool:
    """Install the shutdown hook (once); True if it is installed, so that a dispatch thread
    may be a daemon thread (False: a non-daemon thread keeps the process alive, as before)."""
    global _hook
    with _cond:
        if _hook is None:
            register = getattr(threading, "_register_atexit", None)
            try:
                if register is None:
                    raise RuntimeError("no threading._register_atexit")
                register(_at_shutdown)
                _hook = True
            except RuntimeError:  # the interpreter is shutting down already
                _hook = False
        return _hook


def started(thread: threading.Thread, close: Close) -> None:
    """``thread`` (a dispatch thread, about to start) keeps the process alive until
    :func:`ended`; ``close(force)`` closes its client."""
    with _cond:
        _active[thread] = close


def ended(thread: threading.Thread) -> None:
    """``thread`` has run its last event (called by the thread itself)."""
    with _cond:
        _active.pop(thread, None)
        _cond.notify_all()


def open_threads() -> list[str]:
    """The names of the dispatch threads that keep the process alive (``mqttkit-dispatch-<client
    id>``)."""
    with _cond:
        return [thread.name for thread in _active]


def close_all(grace: float = GRACE, wait: float = CLOSE_WAIT) -> list[str]:
    """Close every open client: gracefully, forced after ``grace`` seconds; then wait at most
    ``wait`` more seconds for their dispatch threads to end.

    Returns:
        The names of the dispatch threads that were open (one per client).
    """
    with _cond:
        names = [thread.name for thread in _active]
        closers = list({id(close): close for close in _active.values()}.values())
    for close in closers:
        close(False)
    deadline = time.monotonic() + grace
    if not _wait_until_none(deadline):
        with _cond:
            forced = list({id(close): close for close in _active.values()}.values())
        for close in forced:
            close(True)
        _wait_until_none(time.monotonic() + wait)
    return names


def _wait_until_none(deadline: float) -> bool:
    with _cond:
        while _active:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _cond.wait(left)
        return True


def _at_shutdown() -> None:
    # The main thread has finished; the interpreter is about to join non-daemon threads.
    with _cond:
        if not _active:
            return
    # Set by the interpreter when the main module ended with an unhandled exception.
    failed = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    if failed is not None:
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: leave at once
            close_all()
        return
    try:
        with _cond:
            while _active:
                _cond.wait(1.0)  # interruptible: a Ctrl-C raises KeyboardInterrupt here
    except KeyboardInterrupt:
        with contextlib.suppress(KeyboardInterrupt):
            close_all()
        _exit_interrupted()


def _exit_interrupted() -> None:
    """End the process as the interpreter does after an unhandled KeyboardInterrupt: the
    atexit functions run, then the process kills itself with SIGINT, so that its parent (a
    shell: status 130) knows it was interrupted."""
    # What the interpreter would still do before exiting (logging.shutdown() among them).
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if run_exitfuncs is not None:
        run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # closed, or a broken pipe
            pass
    if os.name == "posix":
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(130 if os.name == "posix" else 0xC000013A)  # STATUS_CONTROL_C_EXIT on Windows
