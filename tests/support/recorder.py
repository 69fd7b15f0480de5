"""Records a sync client's events so tests can wait on them (bounded) and assert their order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

SEED_EVENTS = ("connect", "reconnect", "close", "offline", "error", "end", "disconnect")


class Recorder:
    """Thread-safe log of ``(event, args)``; every wait has a timeout and fails loudly."""

    def __init__(self, client: Any = None, events: tuple[str, ...] = SEED_EVENTS) -> None:
        self.log: list[tuple[str, tuple[Any, ...]]] = []
        self.messages: list[tuple[str, bytes, Any]] = []
        self._cond = threading.Condition()
        #: The client this recorder listens to (when given).
        self.client = client
        if client is not None:
            self.attach(client, events)

    def attach(self, client: Any, events: tuple[str, ...] = SEED_EVENTS) -> None:
        for name in events:
            client.on(name, self.listener(name))

    def listener(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            with self._cond:
                self.log.append((name, args))
                if name == "message":
                    self.messages.append(args)
                self._cond.notify_all()

        return record

    def names(self) -> list[str]:
        with self._cond:
            return [name for name, _ in self.log]

    def count(self, name: str) -> int:
        return self.names().count(name)

    def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = ""
    ) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout} s waiting for {what or predicate}; "
                        f"events so far: {[n for n, _ in self.log]}"
                    )
                # Re-checked at least every 50 ms: predicates may also watch state that
                # changes outside this recorder (no notify comes for it).
                self._cond.wait(min(left, 0.05))

    def wait_for(self, name: str, count: int = 1, timeout: float = 10.0) -> tuple[Any, ...]:
        """Wait until ``name`` happened ``count`` times; return the args of the last one."""
        self.wait_until(lambda: self.count_locked(name) >= count, timeout, f"{count} x {name!r}")
        with self._cond:
            return [args for n, args in self.log if n == name][count - 1]

    def count_locked(self, name: str) -> int:
        return sum(1 for n, _ in self.log if n == name)

    def wait_messages(self, count: int, timeout: float = 10.0) -> list[tuple[Any, ...]]:
        self.wait_until(lambda: len(self.messages) >= count, timeout, f"{count} messages")
        with self._cond:
            return list(self.messages)
