"""``mqttkit pub`` and ``mqttkit sub`` side by side with mosquitto_pub and mosquitto_sub: the same
flags against the same Mosquitto give the same output bytes and exit status.

Retained messages make the comparisons deterministic: each subscriber gets them all, in the
broker's order, as soon as it subscribes. Live messages are published once both subscribers
are subscribed (seen in the broker's log).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mqttkit import cli
from mqttkit.protocol.packets import MQTT_5, Disconnect, PubAck, Publish
from mqttkit.testing import MosquittoBroker
from tests.cli.tools import TIMEOUT, background, both, hp, mqttkit, real, wait_subscribed
from tests.support.fake_broker import FakeBroker
from tests.support.proxy_server import ProxyServer


def retained(broker: MosquittoBroker, topic: str, *args: str) -> None:
    """Publish a retained message with mosquitto_pub."""
    done = real("pub", *hp(broker), "-t", topic, "-r", *args)
    assert done.returncode == 0, done.stderr


def test_pub_each_qos_and_source_reaches_sub_as_with_mosquitto(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    blob = bytes(range(256)) * 8
    (tmp_path / "blob").write_bytes(blob)
    sources = [
        ["-m", "text é"],
        ["-f", str(tmp_path / "blob")],
        ["-s"],
        ["-n"],
    ]
    for qos in ("0", "1", "2"):
        for index, source in enumerate(sources):
            ours = mqttkit(
                "pub",
                *hp(mosquitto),
                "-t",
                f"p/{qos}/{index}",
                "-q",
                qos,
                "-r",
                *source,
                stdin=b"all of\nstdin\r\n",
            )
            assert (ours.returncode, ours.stdout, ours.stderr) == (0, b"", b"")
    # -n retained clears: 3 of the 4 sources per QoS remain. Both subscribers print the same.
    real_out, ours_out = both("sub", *hp(mosquitto), "-t", "p/#", "-C", "9", "-v", "-q", "2")
    assert real_out.returncode == ours_out.returncode == 0
    assert ours_out.stdout == real_out.stdout
    assert b"p/1/0 text \xc3\xa9\n" in ours_out.stdout
    assert b"p/2/1 " + blob + b"\n" in ours_out.stdout
    assert b"p/0/2 all of\nstdin\r\n\n" in ours_out.stdout


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["-v"],
        ["-N"],
        ["-v", "-N"],
        ["-R", "-W", "1"],
        ["--retained-only", "-C", "3"],
    ],
    ids=["payload", "verbose", "no-eol", "verbose-no-eol", "no-stale", "retained-only"],
)
def test_sub_output_modes_are_mosquittos(mosquitto: MosquittoBroker, flags: list[str]) -> None:
    retained(mosquitto, "o/a", "-m", "alpha")
    retained(mosquitto, "o/b", "-m", "two words\tand a tab")
    retained(mosquitto, "o/c", "-m", "")  # clears nothing: no retained message there
    retained(mosquitto, "o/c", "-m", "gamma")
    count = [] if "-C" in flags or "-W" in flags else ["-C", "3"]
    real_out, ours_out = both("sub", *hp(mosquitto), "-t", "o/#", *count, *flags)
    assert ours_out.returncode == real_out.returncode
    assert ours_out.stdout == real_out.stdout
    assert ours_out.stderr == real_out.stderr


def test_empty_payloads_print_as_mosquitto_sub_prints_them(mosquitto: MosquittoBroker) -> None:
    # Live: an empty retained message would clear rather than be kept.
    for flags in ([], ["-v"], ["-v", "-N"]):
        with (
            background("sub", *hp(mosquitto), "-t", "e/x", "-C", "2", "-i", "ours", *flags) as o,
            background(
                "sub", *hp(mosquitto), "-t", "e/x", "-C", "2", "-i", "real", *flags, ours=False
            ) as r,
        ):
            wait_subscribed(mosquitto, "ours", "e/x")
            wait_subscribed(mosquitto, "real", "e/x")
            assert real("pub", *hp(mosquitto), "-t", "e/x", "-n").returncode == 0
            assert real("pub", *hp(mosquitto), "-t", "e/x", "-m", "x").returncode == 0
            ours_out, real_out = o.finish(), r.finish()
        assert (ours_out.returncode, ours_out.stdout) == (real_out.returncode, real_out.stdout)
        mosquitto.log_path.write_text("")  # the next round waits for its own subscriptions


def test_filter_out_unsubscribe_and_remove_retained(mosquitto: MosquittoBroker) -> None:
    for topic in ("f/a", "f/b", "f/c/d"):
        retained(mosquitto, topic, "-m", topic)
    real_out, ours_out = both(
        "sub", *hp(mosquitto), "-t", "f/#", "-T", "f/b", "-T", "f/c/#", "-C", "1", "-v"
    )
    assert (ours_out.returncode, ours_out.stdout) == (real_out.returncode, real_out.stdout)
    assert ours_out.stdout == b"f/a f/a\n"
    # -U after -t: the retained messages came with the SUBSCRIBE, and nothing after.
    real_out, ours_out = both("sub", *hp(mosquitto), "-t", "f/#", "-U", "f/#", "-W", "1", "-v")
    assert (
        (ours_out.returncode, ours_out.stdout)
        == (real_out.returncode, real_out.stdout)
        == (
            27,
            b"f/a f/a\nf/b f/b\nf/c/d f/c/d\n",
        )
    )
    # --remove-retained clears what it receives, except what -T filters out.
    done = mqttkit(
        "sub", *hp(mosquitto), "-t", "f/#", "-T", "f/b", "--remove-retained", "-W", "1", "-q", "1"
    )
    assert done.returncode == 27
    left = real("sub", *hp(mosquitto), "-t", "f/#", "-W", "1", "-v")
    assert left.stdout == b"f/b f/b\n"


def test_exit_after_subscribe_sets_up_a_persistent_session(mosquitto: MosquittoBroker) -> None:
    ours = mqttkit("sub", *hp(mosquitto), "-t", "s/q", "-q", "1", "-c", "-i", "keeper", "-E")
    assert (ours.returncode, ours.stdout) == (0, b"")
    for n in range(3):
        assert real("pub", *hp(mosquitto), "-t", "s/q", "-q", "1", "-m", f"m{n}").returncode == 0
    got = mqttkit("sub", *hp(mosquitto), "-t", "s/q", "-q", "1", "-c", "-i", "keeper", "-C", "3")
    assert (got.returncode, got.stdout) == (0, b"m0\nm1\nm2\n")


def test_sub_reconnects_when_the_broker_restarts(mosquitto: MosquittoBroker) -> None:
    with background("sub", *hp(mosquitto), "-t", "r/x", "-C", "2", "-v", "-i", "survivor") as sub:
        wait_subscribed(mosquitto, "survivor", "r/x")
        assert real("pub", *hp(mosquitto), "-t", "r/x", "-m", "before").returncode == 0
        # Arrived before the restart: a QoS 0 message the broker still held when it was
        # stopped would be lost by the broker, not by the subscriber.
        assert sub.read_line() == b"r/x before\n"
        mosquitto.restart()
        wait_subscribed(mosquitto, "survivor", "r/x", times=2)  # subscribed again, by itself
        assert real("pub", *hp(mosquitto), "-t", "r/x", "-m", "after").returncode == 0
        done = sub.finish()
    assert (done.returncode, done.stdout, done.stderr) == (0, b"r/x before\nr/x after\n", b"")


def test_pub_stdin_lines_go_out_one_by_one_across_a_restart(mosquitto: MosquittoBroker) -> None:
    with background(
        "sub", *hp(mosquitto), "-t", "l/x", "-C", "3", "-q", "1", "-c", "-i", "lines-sub"
    ) as sub:
        wait_subscribed(mosquitto, "lines-sub", "l/x")
        sent = mqttkit(
            "pub", *hp(mosquitto), "-t", "l/x", "-q", "1", "-l", stdin=b"one\ntwo\r\nthree"
        )
        assert (sent.returncode, sent.stderr) == (0, b"")
        done = sub.finish()
    assert done.stdout == b"one\ntwo\nthree\n"


def test_repeat_and_repeat_delay(mosquitto: MosquittoBroker) -> None:
    with background("sub", *hp(mosquitto), "-t", "rep", "-C", "3", "-q", "1", "-i", "rep") as sub:
        wait_subscribed(mosquitto, "rep", "rep")
        sent = mqttkit(
            "pub",
            *hp(mosquitto),
            "-t",
            "rep",
            "-m",
            "again",
            "-q",
            "1",
            "--repeat",
            "3",
            "--repeat-delay",
            "0.05",
        )
        assert sent.returncode == 0, sent.stderr
        done = sub.finish()
    assert done.stdout == b"again\n" * 3


def test_sub_head_1_exits_quietly_without_waiting_for_more(mosquitto: MosquittoBroker) -> None:
    retained(mosquitto, "h/x", "-m", "first")
    import subprocess
    import sys

    from tests.cli.tools import _env

    pipeline = subprocess.run(
        [
            "bash",
            "-c",
            f"{sys.executable} -m mqttkit sub -h {mosquitto.host} -p {mosquitto.port}"
            ' -t h/x -t h/y | head -1; echo "status ${PIPESTATUS[0]}"',
        ],
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
        env=_env(),
    )
    # Killed by SIGPIPE (128 + 13) as mosquitto_sub is, once head has gone: no traceback, and
    # no waiting for a next message to find out.
    assert pipeline.stdout == b"first\nstatus 141\n"
    assert pipeline.stderr == b""


def test_sub_timeout_exits_27(mosquitto: MosquittoBroker) -> None:
    real_out, ours_out = both("sub", *hp(mosquitto), "-t", "nothing", "-W", "1")
    assert (
        (ours_out.returncode, ours_out.stdout, ours_out.stderr)
        == (
            real_out.returncode,
            real_out.stdout,
            real_out.stderr,
        )
        == (cli.EXIT_TIMEOUT, b"", b"Timed out\n")
    )


def test_url_with_credentials_and_topic(mosquitto_auth: MosquittoBroker) -> None:
    url = f"mqtt://alice:secret@{mosquitto_auth.host}:{mosquitto_auth.port}/u/x"
    assert mqttkit("pub", "-L", url, "-m", "via url", "-r", "-q", "1").returncode == 0
    real_out, ours_out = both("sub", "-L", url, "-C", "1", "-v")
    assert (
        (ours_out.returncode, ours_out.stdout)
        == (real_out.returncode, real_out.stdout)
        == (
            0,
            b"u/x via url\n",
        )
    )
    # -L then -h: the later flag wins, as in Mosquitto's tools.
    moved = mqttkit("sub", "-L", url, "-h", "localhost", "-C", "1")
    assert moved.stdout == b"via url\n"


def test_debug_lines_are_libmosquittos(mosquitto: MosquittoBroker) -> None:
    retained(mosquitto, "d/0", "-m", "zero")
    retained(mosquitto, "d/1", "-m", "one", "-q", "1")
    args = ["-t", "d/0", "-q", "2", "-C", "1", "-d", "-i", "dbg"]
    real_out, ours_out = both("sub", *hp(mosquitto), *args)
    assert ours_out.returncode == real_out.returncode == 0
    assert ours_out.stdout == real_out.stdout
    assert ours_out.stdout.startswith(b"Client dbg sending CONNECT\nClient dbg received CONNACK")
    # A QoS 1/2 message is acknowledged once printed (mqttkit acknowledges what it has
    # handled); libmosquitto acknowledges first. The one documented difference of -d.
    args = ["-t", "d/1", "-q", "1", "-C", "1", "-d", "-i", "dbg"]
    real_out, ours_out = both("sub", *hp(mosquitto), *args)
    ack = b"Client dbg sending PUBACK (m1, rc0)\n"
    assert ours_out.stdout == real_out.stdout.replace(ack + b"one\n", b"one\n" + ack)
    for qos in ("0", "1", "2"):
        args = ["-t", "d/y", "-m", "x", "-q", qos, "-d", "-i", "dbgpub"]
        real_out, ours_out = both("pub", *hp(mosquitto), *args)
        if qos == "0":  # libmosquitto numbers QoS 0 messages too; they have no packet id
            ours_out = type(ours_out)(
                ours_out.returncode,
                ours_out.stdout.replace(b"m0, 'd/y'", b"m1, 'd/y'"),
                ours_out.stderr,
            )
        assert ours_out.stdout == real_out.stdout, qos


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
            "c/t",
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
            "-x",
            "120",
            "-D",
            "connect",
            "user-property",
            "k",
            "v",
            "-D",
            "publish",
            "content-type",
            "text/plain",
            "--will-topic",
            "c/will",
            "--will-payload",
            "gone",
            "--will-qos",
            "1",
            "--will-retain",
            "-D",
            "will",
            "will-delay-interval",
            "5",
            *("-D", "disconnect", "user-property", "bye", "now"),
        ]
        runner = threading.Thread(target=lambda: result.append(cli.main(args)), daemon=True)
        runner.start()
        conn = broker.accept()
        connect = conn.handshake()
        publish = conn.expect(Publish)
        conn.send(PubAck(publish.packet_id))
        disconnect = conn.expect(Disconnect)
        runner.join(TIMEOUT)
        assert not runner.is_alive()
    assert result == [0]
    assert disconnect.properties.user_property == (("bye", "now"),)
    assert connect.protocol_level == MQTT_5
    assert (connect.client_id, connect.keepalive, connect.clean_start) == ("cli-id", 33, False)
    assert (connect.username, connect.password) == ("bob", b"pw")
    assert connect.properties.session_expiry_interval == 120
    assert connect.properties.user_property == (("k", "v"),)
    assert connect.will is not None
    will = connect.will
    assert (will.topic, will.payload, will.qos, will.retain) == ("c/will", b"gone", 1, True)
    assert will.properties.will_delay_interval == 5
    assert (publish.topic, publish.payload, publish.qos) == ("c/t", b"payload", 1)
    assert publish.properties.content_type == "text/plain"


@pytest.mark.parametrize(
    ("args", "session_expiry", "clean"),
    [
        (["-V", "5"], None, True),
        (["-V", "5", "-c", "-i", "x"], 0xFFFFFFFF, False),
        (["-V", "5", "-c", "-i", "x", "-x", "60"], 60, False),
        (["-V", "5", "-x", "∞", "-i", "x"], 0xFFFFFFFF, True),
        (["-V", "311", "-x", "60"], None, True),  # ignored with MQTT 3.1.1, as by Mosquitto
        (["-D", "connect", "receive-maximum", "7"], None, True),  # -D alone means MQTT 5
    ],
)
def test_session_expiry_as_mosquitto_sets_it(
    args: list[str], session_expiry: int | None, clean: bool
) -> None:
    with FakeBroker() as broker:
        result: list[int] = []
        argv = ["pub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", "t", "-n", *args]
        runner = threading.Thread(target=lambda: result.append(cli.main(argv)), daemon=True)
        runner.start()
        conn = broker.accept()
        connect = conn.handshake()
        conn.expect(Publish)
        conn.expect(Disconnect)
        runner.join(TIMEOUT)
    assert result == [0]
    assert connect.properties.session_expiry_interval == session_expiry
    assert connect.clean_start is clean
    if "-D" in args:
        assert connect.protocol_level == MQTT_5
        assert connect.properties.receive_maximum == 7


def test_bind_address_and_proxy(mosquitto: MosquittoBroker) -> None:
    # -A: the connection comes from that local address (a host name: its first address).
    for address in ("127.0.0.1", "localhost"):
        expected, ours = both(
            "pub", *hp(mosquitto), "-t", "b/x", "-m", "x", "-A", address, "-i", f"bound-{address}"
        )
        assert ours.returncode == expected.returncode == 0, ours.stderr
        assert b"from 127.0.0.1:" in _connected_line(mosquitto, f"bound-{address}")
    # --proxy: both tools through the same SOCKS5 proxy (pproxy, on 127.0.0.1).
    proxy = ProxyServer(("socks5",)).start()
    try:
        with background("sub", *hp(mosquitto), "-t", "p/x", "-C", "2", "-i", "via") as sub:
            wait_subscribed(mosquitto, "via", "p/x")
            url = f"socks5h://{proxy.host}:{proxy.port}"
            for n, run in enumerate((real, mqttkit)):
                done = run("pub", *hp(mosquitto), "-t", "p/x", "-m", f"m{n}", "--proxy", url)
                assert done.returncode == 0, done.stderr
            assert sub.finish().stdout == b"m0\nm1\n"
    finally:
        proxy.close()


def _connected_line(broker: MosquittoBroker, client_id: str) -> bytes:
    for line in broker.log_text().splitlines():
        if f" as {client_id} (" in line:  # "New client connected from ADDR:PORT as ID (...)"
            return line.encode()
    raise AssertionError(f"{client_id} never connected:\n{broker.log_text()}")


def test_help_and_version() -> None:
    assert mqttkit("--help").returncode == 0
    for command in ("pub", "sub", "rr", "bench"):
        shown = mqttkit(command, "--help")
        assert shown.returncode == 0
        assert b"-h HOST, --host HOST" in shown.stdout  # -h is the host, as in Mosquitto's tools
    version = mqttkit("--version")
    assert (version.returncode, version.stdout) == (0, f"mqttkit {cli.version()}\n".encode())
    assert mqttkit("pub", "--version").stdout.startswith(b"mqttkit pub version ")


def test_the_console_script_is_cli_main() -> None:
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="mqttkit")
    assert script.load() is cli.main
