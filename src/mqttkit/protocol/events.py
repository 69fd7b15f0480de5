"""What a :class:`~mqttkit.protocol.session.ClientSession` hands to its driver.

This module owns the event classes (what :meth:`ClientSession.events_received` returns),
:class:`Ack` (the pending acknowledgement of one incoming message), :class:`PublishResult`
(what a publish resolves to) and :class:`Output`, where the session and its two parts put the
bytes and events the driver takes next. They are plain records: no protocol decisions, no wire
bytes, no I/O. The session and its parts create them; drivers and fronts only read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConnectRefusedError, MQTTError
from .logs import ClientLog
from .packets import Auth, ConnAck, Disconnect, Packet, Publish, Subscription

if TYPE_CHECKING:
    from .config import SessionConfig

__all__ = [
    "Ack",
    "AuthReceived",
    "Connected",
    "ConnectionClosing",
    "ConnectionRefused",
    "Event",
    "MessageDropped",
    "MessageReceived",
    "PacketReceived",
    "PacketSent",
    "PublishCompleted",
    "PublishResult",
    "ServerDisconnected",
    "SubscribeCompleted",
    "UnsubscribeCompleted",
]


class Event:
    """Base class of session events."""

    __slots__ = ()


@dataclass(slots=True)
class Connected(Event):
    """CONNACK accepted the connection."""

    connack: ConnAck


@dataclass(slots=True)
class ConnectionRefused(Event):
    """CONNACK refused the connection; a :class:`ConnectionClosing` follows."""

    connack: ConnAck
    error: ConnectRefusedError


@dataclass(slots=True)
class MessageReceived(Event):
    """An application message arrived. Pass ``ack`` to :meth:`ClientSession.acknowledge` once
    the application has it (None for QoS 0)."""

    message: Publish
    ack: Ack | None


@dataclass(slots=True)
class PublishCompleted(Event):
    """The flow of an outgoing message finished (QoS 0: written)."""

    token: Any
    error: MQTTError | None = None
    reason_code: int = 0
    downgraded: bool = False
    """A QoS 2 message the broker answered with PUBACK: delivered at QoS 1 (a broker that
    downgrades QoS 2, such as RabbitMQ)."""


class PublishResult(int):
    """What a publish resolves to when the broker acknowledged it at a lower QoS than asked:
    an ``int`` (the reason code, as every publish result) that also says the QoS it was
    delivered at. A broker that downgrades QoS 2 to 1 (RabbitMQ) answers with PUBACK: the
    result is ``PublishResult(0, qos=1)``, the message was delivered at least once."""

    qos: int

    def __new__(cls, reason_code: int, qos: int) -> PublishResult:
        self = super().__new__(cls, reason_code)
        self.qos = qos
        return self

    def __repr__(self) -> str:
        return f"PublishResult({int(self)}, qos={self.qos})"


@dataclass(slots=True)
class SubscribeCompleted(Event):
    """SUBACK arrived (``error`` set when every filter failed)."""

    token: Any
    subscriptions: tuple[Subscription, ...]
    reason_codes: tuple[int, ...]
    error: MQTTError | None = None


@dataclass(slots=True)
class UnsubscribeCompleted(Event):
    """UNSUBACK arrived."""

    token: Any
    topic_filters: tuple[str, ...]
    reason_codes: tuple[int, ...]
    error: MQTTError | None = None


@dataclass(slots=True)
class MessageDropped(Event):
    """A message left the outgoing queue unsent because the queue was full (``policy``
    ``drop_oldest`` or ``drop_newest``); its token completes with QueueFullError."""

    message: Publish
    policy: str


@dataclass(slots=True)
class ServerDisconnected(Event):
    """The server sent DISCONNECT (MQTT 5); a :class:`ConnectionClosing` follows."""

    packet: Disconnect


@dataclass(slots=True)
class AuthReceived(Event):
    """The server sent AUTH (MQTT 5 extended authentication)."""

    packet: Auth


@dataclass(slots=True)
class ConnectionClosing(Event):
    """The session wants the connection closed once :meth:`data_to_send` has been written.

    ``error`` is None for our own orderly DISCONNECT.
    """

    error: MQTTError | None


@dataclass(slots=True)
class PacketSent(Event):
    """A packet was queued for sending (only with ``trace_packets``)."""

    packet: Packet


@dataclass(slots=True)
class PacketReceived(Event):
    """A packet arrived (only with ``trace_packets``)."""

    packet: Packet


class Ack:
    """The pending acknowledgement of one incoming QoS 1/2 message."""

    __slots__ = ("done", "generation", "packet_id", "qos", "reason_code")

    def __init__(self, packet_id: int, qos: int, generation: int) -> None:
        self.packet_id = packet_id
        self.qos = qos
        self.generation = generation
        self.done = False
        #: MQTT 5: the PUBACK / PUBREC reason code (0: success).
        self.reason_code = 0

    def __repr__(self) -> str:
        return f"<Ack packet_id={self.packet_id} qos={self.qos} done={self.done}>"


class Output:
    """What the session and its parts have for the driver: the bytes to write (``data``, of
    which ``size`` bytes are PUBLISH) and the ``events``, with when the last bytes were queued
    (``last_sent``, for keepalive) and whether the connection is accepted (``connected``:
    PUBLISH, SUBSCRIBE, UNSUBSCRIBE and acknowledgements may be written).

    One object shared by the session and its parts, so the hot paths append to it directly;
    :meth:`ClientSession.data_to_send` and :meth:`ClientSession.events_received` take its
    lists and leave new ones. ``log`` is the session's log: its records name the client.
    """

    __slots__ = ("_config", "connected", "data", "events", "last_sent", "log", "size")

    def __init__(self, config: SessionConfig) -> None:
        self._config = config
        self.log = ClientLog(lambda: config.client_id)
        self.data: list[bytes] = []
        self.size = 0
        self.events: list[Event] = []
        self.last_sent = 0.0
        self.connected = False

    def write(self, data: bytes, now: float, packet: Packet | None = None) -> None:
        """Queue ``data`` for the wire; with ``trace_packets``, a :class:`PacketSent` for
        ``packet`` too (pass None where the caller traces by itself)."""
        self.data.append(data)
        self.last_sent = now
        if packet is not None and self._config.trace_packets:
            self.events.append(PacketSent(packet))

    def clear(self) -> None:
        """Drop the bytes not taken yet (the connection they were for is gone)."""
        self.data = []
        self.size = 0
