"""Tests of the fault-injecting proxy, against Mosquitto and the fake broker, with raw clients."""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Iterator

import pytest

from mqttkit.protocol.codec import encode_packet
from mqttkit.protocol.packets import (
    MQTT_5,
    ConnAck,
    Connect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    Will,
)
from mqttkit.testing import MosquittoBroker
from tests.support.fake_broker import FakeBroker, PacketSocket, connect_client
from tests.support.proxy import FaultProxy


@pytest.fixture
def proxy(mosquitto: MosquittoBroker) -> Iterator[FaultProxy]:
    with FaultProxy(mosquitto.host, mosquitto.port) as fault_proxy:
        yield fault_proxy


def via(proxy: FaultProxy, client_id: str, clean_start: bool = True) -> PacketSocket:
    """A raw client connected through the proxy, CONNACK checked."""
    client = connect_client(proxy.host, proxy.port)
    ack = client.mqtt_connect(client_id, clean_start=clean_start)
    assert ack.reason_code == 0
    return client


def subscriber(broker: MosquittoBroker, topic: str, qos: int = 2) -> PacketSocket:
    """A raw client connected straight to the broker and subscribed to ``topic``."""
    client = connect_client(broker.host, broker.port)
    assert client.mqtt_connect("observer").reason_code == 0
    client.send(Subscribe(1, (Subscription(topic, qos),)))
    assert client.expect(SubAck).reason_codes == (qos,)
    return client


def receive_until(client: PacketSocket, last_topic: str) -> list[Publish]:
    """Receive PUBLISHes up to one on ``last_topic``, acknowledging QoS 1 and 2 as a client."""
    received: list[Publish] = []
    for _ in range(100):
        packet = client.recv_packet()
        if isinstance(packet, PubRel):
            client.send(PubComp(packet.packet_id))
            continue
        assert isinstance(packet, Publish), packet
        received.append(packet)
        if packet.qos == 1:
            client.send(PubAck(packet.packet_id or 0))
        elif packet.qos == 2:
            client.send(PubRec(packet.packet_id or 0))
        if packet.topic == last_topic:
            return received
    raise AssertionError(f"no PUBLISH on {last_topic}")


def assert_refused(host: str, port: int) -> None:
    """The connection is reset or closed at once (connect itself may see the RST)."""
    try:
        client = connect_client(host, port)
    except ConnectionResetError:
        return
    with client:
        assert client.closed()


def types(packets: list[Packet]) -> list[str]:
    return [type(p).__name__ for p in packets]


def test_forwards_and_records_both_directions(
    proxy: FaultProxy, mosquitto: MosquittoBroker
) -> None:
    with via(proxy, "rec") as client:
        client.send(Subscribe(7, (Subscription("rec/#", 1),)))
        assert client.expect(SubAck) == SubAck(7, (1,))
        client.send(Publish("rec/a", b"payload", qos=1, packet_id=1, retain=True))
        # The broker's PUBACK and its delivery to us may come in either order.
        got = [client.recv_packet(), client.recv_packet()]
        assert {type(p) for p in got} == {PubAck, Publish}
        delivered = next(p for p in got if isinstance(p, Publish))
        client.send(PubAck(delivered.packet_id or 0))
        client.send(PingReq())
        client.expect(PingResp)
    conn = proxy.connections[0]
    assert conn.wait_closed()
    assert conn.close_reason == "client closed"
    assert types(conn.packets("c2s")) == ["Connect", "Subscribe", "Publish", "PubAck", "PingReq"]
    c2s = conn.records("c2s")
    assert [r.index for r in c2s] == [0, 1, 2, 3, 4]
    assert c2s[1].packet_type == PacketType.SUBSCRIBE
    assert c2s[1].flags == 0b0010
    assert c2s[1].first_byte == 0x82
    published = c2s[2]
    assert (published.qos, published.retain, published.dup) == (1, True, False)
    assert published.packet == Publish("rec/a", b"payload", qos=1, retain=True, packet_id=1)
    assert published.size == len(encode_packet(published.packet))
    assert all(r.forwarded and r.error is None and r.connection == 0 for r in c2s)
    s2c = conn.records("s2c")
    assert s2c[0].packet == ConnAck()
    assert {r.type_name for r in s2c} == {"CONNACK", "SUBACK", "PUBACK", "PUBLISH", "PINGRESP"}
    assert sorted(r.time for r in conn.records()) == [r.time for r in conn.records()]
    assert proxy.records("c2s", Publish) == [published]
    assert proxy.wait_for_packet("s2c", PacketType.PINGRESP).packet == PingResp()


