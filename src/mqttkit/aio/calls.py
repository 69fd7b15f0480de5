"""Calling blocking code and user functions from the event loop without blocking it.

This module owns the one way the driver runs something that may block (a DNS lookup, a user's
password function fetching a token over HTTP): on a daemon thread of its own, with the result
handed back to the loop. Not the loop's default executor: it refuses work (or cannot even be
created) once the interpreter has begun shutting down, which is exactly when a script whose
main thread has ended is kept alive by a client's dispatch thread (the seed examples:
``mqtt.connect("mqtt://localhost")`` then listeners only). And not on the loop itself: the
blocking front runs every client of the process on one loop thread, so one slow call would
stall the keepalive of all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["call_user", "resolve", "run_on_thread"]

T = TypeVar("T")


async def run_on_thread(fn: Callable[[], T], name: str) -> T:
    """``fn()`` on a daemon thread named ``name``; its result, or its exception raised here.

    When the awaiting task is cancelled (a timeout), the thread runs on and its result is
    dropped.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # cancelled meanwhile
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def body() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn()
        except BaseException as exc:  # handed to the loop, raised there
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=body, name=name, daemon=True).start()
    return await future


async def call_user(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a user function given as an option: an ``async def`` is awaited on this loop; a
    plain function runs on a thread of its own (:func:`run_on_thread`), and an awaitable it
    returns is awaited here. The function's own exception is raised."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object whose __call__ is async def
    ):
        result = fn(*args)
    else:
        name = getattr(fn, "__name__", type(fn).__name__)
        result = await run_on_thread(lambda: fn(*args), f"mqttkit-call-{name}")
    if inspect.isawaitable(result):
        result = await result
    return result


async def resolve(host: str, port: int) -> list[Any]:
    """``socket.getaddrinfo`` for a TCP connection to ``host``, on a thread of its own.

    Raises:
        socket.gaierror: the name does not resolve.
    """
    return await run_on_thread(
        lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM),
        f"mqttkit-resolve-{host}",
    )
