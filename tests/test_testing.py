"""Tests of mqttkit.testing: the throw-away Mosquitto broker, NATS server and their fixtures.

These talk to the brokers with raw sockets and the codec only, so that they hold whatever state
the client is in (one NATS test also runs the public client through the gateway). Facts about
Mosquitto 2.0.11 and nats-server 2.9's MQTT gateway the rest of the suite relies on are pinned
here.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from mqttkit import testing
from mqttkit.protocol.packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    ConnAck,
    Properties,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)
from mqttkit.testing import (
    MosquittoBroker,
    MosquittoError,
    MosquittoNotFoundError,
    NatsServer,
    NatsServerError,
    NatsServerNotFoundError,
    TLSFiles,
    plugin,
)
from tests.support.fake_broker import PacketSocket, connect_client
from tests.support.recorder import Recorder


def connack(
    host: str,
    port: int,
    level: int = MQTT_3_1_1,
    *,
    keepalive: int = 60,
    username: str | None = None,
    password: bytes | None = None,
) -> ConnAck:
    """Connect with a raw socket and return the broker's CONNACK."""
    with connect_client(host, port, protocol_level=level) as client:
        return client.mqtt_connect("t", keepalive=keepalive, username=username, password=password)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_broker_starts_on_a_free_loopback_port(mosquitto: MosquittoBroker) -> None:
    assert mosquitto.running
    assert mosquitto.host == "127.0.0.1"
    assert mosquitto.port != 1883
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    assert "running" in mosquitto.log_text()


@pytest.mark.parametrize("level", [MQTT_3_1, MQTT_3_1_1, MQTT_5])
def test_connect_connack_round_trip(mosquitto: MosquittoBroker, level: int) -> None:
    ack = connack(mosquitto.host, mosquitto.port, level)
    assert ack.reason_code == 0
    assert not ack.session_present


