"""Servers that refuse, against real servers (blocking client): NATS's MQTT gateway closing the
connection on a QoS 2 PUBLISH or a topic with ``.``, a 3.1.1 CONNACK to MQTT 5, Mosquitto
refusing a password, a certificate that does not verify; and, with the scripted fake broker, a
QoS 2 PUBLISH answered by PUBACK (RabbitMQ) and a server that closes every connection at once.

What the user is promised: a message the server will not take fails (it is not resent
forever) and the next messages go; a permanent refusal stops the client and fails every
pending and later operation at once with its cause; the backoff grows when every connection
ends at once."""

from __future__ import annotations

import itertools
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

import mqttkit
from mqttkit.protocol.packets import PubAck, Publish, PubRel
from mqttkit.testing import MosquittoBroker, NatsServer, TLSFiles
from tests.support.fake_broker import FakeBroker, FakeConnection
from tests.support.recorder import SEED_EVENTS, Recorder

EVENTS = (*SEED_EVENTS, "packetsend")


def unique(name: str) -> str:
    """A client id / topic level of this test's own (the NATS server is shared)."""
    return f"refusals-{name}-{uuid.uuid4().hex[:8]}"


def assert_stopped(client: mqttkit.Client, rec: Recorder, window: float = 0.5) -> None:
    """The client stopped for good: its dispatch thread ends, and no ``reconnect`` follows
    within ``window`` seconds after that (with reconnect_period=0.05 one would have)."""
    thread = client._dispatcher.thread
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive(), "the client did not stop (its dispatch thread runs on)"
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:  # a negative check: it must last the whole window
        assert rec.count("reconnect") == 0, f"reconnected after stopping: {rec.names()}"
        assert not client.connected
        time.sleep(0.02)
    assert rec.count("reconnect") == 0, f"reconnected after stopping: {rec.names()}"


def subscriber(make_client: Callable[..., mqttkit.Client], url: str, topic: str) -> Recorder:
    """Another client on the server, subscribed to ``topic`` at QoS 1; records its messages."""
    sub = make_client(url=url, client_id=unique("sub"))
    rec = Recorder(sub, ("connect", "message", "error"))
    rec.wait_for("connect")
    assert [g.qos for g in sub.subscribe(topic, qos=1).result(5)] == [1]
    return rec


def payloads(rec: Recorder) -> list[tuple[str, bytes]]:
    with rec._cond:
        return [(m[0], m[1]) for m in rec.messages]


def wait_payload(rec: Recorder, topic: str, payload: bytes, timeout: float = 10.0) -> None:
    rec.wait_until(
        lambda: (topic, payload) in [(m[0], m[1]) for m in rec.messages],
        timeout,
        f"{payload!r} on {topic!r} at the subscriber",
    )


def refused_publisher(
    make_client: Callable[..., mqttkit.Client], nats_server: NatsServer
) -> tuple[mqttkit.Client, Recorder, list[Publish]]:
    """A publisher on NATS keeping its session, reconnecting fast; records events and the
    PUBLISH packets it sends."""
    client = make_client(
        url=nats_server.url,
        client_id=unique("pub"),
        clean=False,
        reconnect_period=0.05,
        connect=False,
    )
    rec = Recorder(client, EVENTS)
    sent: list[Publish] = []
    client.on("packetsend", lambda packet: isinstance(packet, Publish) and sent.append(packet))
    client.connect()
    rec.wait_for("connect")
    return client, rec, sent


def check_refused_message(
    rec: Recorder, sent: list[Publish], handle: mqttkit.Handle, topic: str, started: float
) -> None:
    """``handle``'s message is one NATS closes the connection on: it fails with PublishError
    within 10 s, after at most 3 connections (3 sends), each close reported with its cause."""
    error = handle.exception(10)
    elapsed = time.monotonic() - started
    assert isinstance(error, mqttkit.PublishError), repr(error)
    assert elapsed < 10, elapsed
    assert "closed the connection each time" in str(error), str(error)
    assert topic in str(error), str(error)
    # The handle's callback ("refused" in the log) runs in order with the events.
    rec.wait_for("refused")
    names = rec.names()
    before = names[: names.index("refused")]
    assert 1 <= before.count("connect") <= 3, names
    sends = [p for p in list(sent) if p.topic == topic]
    assert 1 <= len(sends) <= 3, sends
    errors = [args[0] for name, args in list(rec.log) if name == "error"]
    assert errors, names
    for err in errors:
        assert isinstance(err, mqttkit.ConnectionLostError), repr(err)
        assert "PUBLISH" in str(err), str(err)
        assert topic in str(err), str(err)


