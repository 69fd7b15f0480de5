"""A scripted fake broker made of bytes, for conversation tests of :class:`ClientSession`.

:class:`Conversation` wraps one session and plays the broker: it encodes the packets the test
makes the broker send with ``codec.encode_packet`` and feeds them to ``receive_data``; it
decodes whatever the session writes with ``codec.PacketBuffer`` + ``decode_packet``; it keeps
the session's events; and it owns the clock (``now``), which only the test moves. No sockets,
no threads, no sleeps.

:class:`RecordingStore` is a Store that logs every call, so tests can check what the session
persisted and when (relative to the bytes it wrote).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

from mqttkit.protocol import codec
from mqttkit.protocol.errors import MQTTError
from mqttkit.protocol.packets import (
    MQTT_5,
    NO_PROPERTIES,
    ConnAck,
    Connect,
    Packet,
    Properties,
    Subscription,
)
from mqttkit.protocol.session import (
    Ack,
    ClientSession,
    Event,
    MessageReceived,
    SessionConfig,
    prepare_publish,
    prepare_subscribe,
    prepare_unsubscribe,
)
from mqttkit.protocol.store import MemoryStore

P = TypeVar("P", bound=Packet)
E = TypeVar("E", bound=Event)


class RecordingStore:
    """A MemoryStore that records every call, in order, in ``calls`` (shared if given)."""

    def __init__(self, name: str, calls: list[tuple[Any, ...]] | None = None) -> None:
        self.name = name
        self.data = MemoryStore()
        self.calls: list[tuple[Any, ...]] = calls if calls is not None else []

    def put(self, key: int, value: bytes) -> None:
        self.calls.append((self.name, "put", key, value))
        self.data.put(key, value)

    def get(self, key: int) -> bytes | None:
        return self.data.get(key)

    def delete(self, key: int) -> None:
        self.calls.append((self.name, "delete", key))
        self.data.delete(key)

    def iterate(self) -> Iterator[tuple[int, bytes]]:
        return self.data.iterate()

    def close(self) -> None:
        self.calls.append((self.name, "close"))

    def keys(self) -> list[int]:
        return [key for key, _ in self.data.iterate()]

    def ops(self, kind: str | None = None) -> list[tuple[Any, ...]]:
        """This store's calls (only of ``kind`` if given), without the store name."""
        return [c[1:] for c in self.calls if c[0] == self.name and (kind is None or c[1] == kind)]


def decode_all(data: bytes, level: int) -> list[Packet]:
    """Decode a byte string that must hold whole packets only."""
    buffer = codec.PacketBuffer()
    frames = buffer.feed(data)
    assert len(buffer) == 0, f"the session wrote a partial packet: {data!r}"
    return [codec.decode_packet(first, buf, start, end, level) for first, buf, start, end in frames]


