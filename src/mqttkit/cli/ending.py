"""How a command that waits for messages ends: ``-C``, ``-W``, a closed pipe, a signal.

This module owns :class:`Ending` (the one place any thread records that the command is over,
and with which status), waiting for a handle within the ``-W`` deadline, and dying of SIGPIPE
as Mosquitto's tools do when their reader has gone.
"""

from __future__ import annotations

import os
import select
import signal
import stat
import threading
import time
from typing import IO, Any

from .connection import Connection
from .exits import EXIT_TIMEOUT
from .flags import Args

__all__ = ["TICK", "Ending", "die_of_sigpipe", "reader_gone", "timed_out", "wait_result"]

#: Seconds between two looks at the clock, the connection and stdout's reader while waiting.
TICK = 0.25


class Ending:
    """Why and when a command waiting for messages ends; set from any thread."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.status = 0
        self.broken_pipe = False

    def end(self, status: int = 0) -> None:
        """End with ``status`` (the first reason wins)."""
        if not self.event.is_set():
            self.status = status
            self.event.set()

    def pipe_closed(self) -> None:
        """The reader of stdout has gone."""
        self.broken_pipe = True
        self.end(0)


def reader_gone(out: IO[bytes]) -> bool:
    """True when stdout is a pipe whose reader has closed it (``| head -1`` is done).

    Checked while waiting, so that the command ends without waiting for a next message to
    write (mosquitto_sub only finds out when it writes one).
    """
    try:
        fd = out.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        poller = select.poll()
        poller.register(fd, 0)  # POLLERR and POLLHUP are always reported
        return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def wait_result(handle: Any, deadline: float | None, conn: Connection, ending: Ending) -> Any:
    """The handle's result; None if the deadline or the ending came first."""
    while True:
        left = TICK if deadline is None else min(TICK, deadline - time.monotonic())
        if left <= 0 or ending.event.is_set():
            return None
        if handle.wait(left):
            result = handle.result()
            return [] if result is None else result
        if conn.stopped.is_set() and conn.error is not None:
            raise conn.error


def timed_out(a: Args, stderr: Any) -> int:
    """Report a ``-W`` that ran out (``Timed out``, as Mosquitto's tools); status 27."""
    if not a.quiet:
        print("Timed out", file=stderr, flush=True)
    return EXIT_TIMEOUT


def die_of_sigpipe() -> None:
    """End as mosquitto_sub does when its reader has gone: killed by SIGPIPE (status 141 in a
    shell), without a traceback or Python's complaint about flushing a closed stdout."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
