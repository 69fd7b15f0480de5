"""What the library logs, as a user's ``logging`` configuration sees it: one record per
connect, disconnect (with its cause) and reconnect (attempt, delay) at INFO, each naming its
client; packets at DEBUG only when DEBUG is on; no doubled ``mqttkit:`` prefix; a refused login
logged once, on both fronts."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from pathlib import Path

import pytest

import mqttkit
from mqttkit.aio import Client as AsyncClient
from mqttkit.testing import MosquittoBroker
from tests.support.fake_broker import FakeBroker
from tests.support.recorder import Recorder

SRC = Path(__file__).resolve().parents[2] / "src" / "mqttkit"


def unique(name: str) -> str:
    return f"logging-{name}-{uuid.uuid4().hex[:8]}"


def client_records(
    caplog: pytest.LogCaptureFixture, client_id: str, level: int = logging.INFO
) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if getattr(r, "client_id", None) == client_id and r.levelno >= level
    ]


def wait_for_record(
    caplog: pytest.LogCaptureFixture, client_id: str, text: str, timeout: float = 5.0
) -> logging.LogRecord:
    deadline = time.monotonic() + timeout
    while True:
        for record in client_records(caplog, client_id, logging.DEBUG):
            if text in record.getMessage():
                return record
        assert time.monotonic() < deadline, f"no record with {text!r}: {caplog.text}"
        time.sleep(0.01)


def test_connect_and_close_are_logged_at_info_with_the_client_id(
    mosquitto: MosquittoBroker, make_client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mqttkit")
    client_id = unique("info")
    client = make_client(url=mosquitto.url, client_id=client_id)
    Recorder(client, ("connect",)).wait_for("connect")  # logged before the event
    assert client.close().wait(5)
    messages = [r.getMessage() for r in client_records(caplog, client_id)]
    assert messages == [
        f"[{client_id}] connected to {mosquitto.url} (session present: no)",
        f"[{client_id}] disconnected from {mosquitto.url}: close() was called",
    ]
    for record in client_records(caplog, client_id):
        assert record.name == "mqttkit.client"
        assert record.levelno == logging.INFO


def test_two_clients_are_told_apart(
    mosquitto: MosquittoBroker, make_client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mqttkit")
    ids = [unique("a"), unique("b")]
    for client_id in ids:
        client = make_client(url=mosquitto.url, client_id=client_id)
        Recorder(client, ("connect",)).wait_for("connect")
    for client_id in ids:
        (record,) = client_records(caplog, client_id)
        assert record.getMessage().startswith(f"[{client_id}] connected to ")


def test_a_lost_connection_and_the_reconnect_are_logged_with_cause_attempt_and_delay(
    make_client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mqttkit")
    client_id = unique("lost")
    with FakeBroker() as broker:
        client = make_client(url=broker.url, client_id=client_id, reconnect_period=0.05)
        rec = Recorder(client, ("connect", "reconnect"))
        conn = broker.accept()
        conn.handshake()
        rec.wait_for("connect")
        conn.close()
        conn2 = broker.accept()
        conn2.handshake()
        rec.wait_until(lambda: rec.count("connect") == 2, what="the second connect")
        # Read before the broker closes (its close would log one more disconnection).
        messages = [r.getMessage() for r in client_records(caplog, client_id)]
    prefix = f"[{client_id}] "
    assert messages[0] == f"{prefix}connected to {broker.url} (session present: no)"
    assert re.fullmatch(
        rf"{re.escape(prefix)}disconnected from {re.escape(broker.url)}: .+; reconnecting",
        messages[1],
    ), messages
    assert "closed" in messages[1]  # the cause
    match = re.fullmatch(
        rf"{re.escape(prefix)}reconnecting to {re.escape(broker.url)} "
        r"\(attempt 1, after ([0-9.e-]+) s\)",
        messages[2],
    )
    assert match, messages
    assert 0.0 < float(match[1]) <= 0.05  # the backoff waited: jittered from reconnect_period
    assert messages[3] == f"{prefix}connected to {broker.url} (session present: no)"
    assert len(messages) == 4, messages


def test_packets_are_logged_at_debug_without_secrets(
    mosquitto_auth: MosquittoBroker, make_client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mqttkit.client")
    client_id = unique("debug")
    client = make_client(
        url=mosquitto_auth.url, client_id=client_id, username="alice", password="secret"
    )
    Recorder(client, ("connect",)).wait_for("connect")
    assert client.publish("logging/debug", "payload-bytes", qos=1).wait(5)
    wait_for_record(caplog, client_id, "received PUBACK")
    text = "\n".join(r.getMessage() for r in client_records(caplog, client_id, logging.DEBUG))
    assert f"sending CONNECT (v4, c1, k10, client id '{client_id}', username 'alice'" in text
    assert "received CONNACK (session present 0, RC: 0)" in text
    assert "sending PUBLISH (d0, q1, r0, m1, 'logging/debug', ... (13 bytes))" in text
    assert "secret" not in caplog.text
    assert "payload-bytes" not in caplog.text


def test_no_packet_tracing_while_debug_is_off(
    mosquitto: MosquittoBroker, make_client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mqttkit")
    client_id = unique("nodebug")
    client = make_client(url=mosquitto.url, client_id=client_id)
    Recorder(client, ("connect",)).wait_for("connect")
    assert client._engine.session.config.trace_packets is False  # no decode per PUBLISH
    assert not [r for r in caplog.records if r.levelno < logging.INFO]


def test_refused_login_is_logged_once(
    mosquitto_auth: MosquittoBroker, make_client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mqttkit")
    client_id = unique("refused")
    client = make_client(
        url=mosquitto_auth.url, client_id=client_id, username="alice", password="wrong"
    )
    wait_for_record(caplog, client_id, "not authorized")
    assert client.close().wait(5)
    about = [
        r
        for r in caplog.records
        if r.levelno >= logging.INFO and "not authorized" in r.getMessage()
    ]
    assert len(about) == 1, [r.getMessage() for r in caplog.records]
    assert about[0].levelno == logging.WARNING
    assert about[0].getMessage() == (
        f"[{client_id}] connection to {mosquitto_auth.url} failed: "
        "connection refused: not authorized (code 5); not reconnecting"
    )
    assert "wrong" not in caplog.text


def test_refused_login_is_logged_once_by_the_asyncio_client(
    mosquitto_auth: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mqttkit")
    client_id = unique("refused-aio")

    async def main() -> None:
        client = AsyncClient(
            mosquitto_auth.url, client_id=client_id, username="alice", password="wrong"
        )
        with pytest.raises(mqttkit.ConnectRefusedError):
            await client.connect()
        await client.close()

    asyncio.run(asyncio.wait_for(main(), 20))
    about = [
        r
        for r in caplog.records
        if r.levelno >= logging.INFO and "not authorized" in r.getMessage()
    ]
    assert len(about) == 1, [r.getMessage() for r in caplog.records]
    assert about[0].name == "mqttkit.client"


def test_no_doubled_prefix_under_basic_config(
    mosquitto_auth: MosquittoBroker, make_client, caplog: pytest.LogCaptureFixture
) -> None:
    # logging.basicConfig's format: "%(levelname)s:%(name)s:%(message)s".
    caplog.set_level(logging.DEBUG, logger="mqttkit")
    formatter = logging.Formatter(logging.BASIC_FORMAT)
    client = make_client(url=mosquitto_auth.url, username="alice", password="wrong")
    wait_for_record(caplog, client.client_id, "not reconnecting")
    client.on("message", lambda topic: 1 / 0)  # a raising listener: logged by the client
    lines = [formatter.format(r) for r in caplog.records if r.name.startswith("mqttkit")]
    assert lines
    for line in lines:
        assert not re.search(r"mqttkit: ?mqttkit", line), line
    for record in caplog.records:
        assert not record.getMessage().startswith("mqttkit"), record.getMessage()


def test_no_log_message_repeats_the_logger_name() -> None:
    # The logger's name is the formatter's business: "mqttkit: ..." in a message doubles it.
    pattern = re.compile(
        r"""\blog\w*\.(debug|info|warning|error|exception|log)\(\s*(\w+,\s*)?["']mqttkit"""
    )
    offenders = [
        f"{path.relative_to(SRC)}: {match[0]}"
        for path in sorted(SRC.rglob("*.py"))
        for match in pattern.finditer(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_the_core_names_the_client_too(make_client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mqttkit")
    client_id = unique("core")
    with FakeBroker() as broker:
        client = make_client(url=broker.url, client_id=client_id)
        rec = Recorder(client, ("connect",))
        conn = broker.accept()
        conn.handshake()
        rec.wait_for("connect")
        conn.send_raw(b"\x40\x02\x00\x4d")  # a PUBACK for packet id 77, never sent
        record = wait_for_record(caplog, client_id, "ignored PUBACK for packet id 77")
    assert record.name == "mqttkit.client"
    assert record.getMessage().startswith(f"[{client_id}] ")