def test_mqtt5_packets_are_decoded_at_the_level_of_connect(proxy: FaultProxy) -> None:
    with connect_client(proxy.host, proxy.port, protocol_level=MQTT_5) as client:
        ack = client.mqtt_connect("five")
        client.send(Publish("five/x", b"1", qos=1, packet_id=1))
        client.expect(PubAck)
    conn = proxy.connections[0]
    assert conn.protocol_level == MQTT_5
    assert conn.records("s2c")[0].packet == ack
    assert ack.properties.receive_maximum == 20
    # Mosquitto 2.0.11 answers a QoS 1 PUBLISH nobody subscribed to with reason 0x10.
    assert conn.packets("s2c")[1] == PubAck(1, 0x10)


def test_bytes_pass_unaltered_whatever_the_chunking() -> None:
    packets = [
        encode_packet(Connect("chunky")),
        encode_packet(Publish("big", bytes(range(256)) * 600, qos=1, packet_id=2)),
        encode_packet(PingReq()),
        encode_packet(Publish("small", b"", qos=0)),
    ]
    stream = b"".join(packets)
    rng = random.Random(1234)
    with FakeBroker() as broker, FaultProxy(broker.host, broker.port) as proxy:
        with socket.create_connection((proxy.host, proxy.port), timeout=5) as client:
            position = 0
            for _ in range(len(stream)):
                if position >= len(stream):
                    break
                step = rng.choice([1, 2, 3, 100, 5000, 70000])
                client.sendall(stream[position : position + step])
                position += step
            conn = broker.accept()
            assert [conn.recv_frame() for _ in packets] == packets
            conn.send_raw(stream[::-1][:0] + encode_packet(ConnAck()) + b"\x30")
            conn.send_raw(b"\x03\x00\x01x")
            assert client.recv(4) == encode_packet(ConnAck())
        assert [r.size for r in proxy.records("c2s")] == [len(p) for p in packets]


def test_unframeable_stream_is_forwarded_raw() -> None:
    junk = b"\x10\xff\xff\xff\xff\x7f" + bytes(range(256))
    with FakeBroker() as broker, FaultProxy(broker.host, broker.port) as proxy:
        with socket.create_connection((proxy.host, proxy.port), timeout=5) as client:
            client.sendall(encode_packet(PingReq()) + junk[:3])
            client.sendall(junk[3:])
            conn = broker.accept()
            expected = b"\xc0\x00" + junk
            received = b""
            for _ in range(100):
                if len(received) >= len(expected):
                    break
                received += conn.sock.recv(4096)
            assert received == expected
        records = proxy.records("c2s")
        assert records[0].packet == PingReq()
        assert records[1].error is not None
        assert "unframeable" in records[1].error


