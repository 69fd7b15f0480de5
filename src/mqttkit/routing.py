"""Topic routing: which handlers an incoming message goes to, by topic filter.

This module owns the route table both fronts share: ``client.on_message(filter, fn)`` on the
blocking front, ``client.messages(filter)`` on the asyncio one. A message goes to every route
whose filter matches its topic (wildcards, and ``$share/<group>/<filter>`` by its inner
filter); a message no route matches goes to the plain ``message`` listeners (or the unfiltered
``messages()`` loops). Lookups are cached per topic (bounded), so a client with many routes
matches a repeated topic once. No I/O, no threads: the fronts call it from their own.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from .protocol.topics import matches, validate_topic_filter

__all__ = ["RouteTable", "topic_matches"]

T = TypeVar("T")

#: Topics whose matching routes are remembered (beyond, the cache starts over).
CACHE_SIZE = 4096


def topic_matches(topic_filter: str, topic: str) -> bool:
    """True when the topic name ``topic`` matches ``topic_filter`` (MQTT section 4.7):
    ``+`` one level, ``#`` this level and every one below, ``$share/<group>/<filter>`` by
    ``<filter>``; a filter starting with a wildcard matches no topic starting with ``$``.

    Raises:
        InvalidTopicError: ``topic_filter`` is not a valid topic filter.
    """
    validate_topic_filter(topic_filter)
    return matches(topic_filter, topic)


class RouteTable(Generic[T]):
    """Routes from topic filters to targets (listeners, queues), in the order added."""

    __slots__ = ("_cache", "_routes")

    def __init__(self) -> None:
        self._routes: list[tuple[str, T]] = []
        self._cache: dict[str, tuple[T, ...]] = {}

    def __bool__(self) -> bool:
        return bool(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def add(self, topic_filter: str, target: T) -> None:
        """Route the messages matching ``topic_filter`` to ``target`` too.

        Raises:
            InvalidTopicError: not a valid topic filter.
        """
        validate_topic_filter(topic_filter)
        self._routes = [*self._routes, (topic_filter, target)]  # copy: lookups may be running
        self._cache = {}

    def remove(self, topic_filter: str, target: T | None = None) -> int:
        """Remove the routes of ``topic_filter`` (to ``target`` only, if given); the number
        removed."""
        kept = [
            (f, t)
            for f, t in self._routes
            if not (f == topic_filter and (target is None or t is target or t == target))
        ]
        removed = len(self._routes) - len(kept)
        self._routes = kept
        self._cache = {}
        return removed

    def targets(self, topic: str) -> tuple[T, ...]:
        """The targets of every route matching ``topic``, in the order they were added."""
        cache = self._cache
        found = cache.get(topic)
        if found is None:
            found = tuple(t for f, t in self._routes if matches(f, topic))
            if len(cache) >= CACHE_SIZE:
                cache = self._cache = {}
            cache[topic] = found
        return found

    def filters(self) -> list[str]:
        """The filters routed, in order (a filter routed twice appears twice)."""
        return [f for f, _ in self._routes]
