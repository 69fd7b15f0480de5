"""Tests of the scripted fake broker and PacketSocket, with raw sockets as the client."""

from __future__ import annotations

import socket
import threading

import pytest

from mqttkit.protocol.codec import decode, encode_packet
from mqttkit.protocol.packets import (
    MQTT_3_1_1,
    MQTT_5,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    Publish,
)
from tests.support.fake_broker import (
    FakeBroker,
    FakeConnection,
    PacketSocket,
    connect_client,
    unresponsive_listener,
)


def raw_client(broker: FakeBroker) -> socket.socket:
    return socket.create_connection((broker.host, broker.port), timeout=5)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    for _ in range(size):
        if len(data) == size:
            break
        chunk = sock.recv(size - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


def read_packet(sock: socket.socket, level: int = MQTT_3_1_1) -> object:
    """Read one small packet (< 128 bytes) with plain recv: the fake seen from the outside."""
    head = recv_exactly(sock, 2)
    assert head[1] < 128
    return decode(head + recv_exactly(sock, head[1]), level)


def test_listens_on_loopback_free_port() -> None:
    with FakeBroker() as broker:
        assert broker.host == "127.0.0.1"
        assert broker.port not in (0, 1883)
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"


def test_handshake_reads_connect_and_answers_connack() -> None:
    with FakeBroker() as broker, raw_client(broker) as client:
        client.sendall(encode_packet(Connect("me", keepalive=7)))
        conn = broker.accept()
        connect = conn.handshake(session_present=True)
        assert connect == Connect("me", keepalive=7)
        assert read_packet(client) == ConnAck(session_present=True)


def test_handshake_answers_at_the_clients_protocol_level() -> None:
    with FakeBroker() as broker, raw_client(broker) as client:
        client.sendall(encode_packet(Connect("five", protocol_level=MQTT_5), MQTT_5))
        conn = broker.accept()
        props = Properties(receive_maximum=3, topic_alias_maximum=0)
        assert conn.handshake(properties=props).protocol_level == MQTT_5
        assert conn.protocol_level == MQTT_5
        assert read_packet(client, MQTT_5) == ConnAck(properties=props)
        # Later packets are encoded and decoded at level 5 too.
        client.sendall(encode_packet(PubAck(1, 0x10), MQTT_5))
        assert conn.expect(PubAck) == PubAck(1, 0x10)


def test_refusing_connack_code() -> None:
    with FakeBroker() as broker, raw_client(broker) as client:
        client.sendall(encode_packet(Connect("x")))
        broker.accept().handshake(reason_code=5)
        assert read_packet(client) == ConnAck(reason_code=5)


def test_arbitrary_first_packet_instead_of_connack() -> None:
    with FakeBroker() as broker, raw_client(broker) as client:
        client.sendall(encode_packet(Connect("x")))
        conn = broker.accept()
        conn.expect(Connect)
        conn.send(Publish("not/connack", b"!", qos=1, packet_id=9))
        conn.send_raw(b"\x20")  # then half a CONNACK
        assert read_packet(client) == Publish("not/connack", b"!", qos=1, packet_id=9)


def test_packets_split_across_writes_are_reassembled() -> None:
    data = encode_packet(Publish("a/b", b"x" * 1000, qos=1, packet_id=3))
    with FakeBroker() as broker, raw_client(broker) as client:
        conn = broker.accept()
        client.sendall(data[:1])
        client.sendall(data[1:500])
        client.sendall(data[500:] + encode_packet(PingReq()))
        assert conn.expect(Publish).payload == b"x" * 1000
        assert conn.expect(PingReq) == PingReq()
        assert conn.received == [Publish("a/b", b"x" * 1000, qos=1, packet_id=3), PingReq()]


def test_recv_frame_returns_raw_bytes() -> None:
    with FakeBroker() as broker, raw_client(broker) as client:
        conn = broker.accept()
        client.sendall(b"\xc0\x00\xe0\x00")
        assert conn.recv_frame() == b"\xc0\x00"
        assert conn.recv_frame() == b"\xe0\x00"


def test_timeout_is_an_assertion_error() -> None:
    with FakeBroker() as broker, raw_client(broker):
        conn = broker.accept()
        with pytest.raises(AssertionError, match="no packet from client"):
            conn.recv_packet(timeout=0.05)


def test_eof_is_an_assertion_error() -> None:
    with FakeBroker() as broker:
        raw_client(broker).close()
        conn = broker.accept()
        with pytest.raises(AssertionError, match="closed the connection"):
            conn.recv_packet()


def test_unexpected_packet_type_is_an_assertion_error() -> None:
    with FakeBroker() as broker, raw_client(broker) as client:
        conn = broker.accept()
        client.sendall(encode_packet(PingReq()))
        with pytest.raises(AssertionError, match=r"expected Connect .*PingReq"):
            conn.expect(Connect)


def test_malformed_packet_is_an_assertion_error() -> None:
    with FakeBroker() as broker, raw_client(broker) as client:
        conn = broker.accept()
        client.sendall(b"\x62\x02\x00\x00")  # PUBREL with packet id 0
        with pytest.raises(AssertionError, match=r"malformed packet .* 62020000"):
            conn.recv_packet()


def test_accept_timeout() -> None:
    with FakeBroker() as broker, pytest.raises(AssertionError, match="no client connected"):
        broker.accept(timeout=0.05)


def test_closed_sees_the_client_leave() -> None:
    with FakeBroker() as broker, raw_client(broker) as client:
        conn = broker.accept()
        assert not conn.closed(timeout=0.05)
        client.sendall(encode_packet(Disconnect()))
        client.close()
        assert conn.closed()
        # What came before the EOF is still there.
        assert conn.expect(Disconnect) == Disconnect()


def test_close_sends_fin_and_abort_sends_rst() -> None:
    with FakeBroker() as broker, raw_client(broker) as graceful, raw_client(broker) as reset:
        broker.accept().close()
        assert graceful.recv(10) == b""
        broker.accept().abort()
        with pytest.raises(ConnectionResetError):
            reset.recv(10)


def test_handler_runs_per_connection_in_threads() -> None:
    def serve(conn: FakeConnection) -> None:
        conn.handshake()
        conn.expect(PingReq)
        conn.send(PingResp())

    with FakeBroker(serve) as broker:
        for _ in range(3):
            with connect_client(broker.host, broker.port) as client:
                assert client.mqtt_connect("c").reason_code == 0
                client.send(PingReq())
                assert client.expect(PingResp) == PingResp()
        broker.wait_connections(3)
        broker.wait_handlers()
        assert len(broker.connections) == 3
        with pytest.raises(AssertionError, match="expected 4 connections"):
            broker.wait_connections(4, timeout=0.05)


def test_handler_failure_fails_the_test_at_close() -> None:
    def serve(conn: FakeConnection) -> None:
        conn.expect(PingReq)

    broker = FakeBroker(serve)
    with connect_client(broker.host, broker.port) as client:
        client.send(encode_packet(Connect("x")))
        broker.wait_connections(1)
        with pytest.raises(AssertionError, match=r"expected PingReq .*Connect"):
            broker.wait_handlers()
        with pytest.raises(AssertionError, match=r"expected PingReq .*Connect"):
            broker.close()


def test_handler_still_waiting_at_close_is_not_an_error() -> None:
    started = threading.Event()

    def serve(conn: FakeConnection) -> None:
        started.set()
        conn.recv_packet(timeout=30)

    broker = FakeBroker(serve)
    with raw_client(broker):
        assert started.wait(5)
        with pytest.raises(AssertionError, match="still running"):
            broker.wait_handlers(timeout=0.05)
        broker.close()
    assert broker.errors == []


def test_silent_broker_accepts_and_never_answers() -> None:
    with FakeBroker(silent=True) as broker:
        with connect_client(broker.host, broker.port) as client:
            client.send(Connect("hello"))
            client.expect_silence(0.2)
            conn = broker.accept()
            assert conn.expect(Connect).client_id == "hello"
        assert conn.closed()
    with pytest.raises(ValueError, match="silent"):
        FakeBroker(lambda conn: None, silent=True)


def test_packet_socket_as_a_client() -> None:
    with FakeBroker(lambda conn: conn.handshake(reason_code=4)) as broker:
        sock = socket.create_connection((broker.host, broker.port), timeout=5)
        with PacketSocket(sock, name="fake") as client:
            ack = client.mqtt_connect("me", username="u", password=b"p")
            assert ack == ConnAck(reason_code=4)


def test_unresponsive_listener_never_completes_a_connection() -> None:
    with unresponsive_listener() as (host, port):
        assert host == "127.0.0.1"
        with pytest.raises(TimeoutError):
            socket.create_connection((host, port), timeout=0.3).close()
