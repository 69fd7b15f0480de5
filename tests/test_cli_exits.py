"""Exit statuses and error messages, side by side with Mosquitto's tools: bad flags (status 1,
Mosquitto's first line), refused logins (the CONNACK code), nothing listening (1), a connection
the broker closes (7, at once), a PUBACK with a failure reason (a warning, status 0)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from mqttkit import cli
from mqttkit.cli.exits import EXIT_CONN_LOST, EXIT_ERROR, describe
from mqttkit.protocol.errors import HostNotFoundError, KeepaliveTimeoutError
from mqttkit.protocol.packets import Disconnect, PubAck, Publish
from mqttkit.testing import MosquittoBroker
from tests.cli.tools import TIMEOUT, Result, both, hp, mqttkit, real
from tests.support.fake_broker import FakeBroker

BAD_FLAGS = [
    ("pub", ["-t", "a"]),
    ("pub", ["-m", "x"]),
    ("pub", ["-t", "a/#", "-m", "x"]),
    ("pub", ["-t", "a", "-m", "x", "-q", "3"]),
    ("pub", ["--bogus"]),
    ("pub", ["-t", "a", "-m", "x", "-p"]),
    ("pub", ["-t", "a", "-m", "x", "-m", "y"]),
    ("pub", ["-t", "a", "-m", "x", "-f", "/etc/hostname"]),
    ("pub", ["-t", "a", "-m", "x", "-p", "70000"]),
    ("pub", ["-t", "a", "-m", "x", "-k", "4"]),
    ("pub", ["-t", "a", "-m", "x", "-M", "0"]),
    ("pub", ["-t", "a", "-m", "x", "--repeat", "0"]),
    ("pub", ["-t", "a", "-m", "x", "--repeat-delay", "-1"]),
    ("pub", ["-t", "a", "-m", "x", "-x", "-2"]),
    ("pub", ["-t", "a", "-m", "x", "-x", "abc"]),
    ("pub", ["-t", "a", "-m", "x", "--will-qos", "3"]),
    ("pub", ["-t", "a", "-m", "x", "--will-payload", "x"]),
    ("pub", ["-t", "a", "-m", "x", "--will-retain"]),
    ("pub", ["-t", "a", "-m", "x", "--will-topic", "w/#"]),
    ("pub", ["-t", "a", "-m", "x", "-c"]),
    ("pub", ["-t", "a", "-m", "x", "-V", "4"]),
    ("pub", ["-t", "a", "-m", "x", "-i", "a", "-I", "b"]),
    ("pub", ["-L", "mqtt://127.0.0.1:1", "-m", "x"]),
    ("pub", ["-L", "http://127.0.0.1:1/a", "-m", "x"]),
    ("pub", ["-t", "a", "-m", "x", "-D", "bogus", "user-property", "a", "b"]),
    ("pub", ["-t", "a", "-m", "x", "-D", "connect", "bogus", "1"]),
    ("pub", ["-t", "a", "-m", "x", "-D", "connect", "content-type", "x"]),
    ("pub", ["-t", "a", "-m", "x", "-D", "connect", "receive-maximum", "70000"]),
    ("pub", ["-t", "a", "-m", "x", "-D", "connect"]),
    ("pub", ["-t", "a", "-m", "x", "--psk", "01"]),
    ("pub", ["-t", "a", "-m", "x", "--cafile", "/nonexistent"]),
    ("sub", []),
    ("sub", ["-t", "a/#/b"]),
    ("sub", ["-t", "a", "-T", "b/#/x"]),
    ("sub", ["-t", "a", "-C", "0"]),
    ("sub", ["-t", "a", "-W", "0"]),
    ("sub", ["-t", "a", "-q", "3"]),
    ("sub", ["-t", "a", "-c", "-V", "5"]),
    ("sub", ["-t", "a", "--random-filter", "0"]),
    ("sub", ["-t", "a", "-l"]),
    ("rr", ["-t", "a", "-m", "x"]),
    ("rr", ["-t", "a", "-e", "r/#", "-m", "x"]),
    ("rr", ["-t", "a/+", "-e", "r", "-m", "x"]),
]


@pytest.mark.parametrize(("tool", "args"), BAD_FLAGS)
def test_bad_flags_exit_1_with_mosquittos_message(tool: str, args: list[str]) -> None:
    # Port 1: were anything to connect, it would be refused; bad flags must stop it first.
    expected, ours = both(tool, "-h", "127.0.0.1", *args)
    assert ours.returncode == expected.returncode == EXIT_ERROR
    assert ours.first_error_line.startswith(b"Error: ")
    if b"File not found" in expected.first_error_line:
        assert ours.first_error_line.startswith(expected.first_error_line[:-1])  # + the path
    else:
        assert ours.first_error_line == expected.first_error_line
    assert ours.stdout == b""
    assert ours.stderr.endswith(f"Use 'mqttkit {tool} --help' to see usage.\n".encode())


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("pub", ["-t", "a", "-m", "x"]),
        ("pub", ["-t", "a", "-m", "x", "-V", "5"]),
        ("sub", ["-t", "a"]),
        ("sub", ["-t", "a", "-V", "5"]),
        ("rr", ["-t", "a", "-e", "b", "-m", "x", "-V", "5"]),
    ],
)
def test_a_refused_login_exits_with_the_connack_code(
    mosquitto_auth: MosquittoBroker, tool: str, args: list[str]
) -> None:
    expected, ours = both(tool, *hp(mosquitto_auth), "-u", "alice", "-P", "wrong", *args)
    assert ours.returncode == expected.returncode
    assert ours.returncode == (135 if "5" in args else 5)
    assert ours.first_error_line == expected.first_error_line
    assert ours.stdout == b""


def test_nothing_listening_exits_1() -> None:
    with FakeBroker() as broker:
        port = str(broker.port)
    for tool, args in (("pub", ["-t", "a", "-m", "x"]), ("sub", ["-t", "a"])):
        expected, ours = both(tool, "-h", "127.0.0.1", "-p", port, *args)
        assert ours.returncode == expected.returncode == EXIT_ERROR
        assert ours.first_error_line == expected.first_error_line == b"Error: Connection refused"


def test_quiet_prints_no_runtime_error(mosquitto_auth: MosquittoBroker) -> None:
    expected, ours = both("sub", *hp(mosquitto_auth), "-t", "a", "--quiet")
    assert (ours.returncode, ours.stderr) == (expected.returncode, expected.stderr) == (5, b"")


def test_a_message_the_broker_closes_the_connection_on_fails_at_once(
    mosquitto_factory: Callable[..., MosquittoBroker],
) -> None:
    # Over MQTT 3.1.1 a PUBLISH over Mosquitto's max_packet_size makes it close the connection:
    # mosquitto_pub says "connection lost" (status 7) at once, and so does mqttkit.
    broker = mosquitto_factory(extra_config="max_packet_size 100")
    payload = "x" * 500
    for qos in ("1", "2"):
        expected = real("pub", *hp(broker), "-t", "big", "-m", payload, "-q", qos)
        started = time.monotonic()
        ours = mqttkit("pub", *hp(broker), "-t", "big", "-m", payload, "-q", qos)
        took = time.monotonic() - started
        assert ours.returncode == expected.returncode == EXIT_CONN_LOST
        assert ours.first_error_line == expected.first_error_line
        assert ours.first_error_line == b"Error: The connection was lost."
        assert b"right after PUBLISH id 1" in ours.stderr  # mqttkit says which message
        assert took < 5.0, took  # not a 30 s wait
    # With -l (reconnecting), the refused line fails after three tries, and the rest go on.
    lines = mqttkit(
        "pub",
        *hp(broker),
        "-t",
        "big",
        "-q",
        "1",
        "-l",
        stdin=b"small\n" + payload.encode() + b"\nsmall again\n",
    )
    assert lines.returncode == 0
    assert lines.first_error_line == b"Warning: Publish 2 failed: Unspecified error."


def _append(into: list[Result], run: Callable[..., Result], args: list[str]) -> None:
    into.append(run(*args))


def test_a_failure_reason_in_puback_is_a_warning() -> None:
    # As mosquitto_pub: "Warning: Publish 1 failed: <reason>." and status 0.
    results: list[Result] = []
    for run in (real, mqttkit):
        with FakeBroker() as broker:
            args = ["-h", "127.0.0.1", "-p", str(broker.port), "-t", "t", "-m", "x", "-q", "1"]
            outcome: list[Result] = []
            runner = threading.Thread(
                target=_append, args=(outcome, run, ["pub", *args, "-V", "5"]), daemon=True
            )
            runner.start()
            conn = broker.accept(TIMEOUT)
            conn.handshake()
            publish = conn.expect(Publish)
            conn.send(PubAck(publish.packet_id, 0x87))
            conn.expect(Disconnect)
            runner.join(TIMEOUT)
            assert not runner.is_alive()
        results.append(outcome[0])
    expected, ours = results
    assert ours.returncode == expected.returncode == 0
    assert ours.stderr == expected.stderr == b"Warning: Publish 1 failed: Not authorized.\n"


def test_describe_maps_errors_to_mosquittos_statuses() -> None:
    assert describe(HostNotFoundError("cannot resolve host 'x'"), "pub") == (
        EXIT_ERROR,
        ["Unable to connect (Lookup error.).", "  cannot resolve host 'x'"],
    )
    assert describe(KeepaliveTimeoutError("no PINGRESP"), "pub")[0] == 19


def test_sigterm_ends_sub_with_status_0(mosquitto: MosquittoBroker) -> None:
    import signal

    from tests.cli.tools import background, wait_subscribed

    with background("sub", *hp(mosquitto), "-t", "x", "-i", "term") as sub:
        wait_subscribed(mosquitto, "term", "x")
        sub.proc.send_signal(signal.SIGTERM)
        done = sub.finish()
    assert (done.returncode, done.stderr) == (0, b"")
    with background("sub", *hp(mosquitto), "-t", "x", "-i", "int") as sub:
        wait_subscribed(mosquitto, "int", "x")
        sub.proc.send_signal(signal.SIGINT)
        done = sub.finish()
    assert (done.returncode, done.stderr) == (0, b"")


def test_main_returns_the_status_in_process() -> None:
    assert cli.main(["pub", "--bogus"]) == EXIT_ERROR
    assert cli.main([]) == EXIT_ERROR
    assert cli.main(["nonsense"]) == EXIT_ERROR
