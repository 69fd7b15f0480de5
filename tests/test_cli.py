"""``mqttkit pub|sub|bench`` (``python -m mqttkit``): the flags of mosquitto_pub / mosquitto_sub
against a real Mosquitto, and the CONNECT they produce against the fake broker."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mqttkit import cli
from mqttkit.protocol.packets import MQTT_5, Disconnect, PubAck, Publish
from mqttkit.testing import MosquittoBroker
from tests.support.fake_broker import FakeBroker

TIMEOUT = 20
Run = subprocess.CompletedProcess[bytes]


def mqttkit(
    *args: str, stdin: bytes = b"", timeout: float = TIMEOUT
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mqttkit", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def hp(broker: MosquittoBroker) -> list[str]:
    return ["-h", broker.host, "-p", str(broker.port)]


def test_retained_messages_at_each_qos_reach_a_later_sub(mosquitto: MosquittoBroker) -> None:
    for qos in (0, 1, 2):
        done = mqttkit(
            "pub", *hp(mosquitto), "-t", f"cli/r/{qos}", "-m", f"m{qos}", "-q", str(qos), "-r"
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == b""
    got = mqttkit("sub", *hp(mosquitto), "-t", "cli/r/#", "-q", "2", "-C", "3", "-v")
    assert got.returncode == 0, got.stderr
    assert sorted(got.stdout.splitlines()) == [b"cli/r/0 m0", b"cli/r/1 m1", b"cli/r/2 m2"]


def test_sub_prints_live_messages_and_exits_after_count(mosquitto: MosquittoBroker) -> None:
    sub = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mqttkit",
            "sub",
            *hp(mosquitto),
            "-t",
            "cli/live",
            "-C",
            "3",
            "-q",
            "1",
            "-d",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert sub.stderr is not None
        for _ in range(10):  # the debug lines: connected, then subscribed
            line = sub.stderr.readline()
            if b"subscribed" in line or not line:
                break
        assert b"subscribed: cli/live (QoS 1)" in line
        sent = mqttkit(
            "pub", *hp(mosquitto), "-t", "cli/live", "-q", "1", "-l", stdin=b"one\ntwo\r\nthree\n"
        )
        assert sent.returncode == 0, sent.stderr
        out, _ = sub.communicate(timeout=TIMEOUT)
    finally:
        if sub.poll() is None:
            sub.kill()
    assert sub.returncode == 0
    assert out == b"one\ntwo\nthree\n"


def test_sub_timeout_exits_27(mosquitto: MosquittoBroker) -> None:
    got = mqttkit("sub", *hp(mosquitto), "-t", "cli/nothing", "-W", "0.5")
    assert got.returncode == cli.EXIT_TIMEOUT == 27
    assert b"Timed out" in got.stderr
    assert got.stdout == b""


def test_no_stale_retained_only_and_no_eol(mosquitto: MosquittoBroker) -> None:
    assert mqttkit("pub", *hp(mosquitto), "-t", "cli/s", "-m", "old", "-r").returncode == 0
    stale = mqttkit("sub", *hp(mosquitto), "-t", "cli/s", "-R", "-W", "0.5")
    assert (stale.returncode, stale.stdout) == (27, b"")  # the retained one is not printed
    only = mqttkit("sub", *hp(mosquitto), "-t", "cli/s", "--retained-only", "-C", "1", "-N")
    assert (only.returncode, only.stdout) == (0, b"old")  # and no newline


def test_file_null_and_binary_payloads(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    blob = bytes(range(256)) * 40
    path = tmp_path / "blob.bin"
    path.write_bytes(blob)
    assert mqttkit("pub", *hp(mosquitto), "-t", "cli/f", "-f", str(path), "-r").returncode == 0
    got = mqttkit("sub", *hp(mosquitto), "-t", "cli/f", "-C", "1", "-N")
    assert got.stdout == blob
    assert (
        mqttkit("pub", *hp(mosquitto), "-t", "cli/n", "-s", "-r", stdin=b"all\nof it").returncode
        == 0
    )
    got = mqttkit("sub", *hp(mosquitto), "-t", "cli/n", "-C", "1", "-N")
    assert got.stdout == b"all\nof it"
    # -n: an empty retained message clears the retained one.
    assert mqttkit("pub", *hp(mosquitto), "-t", "cli/n", "-n", "-r").returncode == 0
    assert mqttkit("sub", *hp(mosquitto), "-t", "cli/n", "-W", "0.5").returncode == 27


def test_url_with_credentials_and_topic(mosquitto_auth: MosquittoBroker) -> None:
    url = f"mqtt://alice:secret@{mosquitto_auth.host}:{mosquitto_auth.port}/cli/url"
    assert mqttkit("pub", "-L", url, "-m", "via url", "-r", "-q", "1").returncode == 0
    got = mqttkit("sub", "-L", url, "-C", "1", "-v")
    assert (got.returncode, got.stdout) == (0, b"cli/url via url\n")
    bad = mqttkit("sub", "-L", url.replace("secret", "wrong"), "-C", "1")
    assert bad.returncode == 1
    assert b"Error:" in bad.stderr
    assert b"not authorized" in bad.stderr.lower() or b"bad user name" in bad.stderr.lower()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pub", "-t", "a/#", "-m", "x"], b"wildcard"),
        (["pub", "-t", "a"], b"give the message"),
        (["pub", "-m", "x"], b"give the topic"),
        (["sub", "-C", "1"], b"give at least one topic"),
        (["sub", "-t", "a", "-c"], b"-c needs a client id"),
        (["sub", "-t", "a", "-i", "x", "-I", "y"], b"-i and -I"),
        (["pub", "-t", "a", "-f", "/nonexistent/file"], b"cannot read"),
        (["bench", "-s", "4"], b"at least 8"),
    ],
)
def test_bad_input_exits_1_with_a_message(
    mosquitto: MosquittoBroker, args: list[str], message: bytes
) -> None:
    got = mqttkit(args[0], *hp(mosquitto), *args[1:])
    assert got.returncode == 1
    assert message in got.stderr
    assert got.stderr.startswith(b"Error: ")


def test_nothing_listening_exits_1() -> None:
    with FakeBroker() as broker:
        port = broker.port
    got = mqttkit("pub", "-h", "127.0.0.1", "-p", str(port), "-t", "a", "-m", "x")
    assert got.returncode == 1
    assert b"no MQTT broker accepts connections" in got.stderr


def test_bench_reports_every_message(mosquitto: MosquittoBroker) -> None:
    got = mqttkit("bench", *hp(mosquitto), "-n", "2000", "-q", "1", "-s", "32")
    assert got.returncode == 0, got.stderr
    assert b"2000 x 32 B at QoS 1" in got.stdout
    assert b"lost 0, duplicated 0" in got.stdout


def test_help_and_usage() -> None:
    assert mqttkit("--help").returncode == 0
    for command in ("pub", "sub", "bench"):
        shown = mqttkit(command, "--help")
        assert shown.returncode == 0
        assert b"-h HOST" in shown.stdout  # -h is the host, as in Mosquitto's tools
    assert mqttkit("pub", "-q", "3").returncode == 2  # argparse: invalid choice


def test_connect_flags_reach_the_connect_packet() -> None:
    # Against the fake broker: what each connection flag puts in CONNECT.
    with FakeBroker() as broker:
        result: list[int] = []
        args = [
            "pub",
            "-h",
            "127.0.0.1",
            "-p",
            str(broker.port),
            "-t",
            "cli/t",
            "-m",
            "payload",
            "-q",
            "1",
            "-i",
            "cli-id",
            "-k",
            "33",
            "-c",
            "-u",
            "bob",
            "-P",
            "pw",
            "-V",
            "5",
            "--will-topic",
            "cli/will",
            "--will-payload",
            "gone",
            "--will-qos",
            "1",
            "--will-retain",
        ]
        runner = threading.Thread(target=lambda: result.append(cli.main(args)), daemon=True)
        runner.start()
        conn = broker.accept()
        connect = conn.handshake()
        publish = conn.expect(Publish)
        conn.send(PubAck(publish.packet_id))
        conn.expect(Disconnect)
        runner.join(TIMEOUT)
        assert not runner.is_alive()
    assert result == [0]
    assert connect.protocol_level == MQTT_5
    assert connect.client_id == "cli-id"
    assert connect.keepalive == 33
    assert connect.clean_start is False
    assert connect.username == "bob"
    assert connect.password == b"pw"
    assert connect.will is not None
    assert (connect.will.topic, connect.will.payload, connect.will.qos, connect.will.retain) == (
        "cli/will",
        b"gone",
        1,
        True,
    )
    assert (publish.topic, publish.payload, publish.qos) == ("cli/t", b"payload", 1)


def test_the_console_script_is_cli_main() -> None:
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="mqttkit")
    assert script.load() is cli.main
