"""ClientSession against a model broker, driven by Hypothesis: random publishes, subscribes,
acknowledgements, pauses and reconnects (session kept or lost), then the broker acknowledges
everything. Whatever the script:

* a packet identifier is never reused while the broker still holds it [MQTT-2.2.1-3];
* DUP is set exactly on resends to a broker that kept the session [MQTT-3.3.1-1];
* every operation completes exactly once, nothing is lost, and the outgoing store ends empty;
* at every step the outgoing store holds exactly the unfinished QoS 1/2 messages.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mqttkit.protocol.packets import (
    ConnAck,
    Packet,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from mqttkit.protocol.session import PublishCompleted, SubscribeCompleted, UnsubscribeCompleted

from .session_helpers import Conversation, RecordingStore

OP = st.one_of(
    st.tuples(st.just("publish"), st.integers(0, 2)),
    st.tuples(st.just("subscribe"), st.just(0)),
    st.tuples(st.just("unsubscribe"), st.just(0)),
    st.tuples(st.just("ack"), st.integers(0, 1_000)),
    st.tuples(st.just("reconnect"), st.integers(0, 1)),
    st.tuples(st.just("restart"), st.integers(0, 3)),
    st.tuples(st.just("pause"), st.just(0)),
    st.tuples(st.just("resume"), st.just(0)),
)


class ModelBroker:
    """What the broker holds for the client's session: packet id -> what it owes next."""

    def __init__(self, c: Conversation) -> None:
        self.c = c
        self.owes: dict[int, str] = {}  # "puback", "pubrec", "wait-pubrel", "pubcomp", ...
        self.filters: dict[int, int] = {}  # SUBSCRIBE / UNSUBSCRIBE id -> number of filters
        self.payloads: dict[int, bytes] = {}  # PUBLISH id -> payload
        #: How many times the broker took ownership of each message (PUBACK / PUBREC sent).
        self.owned: Counter[bytes] = Counter()
        self.connected = False
        self.session_kept = False

    def receive(self) -> None:
        """Take what the client wrote; check identifiers and DUP."""
        for packet in self.c.sent():
            if not self.connected:
                continue  # CONNECT
            self.on_packet(packet)

    def on_packet(self, packet: Packet) -> None:
        owes = self.owes
        if isinstance(packet, Publish):
            if not packet.qos:
                return
            assert packet.packet_id is not None
            if packet.dup:
                # A resend: only to a broker that kept the session. (The id may be new to us:
                # the first copy may have died with the process before it was written.)
                assert self.session_kept, "DUP to a broker that has no session"
            else:
                assert packet.packet_id not in owes, f"id {packet.packet_id} reused in flight"
            if owes.get(packet.packet_id) == "wait-pubrel":
                # QoS 2 we already own: answer PUBREC again, it is the same message.
                assert self.payloads[packet.packet_id] == packet.payload
                owes[packet.packet_id] = "pubrec-again"
            elif owes.get(packet.packet_id) != "pubcomp":
                owes[packet.packet_id] = "puback" if packet.qos == 1 else "pubrec"
                self.payloads[packet.packet_id] = packet.payload
        elif isinstance(packet, PubRel):
            assert owes.get(packet.packet_id) in ("wait-pubrel", "pubcomp"), packet
            owes[packet.packet_id] = "pubcomp"
        elif isinstance(packet, Subscribe | Unsubscribe):
            kind = "suback" if isinstance(packet, Subscribe) else "unsuback"
            previous = owes.get(packet.packet_id)
            assert previous in (None, kind), f"id {packet.packet_id} reused in flight"
            owes[packet.packet_id] = kind
            self.filters[packet.packet_id] = len(
                packet.subscriptions if isinstance(packet, Subscribe) else packet.topic_filters
            )
        else:  # pragma: no cover - the session sends nothing else here
            raise AssertionError(packet)

    def ack(self, index: int) -> None:
        actionable = [(i, s) for i, s in self.owes.items() if s != "wait-pubrel"]
        if not actionable or not self.connected:
            return
        packet_id, owed = actionable[index % len(actionable)]
        answer: Packet
        if owed == "puback":
            answer = PubAck(packet_id)
            del self.owes[packet_id]
            self.owned[self.payloads[packet_id]] += 1
        elif owed in ("pubrec", "pubrec-again"):
            answer = PubRec(packet_id)
            self.owes[packet_id] = "wait-pubrel"
            if owed == "pubrec":
                self.owned[self.payloads[packet_id]] += 1
        elif owed == "pubcomp":
            answer = PubComp(packet_id)
            del self.owes[packet_id]
        elif owed == "suback":
            answer = SubAck(packet_id, (1,) * self.filters[packet_id])
            del self.owes[packet_id]
        else:
            answer = UnsubAck(packet_id, (0,) * self.filters[packet_id] if self.c.v5 else ())
            del self.owes[packet_id]
        self.c.send(answer)
        self.receive()

    def reconnect(self, keep_session: bool, new_client: Conversation | None = None) -> None:
        """The connection ends (the client process too, if ``new_client`` replaces it), some
        time after the last packet: a network failure, not a server that closes the connection
        right after a PUBLISH it refuses (which would fail that message after three times)."""
        if new_client is None:
            self.receive()
            self.c.advance(10.0)
            self.c.lose()
        else:
            self.c = new_client
        self.connected = False
        if not keep_session:
            self.owes.clear()
        # SUBACK / UNSUBACK are not session state: a broker answers on the connection or never.
        self.owes = {i: s for i, s in self.owes.items() if s not in ("suback", "unsuback")}
        self.c.connect()
        self.connected = True
        self.session_kept = keep_session
        self.c.send(ConnAck(keep_session, 0))
        self.receive()