class Conversation:
    """One ClientSession talking to a scripted broker, with a clock the test moves.

    Args:
        level: protocol level (4: MQTT 3.1.1, 5: MQTT 5.0).
        now: the clock's start.
        config: SessionConfig fields; ``client_id`` defaults to ``"client-1"``.
    """

    def __init__(self, level: int = 4, *, now: float = 100.0, **config: Any) -> None:
        config.setdefault("client_id", "client-1")
        self.level = level
        self.now = now
        self.config = SessionConfig(protocol_level=level, **config)
        self.session = ClientSession(self.config)
        #: Every event seen so far, and every packet the session wrote, in order.
        self.all_events: list[Event] = []
        self.all_sent: list[Packet] = []
        #: Raw bytes of every data_to_send() call, in order.
        self.wire: list[bytes] = []

    # -- the clock -----------------------------------------------------------------------------

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def timer(self) -> None:
        """Call handle_timer at the current time."""
        self.session.handle_timer(self.now)

    def run_until(self, when: float) -> None:
        """Move the clock to ``when``, firing every deadline on the way (at most 1,000)."""
        for _ in range(1_000):
            deadline = self.session.next_deadline()
            if deadline is None or deadline > when:
                break
            self.now = max(self.now, deadline)
            self.session.handle_timer(self.now)
        else:  # pragma: no cover - a session whose deadline never moves on
            raise AssertionError("next_deadline() did not move forward")
        self.now = max(self.now, when)

    # -- the connection ------------------------------------------------------------------------

    def connect(self) -> Connect:
        """connection_made(): returns the CONNECT the session sent (and nothing else)."""
        self.session.connection_made(self.now)
        return self.expect_one(Connect)

    def handshake(
        self, *, session_present: bool = False, properties: Properties = NO_PROPERTIES
    ) -> ConnAck:
        """CONNECT, then CONNACK accepted; drops the Connected event, keeps later packets."""
        self.connect()
        connack = ConnAck(session_present, 0, properties)
        self.send(connack)
        events = self.events()
        assert [type(e).__name__ for e in events] == ["Connected"], events
        return connack

    def lose(self, error: MQTTError | None = None) -> None:
        """The transport closed; whatever the session had not written is gone with it."""
        self.session.connection_lost(self.now, error)

    def reconnect(
        self, *, session_present: bool, properties: Properties = NO_PROPERTIES
    ) -> list[Packet]:
        """connection_lost (if needed), new connection, CONNACK: what the session sent after it."""
        self.sent()
        self.lose()
        self.connect()
        self.send(ConnAck(session_present, 0, properties))
        return self.sent()

    # -- the broker side -----------------------------------------------------------------------

    def send(self, *packets: Packet) -> None:
        """The broker sends ``packets`` (in one chunk)."""
        data = b"".join(codec.encode_packet(p, self.level) for p in packets)
        self.session.receive_data(data, self.now)

    def send_bytes(self, data: bytes) -> None:
        self.session.receive_data(data, self.now)

    def sent(self) -> list[Packet]:
        """Packets the session wrote since the last call, decoded."""
        data = self.session.data_to_send()
        if data:
            self.wire.append(data)
        packets = decode_all(data, self.level)
        self.all_sent.extend(packets)
        return packets

    def expect_one(self, cls: type[P]) -> P:
        packets = self.sent()
        assert len(packets) == 1, packets
        assert isinstance(packets[0], cls), packets
        return packets[0]

    def events(self) -> list[Event]:
        events = self.session.events_received()
        self.all_events.extend(events)
        return events

    def expect_event(self, cls: type[E]) -> E:
        events = self.events()
        assert len(events) == 1, events
        assert isinstance(events[0], cls), events
        return events[0]

    # -- the application side ------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes = b"x",
        qos: int = 0,
        *,
        retain: bool = False,
        properties: Properties | None = None,
        token: Any = None,
    ) -> None:
        request = prepare_publish(topic, payload, qos, retain, properties, self.level)
        self.session.publish(request, self.now, token)

    def subscribe(self, *filters: str | Subscription, token: Any = None) -> None:
        subs = tuple(f if isinstance(f, Subscription) else Subscription(f, 1) for f in filters)
        self.session.subscribe(prepare_subscribe(subs, None, self.level), self.now, token)

    def unsubscribe(self, *filters: str, token: Any = None) -> None:
        self.session.unsubscribe(prepare_unsubscribe(filters, None, self.level), self.now, token)

    def ack(self, event_or_ack: Event | Ack) -> None:
        """acknowledge() the message of a MessageReceived event (or an Ack)."""
        if isinstance(event_or_ack, Ack):
            ack: Ack | None = event_or_ack
        else:
            assert isinstance(event_or_ack, MessageReceived), event_or_ack
            ack = event_or_ack.ack
        assert ack is not None
        self.session.acknowledge(ack, self.now)

    @property
    def v5(self) -> bool:
        return self.level == MQTT_5


def names(items: list[Any]) -> list[str]:
    """Type names, for readable assertions on event and packet sequences."""
    return [type(item).__name__ for item in items]