# -- 1, 2: NATS closes the connection on a message -------------------------------------------------


def test_nats_qos2_publish_fails_and_the_next_messages_go(
    nats_server: NatsServer, make_client
) -> None:
    prefix = unique("q2")
    sub = subscriber(make_client, nats_server.url, f"{prefix}/#")
    client, rec, sent = refused_publisher(make_client, nats_server)
    started = time.monotonic()
    h2 = client.publish(f"{prefix}/q2", "x", qos=2, callback=rec.listener("refused"))
    h1 = client.publish(f"{prefix}/q1", "y", qos=1)
    check_refused_message(rec, sent, h2, f"{prefix}/q2", started)
    assert h1.result(10) == 0
    wait_payload(sub, f"{prefix}/q1", b"y")
    # The publishes after the failure work normally.
    assert client.publish(f"{prefix}/after", "z1", qos=1).result(5) == 0
    assert client.publish(f"{prefix}/after", "z2", qos=1).result(5) == 0
    wait_payload(sub, f"{prefix}/after", b"z1")
    wait_payload(sub, f"{prefix}/after", b"z2")
    assert client.connected
    assert b"x" not in [p for _, p in payloads(sub)]


def test_nats_topic_with_a_dot_fails_and_the_next_messages_go(
    nats_server: NatsServer, make_client
) -> None:
    prefix = unique("dot")
    sub = subscriber(make_client, nats_server.url, f"{prefix}/#")
    client, rec, sent = refused_publisher(make_client, nats_server)
    started = time.monotonic()
    bad = client.publish(f"{prefix}/a.b", "dot", qos=1, callback=rec.listener("refused"))
    good = client.publish(f"{prefix}/a/b", "slash", qos=1)
    check_refused_message(rec, sent, bad, f"{prefix}/a.b", started)
    assert good.result(10) == 0
    wait_payload(sub, f"{prefix}/a/b", b"slash")
    assert client.publish(f"{prefix}/a/b", "later", qos=1).result(5) == 0
    wait_payload(sub, f"{prefix}/a/b", b"later")


# -- 3: MQTT 5 to a server that speaks 3.1.1 only --------------------------------------------------


def test_nats_refuses_mqtt5_permanently_and_fails_operations_at_once(
    nats_server: NatsServer, make_client
) -> None:
    client = make_client(
        url=nats_server.url,
        client_id=unique("v5"),
        protocol_version=5,
        reconnect_period=0.05,
        connect=False,
    )
    rec = Recorder(client)
    before = client.publish(f"{unique('v5')}/t", "x", qos=1)
    started = time.monotonic()
    client.connect()
    error = rec.wait_for("error", timeout=5)[0]
    assert isinstance(error, mqttkit.ConnectionRefusedError), repr(error)
    assert error.permanent
    assert error.unsupported_version
    text = str(error)
    assert "MQTT 5" in text, text
    assert "protocol_version=4" in text, text
    assert "protocol_fallback" in text, text
    # The publish made before the refusal fails with it, at once.
    with pytest.raises(mqttkit.ConnectionRefusedError) as excinfo:
        before.result(timeout=8)
    assert time.monotonic() - started < 1.0
    assert str(excinfo.value) == text
    assert_stopped(client, rec)
    assert rec.names() == ["error", "close", "offline"]
    # A publish after it returns an already-failed handle.
    called = time.monotonic()
    after = client.publish("v5/after", "y", qos=1)
    assert after.done()
    assert isinstance(after.exception(1), mqttkit.ConnectionRefusedError)
    assert str(after.exception(1)) == text
    assert time.monotonic() - called < 1.0


