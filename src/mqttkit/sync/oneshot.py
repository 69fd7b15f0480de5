"""One-shot helpers, blocking: ``mqttkit.publish_single``, ``publish_multiple`` and
``subscribe_simple`` (paho-mqtt's ``publish.single``, ``publish.multiple``,
``subscribe.simple``).

Each runs the asyncio helper of the same name (:mod:`mqttkit.aio.oneshot`) on the loop thread
of the blocking clients and waits for it in the caller's thread: the same arguments, results
and exceptions (raised in the caller's thread), one implementation. An interrupted wait
(``KeyboardInterrupt``) closes the helper's client at once. Like every wait on a client, these
must not be called from a listener running with ``dispatch="inline"`` (they raise
``RuntimeError`` there).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any, Literal, TypeVar, overload

from ..aio import oneshot
from ..protocol.packets import Publish
from .loop import check_not_on_loop_thread, engine_loop

__all__ = ["publish_multiple", "publish_single", "subscribe_simple"]

T = TypeVar("T")

#: Seconds granted beyond the helper's own ``timeout`` before the wait gives up on the loop
#: thread itself (the helper closes its client when its timeout runs out, and that is bounded).
_GRACE = 30.0


def publish_single(
    url: str | None,
    topic: str,
    payload: str | bytes | bytearray | memoryview | None = b"",
    qos: int = 0,
    retain: bool = False,
    *,
    properties: Any = None,
    timeout: float | None = 30.0,
    options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> int:
    """Connect, publish one message, wait until its QoS flow is complete (QoS 0: until it is
    written), close gracefully; see :func:`mqttkit.aio.publish_single` for the arguments.

    Returns:
        The PUBACK / PUBREC reason code (MQTT 5; 0 otherwise).

    Raises:
        InvalidArgumentError, UnknownOptionError: bad arguments, before connecting.
        MQTTConnectionError: the connection failed, with its cause (``ConnectRefusedError``
            for a refused login, ``ServerNotFoundError`` when nothing listens...), at once.
        PublishError: the broker refused the message (MQTT 5 reason code).
        OperationTimeoutError: ``timeout`` ran out.
    """
    coro = oneshot.publish_single(
        url,
        topic,
        payload,
        qos,
        retain,
        properties=properties,
        timeout=timeout,
        options=options,
        **kwargs,
    )
    return _run(coro, timeout, "publish_single()")


def publish_multiple(
    messages: Iterable[Mapping[str, Any] | tuple[Any, ...]],
    url: str | None = None,
    *,
    timeout: float | None = 30.0,
    options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> list[int]:
    """Connect, publish ``messages`` (dicts ``{"topic", "payload", "qos", "retain",
    "properties"}`` or tuples ``(topic, payload, qos, retain)``) in order on one connection,
    wait until every flow is complete, close gracefully; see
    :func:`mqttkit.aio.publish_multiple`.

    Returns:
        The reason code of each message, in order.

    Raises:
        The errors of :func:`publish_single`.
    """
    coro = oneshot.publish_multiple(messages, url, timeout=timeout, options=options, **kwargs)
    return _run(coro, timeout, "publish_multiple()")


@overload
def subscribe_simple(
    url: str | None,
    topics: str | Iterable[str] | Mapping[str, int],
    count: Literal[1] = 1,
    *,
    qos: int = ...,
    retained: bool = ...,
    timeout: float | None = ...,
    options: Mapping[str, Any] | None = ...,
    **kwargs: Any,
) -> Publish: ...


@overload
def subscribe_simple(
    url: str | None,
    topics: str | Iterable[str] | Mapping[str, int],
    count: int,
    *,
    qos: int = ...,
    retained: bool = ...,
    timeout: float | None = ...,
    options: Mapping[str, Any] | None = ...,
    **kwargs: Any,
) -> Publish | list[Publish]: ...


def subscribe_simple(
    url: str | None,
    topics: str | Iterable[str] | Mapping[str, int],
    count: int = 1,
    *,
    qos: int = 0,
    retained: bool = True,
    timeout: float | None = None,
    options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Publish | list[Publish]:
    """Connect, subscribe to ``topics``, wait for ``count`` messages, close gracefully; see
    :func:`mqttkit.aio.subscribe_simple` (``retained=False`` leaves out retained messages).

    Returns:
        The message when ``count`` is 1, else a list of ``count`` messages.

    Raises:
        InvalidArgumentError, UnknownOptionError: bad arguments, before connecting.
        MQTTConnectionError: the connection failed (at once, with its cause).
        SubscribeError: the broker refused a filter.
        OperationTimeoutError: ``timeout`` ran out (default None: no limit).
    """
    coro = oneshot.subscribe_simple(
        url,
        topics,
        count,
        qos=qos,
        retained=retained,
        timeout=timeout,
        options=options,
        **kwargs,
    )
    return _run(coro, timeout, "subscribe_simple()")


def _run(coro: Coroutine[Any, Any, T], timeout: float | None, what: str) -> T:
    """Run ``coro`` on the loop thread and wait for its result in this thread."""
    try:
        check_not_on_loop_thread(what)
    except BaseException:
        coro.close()  # never started: no "never awaited" warning
        raise
    future = asyncio.run_coroutine_threadsafe(coro, engine_loop())
    try:
        # The helper bounds itself (timeout, then a forced close); the margin only guards
        # against a stuck loop thread.
        number = isinstance(timeout, int | float) and not isinstance(timeout, bool)
        return future.result(timeout + _GRACE if number else None)  # type: ignore[operator]
    except BaseException:
        future.cancel()  # interrupted (or the loop is stuck): the helper closes its client
        raise