def test_large_transfers_and_backpressure(mosquitto: MosquittoBroker) -> None:
    payload = random.Random(7).randbytes(8 * 1024 * 1024)
    small = [Publish("bulk/s", i.to_bytes(4, "big")) for i in range(3000)]
    with FaultProxy(mosquitto.host, mosquitto.port, high_water=64 * 1024) as proxy:
        with via(proxy, "bulk") as client:
            client.send(Subscribe(1, (Subscription("bulk/#", 0),)))
            client.expect(SubAck)
            client.send(Publish("bulk/big", payload, qos=1, packet_id=1))
            # Pipeline thousands of small messages without reading: the proxy must not
            # deadlock while both directions are full.
            writer = threading.Thread(
                target=client.send_raw, args=(b"".join(encode_packet(p) for p in small),)
            )
            writer.start()
            big = None
            count = 0
            for _ in range(len(small) + 2):
                packet = client.recv_packet(timeout=30)
                if isinstance(packet, Publish) and packet.topic == "bulk/big":
                    big = packet
                elif isinstance(packet, Publish):
                    count += 1
                if big is not None and count == len(small):
                    break
            writer.join(30)
            assert big is not None
            assert big.payload == payload
            assert count == len(small)
    big_records = [r for r in proxy.records("s2c", Publish) if r.size > len(payload)]
    assert len(big_records) == 1


def test_many_connections_over_time(proxy: FaultProxy) -> None:
    for i in range(30):
        with via(proxy, f"seq{i}") as client:
            client.send(PingReq())
            client.expect(PingResp)
    clients = [via(proxy, f"par{i}") for i in range(20)]
    for client in clients:
        client.send(PingReq())
    for client in clients:
        client.expect(PingResp)
        client.close()
    proxy.wait_for_connections(50)
    assert len(proxy.connections) == 50
    assert all(c.wait_closed() for c in proxy.connections)
    assert proxy.active_connections == []


def test_cut_resets_both_sides(mosquitto: MosquittoBroker, proxy: FaultProxy) -> None:
    with subscriber(mosquitto, "will/#") as observer:
        client = connect_client(proxy.host, proxy.port)
        will = Will("will/cut", b"gone", qos=1)
        assert client.mqtt_connect("victim", will=will).reason_code == 0
        assert proxy.cut() == 1
        with pytest.raises(AssertionError, match="reset"):
            client.recv_packet()
        client.close()
        # The broker saw the connection die without DISCONNECT: it publishes the will.
        assert observer.expect(Publish).payload == b"gone"
    assert proxy.connections[0].close_reason == "cut"
    assert proxy.cut() == 0


def test_cut_with_fin(proxy: FaultProxy) -> None:
    with via(proxy, "fin") as client:
        proxy.cut(reset=False)
        assert client.closed()


def test_cut_after_count_and_packet_class(proxy: FaultProxy) -> None:
    rule = proxy.cut_after("c2s", PingReq, count=2)
    with via(proxy, "count") as client:
        client.send(PingReq())
        client.expect(PingResp)
        client.send(PingReq())
        # The second PINGREQ was forwarded, then the connection cut: no answer comes back.
        assert client.closed()
    record = rule.wait()
    assert record.packet == PingReq()
    assert record.forwarded
    assert rule.seen == 2
    assert proxy.connections[0].close_reason == "cut_after"
    # One-shot: the next connection lives.
    with via(proxy, "count2") as client:
        for _ in range(3):
            client.send(PingReq())
            client.expect(PingResp)


QOS2_STEPS = [
    ("c2s", PacketType.PUBLISH),
    ("s2c", PacketType.PUBREC),
    ("c2s", PacketType.PUBREL),
    ("s2c", PacketType.PUBCOMP),
]