def test_mqtt5_connack_announces_max_inflight_as_receive_maximum(
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> None:
    # Mosquitto 2.0.11: Receive Maximum = max_inflight_messages (absent when 0, "no limit"),
    # Topic Alias Maximum 10; no Maximum QoS / Retain Available (all supported).
    broker = mosquitto_factory()
    default = connack(broker.host, broker.port, MQTT_5, keepalive=30)
    assert default.properties == Properties(receive_maximum=20, topic_alias_maximum=10)
    broker = mosquitto_factory(max_inflight_messages=0)
    unlimited = connack(broker.host, broker.port, MQTT_5, keepalive=30)
    assert unlimited.properties.receive_maximum is None


def test_mqtt5_keepalive_zero_gets_server_keep_alive(mosquitto: MosquittoBroker) -> None:
    # Mosquitto 2.0.11 answers keepalive 0 with Server Keep Alive 65535 (its max_keepalive).
    ack = connack(mosquitto.host, mosquitto.port, MQTT_5, keepalive=0)
    assert ack.properties.server_keep_alive == 65535


def test_restart_keeps_the_port(mosquitto: MosquittoBroker) -> None:
    port = mosquitto.port
    first_pid = mosquitto.pid
    mosquitto.restart()
    assert mosquitto.port == port
    assert mosquitto.pid != first_pid
    assert connack(mosquitto.host, mosquitto.port).reason_code == 0


def test_kill_then_start_again(mosquitto: MosquittoBroker) -> None:
    port = mosquitto.port
    mosquitto.kill()
    assert not mosquitto.running
    assert mosquitto.pid is None
    mosquitto.start()
    assert mosquitto.port == port
    assert connack(mosquitto.host, mosquitto.port).reason_code == 0


def subscribe_persistent(broker: MosquittoBroker, client_id: str) -> bool:
    """Connect with a kept session, subscribe at QoS 1; return the CONNACK's session_present."""
    with connect_client(broker.host, broker.port) as client:
        ack = client.mqtt_connect(client_id, clean_start=False)
        client.send(Subscribe(1, (Subscription("persist/#", 1),)))
        assert client.expect(SubAck).reason_codes == (1,)
        return ack.session_present


def test_persistence_keeps_sessions_across_restart(
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> None:
    broker = mosquitto_factory(persistence=True)
    assert not subscribe_persistent(broker, "keeper")
    broker.restart()
    assert subscribe_persistent(broker, "keeper")
    assert (broker.directory / "mosquitto.db").exists()


def test_without_persistence_restart_forgets_sessions(mosquitto: MosquittoBroker) -> None:
    assert not subscribe_persistent(mosquitto, "forgotten")
    mosquitto.restart()
    assert not subscribe_persistent(mosquitto, "forgotten")


def test_auth_accepts_the_right_password(mosquitto_auth: MosquittoBroker) -> None:
    ack = connack(mosquitto_auth.host, mosquitto_auth.port, username="alice", password=b"secret")
    assert ack.reason_code == 0


@pytest.mark.parametrize(
    ("level", "code"),
    # Mosquitto 2.0.11 answers a bad password with "not authorized" (5 / 0x87), not with
    # "bad user name or password" (4 / 0x86).
    [(MQTT_3_1, 5), (MQTT_3_1_1, 5), (MQTT_5, 0x87)],
)
@pytest.mark.parametrize(
    "credentials",
    [("alice", b"wrong"), ("mallory", b"secret"), (None, None)],
    ids=["wrong-password", "unknown-user", "anonymous"],
)
def test_auth_refuses_bad_credentials(
    mosquitto_auth: MosquittoBroker,
    level: int,
    code: int,
    credentials: tuple[str | None, bytes | None],
) -> None:
    username, password = credentials
    with connect_client(mosquitto_auth.host, mosquitto_auth.port, protocol_level=level) as client:
        ack = client.mqtt_connect("intruder", username=username, password=password)
        assert ack.reason_code == code
        assert client.closed()


def test_users_with_anonymous_allowed(
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> None:
    broker = mosquitto_factory(users={"bob": "pw", "carol": "pw2"}, allow_anonymous=True)
    assert connack(broker.host, broker.port).reason_code == 0
    assert connack(broker.host, broker.port, username="carol", password=b"pw2").reason_code == 0
    assert connack(broker.host, broker.port, username="bob", password=b"no").reason_code == 5


def test_stop_frees_the_port() -> None:
    broker = MosquittoBroker()
    try:
        broker.start()
        port = broker.port
        assert not port_is_free(port)
        broker.stop()
        assert not broker.running
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert port_is_free(port)
        assert "terminating" in broker.log_text()
    finally:
        broker.close()
    assert "terminating" in broker.log_text()


def test_context_manager_removes_its_directory() -> None:
    with MosquittoBroker() as broker:
        directory = broker.directory
        assert broker.config_path.exists()
        assert broker.running
    assert broker.pid is None  # stopped
    assert not directory.exists()


def test_port_taken_between_choice_and_bind_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        original = MosquittoBroker._choose_ports
        calls: list[int] = []

        def choose(self: MosquittoBroker) -> dict[str, int]:
            calls.append(1)
            return {"mqtt": taken} if len(calls) == 1 else original(self)

        monkeypatch.setattr(MosquittoBroker, "_choose_ports", choose)
        with MosquittoBroker() as broker:
            assert len(calls) == 2
            assert broker.port != taken
            assert connack(broker.host, broker.port).reason_code == 0


def test_startup_failure_reports_the_log() -> None:
    broker = MosquittoBroker(extra_config="no_such_option 1")
    with pytest.raises(MosquittoError, match="no_such_option") as excinfo:
        broker.start()
    broker.close()
    assert "exited with status" in str(excinfo.value)
    assert not broker.running


def fake_executable(directory: Path, script: str) -> str:
    path = directory / "fake-mosquitto"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


def test_build_without_websockets_is_a_clear_error(tmp_path: Path) -> None:
    script = 'echo "Error: Websockets support not available." >&2; exit 1'
    broker = MosquittoBroker(websockets=True, executable=fake_executable(tmp_path, script))
    with pytest.raises(MosquittoError, match="no WebSocket support"):
        broker.start()
    broker.close()


def test_broker_that_never_listens_times_out(tmp_path: Path) -> None:
    broker = MosquittoBroker(
        executable=fake_executable(tmp_path, "exec sleep 60"), startup_timeout=0.3
    )
    with pytest.raises(MosquittoError, match=r"did not accept connections within 0\.3 s"):
        broker.start()
    assert not broker.running
    broker.close()


def test_missing_binary_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testing.mosquitto, "_find_binary", lambda name: None)
    with pytest.raises(RuntimeError) as excinfo:
        testing.find_mosquitto()
    assert str(excinfo.value) == (
        "mosquitto not found: install it with `apt-get update && apt-get install -y mosquitto`"
    )
    assert isinstance(excinfo.value, MosquittoNotFoundError)
    with pytest.raises(MosquittoNotFoundError, match="apt-get install -y mosquitto"):
        MosquittoBroker(executable="/nonexistent/mosquitto").start()


def test_fixture_fails_never_skips_without_mosquitto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testing.mosquitto, "_find_binary", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y mosquitto"):
        plugin._start_or_fail(MosquittoBroker())
    assert not issubclass(pytest.fail.Exception, pytest.skip.Exception)


def test_tests_without_the_fixtures_are_not_marked(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("mosquitto") is None


def test_tests_using_the_fixtures_are_marked(
    mosquitto: MosquittoBroker, request: pytest.FixtureRequest
) -> None:
    assert request.node.get_closest_marker("mosquitto") is not None


def test_factory_brokers_are_independent(
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> None:
    first, second = mosquitto_factory(), mosquitto_factory()
    assert first.port != second.port
    assert first.directory != second.directory


def test_properties_of_missing_listeners_raise(mosquitto: MosquittoBroker) -> None:
    with pytest.raises(RuntimeError, match="no TLS listener"):
        _ = mosquitto.tls_port
    with pytest.raises(RuntimeError, match="no WebSocket listener"):
        _ = mosquitto.ws_port
    with pytest.raises(RuntimeError, match="not been started"):
        _ = MosquittoBroker().port


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, TLSFiles]:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    with (directory / "cert.pem").open("wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    files = TLSFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    return ca, files


def tls_client(
    ca: trustme.CA, port: int, client_cert: trustme.LeafCert | None = None
) -> PacketSocket:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if client_cert is not None:
        client_cert.configure_cert(context)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
    except BaseException:
        raw.close()
        raise
    return PacketSocket(tls, name="TLS broker")


def test_tls_listener(
    mosquitto_factory: Callable[..., MosquittoBroker],
    certificates: tuple[trustme.CA, TLSFiles],
) -> None:
    ca, files = certificates
    broker = mosquitto_factory(tls=files)
    assert broker.tls_url == f"mqtts://127.0.0.1:{broker.tls_port}"
    assert broker.tls_port != broker.port
    with tls_client(ca, broker.tls_port) as client:
        assert client.mqtt_connect("tls").reason_code == 0
        client.send(Publish("tls/ok", b"x"))
    # The plain listener still works next to it.
    assert connack(broker.host, broker.port).reason_code == 0


def test_tls_listener_serves_the_given_certificate(
    mosquitto_factory: Callable[..., MosquittoBroker],
    certificates: tuple[trustme.CA, TLSFiles],
) -> None:
    _, files = certificates
    broker = mosquitto_factory(tls=files)
    context = ssl.create_default_context()  # does not trust our CA
    with socket.create_connection(("127.0.0.1", broker.tls_port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            context.wrap_socket(raw, server_hostname="127.0.0.1").close()


def test_tls_listener_requiring_client_certificates(
    mosquitto_factory: Callable[..., MosquittoBroker],
    certificates: tuple[trustme.CA, TLSFiles],
) -> None:
    ca, files = certificates
    strict = TLSFiles(files.cafile, files.certfile, files.keyfile, require_certificate=True)
    broker = mosquitto_factory(tls=strict)
    with tls_client(ca, broker.tls_port, ca.issue_cert("client@example.org")) as client:
        assert client.mqtt_connect("with-cert").reason_code == 0
    # Without a certificate the handshake fails (TLS 1.3: on the first read).
    with pytest.raises((ssl.SSLError, AssertionError, ConnectionResetError)):
        with tls_client(ca, broker.tls_port) as client:
            client.mqtt_connect("without-cert")


def websocket_upgrade(port: int, *, tls_context: ssl.SSLContext | None = None) -> bytes:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock = raw if tls_context is None else tls_context.wrap_socket(raw, server_hostname="127.0.0.1")
    with sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
            ).encode()
        )
        response = b""
        for _ in range(100):
            chunk = sock.recv(4096)
            response += chunk
            if not chunk or b"\r\n\r\n" in response:
                break
        return response


def test_websocket_listener(mosquitto_factory: Callable[..., MosquittoBroker]) -> None:
    # Mosquitto 2.0.11 (Debian/Ubuntu build) has WebSocket support built in (libwebsockets).
    broker = mosquitto_factory(websockets=True)
    assert broker.ws_url == f"ws://127.0.0.1:{broker.ws_port}"
    response = websocket_upgrade(broker.ws_port)
    assert response.startswith(b"HTTP/1.1 101")
    assert b"Sec-WebSocket-Protocol: mqtt" in response


def test_secure_websocket_listener(
    mosquitto_factory: Callable[..., MosquittoBroker],
    certificates: tuple[trustme.CA, TLSFiles],
) -> None:
    ca, files = certificates
    broker = mosquitto_factory(websockets=True, tls=files)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    assert len({broker.port, broker.tls_port, broker.ws_port, broker.wss_port}) == 4
    assert websocket_upgrade(broker.wss_port, tls_context=context).startswith(b"HTTP/1.1 101")


def test_unix_socket_listener(mosquitto_factory: Callable[..., MosquittoBroker]) -> None:
    broker = mosquitto_factory(unix_socket=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(5)
        raw.connect(broker.unix_path)
        client = PacketSocket(raw, name="unix broker")
        assert client.mqtt_connect("unix").reason_code == 0


def test_log_types_and_extra_config(mosquitto_factory: Callable[..., MosquittoBroker]) -> None:
    broker = mosquitto_factory(log_types=("all",), extra_config="max_keepalive 100")
    ack = connack(broker.host, broker.port, MQTT_5, keepalive=500)
    assert ack.properties.server_keep_alive == 100
    assert "Sending CONNACK" in broker.log_text()  # debug lines are in "all"
    text = Path(broker.config_path).read_text()
    assert text.rstrip().endswith("max_keepalive 100")


# -- NATS server (MQTT gateway) ------------------------------------------------------------------
# Facts about nats-server 2.9's MQTT gateway, pinned with hand-encoded bytes.


def raw_connect(client_id: bytes, level: int = MQTT_3_1_1) -> bytes:
    """CONNECT by hand: protocol "MQTT" at ``level``, clean session, keepalive 60 s."""
    variable = b"\x00\x04MQTT" + bytes([level, 0x02, 0, 60])
    if level == MQTT_5:
        variable += b"\x00"  # no properties
    body = variable + len(client_id).to_bytes(2, "big") + client_id
    return bytes([0x10, len(body)]) + body


def raw_nats_client(server: NatsServer, client_id: str) -> PacketSocket:
    client = connect_client(server.host, server.mqtt_port)
    client.send_raw(raw_connect(client_id.encode()))
    assert client.recv_frame() == b"\x20\x02\x00\x00"  # CONNACK, accepted
    return client


def test_nats_server_starts_on_free_loopback_ports(nats_server: NatsServer) -> None:
    assert nats_server.running
    assert nats_server.host == "127.0.0.1"
    assert nats_server.mqtt_port not in (1883, 4222)
    assert nats_server.client_port not in (1883, 4222, nats_server.mqtt_port)
    assert nats_server.port == nats_server.mqtt_port
    assert nats_server.url == f"mqtt://127.0.0.1:{nats_server.mqtt_port}"
    assert nats_server.nats_url == f"nats://127.0.0.1:{nats_server.client_port}"
    log = nats_server.log_text()
    assert f"Listening for MQTT clients on mqtt://127.0.0.1:{nats_server.mqtt_port}" in log
    assert "Server is ready" in log
    config = nats_server.config_path.read_text()
    assert f'listen: "127.0.0.1:{nats_server.mqtt_port}"' in config
    assert str(nats_server.directory) in config  # its own JetStream store


def test_nats_round_trip_with_the_client(nats_server: NatsServer, make_client: Any) -> None:
    client = make_client(url=nats_server.url, protocol_version=4, clean=True, client_id="rt")
    rec = Recorder(client, ("connect", "error", "message"))
    rec.wait_for("connect")
    granted = client.subscribe("nats/rt/#", qos=1).result(5)
    assert [g.qos for g in granted] == [1]
    client.publish("nats/rt/a", b"hello nats", qos=1).result(5)
    rec.wait_until(lambda: len(rec.messages) >= 1, timeout=5, what="the message back")
    topic, payload, *_ = rec.messages[0]
    assert (topic, payload) == ("nats/rt/a", b"hello nats")
    assert "error" not in rec.names()


def test_nats_qos1_round_trip_raw(nats_server: NatsServer) -> None:
    with raw_nats_client(nats_server, "rt-raw") as client:
        # SUBSCRIBE id 1, "raw/t" at QoS 1 -> SUBACK granting QoS 1.
        client.send_raw(b"\x82\x0a\x00\x01\x00\x05raw/t\x01")
        assert client.recv_frame() == b"\x90\x03\x00\x01\x01"
        # PUBLISH QoS 1, id 7 -> PUBACK 7, and the message back with the server's own id.
        client.send_raw(b"\x32\x0b\x00\x05raw/t\x00\x07hi")
        frames = {client.recv_frame(), client.recv_frame()}
        assert frames == {b"\x40\x02\x00\x07", b"\x32\x0b\x00\x05raw/t\x00\x01hi"}


def test_nats_answers_mqtt5_with_a_311_refusal(nats_server: NatsServer) -> None:
    with connect_client(nats_server.host, nats_server.mqtt_port) as client:
        client.send_raw(raw_connect(b"v5", MQTT_5))
        # A 3.1.1 CONNACK, return code 1 (unacceptable protocol version), then the close.
        assert client.recv_frame() == b"\x20\x02\x00\x01"
        assert client.closed()


def test_nats_closes_an_mqtt31_connect_without_answer(nats_server: NatsServer) -> None:
    with connect_client(nats_server.host, nats_server.mqtt_port) as client:
        client.send_raw(b"\x10\x11\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x03v31")
        assert client.closed()
        assert not client.received


def test_nats_closes_on_qos2_publish(nats_server: NatsServer) -> None:
    with raw_nats_client(nats_server, "qos2") as client:
        client.send_raw(b"\x34\x0b\x00\x05raw/q\x00\x01hi")  # QoS 2, id 1
        assert client.closed()
        assert not client.received  # no PUBREC, nothing


def test_nats_grants_qos2_subscriptions_as_qos1(nats_server: NatsServer) -> None:
    with raw_nats_client(nats_server, "subqos2") as client:
        client.send_raw(b"\x82\x0a\x00\x01\x00\x05raw/s\x02")
        assert client.recv_frame() == b"\x90\x03\x00\x01\x01"


@pytest.mark.parametrize("char", [b".", b" "], ids=["dot", "space"])
def test_nats_refuses_dots_and_spaces_in_topics(nats_server: NatsServer, char: bytes) -> None:
    with raw_nats_client(nats_server, f"topics-{ord(char)}") as client:
        # A filter with it is refused (SUBACK 0x80); the connection stays.
        client.send_raw(b"\x82\x0a\x00\x02\x00\x05raw" + char + b"f\x01")
        assert client.recv_frame() == b"\x90\x03\x00\x02\x80"
        # A PUBLISH (QoS 0) to a topic with it closes the connection.
        client.send_raw(b"\x30\x09\x00\x05raw" + char + b"thi")
        assert client.closed()
    assert "'.' not supported for MQTT topics" in nats_server.log_text()


def test_nats_stop_leaves_no_process_and_close_removes_the_directory() -> None:
    server = NatsServer()
    try:
        server.start()
        pid, port, directory = server.pid, server.mqtt_port, server.directory
        assert pid is not None
        assert (directory / "jetstream").is_dir()
        server.stop()
        assert not server.running
        assert server.pid is None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped: no process, not even a zombie
        assert port_is_free(port)
        assert "Server Exiting" in server.log_text()
        assert directory.exists()  # stop() keeps it for restart() and the log
    finally:
        server.close()
    assert not directory.exists()
    assert "Server Exiting" in server.log_text()  # kept in memory


def test_nats_context_manager_and_restart_keep_the_ports() -> None:
    with NatsServer() as server:
        directory, port, first_pid = server.directory, server.mqtt_port, server.pid
        server.restart()
        assert server.mqtt_port == port
        assert server.pid not in (None, first_pid)
        with raw_nats_client(server, "restart"):
            pass
        server.kill()
        assert not server.running
        server.start()
        with raw_nats_client(server, "kill"):
            pass
    assert not server.running
    assert not directory.exists()


def test_two_nats_servers_get_different_ports(
    nats_server_factory: Callable[..., NatsServer],
) -> None:
    first, second = nats_server_factory(), nats_server_factory()
    assert len({first.mqtt_port, first.client_port, second.mqtt_port, second.client_port}) == 4
    assert first.directory != second.directory
    for server in (first, second):
        with raw_nats_client(server, "factory"):
            pass


# nats-server opens the MQTT port first: when the client port is taken, the MQTT port has
# accepted connections for a moment before the server exits.
@pytest.mark.parametrize("which", ["client", "mqtt"])
def test_nats_port_taken_is_retried(monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        original = NatsServer._choose_ports
        calls: list[int] = []

        def choose(self: NatsServer) -> dict[str, int]:
            calls.append(1)
            ports = original(self)
            return {**ports, which: taken} if len(calls) == 1 else ports

        monkeypatch.setattr(NatsServer, "_choose_ports", choose)
        with NatsServer() as server:
            assert len(calls) == 2
            assert taken not in (server.client_port, server.mqtt_port)
            with raw_nats_client(server, f"retried-{which}"):
                pass


def test_nats_startup_failure_reports_the_log() -> None:
    server = NatsServer(extra_config="no_such_option: 1")
    with pytest.raises(NatsServerError, match="no_such_option") as excinfo:
        server.start()
    server.close()
    assert "exited with status" in str(excinfo.value)
    assert not server.running


def test_nats_server_that_never_listens_times_out(tmp_path: Path) -> None:
    server = NatsServer(executable=fake_executable(tmp_path, "exec sleep 60"), startup_timeout=0.3)
    with pytest.raises(NatsServerError, match=r"did not accept MQTT connections within 0\.3 s"):
        server.start()
    assert not server.running
    server.close()


def test_missing_nats_server_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(
        testing._process._FALLBACK_PATHS, "nats-server", (str(tmp_path / "nats-server"),)
    )
    with pytest.raises(NatsServerNotFoundError) as excinfo:
        testing.find_nats_server()
    assert str(excinfo.value) == (
        "nats-server not found: install it with `apt-get update && apt-get install -y nats-server`"
    )
    with pytest.raises(NatsServerNotFoundError, match="apt-get install -y nats-server"):
        NatsServer().start()
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y nats-server"):
        plugin._start_or_fail(NatsServer())


def test_tests_using_the_nats_fixtures_are_marked(
    nats_server: NatsServer, request: pytest.FixtureRequest
) -> None:
    assert request.node.get_closest_marker("nats") is not None
    assert request.node.get_closest_marker("mosquitto") is None
