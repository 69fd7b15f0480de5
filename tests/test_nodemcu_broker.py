"""The NodeMCU ``mqtt`` API (seed 001) against a real Mosquitto: the seed's example, Last Will,
TLS, ``cleansession=0``, the table forms of subscribe/unsubscribe, retained messages at each QoS
and autoreconnect across a broker restart."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trustme

import mqttkit
from mqttkit import nodemcu
from mqttkit.protocol.packets import Publish, SubAck, Subscribe, UnsubAck
from mqttkit.testing import MosquittoBroker, TLSFiles
from tests.conftest import NodeMCUClients
from tests.support.proxy import FaultProxy
from tests.support.recorder import Recorder

ROOT = Path(__file__).resolve().parents[1]
EVENTS = tuple(sorted(nodemcu.EVENTS))


def connected(
    make_nodemcu: NodeMCUClients,
    host: str,
    port: int,
    *args: object,
    clientid: str = "nodemcu",
    **kwargs: object,
) -> tuple[nodemcu.Client, Recorder]:
    """A NodeMCU client ``Client(clientid, 60, ...)`` connected (``connect(host, port,
    *numbers)``), with every event recorded."""
    m = make_nodemcu(clientid, 60, **kwargs)
    rec = Recorder(m, EVENTS)
    assert m.connect(host, port, *args, rec.listener("on_connected")) is True
    rec.wait_for("connect")
    return m, rec


def wait_called(rec: Recorder, name: str) -> None:
    assert rec.wait_for(name) == (rec.client,)


def test_example_runs_and_exits_by_itself(mosquitto: MosquittoBroker) -> None:
    path = ROOT / "examples" / "nodemcu.py"
    env = {**os.environ, "MQTT_HOST": mosquitto.host, "MQTT_PORT": str(mosquitto.port)}
    env.pop("MQTT_URL", None)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    # Connected, subscribed, published, received its own message, closed: in the order the
    # protocol imposes (the QoS 0 "sent" may come before or after the SUBACK).
    assert sorted(lines) == sorted(
        ["connected", "subscribe success", "sent", "/topic:", "hello", "closed"]
    )
    assert lines[0] == "connected"
    assert lines.index("subscribe success") < lines.index("/topic:")
    assert lines[-3:] == ["/topic:", "hello", "closed"]
    assert time.monotonic() - started < 10
    source = path.read_text()
    assert "sleep" not in source
    assert "loop" not in source
    # MQTT_URL works too (as for examples/hello.py), here with a host name.
    env = {**os.environ, "MQTT_URL": f"mqtt://localhost:{mosquitto.port}"}
    env.pop("MQTT_HOST", None)
    env.pop("MQTT_PORT", None)
    result = subprocess.run(
        [sys.executable, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-3:] == ["/topic:", "hello", "closed"]


# ---------------------------------------------------------------------------------------------
# Last Will
# ---------------------------------------------------------------------------------------------


def test_will_published_when_the_connection_is_cut(
    mosquitto: MosquittoBroker, make_client, make_nodemcu
) -> None:
    watcher = make_client(url=mosquitto.url)
    seen = Recorder(watcher, ("connect", "message"))
    seen.wait_for("connect")
    watcher.subscribe("will/#", qos=2).result(5)
    with FaultProxy(mosquitto.host, mosquitto.port) as proxy:
        m = make_nodemcu("nodemcu-will", 60)
        m.lwt("will/status", "gone", 1, 1)
        rec = Recorder(m, EVENTS)
        assert m.connect(proxy.host, proxy.port, 0, 0) is True
        rec.wait_for("connect")
        assert proxy.cut() == 1  # no DISCONNECT: a crash, or a lost network
        assert rec.wait_for("offline") == (m,)
    topic, payload, packet = seen.wait_messages(1)[0]
    assert (topic, payload, packet.qos) == ("will/status", b"gone", 1)
    assert packet.retain is False  # to a subscription that already existed [MQTT-3.3.1-9]
    # retain=1: the broker kept it for later subscribers.
    late = make_client(url=mosquitto.url)
    got = Recorder(late, ("connect", "message"))
    got.wait_for("connect")
    late.subscribe("will/status", qos=2).result(5)
    topic, payload, packet = got.wait_messages(1)[0]
    assert (topic, payload, packet.qos, packet.retain) == ("will/status", b"gone", 1, True)


def test_no_will_after_close(mosquitto: MosquittoBroker, make_client, make_nodemcu) -> None:
    watcher = make_client(url=mosquitto.url)
    seen = Recorder(watcher, ("connect", "message"))
    seen.wait_for("connect")
    watcher.subscribe("will/#", qos=1).result(5)
    m = make_nodemcu("nodemcu-no-will", 60)
    m.lwt("will/status", "gone", 1, 0)
    rec = Recorder(m, EVENTS)
    assert m.connect(mosquitto.host, mosquitto.port) is True
    rec.wait_for("connect")
    assert m.close() is True
    core = make_nodemcu.core
    core._dispatcher.thread.join(5)
    assert not core._dispatcher.thread.is_alive()
    # The client has closed; a will, if the broker had one to publish, is due by now.
    watcher.publish("will/marker", "after close", qos=1).result(5)
    seen.wait_messages(1)
    with pytest.raises(AssertionError):  # bounded negative check
        seen.wait_messages(2, timeout=0.5)
    assert [(t, p) for t, p, _ in seen.messages] == [("will/marker", b"after close")]
    assert "offline" not in rec.names()


# ---------------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, TLSFiles, Path]:
    """A test CA and a server certificate for 127.0.0.1 only (not for "localhost")."""
    directory = tmp_path_factory.mktemp("nodemcu-tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    server.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    trustme.CA().cert_pem.write_to_path(str(directory / "other-ca.pem"))
    files = TLSFiles(
        cafile=directory / "ca.pem",
        certfile=directory / "server.pem",
        keyfile=directory / "server.key",
    )
    return ca, files, directory


def test_secure_connects_with_cafile_or_ssl_context(
    mosquitto_factory, make_nodemcu, tls: tuple[trustme.CA, TLSFiles, Path]
) -> None:
    ca, files, _ = tls
    broker = mosquitto_factory(tls=files)
    m = make_nodemcu("nodemcu-tls-file", 60)
    rec = Recorder(m, EVENTS)
    assert m.connect("127.0.0.1", broker.tls_port, 1, cafile=str(files.cafile)) is True
    assert rec.wait_for("connect") == (m,)
    assert make_nodemcu.core.options.transport == "tls"
    assert m.subscribe("tls/t", 1, rec.listener("subscribed")) is True
    wait_called(rec, "subscribed")
    assert m.publish("tls/t", "over TLS", 1, 0) is True
    assert rec.wait_messages(1)[0] == (m, "tls/t", b"over TLS")

    context = ssl.create_default_context()
    ca.configure_trust(context)
    m2 = make_nodemcu("nodemcu-tls-context", 60)
    rec2 = Recorder(m2, EVENTS)
    assert m2.connect("127.0.0.1", broker.tls_port, True, ssl_context=context) is True
    assert rec2.wait_for("connect") == (m2,)


def test_secure_fails_clearly_with_wrong_ca_or_host_name(
    mosquitto_factory, make_nodemcu, tls: tuple[trustme.CA, TLSFiles, Path]
) -> None:
    _, files, directory = tls
    broker = mosquitto_factory(tls=files)
    cases = [
        # (host, cafile, what the TLS error says)
        ("127.0.0.1", str(directory / "other-ca.pem"), "certificate verification failed"),
        ("127.0.0.1", None, "certificate verification failed"),  # the system store
        ("localhost", str(files.cafile), "Hostname mismatch"),  # the cert names 127.0.0.1
    ]
    for host, cafile, says in cases:
        m = make_nodemcu("nodemcu-tls-bad", 60)
        rec = Recorder(m, EVENTS)
        started = m.connect(
            host, broker.tls_port, 1, None, rec.listener("on_failed"), cafile=cafile
        )
        assert started is True
        assert rec.wait_for("on_failed") == (m, nodemcu.CONN_FAIL_SERVER_NOT_FOUND)
        assert rec.wait_for("connfail") == (m, nodemcu.CONN_FAIL_SERVER_NOT_FOUND)
        assert isinstance(m.error, mqttkit.TLSError), (host, cafile, m.error)
        assert says in str(m.error), (host, cafile, m.error)
        assert "connect" not in rec.names()


# ---------------------------------------------------------------------------------------------
# Sessions, subscriptions, retained messages
# ---------------------------------------------------------------------------------------------


def test_cleansession_0_gets_messages_sent_while_away(
    mosquitto: MosquittoBroker, make_client, make_nodemcu
) -> None:
    m, rec = connected(
        make_nodemcu,
        mosquitto.host,
        mosquitto.port,
        clientid="nodemcu-persistent",
        username=None,
        password=None,
        cleansession=0,
    )
    assert m.subscribe("away/t", 1, rec.listener("subscribed")) is True
    wait_called(rec, "subscribed")
    assert m.close() is True
    publisher = make_client(url=mosquitto.url)
    for i in range(3):
        publisher.publish("away/t", f"m{i}", qos=1).result(5)
    assert m.connect(mosquitto.host, mosquitto.port) is True  # again, after close()
    got = rec.wait_messages(3)
    assert [(t, p) for _, t, p in got] == [("away/t", f"m{i}".encode()) for i in range(3)]
    assert rec.count("connect") == 2


def test_subscribe_and_unsubscribe_tables(
    mosquitto: MosquittoBroker, make_client, make_nodemcu
) -> None:
    m, rec = connected(make_nodemcu, mosquitto.host, mosquitto.port, clientid="nodemcu-table")
    core = make_nodemcu.core
    wire = Recorder(core, ("packetsend", "packetreceive"))
    assert m.subscribe("marker", 0, rec.listener("marker subscribed")) is True
    wait_called(rec, "marker subscribed")
    table = {"topic/0": 0, "topic/1": 1, "topic2": 2}
    assert m.subscribe(table, rec.listener("subscribed")) is True
    wait_called(rec, "subscribed")
    subscribe = [args[0] for n, args in wire.log if isinstance(args[0], Subscribe)][-1]
    assert [(s.topic_filter, s.qos) for s in subscribe.subscriptions] == list(table.items())
    suback = [args[0] for n, args in wire.log if isinstance(args[0], SubAck)][-1]
    assert suback.packet_id == subscribe.packet_id
    assert suback.reason_codes == (0, 1, 2)  # granted as asked

    publisher = make_client(url=mosquitto.url)
    for topic in table:
        publisher.publish(topic, topic, qos=2).result(5)
    got = rec.wait_messages(3)
    assert [(t, p) for _, t, p in got] == [(t, t.encode()) for t in table]
    received = [a[0] for n, a in wire.log if n == "packetreceive" and isinstance(a[0], Publish)]
    assert [(p.topic, p.qos) for p in received] == list(table.items())  # min(2, granted)

    assert m.unsubscribe({"topic/0": 0, "topic/1": 0, "topic2": "anything"}, rec.listener("u"))
    wait_called(rec, "u")
    assert any(isinstance(a[0], UnsubAck) for n, a in wire.log if n == "packetreceive")
    for topic in table:
        publisher.publish(topic, "not any more", qos=2).result(5)
    publisher.publish("marker", "end", qos=1).result(5)  # after the others, same publisher
    got = rec.wait_messages(4)
    assert got[3][1:] == ("marker", b"end")
    assert (rec.count("subscribed"), rec.count("u")) == (1, 1)  # each callback fired once
    assert (rec.count("suback"), rec.count("unsuback")) == (2, 1)


def test_publish_each_qos_and_retain_then_a_later_subscriber(
    mosquitto: MosquittoBroker, make_client, make_nodemcu
) -> None:
    m, rec = connected(make_nodemcu, mosquitto.host, mosquitto.port, clientid="nodemcu-pub")
    for qos in (0, 1, 2):
        for retain in (0, 1):
            topic = f"{'kept' if retain else 'plain'}/q{qos}"
            assert m.publish(topic, f"q{qos}", qos, retain, rec.listener(topic)) is True
    for qos in (0, 1, 2):
        for kind in ("plain", "kept"):
            wait_called(rec, f"{kind}/q{qos}")  # every flow completed
    assert rec.count("puback") == 6

    later = make_client(url=mosquitto.url)
    got = Recorder(later, ("connect", "message"))
    got.wait_for("connect")
    later.subscribe({"kept/#": 2, "plain/#": 2, "marker": 1}).result(5)
    retained = got.wait_messages(3)
    assert sorted((t, p, pk.qos, pk.retain) for t, p, pk in retained) == [
        (f"kept/q{qos}", f"q{qos}".encode(), qos, True) for qos in (0, 1, 2)
    ]
    later.publish("marker", "end", qos=1).result(5)
    assert got.wait_messages(4)[3][:2] == ("marker", b"end")  # and none of the plain ones

    # A later NodeMCU subscriber gets them through "message" too.
    m2, rec2 = connected(make_nodemcu, mosquitto.host, mosquitto.port, clientid="nodemcu-late")
    assert m2.subscribe("kept/q1", 1) is True
    assert rec2.wait_messages(1)[0] == (m2, "kept/q1", b"q1")


def test_events_puback_suback_unsuback_with_the_client(
    mosquitto: MosquittoBroker, make_nodemcu
) -> None:
    m, rec = connected(make_nodemcu, mosquitto.host, mosquitto.port, clientid="nodemcu-ev")
    assert m.subscribe("ev/t", 2) is True
    assert rec.wait_for("suback") == (m,)
    assert m.publish("ev/t", "x", 2, 0) is True
    assert rec.wait_for("puback") == (m,)
    assert rec.wait_messages(1)[0] == (m, "ev/t", b"x")
    assert m.unsubscribe("ev/t") is True
    assert rec.wait_for("unsuback") == (m,)


# ---------------------------------------------------------------------------------------------
# autoreconnect
# ---------------------------------------------------------------------------------------------


def test_autoreconnect_across_a_broker_restart(
    mosquitto: MosquittoBroker, make_client, make_nodemcu
) -> None:
    m, rec = connected(
        make_nodemcu, mosquitto.host, mosquitto.port, 0, 1, clientid="nodemcu-restart"
    )
    assert m.subscribe("restart/#", 1, rec.listener("subscribed")) is True
    wait_called(rec, "subscribed")
    mosquitto.restart()
    assert rec.wait_for("offline") == (m,)
    assert rec.wait_for("connect", 2, timeout=15) == (m,)
    assert rec.names() == ["on_connected", "connect", "subscribed", "suback", "offline", "connect"]
    # The broker lost the session (cleansession=1): the subscription was made again.
    publisher = make_client(url=mosquitto.url)
    publisher.publish("restart/x", "after restart", qos=1).result(5)
    assert rec.wait_messages(1)[0] == (m, "restart/x", b"after restart")
    assert m.publish("restart/y", "me too", 1, 0, rec.listener("sent")) is True
    wait_called(rec, "sent")


def test_autoreconnect_off_stays_down_after_a_broker_restart(
    mosquitto: MosquittoBroker, make_nodemcu
) -> None:
    m, rec = connected(make_nodemcu, mosquitto.host, mosquitto.port, 0, 0, clientid="nodemcu-0")
    mosquitto.restart()
    assert rec.wait_for("offline") == (m,)
    core = make_nodemcu.core
    core._dispatcher.thread.join(5)
    assert not core._dispatcher.thread.is_alive()  # stopped: no attempt is under way
    assert rec.names() == ["on_connected", "connect", "offline"]
    assert m.publish("t", "x", 0, 0) is False
    assert m.connect(mosquitto.host, mosquitto.port) is True  # by hand, it works
    rec.wait_for("connect", 2)