def test_nats_mqtt5_with_protocol_fallback_connects_at_311(
    nats_server: NatsServer, make_client
) -> None:
    prefix = unique("fallback")
    client = make_client(
        url=nats_server.url,
        client_id=unique("fallback"),
        protocol_version=5,
        protocol_fallback=True,
        reconnect_period=0.05,
    )
    rec = Recorder(client, ("connect", "message", "close"))
    rec.wait_for("connect", timeout=5)
    assert client.protocol_version == 4
    assert client.connected
    assert [g.qos for g in client.subscribe(f"{prefix}/#", qos=1).result(5)] == [1]
    assert client.publish(f"{prefix}/t", "round trip", qos=1).result(5) == 0
    topic, payload, *_ = rec.wait_messages(1)[0]
    assert (topic, payload) == (f"{prefix}/t", b"round trip")


# -- 4: a refused password -------------------------------------------------------------------------


def _result_in_thread(handle: mqttkit.Handle, timeout: float = 5.0) -> BaseException | None:
    """``handle.result()`` without a timeout, run where a hang cannot hang the test: what it
    raised (None if it returned); fails if it did not return within ``timeout``."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            handle.result()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"result() without a timeout did not return in {timeout} s"
    return outcome[0]


def test_wrong_password_fails_publish_result_at_once(mosquitto_auth: MosquittoBroker) -> None:
    url = f"mqtt://alice:wrong@{mosquitto_auth.host}:{mosquitto_auth.port}"
    clients: list[mqttkit.Client] = []
    try:
        started = time.monotonic()
        client = mqttkit.connect(url)
        clients.append(client)
        with pytest.raises(mqttkit.ConnectionRefusedError) as excinfo:
            client.publish("auth/t", "x", {"qos": 1}).result(timeout=8)
        assert time.monotonic() - started < 1.0
        assert excinfo.value.reason_code in (4, 5)
        assert excinfo.value.permanent
        assert "wrong" not in str(excinfo.value)
        # After the refusal, result() without a timeout returns (raises) at once.
        called = time.monotonic()
        error = _result_in_thread(client.publish("auth/t", "y", {"qos": 1}))
        assert isinstance(error, mqttkit.ConnectionRefusedError), repr(error)
        assert time.monotonic() - called < 1.0
        # And on a fresh client, before the refusal came back.
        started = time.monotonic()
        other = mqttkit.connect(url)
        clients.append(other)
        error = _result_in_thread(other.publish("auth/t", "z", {"qos": 1}))
        assert isinstance(error, mqttkit.ConnectionRefusedError), repr(error)
        assert time.monotonic() - started < 1.0
    finally:
        for c in clients:
            assert c.close(force=True).wait(10)
        for c in clients:
            thread = c._dispatcher.thread
            if thread is not None:
                thread.join(10)


# -- 5: a certificate that does not verify ---------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A server certificate for 127.0.0.1 from a test CA that no system trusts."""
    directory: Path = tmp_path_factory.mktemp("refusals-tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    server.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    return TLSFiles(
        cafile=directory / "ca.pem",
        certfile=directory / "server.pem",
        keyfile=directory / "server.key",
    )


def test_untrusted_certificate_is_permanent_and_fails_operations_at_once(
    mosquitto_factory: Callable[..., MosquittoBroker], tls_files: TLSFiles, make_client
) -> None:
    broker = mosquitto_factory(tls=tls_files)
    client = make_client(url=broker.tls_url, reconnect_period=0.05, connect=False)
    rec = Recorder(client)
    before = client.publish("tls/t", "x", qos=1)
    started = time.monotonic()
    client.connect()  # the default trust (system CAs) does not know the test CA
    error = rec.wait_for("error", timeout=5)[0]
    assert isinstance(error, mqttkit.CertificateVerifyError), repr(error)
    assert isinstance(error, mqttkit.TLSError)
    assert error.permanent
    assert "certificate" in str(error).lower(), str(error)
    with pytest.raises(mqttkit.CertificateVerifyError):
        before.result(timeout=8)
    assert time.monotonic() - started < 1.0
    assert_stopped(client, rec)
    assert rec.names() == ["error", "close", "offline"]
    after = client.publish("tls/t", "y", qos=1)
    assert after.done()
    assert isinstance(after.exception(1), mqttkit.CertificateVerifyError)
    # The same broker with the right trust works: it was the certificate, nothing else.
    context = ssl.create_default_context(cafile=str(tls_files.cafile))
    good = make_client(url=broker.tls_url, ssl_context=context)
    Recorder(good, ("connect",)).wait_for("connect", timeout=5)
    assert good.publish("tls/t", "z", qos=1).result(5) == 0