@settings(max_examples=120, deadline=None)
@given(level=st.sampled_from([4, 5]), ops=st.lists(OP, max_size=40), window=st.integers(1, 4))
def test_session_against_a_model_broker(
    level: int, ops: list[tuple[str, int]], window: int
) -> None:
    store = RecordingStore("out")

    def client() -> Conversation:
        return Conversation(level, clean_start=False, max_inflight=window, outgoing_store=store)

    c = client()
    broker = ModelBroker(c)
    c.connect()
    broker.connected = True
    c.send(ConnAck(False, 0))
    tokens: dict[Any, int] = {}  # publish token -> QoS (subscribe: 0)
    done: Counter[Any] = Counter()
    orphans: set[Any] = set()  # operations whose process died: no completion to wait for

    def collect() -> None:
        for event in c.events():
            if isinstance(event, PublishCompleted | SubscribeCompleted | UnsubscribeCompleted):
                assert event.error is None, event
                if event.token is not None:
                    done[event.token] += 1
                    assert done[event.token] == 1, f"{event.token} completed twice"

    for n, (op, arg) in enumerate(ops):
        if op == "publish":
            tokens[n] = arg
            c.publish("t", str(n).encode(), arg, token=n)
        elif op == "subscribe":
            tokens[n] = 0
            c.subscribe(f"s/{n}", token=n)
        elif op == "unsubscribe":
            tokens[n] = 0
            c.unsubscribe(f"s/{n}", token=n)
        elif op == "ack":
            broker.ack(arg)
        elif op == "reconnect":
            broker.reconnect(bool(arg))
        elif op == "restart":
            # The process dies; what it had not written yet is gone (arg 0, 1) or was written.
            if arg >= 2:
                broker.receive()
            orphans |= {t for t in tokens if not done[t]}
            c = client()
            broker.reconnect(bool(arg % 2), new_client=c)
        elif op == "pause":
            c.session.pause_writing()
        else:
            c.session.resume_writing(c.now)
        broker.receive()
        collect()
        if not orphans:  # (after a restart, the restored flows have no token to follow)
            # The store holds exactly the unfinished QoS 1/2 messages.
            unfinished = sum(1 for t, qos in tokens.items() if qos and not done[t])
            assert len(store.keys()) == unfinished

    # The end of the story: the link is good and the broker answers everything.
    c.session.resume_writing(c.now)
    broker.receive()
    for _ in range(10_000):
        if not broker.owes:
            break
        broker.ack(0)
        collect()
    collect()
    assert broker.owes == {}
    assert c.session.pending == 0
    assert {t for t in tokens if done[t] != 1 and t not in orphans} == set(), "not completed"
    assert store.keys() == []
    # Nothing lost, QoS 2 never twice, the crashed process's messages included.
    for token, qos in tokens.items():
        owned = broker.owned[str(token).encode()]
        if qos == 1:
            assert owned >= 1, f"QoS 1 message {token} lost"
        elif qos == 2:
            assert owned == 1, f"QoS 2 message {token} owned {owned} times"


# -- the incoming direction ----------------------------------------------------------------------

IN_OP = st.one_of(
    st.tuples(st.just("publish"), st.integers(0, 2)),
    st.tuples(st.just("app-ack"), st.integers(0, 1_000)),
    st.tuples(st.just("release"), st.integers(0, 1_000)),
    st.tuples(st.just("reconnect"), st.integers(0, 1)),
    st.tuples(st.just("restart"), st.integers(0, 1)),
)