@pytest.mark.parametrize("before", [False, True], ids=["after", "before"])
@pytest.mark.parametrize(("direction", "packet_type"), QOS2_STEPS, ids=str)
def test_cut_at_each_step_of_a_qos2_publish(
    mosquitto: MosquittoBroker,
    proxy: FaultProxy,
    direction: str,
    packet_type: PacketType,
    before: bool,
) -> None:
    observer = subscriber(mosquitto, "q2/#")
    rule = proxy.cut_after(direction, packet_type, before=before)  # type: ignore[arg-type]
    client = via(proxy, "q2pub", clean_start=False)
    got_pubrec = got_pubcomp = False
    client.send(Publish("q2/x", b"once", qos=2, packet_id=1))
    try:
        client.expect(PubRec)
        got_pubrec = True
        client.send(PubRel(1))
        client.expect(PubComp)
        got_pubcomp = True
    except (AssertionError, OSError):
        pass
    client.close()
    record = rule.wait()
    assert record.packet_type == packet_type
    assert record.forwarded is not before

    # The cut happened exactly there: the trigger is the last packet in its direction, and the
    # client saw the broker's answers up to it (included only when forwarded).
    first = proxy.connections[0]
    assert first.wait_closed()
    assert first.records(direction)[-1] == record  # type: ignore[arg-type]
    step = QOS2_STEPS.index((direction, packet_type)) + (0 if before else 1)
    assert got_pubrec is (step >= 2)
    assert got_pubcomp is (step >= 4)
    sent_by_client = [r.type_name for r in first.records("c2s")]
    assert sent_by_client[-1] in ("PUBLISH", "PUBREL")

    # Finish the flow on a new connection as the spec says; the message arrives exactly once.
    with via(proxy, "q2pub", clean_start=False) as again:
        if not got_pubrec:
            again.send(Publish("q2/x", b"once", qos=2, dup=True, packet_id=1))
            again.expect(PubRec)
        if not got_pubcomp:
            again.send(PubRel(1))
            again.expect(PubComp)
        again.send(Publish("q2/end", b"marker"))
    second = proxy.connections[1].records("c2s")
    if not got_pubrec:
        assert second[1].dup
        assert second[1].packet == Publish("q2/x", b"once", qos=2, dup=True, packet_id=1)
    # The broker sends in order: a duplicate would come before the marker.
    received = receive_until(observer, "q2/end")
    assert [(p.topic, p.payload) for p in received] == [("q2/x", b"once"), ("q2/end", b"marker")]
    observer.close()


def test_resent_publish_to_subscriber_carries_dup(
    mosquitto: MosquittoBroker, proxy: FaultProxy
) -> None:
    # Broker -> client QoS 1: cut before the client can acknowledge; the broker resends with DUP.
    with via(proxy, "dupsub", clean_start=False) as client:
        client.send(Subscribe(1, (Subscription("dup/#", 1),)))
        client.expect(SubAck)
    rule = proxy.cut_after("s2c", Publish)
    client = via(proxy, "dupsub", clean_start=False)
    with connect_client(mosquitto.host, mosquitto.port) as publisher:
        publisher.mqtt_connect("dup-publisher")
        publisher.send(Publish("dup/x", b"again", qos=1, packet_id=1))
        publisher.expect(PubAck)
    first = client.expect(Publish)
    assert not first.dup
    assert client.closed()
    client.close()
    assert rule.wait().packet == first
    with via(proxy, "dupsub", clean_start=False) as client:
        resent = client.expect(Publish)
        assert resent.dup
        assert (resent.payload, resent.packet_id) == (b"again", first.packet_id)
        client.send(PubAck(first.packet_id or 0))
    record = proxy.wait_for_packet("s2c", Publish, count=2)
    assert record.dup
    assert record.connection == 2


def test_blackhole_drops_data_without_closing(
    mosquitto: MosquittoBroker, proxy: FaultProxy
) -> None:
    with via(proxy, "hole") as client:
        client.send(Subscribe(1, (Subscription("hole/#", 0),)))
        client.expect(SubAck)
        proxy.blackhole()
        client.send(PingReq())
        proxy.wait_for_packet("c2s", PingReq)
        with connect_client(mosquitto.host, mosquitto.port) as publisher:
            publisher.mqtt_connect("hole-publisher")
            publisher.send(Publish("hole/x", b"lost"))
            publisher.send(PingReq())
            publisher.expect(PingResp)  # the broker has routed the message by now
        proxy.wait_for_packet("s2c", Publish)
        client.expect_silence(0.2)
        assert not client.closed(timeout=0.05)
        dropped = [r for r in proxy.records() if not r.forwarded]
        assert [r.type_name for r in dropped] == ["PINGREQ", "PUBLISH"]
        proxy.restore()
        client.send(PingReq())
        client.expect(PingResp)
        client.expect_silence(0.1)  # one answer: the first PINGREQ never reached the broker
    assert proxy.connections[0].wait_closed()