# -- 6: a QoS 2 PUBLISH answered by PUBACK (RabbitMQ) ----------------------------------------------


def test_qos2_answered_by_puback_completes_at_qos1(
    make_client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mqttkit")
    with FakeBroker() as broker:
        client = make_client(
            url=broker.url, client_id=unique("rabbit"), clean=False, reconnect_period=0.05
        )
        rec = Recorder(client, ("connect", "error"))
        conn = broker.accept()
        conn.handshake()
        rec.wait_for("connect")
        results = []
        for payload in ("q2-a", "q2-b"):
            handle = client.publish("rabbit/q2", payload, qos=2)
            packet = conn.expect(Publish)
            assert (packet.qos, packet.payload) == (2, payload.encode())
            assert packet.packet_id is not None
            conn.send(PubAck(packet.packet_id))
            results.append(handle.result(5))
        for result in results:
            assert isinstance(result, mqttkit.PublishResult), repr(result)
            assert result.qos == 1
            assert result == 0
        # No PUBREL: the next packet on the wire is the next message.
        h1 = client.publish("rabbit/q1", "q1", qos=1)
        packet = conn.expect(Publish)
        assert (packet.topic, packet.qos, packet.dup) == ("rabbit/q1", 1, False)
        assert packet.packet_id is not None
        conn.send(PubAck(packet.packet_id))
        assert h1.result(5) == 0
        assert not isinstance(h1.result(5), mqttkit.PublishResult)
        # After a reconnect with the session kept, nothing of the QoS 2 flows is resent: the
        # first PUBLISH is the new message, not a DUP.
        conn.abort()
        conn2: FakeConnection = broker.accept()
        conn2.handshake(session_present=True)
        rec.wait_for("connect", count=2)
        h_after = client.publish("rabbit/after", "later", qos=1)
        packet = conn2.expect(Publish)
        assert (packet.topic, packet.dup) == ("rabbit/after", False)
        assert packet.packet_id is not None
        conn2.send(PubAck(packet.packet_id))
        assert h_after.result(5) == 0
        received: list[Any] = [*conn.received, *conn2.received]
        assert not [p for p in received if isinstance(p, PubRel)], received
        assert [p.payload for p in received if isinstance(p, Publish)] == [
            b"q2-a",
            b"q2-b",
            b"q1",
            b"later",
        ]
    warnings = [r for r in caplog.records if "answered a QoS 2 PUBLISH" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert warnings[0].levelno == logging.WARNING


# -- 7: a server that closes every connection right after CONNACK ----------------------------------


def test_backoff_grows_when_every_connection_ends_at_once(make_client) -> None:
    accepted: list[float] = []
    lock = threading.Lock()

    def accept_then_close(conn: FakeConnection) -> None:
        with lock:
            accepted.append(time.monotonic())
        conn.handshake()
        conn.close()

    with FakeBroker(accept_then_close) as broker:
        make_client(url=broker.url, reconnect_period=0.05, reconnect_max=1.0, keepalive=10)
        broker.wait_connections(1)
        with lock:
            first = accepted[0]
        # A measurement window (not a wait for an event): count the attempts in 3 s.
        time.sleep(max(0.0, first + 3.0 - time.monotonic()))
        with lock:
            times = [t - first for t in accepted if t - first <= 3.0]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Doubling from 0.05 s with equal jitter (each delay in [d/2, d]), capped at 1 s: at most
    # 10 connections in 3 s whatever the jitter (7 or 8 typically); a period that starts over
    # after every CONNACK gives 60 or more.
    assert len(times) <= 10, (len(times), gaps)
    assert len(times) >= 6, (len(times), gaps)  # it does reconnect, and keeps doing so
    # Delay i lies in [d_i/2, d_i] with d_i = 0.05 * 2**i: delay i+2 is always above delay i
    # (up to the 1 s cap).
    for i in range(min(len(gaps) - 2, 4)):
        assert gaps[i + 2] > gaps[i], gaps
    assert max(gaps) >= 0.4, gaps
