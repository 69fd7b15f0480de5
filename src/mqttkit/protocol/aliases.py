"""Automatic outgoing Topic Aliases (MQTT 5): which topics go by number on this connection.

Theory of operation
-------------------
With ``auto_topic_alias``, a PUBLISH to a topic that already has an alias on this connection is
written with an empty topic name and that Topic Alias (MQTT 5.0, 3.3.2.3.4); the PUBLISH that
gives a topic its alias carries both, which sets the mapping on the broker. :class:`AutoAliases`
is that table for one network connection: made when an MQTT 5 CONNACK announces a Topic Alias
Maximum above 0, dropped when the connection ends, since a mapping never outlives its connection
[MQTT-3.3.2-7]. Only the bytes on the wire are aliased: a message's queued and stored forms keep
its topic and no automatic alias, so a message resent on a new connection (DUP) carries its
full topic.

The replacement policy, "least recently used, once idle": numbers go out from 1 upward, one per
new topic, up to the broker's Topic Alias Maximum (at most :data:`MAX_AUTO_ALIASES`). When all
are taken, a new topic takes over the least recently used alias only if that alias has not been
used for the last ``IDLE_FACTOR`` x (that maximum) publishes; otherwise the new topic is sent
with its full name. Hence:

* a set of at most Maximum topics always goes by alias (after each topic's first message);
* a larger set that cycles (11 topics over 10 aliases) keeps its aliases on the topics that
  have them, where plain LRU would re-map an alias on every message and send 3 bytes more per
  message than no aliases at all;
* when the topics in use move on, the old topics' aliases pass to the new ones once idle.

Re-mapping an alias costs the 3 bytes of the alias property next to the full topic, and an alias
is re-mapped at most once per idle period: the policy never costs more than 3 / IDLE_FACTOR bytes
per message over sending every topic in full (``bench/topic_alias.py`` measures it against plain
LRU and "the first N topics keep their alias", BENCHMARKS.md).

Topics shorter than :data:`MIN_TOPIC_BYTES` are never aliased: an empty name plus the 3-byte
property would be no shorter. An alias the application sets itself (the ``topic_alias``
property) wins: :meth:`AutoAliases.reserve` takes its number out of the table for the rest of
the connection.

This module decides; ``codec`` builds the bytes. It holds one connection's table and nothing
else, and does no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from .codec import EMPTY_TOPIC_FIELD, add_topic_alias, packet_size, publish_remaining_length
from .requests import PublishRequest

__all__ = ["IDLE_FACTOR", "MAX_AUTO_ALIASES", "MIN_TOPIC_BYTES", "AutoAliases"]

#: The most automatic aliases one connection uses, whatever the broker allows: bounds the table
#: (a broker may announce up to 65,535).
MAX_AUTO_ALIASES: Final = 1024
#: An alias is taken over by a new topic only after this many publishes per alias in use
#: without it (see the module docstring).
IDLE_FACTOR: Final = 30
#: Shorter topics keep their name: by alias they would be no shorter on the wire.
MIN_TOPIC_BYTES: Final = 4

_EMPTY_PROPERTIES: Final = b"\x00"


class _Slot:
    """One topic's alias on this connection."""

    __slots__ = ("alias", "last", "properties")

    def __init__(self, alias: int, last: int) -> None:
        self.alias = alias
        #: The publish count when the alias was last used.
        self.last = last
        #: The property block of a message without properties of its own, under this alias.
        self.properties = add_topic_alias(_EMPTY_PROPERTIES, alias)


class AutoAliases:
    """The automatic Topic Aliases of one MQTT 5 connection (see the module docstring).

    Args:
        maximum: the broker's Topic Alias Maximum (CONNACK), above 0.
        max_packet: the broker's Maximum Packet Size: an alias property that would take a
            PUBLISH over it is not added.
        idle_factor: the policy's idle period, in publishes per alias (``bench/topic_alias.py``
            compares other policies with it: 0 is plain LRU, a huge one "first topics keep").
    """

    __slots__ = ("_count", "_idle", "_max_packet", "_maximum", "_next", "_reserved", "_slots")

    def __init__(self, maximum: int, max_packet: int, idle_factor: int = IDLE_FACTOR) -> None:
        self._maximum = min(maximum, MAX_AUTO_ALIASES)
        self._idle = idle_factor * self._maximum
        self._max_packet = max_packet
        # Topic -> its alias, least recently used first.
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._next = 1  # the lowest number never handed out (nor reserved)
        self._reserved: set[int] = set()  # numbers the application uses itself
        self._count = 0  # publishes through this table: its clock

    def __len__(self) -> int:
        return len(self._slots)

    def alias_of(self, topic: str) -> int | None:
        """The alias ``topic`` has on this connection, or None."""
        slot = self._slots.get(topic)
        return None if slot is None else slot.alias

    def wire_parts(self, request: PublishRequest) -> tuple[bytes, bytes]:
        """The topic field and the property block to send ``request`` with (an MQTT 5 PUBLISH
        without a Topic Alias of its own), choosing or assigning its alias now. Called once per
        PUBLISH written, in the order they are written: the broker learns each mapping from
        the first PUBLISH that carries it."""
        self._count += 1
        props: bytes = request.properties_bytes  # type: ignore[assignment]  # MQTT 5: a block
        slot = self._slots.get(request.topic)
        if slot is not None:
            slot.last = self._count
            self._slots.move_to_end(request.topic)
            if len(props) == 1:
                return EMPTY_TOPIC_FIELD, slot.properties
            return EMPTY_TOPIC_FIELD, add_topic_alias(props, slot.alias)
        return self._assign(request, props)

    def _assign(self, request: PublishRequest, props: bytes) -> tuple[bytes, bytes]:
        # A topic without an alias: give it one if a number is free, or if the least recently
        # used alias has been idle long enough; else it goes in full.
        full = (request.topic_field, props)
        if len(request.topic_bytes) < MIN_TOPIC_BYTES:
            return full
        slots = self._slots
        victim = None
        alias = self._next
        if alias > self._maximum:
            if not slots:
                return full  # the application holds every number
            victim, slot = next(iter(slots.items()))
            if self._count - slot.last < self._idle:
                return full
            alias = slot.alias
        aliased = add_topic_alias(props, alias)
        size = packet_size(
            publish_remaining_length(
                len(request.topic_bytes), request.qos, len(request.payload), len(aliased)
            )
        )
        if size > self._max_packet:
            return full  # the alias property would take it over the broker's Maximum Packet Size
        if victim is None:
            self._advance()
        else:
            del slots[victim]
        slots[request.topic] = _Slot(alias, self._count)
        return request.topic_field, aliased

    def _advance(self) -> None:
        self._next += 1
        while self._next in self._reserved:
            self._next += 1

    def reserve(self, alias: int) -> None:
        """The application sends ``alias`` itself on this connection (the ``topic_alias``
        property): the number is its own until the connection ends. A topic that had it here
        loses it (the broker now maps it to the application's topic)."""
        if alias in self._reserved:
            return
        self._reserved.add(alias)
        if alias == self._next:
            self._advance()
        for topic, slot in self._slots.items():
            if slot.alias == alias:
                del self._slots[topic]
                break