class ModelPublisher:
    """A broker that publishes to the client and keeps its side of the QoS 1/2 flows."""

    def __init__(self, c: Conversation) -> None:
        self.c = c
        self.next_id = 0
        self.flows: dict[int, tuple[bytes, int, str]] = {}  # id -> payload, qos, state
        self.owned_by_client: Counter[bytes] = Counter()  # PUBACK / PUBREC received
        self.app_has: set[bytes] = set()  # what the application acknowledged
        # PUBLISH identifiers in the order this connection carried them, and the position of the
        # last one acknowledged: PUBACK / PUBREC go in arrival order [MQTT-4.6.0-2, -3].
        self.arrivals: list[int] = []
        self.acked_upto = -1
        self.check_order = True

    def publish(self, payload: bytes, qos: int) -> None:
        if not qos:
            self.c.send(Publish("t", payload))
            return
        for _ in range(65_535):
            self.next_id = self.next_id % 65_535 + 1
            if self.next_id not in self.flows:
                break
        self.flows[self.next_id] = (payload, qos, "sent")
        self.arrivals.append(self.next_id)
        self.c.send(Publish("t", payload, qos, packet_id=self.next_id))
        self.receive()

    def receive(self) -> None:
        for packet in self.c.sent():
            if isinstance(packet, PubAck | PubRec):
                payload, qos, state = self.flows[packet.packet_id]
                # Nothing is acknowledged to the broker that the application did not receive.
                assert payload in self.app_has, f"{packet} before the application had it"
                assert qos == (1 if isinstance(packet, PubAck) else 2), packet
                if state == "sent" and self.check_order:
                    position = len(self.arrivals) - 1 - self.arrivals[::-1].index(packet.packet_id)
                    assert position > self.acked_upto, f"{packet} out of arrival order"
                    self.acked_upto = position
                if isinstance(packet, PubAck):
                    del self.flows[packet.packet_id]
                    self.owned_by_client[payload] += 1
                elif state == "sent":
                    self.flows[packet.packet_id] = (payload, qos, "received")
                    self.owned_by_client[payload] += 1
            elif isinstance(packet, PubComp):
                flow = self.flows.get(packet.packet_id)
                if flow is not None and flow[2] == "released":
                    del self.flows[packet.packet_id]
            else:  # pragma: no cover - the session sends nothing else here
                raise AssertionError(packet)

    def release(self, index: int) -> None:
        received = [i for i, (_, _, state) in self.flows.items() if state == "received"]
        if received:
            packet_id = received[index % len(received)]
            payload, qos, _ = self.flows[packet_id]
            self.flows[packet_id] = (payload, qos, "released")
            self.c.send(PubRel(packet_id))
            self.receive()

    def reconnect(self, keep_session: bool, new_client: Conversation | None = None) -> None:
        if new_client is None:
            self.receive()
            self.c.lose()
        else:
            self.c = new_client
        if not keep_session:
            self.flows.clear()
        self.arrivals, self.acked_upto = [], -1
        # After a crash, an id the dead process acknowledged out of order gets its PUBREC at
        # once on the DUP, possibly ahead of an earlier message's PUBACK: not checked there.
        self.check_order = new_client is None
        self.c.connect()
        self.c.send(ConnAck(keep_session, 0))
        self.receive()
        # [MQTT-4.4.0-1]: resend unacknowledged PUBLISH (DUP) and PUBREL, same identifiers.
        for packet_id, (payload, qos, state) in list(self.flows.items()):
            if state == "sent":
                self.arrivals.append(packet_id)
                self.c.send(Publish("t", payload, qos, False, True, packet_id))
            else:
                self.flows[packet_id] = (payload, qos, "released")
                self.c.send(PubRel(packet_id))
            self.receive()


@settings(max_examples=120, deadline=None)
@given(level=st.sampled_from([4, 5]), ops=st.lists(IN_OP, max_size=40))
def test_incoming_against_a_model_broker(level: int, ops: list[tuple[str, int]]) -> None:
    store = RecordingStore("in")

    def client() -> Conversation:
        return Conversation(level, clean_start=False, incoming_store=store)

    c = client()
    broker = ModelPublisher(c)
    c.connect()
    c.send(ConnAck(False, 0))
    delivered: Counter[bytes] = Counter()  # by this process
    waiting: list[Any] = []  # MessageReceived not yet acknowledged by the application
    qos_of: dict[bytes, int] = {}

    def collect() -> None:
        for event in c.events():
            message = getattr(event, "message", None)
            if message is not None:
                delivered[message.payload] += 1
                if qos_of[message.payload] == 2:
                    # Exactly once: never twice to one process, never again once acknowledged
                    # (a process that died before acknowledging never had it).
                    assert delivered[message.payload] == 1, f"{message} delivered twice"
                    assert message.payload not in broker.app_has, f"{message} again"
                if event.ack is not None:  # type: ignore[attr-defined]
                    waiting.append(event)

    def app_ack(index: int) -> None:
        event = waiting.pop(index % len(waiting))
        broker.app_has.add(event.message.payload)
        c.ack(event)
        broker.receive()

    for n, (op, arg) in enumerate(ops):
        if op == "publish":
            payload = str(n).encode()
            qos_of[payload] = arg
            broker.publish(payload, arg)
        elif op == "app-ack" and waiting:
            app_ack(arg)
        elif op == "release":
            broker.release(arg)
        elif op == "reconnect":
            broker.reconnect(bool(arg))
        elif op == "restart":
            waiting.clear()  # the application died with the process
            delivered.clear()
            c = client()
            broker.reconnect(bool(arg), new_client=c)
        collect()

    # The end: a good link, an application that takes everything, a broker that finishes.
    broker.reconnect(True)
    for _ in range(1_000):
        collect()
        if waiting:
            app_ack(0)
        elif any(state == "received" for _, _, state in broker.flows.values()):
            broker.release(0)
        else:
            break
    collect()
    assert broker.flows == {}
    for payload in qos_of:
        if broker.owned_by_client[payload]:
            # The client took it: the application has it.
            assert payload in broker.app_has
    assert store.keys() == []
