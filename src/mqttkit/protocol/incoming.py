"""The incoming half of a session: the broker's messages, acknowledged in order and exactly once.

Theory of operation
-------------------
Incoming QoS 1/2 messages are acknowledged only after the application acknowledges them
(:meth:`Incoming.acknowledge`, which the fronts call once the handler has run), in the order
they arrived [MQTT-4.6.0-2, -3]. An incoming QoS 2 id stays in the incoming store from the
application's acknowledgement until PUBREL, so a resent PUBLISH is answered but never delivered
twice. Each :class:`~mqttkit.protocol.events.Ack` carries the generation of the broker session
it belongs to: one from a session the broker lost (:meth:`Incoming.restart`) is ignored.

:class:`Incoming` owns the acknowledgement order, the QoS 2 exactly-once records (and the
incoming store) and the inbound Topic Aliases. It sends only acknowledgements, never reads
outgoing work, builds no wire bytes (``codec`` does), does no I/O, and raises only
:class:`~mqttkit.protocol.errors.ProtocolError` for what the broker got wrong (the session
turns it into a clean close).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Set as AbstractSet

from . import codec
from .config import SessionConfig
from .errors import ProtocolError, ReasonCode
from .events import Ack, MessageReceived, Output, PacketSent
from .packets import MQTT_5, Properties, PubAck, PubComp, Publish, PubRec

__all__ = ["Incoming"]


class Incoming:
    """The incoming half of a :class:`~mqttkit.protocol.session.ClientSession` (see the module
    docstring). The session hands it each PUBLISH and PUBREL and each acknowledgement of the
    application; it writes to ``output`` and reads ``config`` live.

    Args:
        config: the session's settings.
        output: where acknowledgements and events go.
    """

    __slots__ = (
        "_ack_by_id",
        "_acks",
        "_alias_max",
        "_aliases",
        "_config",
        "_generation",
        "_level",
        "_output",
        "_receive_max",
        "_received_qos2",
        "_warned_receive_max",
    )

    def __init__(self, config: SessionConfig, output: Output) -> None:
        self._config = config
        self._output = output
        self._level = config.protocol_level
        # The application's acknowledgements not sent yet, in arrival order, and by packet id.
        self._acks: deque[Ack] = deque()
        self._ack_by_id: dict[int, Ack] = {}
        # QoS 2 ids the application has, not released by PUBREL yet (as the incoming store).
        self._received_qos2: set[int] = {key for key, _ in config.incoming_store.iterate()}
        self._generation = 0  # the broker session's, in every Ack
        # Per-connection values, set by connection_made().
        self._aliases: dict[int, str] = {}
        self._alias_max = 0
        self._receive_max = 65_535
        self._warned_receive_max = False

    @property
    def unacknowledged(self) -> int:
        """Messages the application has not acknowledged yet."""
        return len(self._ack_by_id)

    @property
    def received_qos2(self) -> AbstractSet[int]:
        """QoS 2 packet ids the application has and PUBREL has not released yet (live)."""
        return self._received_qos2

    def connection_made(self, level: int, properties: Properties) -> None:
        """A new connection at protocol ``level`` with our CONNECT ``properties`` (MQTT 5):
        aliases start empty, and our Topic Alias Maximum and Receive Maximum apply."""
        self._level = level
        self._aliases = {}
        self._alias_max = properties.topic_alias_maximum or 0
        self._receive_max = properties.receive_maximum or 65_535
        self._warned_receive_max = False

    def restart(self) -> None:
        """A new session on the broker [MQTT-3.2.2-5]: the old session's incoming state is
        gone, acknowledged, PUBREC'd or not; the application's pending acks are void."""
        self._generation += 1
        self._acks.clear()
        self._ack_by_id.clear()
        incoming = self._config.incoming_store
        for packet_id, _ in list(incoming.iterate()):
            incoming.delete(packet_id)
        self._received_qos2.clear()

    def receive(self, packet: Publish, now: float) -> None:
        """A PUBLISH arrived: a :class:`MessageReceived` event, unless it is a QoS 2 message
        the application has already (answered again) or is still handling.

        Raises:
            ProtocolError: a Topic Alias we did not allow or that was never set.
        """
        if self._level == MQTT_5:
            packet = self._resolve_alias(packet)
        qos = packet.qos
        if not qos:
            self._output.events.append(MessageReceived(packet, None))
            return
        packet_id: int = packet.packet_id  # type: ignore[assignment]
        if qos == 2 and packet_id in self._received_qos2:
            # Already delivered; the broker did not get our PUBREC [MQTT-4.3.3-10]: answer again.
            self._output.write(
                codec.encode_pubrec(packet_id),
                now,
                PubRec(packet_id) if self._config.trace_packets else None,
            )
            return
        if packet_id in self._ack_by_id:
            # The application has it and has not finished; the acknowledgement will follow.
            return
        if self._level == MQTT_5 and not self._warned_receive_max:
            limit = self._receive_max
            if len(self._ack_by_id) + len(self._received_qos2) >= limit:
                # [MQTT-3.3.4-9] forbids this, and section 4.13 says the client SHOULD then
                # close with 0x93. Tolerated instead (and logged once per connection): Mosquitto
                # 2.0 exceeds the client's Receive Maximum once acknowledgements flow, and
                # closing would turn a broker's bookkeeping slip into a reconnect loop.
                self._warned_receive_max = True
                self._output.log.warning(
                    "the broker exceeded our Receive Maximum of %d (tolerated; the messages "
                    "are delivered)",
                    limit,
                )
        ack = Ack(packet_id, qos, self._generation)
        self._acks.append(ack)
        self._ack_by_id[packet_id] = ack
        self._output.events.append(MessageReceived(packet, ack))

    def _resolve_alias(self, packet: Publish) -> Publish:
        alias = packet.properties.topic_alias
        if alias is None:
            return packet
        if alias > self._alias_max:
            # [MQTT-3.3.2-11] (the server's duty; -9 is ours)
            raise ProtocolError(
                f"topic alias {alias} exceeds our Topic Alias Maximum {self._alias_max}",
                ReasonCode.TOPIC_ALIAS_INVALID,
            )
        if packet.topic:
            self._aliases[alias] = packet.topic
            return packet
        topic = self._aliases.get(alias)
        if topic is None:
            raise ProtocolError(
                f"topic alias {alias} used before it was set", ReasonCode.TOPIC_ALIAS_INVALID
            )
        return Publish(
            topic,
            packet.payload,
            packet.qos,
            packet.retain,
            packet.dup,
            packet.packet_id,
            packet.properties,
        )

    def acknowledge(self, ack: Ack, now: float) -> None:
        """The application has the message of ``ack`` (see :meth:`ClientSession.acknowledge`)."""
        if ack.done or ack.generation != self._generation:
            return
        ack.done = True
        if ack.qos == 2 and ack.reason_code < 0x80:
            # Recorded now, not when its PUBREC's turn comes: the application has it, and a
            # restart before then must not deliver it again [MQTT-4.3.3-10].
            try:
                self._config.incoming_store.put(ack.packet_id, b"")
            except Exception:
                self._output.log.exception(
                    "incoming store failed to record packet id %d", ack.packet_id
                )
        acks = self._acks
        output = self._output
        while acks and acks[0].done:
            done = acks.popleft()
            packet_id = done.packet_id
            del self._ack_by_id[packet_id]
            reason = done.reason_code
            if done.qos == 2:
                if reason < 0x80:  # a refused message is not received: no PUBREL follows
                    self._received_qos2.add(packet_id)
                if output.connected:
                    if reason:
                        rec = PubRec(packet_id, reason)
                        output.data.append(codec.encode_packet(rec, self._level))
                    else:
                        output.data.append(codec.encode_pubrec(packet_id))
                    output.last_sent = now
                    if self._config.trace_packets:
                        output.events.append(PacketSent(PubRec(packet_id, reason)))
            elif output.connected:
                if reason:
                    output.data.append(codec.encode_packet(PubAck(packet_id, reason), self._level))
                else:
                    output.data.append(codec.encode_puback(packet_id))
                output.last_sent = now
                if self._config.trace_packets:
                    output.events.append(PacketSent(PubAck(packet_id, reason)))

    def pubrel(self, packet_id: int, now: float) -> None:
        """PUBREL arrived: the QoS 2 message is released; answer with PUBCOMP."""
        reason = 0
        if packet_id in self._received_qos2:
            self._received_qos2.discard(packet_id)
            try:
                self._config.incoming_store.delete(packet_id)
            except Exception:
                self._output.log.exception(
                    "incoming store failed to delete packet id %d", packet_id
                )
        elif self._level == MQTT_5:
            reason = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
        if not reason:
            self._output.write(
                codec.encode_pubcomp(packet_id),
                now,
                PubComp(packet_id) if self._config.trace_packets else None,
            )
        else:
            comp = PubComp(packet_id, reason)
            self._output.write(codec.encode_packet(comp, self._level), now, comp)
