"""One-shot helpers on the asyncio client: connect, do one thing, close.

What paho-mqtt's ``publish.single``, ``publish.multiple`` and ``subscribe.simple`` do, for
scripts that send one reading or wait for one message. Each call validates its arguments (bad
input raises before any connection), builds a :class:`~mqttkit.aio.client.Client` with the
options given (a URL, the seed's option dict, keywords: the same as every client), connects
once, does its work, closes gracefully and returns. A failed connection raises its cause at
once (a refused login: :class:`ConnectRefusedError`; nothing listening:
:class:`ServerNotFoundError`; ...), never after a retry loop or a timeout. ``timeout`` bounds
the whole call, connecting and closing included: when it runs out, the client is closed at once
and :class:`OperationTimeoutError` (a ``TimeoutError``) says what it was waiting for.

This module owns the helpers' argument shapes (paho's message dicts and tuples) and their
control flow; the client does the rest. The blocking versions (:mod:`mqttkit.sync.oneshot`)
run these coroutines on the loop thread of the blocking clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any, Literal, overload

from .._api import subscriptions_from
from ..protocol import session as s
from ..protocol.errors import (
    InvalidArgumentError,
    MQTTError,
    OperationTimeoutError,
    SubscribeError,
)
from ..protocol.packets import MQTT_5, Publish
from .client import Client

__all__ = ["publish_multiple", "publish_single", "subscribe_simple"]

#: One message of :func:`publish_multiple`: topic, payload, qos, retain, properties.
_Message = tuple[Any, Any, Any, Any, Any]
_MESSAGE_KEYS = ("topic", "payload", "qos", "retain", "properties")
#: Messages published between two waits for their flows: bounds the client's queue.
_BATCH = 1000


async def publish_single(
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
    written), close gracefully.

    Args:
        url: the broker (``mqtt://user:password@host:port``, ``mqtts://``, ``ws://``...); None:
            the broker given in ``options`` or the keywords (``host``, ``port``...).
        topic, payload, qos, retain, properties: as :meth:`Client.publish` (a payload of
            None is sent empty, as paho does).
        timeout: seconds for the whole call; None: no limit (each step still has its own:
            ``connect_timeout``, ``close_timeout``).
        options: a dict with the seed / MQTT.js option names.
        **kwargs: any client option (``client_id``, ``protocol_version``, ``cafile``...).

    Returns:
        The PUBACK / PUBREC reason code (MQTT 5; 0 otherwise).

    Raises:
        InvalidArgumentError, UnknownOptionError: bad arguments, before connecting.
        MQTTConnectionError: the connection failed (the cause: ``ConnectRefusedError``,
            ``ServerNotFoundError``, ``HostNotFoundError``, ``TLSError``...).
        PublishError: the broker refused the message (MQTT 5 reason code).
        OperationTimeoutError: ``timeout`` ran out.
    """
    message = (topic, payload, qos, retain, properties)
    results = await _publish(url, [message], timeout, options, kwargs, "publish_single")
    return results[0]


async def publish_multiple(
    messages: Iterable[Mapping[str, Any] | tuple[Any, ...]],
    url: str | None = None,
    *,
    timeout: float | None = 30.0,
    options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> list[int]:
    """Connect, publish ``messages`` in order on one connection, wait until every flow is
    complete, close gracefully.

    Args:
        messages: each a dict ``{"topic": ..., "payload": ..., "qos": 0, "retain": False,
            "properties": None}`` (only ``topic`` required) or a tuple ``(topic[, payload[,
            qos[, retain[, properties]]]])``, as paho's ``publish.multiple`` takes them.
        url, timeout, options, kwargs: as :func:`publish_single`.

    Returns:
        The reason code of each message, in order.

    Raises:
        The errors of :func:`publish_single`. A message refused (by the broker:
        ``PublishError``; over its limits: ``PacketTooLargeError``...) does not stop the
        others: the first such error is raised once they have all completed.
    """
    if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Iterable):
        raise InvalidArgumentError(
            "messages must be a list of dicts {'topic': ..., 'payload': ...} or tuples "
            f"(topic, payload, qos, retain), not {type(messages).__name__} (the broker goes "
            "in url=...)"
        )
    normalized = [_message(item, i) for i, item in enumerate(messages)]
    return await _publish(url, normalized, timeout, options, kwargs, "publish_multiple")