def test_blackhole_hides_the_clients_close_until_restore(proxy: FaultProxy) -> None:
    client = via(proxy, "hidden")
    proxy.blackhole()
    client.close()
    conn = proxy.connections[0]
    assert not conn.wait_closed(0.1)
    proxy.restore()
    assert conn.wait_closed()


def test_stall_then_resume_flushes_in_order(proxy: FaultProxy) -> None:
    with via(proxy, "stall") as client:
        proxy.stall()
        for _ in range(3):
            client.send(PingReq())
        client.expect_silence(0.2)
        proxy.resume()
        for _ in range(3):
            client.expect(PingResp)


def test_refuse_new_connections(proxy: FaultProxy) -> None:
    with via(proxy, "old") as existing:
        proxy.refuse(True)
        assert_refused(proxy.host, proxy.port)
        assert proxy.refused_count == 1
        existing.send(PingReq())
        existing.expect(PingResp)
        proxy.refuse(False)
        with via(proxy, "new") as fresh:
            fresh.send(PingReq())
            fresh.expect(PingResp)
    assert len(proxy.connections) == 2


def test_broker_down_resets_the_client(mosquitto: MosquittoBroker, proxy: FaultProxy) -> None:
    mosquitto.stop()
    assert_refused(proxy.host, proxy.port)
    conn = proxy.connections[0]
    assert conn.wait_closed()
    assert conn.close_reason is not None
    assert conn.close_reason.startswith("upstream connect failed")
    mosquitto.start()
    with via(proxy, "back") as client:
        client.send(PingReq())
        client.expect(PingResp)


def test_broker_restart_closes_proxied_connections(
    mosquitto: MosquittoBroker, proxy: FaultProxy
) -> None:
    with via(proxy, "restart") as client:
        mosquitto.restart()
        assert client.closed()
    assert proxy.connections[0].wait_closed()


def test_wait_for_packet_timeout_lists_what_was_seen(proxy: FaultProxy) -> None:
    with via(proxy, "timeout"):
        with pytest.raises(AssertionError, match=r"expected 1 PUBCOMP c2s .*CONNECT"):
            proxy.wait_for_packet("c2s", PubComp, timeout=0.05)


def test_rule_that_never_fires(proxy: FaultProxy) -> None:
    rule = proxy.cut_after("s2c", PubComp)
    with pytest.raises(AssertionError, match="did not fire"):
        rule.wait(0.05)
    with pytest.raises(ValueError, match="direction"):
        proxy.cut_after("up", PubComp)  # type: ignore[arg-type]


def test_raw_mode_forwards_without_records(mosquitto: MosquittoBroker) -> None:
    with FaultProxy(mosquitto.host, mosquitto.port, parse=False) as proxy:
        with via(proxy, "raw") as client:
            client.send(PingReq())
            client.expect(PingResp)
        assert proxy.records() == []
        with pytest.raises(ValueError, match="parse=True"):
            proxy.cut_after("c2s", Publish)


def test_target_can_be_switched_for_new_connections() -> None:
    with FakeBroker() as first, FakeBroker() as second:
        with FaultProxy(first.host, first.port) as proxy:
            with socket.create_connection((proxy.host, proxy.port), timeout=5):
                first.accept()
            proxy.target = (second.host, second.port)
            with socket.create_connection((proxy.host, proxy.port), timeout=5):
                second.accept()