@overload
async def subscribe_simple(
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
async def subscribe_simple(
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


async def subscribe_simple(
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
    """Connect, subscribe, wait for ``count`` messages, close gracefully.

    Args:
        url: as :func:`publish_single`.
        topics: a filter, a list of filters or a dict ``{filter: qos}`` (wildcards allowed).
        count: how many messages to wait for.
        qos: the QoS of the subscription (for filters given without one).
        retained: count the retained messages the broker sends on subscribing (True, as
            paho); False: leave them out and wait for new ones (MQTT 5 asks the broker not to
            send them at all: Retain Handling 2).
        timeout: seconds for the whole call; None (default): wait as long as it takes.
        options, kwargs: as :func:`publish_single`.

    Returns:
        The message (``topic``, ``payload``, ``qos``, ``retain``, ``properties``) when
        ``count`` is 1, else a list of ``count`` messages in arrival order. Each QoS 1/2
        message is acknowledged once it is taken; one that arrives after the last is not.

    Raises:
        InvalidArgumentError, UnknownOptionError: bad arguments, before connecting.
        MQTTConnectionError: the connection failed, or the client stopped for good while
            waiting (a refused login when reconnecting...).
        SubscribeError: the broker refused a filter.
        OperationTimeoutError: ``timeout`` ran out; the message says how many had come.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidArgumentError(f"count must be an int >= 1, not {count!r}")
    if not isinstance(retained, bool):
        raise InvalidArgumentError(f"retained must be True or False, not {retained!r}")
    _check_timeout(timeout)
    client = Client(url, options, **kwargs)
    level = client.options.protocol_version
    subs = subscriptions_from(topics, qos, retain_handling=0 if retained or level != MQTT_5 else 2)
    s.prepare_subscribe(subs, None, level)  # raises for a bad filter or QoS, before connecting
    got: list[Publish] = []
    stage = "connecting"
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            await client.connect()
            stage = "subscribing"
            granted = await client.subscribe(subs)
            refused = [g.topic for g in granted if g.qos >= 0x80]
            if refused:
                code = next(g.qos for g in granted if g.qos >= 0x80)
                raise SubscribeError(f"the broker refused the filter(s) {refused}", code)
            stage = "waiting for messages"
            async for message in client.messages():
                if message.retain and not retained:
                    continue  # sent because of the subscription (MQTT 3.1.1 [MQTT-3.3.1-8])
                got.append(message)
                if len(got) == count:
                    break
            if len(got) < count:
                # The client stopped for good (it stays stopped: the loop saw the end).
                error = client.stop_error
                if error is None:  # pragma: no cover - messages() ends only then or on close
                    raise RuntimeError("the client ended without a cause")
                raise error
            stage = "closing"
            await client.close()
    except TimeoutError:
        await client.close(force=True)
        if not deadline.expired():
            raise  # the client's own (connect_timeout): a ConnectTimeoutError
        raise OperationTimeoutError(
            f"subscribe_simple: {len(got)} of {count} message(s) within timeout={timeout:g} s "
            f"({stage}, {client.options.url})"
        ) from None
    except BaseException:
        await client.close(force=True)
        raise
    return got[0] if count == 1 else got


async def _publish(
    url: str | None,
    messages: list[_Message],
    timeout: float | None,
    options: Mapping[str, Any] | None,
    kwargs: dict[str, Any],
    what: str,
) -> list[int]:
    """Publish ``messages`` on one connection; the reason codes in order."""
    _check_timeout(timeout)
    client = Client(url, options, **kwargs)
    level = client.options.protocol_version
    messages = [(t, b"" if p is None else p, q, bool(r), pr) for t, p, q, r, pr in messages]
    for topic, payload, qos, retain, properties in messages:
        # Every message is checked before anything is sent: bad input raises at once.
        s.prepare_publish(topic, payload, qos, retain, properties, level)
    stage = "connecting"
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            await client.connect()
            stage = "publishing"
            flows: list[asyncio.Future[int]] = []
            for topic, payload, qos, retain, properties in messages:
                try:
                    flow = client.publish(topic, payload, qos, retain, properties)
                except MQTTError as exc:
                    # Refused at once (over the broker's limits): the others still go.
                    flow = asyncio.get_running_loop().create_future()
                    flow.set_exception(exc)
                flows.append(flow)
                if len(flows) % _BATCH == 0:
                    await client.flush()
            stage = "waiting for the acknowledgements"
            outcomes = await asyncio.gather(*flows, return_exceptions=True)
            stage = "closing"
            await client.close()
    except TimeoutError:
        await client.close(force=True)
        if not deadline.expired():
            raise  # the client's own (connect_timeout): a ConnectTimeoutError
        raise OperationTimeoutError(
            f"{what}: not done within timeout={timeout:g} s ({stage}, {client.options.url})"
        ) from None
    except BaseException:
        await client.close(force=True)
        raise
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes  # type: ignore[return-value]  # no exception among them


def _message(item: Any, index: int) -> _Message:
    """One entry of ``publish_multiple``'s messages as (topic, payload, qos, retain, props)."""
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - set(_MESSAGE_KEYS))
        if unknown:
            raise InvalidArgumentError(
                f"message {index}: unknown key(s) {unknown}; use {', '.join(_MESSAGE_KEYS)}"
            )
        if "topic" not in item:
            raise InvalidArgumentError(f"message {index} has no 'topic'")
        return (
            item["topic"],
            item.get("payload", b""),
            item.get("qos", 0),
            item.get("retain", False),
            item.get("properties"),
        )
    if isinstance(item, tuple | list) and 1 <= len(item) <= len(_MESSAGE_KEYS):
        given: tuple[Any, ...] = tuple(item)
        topic, payload, qos, retain, props = given + (b"", 0, False, None)[len(given) - 1 :]
        return topic, payload, qos, retain, props
    raise InvalidArgumentError(
        f"message {index} must be a dict {{'topic': ..., 'payload': ...}} or a tuple (topic, "
        f"payload, qos, retain), not {item!r}"
    )


def _check_timeout(timeout: object) -> None:
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise InvalidArgumentError(
            f"timeout must be a number of seconds > 0 or None, not {timeout!r}"
        )
