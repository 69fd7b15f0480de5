"""``-F``: every format field, flag, width, precision and escape, and the JSON of ``%j`` / ``%J``,
byte for byte as mosquitto_sub prints them for the same messages.

The messages are retained on a real Mosquitto; mosquitto_sub prints them with each format, and
mqttkit's printer renders the same messages as an mqttkit client received them. Times differ
between the two runs, so the time fields are compared by shape.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import pytest

import mqttkit
from mqttkit.cli.flags import UsageError
from mqttkit.cli.output import Printer, compile_format
from mqttkit.protocol.packets import Properties, Publish
from mqttkit.testing import MosquittoBroker
from tests.cli.tools import hp, real
from tests.cli.tools import mqttkit as run_mqttkit

MESSAGES: list[tuple[str, bytes, list[str]]] = [
    (
        "fmt/a",
        b"hello world",
        [
            # mosquitto_sub prints properties in the order they arrive, mqttkit in the order of
            # PROPERTY_ORDER: published in that order, they arrive in it.
            "-q",
            "1",
            "-D",
            "publish",
            "payload-format-indicator",
            "1",
            "-D",
            "publish",
            "content-type",
            "text/plain",
            "-D",
            "publish",
            "response-topic",
            "resp/t",
            "-D",
            "publish",
            "correlation-data",
            "corr",
            "-D",
            "publish",
            "user-property",
            "k1",
            "v1",
            "-D",
            "publish",
            "user-property",
            "k1",
            "v2",
        ],
    ),
    (
        "fmt/b",
        b'{"a": [1, 2.50, "x"], "b": {"c": null}, "d": [], "e": {}, "f": [{"g": true}]}',
        # Not QoS 2: mosquitto_sub prints a QoS 2 message when its PUBREL arrives, after the
        # QoS 0 ones that came meanwhile; mqttkit when it arrives (the order would differ).
        ["-q", "1"],
    ),
    ("fmt/c", b'ctl\x01\x1f "q" \\ \t\n\r\x08\x0c \x7f \xff\xfe \xc3\xa9', []),
    ("fmt/d", b"0.30000000000000004", []),
    ("fmt/e", b"[12345678901234567890, 1e400, -0, 1.5e-7, 0.1, 1.0, 3.14159265358979323846]", []),
    ("fmt/f", b'"\\u00e9\\ud83d\\ude00 \\/ \\u0000cut"', []),
    ("fmt/g", b"123abc", []),
    ("fmt/h", b'  {"dup": 1, "dup": 2}  ', []),
]

FORMATS = [
    "%t|%p|%x|%X|%l|%m|%q|%r",
    "%A|%C|%D|%F|%R|%S|%P",
    "%5p|%-5p|%05p|%-05p|%.1p|%5x|%08X|%-8x|%.2x|%5l|%05l|%-5l|%5m|%05m|%5q|%5r",
    "%30p|%-40x|%040X|%1x|%2x|%3x",
    "%10t|%-10t|%05t|%.2t|%5.2t|%5.0t|%.t|%08.1t|%-5.1t",
    "%5C|%.1C|%05C|%0.2C|%5R|%.1R|%5D|%.1D|%10P|%.1P|%5S|%05S|%-4S|%5A|%05A|%3F|%03F|%-3F",
    "%%|%5%|%%5|\\t|\\\\|\\e|\\a|\\v|\\0|\\r|plain text é",
    "%j",
    "%J",
    "[%J]",
    "%3j|%3J",
]

_TIMES = [
    (re.compile(rb'"tst":(\t?)"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z[+-]\d{4}"'), rb'"tst":\1"T"'),
    (re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}"), b"ISO"),
    (re.compile(rb"\d{9,}\.\d{9}"), b"UNIX"),
]


def masked(data: bytes) -> bytes:
    for pattern, replacement in _TIMES:
        data = pattern.sub(replacement, data)
    return data


@pytest.fixture(scope="module")
def broker() -> Iterator[MosquittoBroker]:
    with MosquittoBroker() as b:  # started by `with`; a missing Mosquitto fails here
        for topic, payload, args in MESSAGES:
            done = real("pub", *hp(b), "-V", "5", "-t", topic, "-r", "-s", *args, stdin=payload)
            assert done.returncode == 0, done.stderr
        yield b


@pytest.fixture(scope="module")
def received(broker: MosquittoBroker) -> list[Publish]:
    """The retained messages as an mqttkit client receives them (QoS 2, subscription id 3)."""
    client = mqttkit.Client(url=broker.url, protocol_version=5)
    got: list[Publish] = []
    all_in = threading.Event()

    def on_message(topic: str, payload: bytes, packet: Publish) -> None:
        got.append(packet)
        if len(got) == len(MESSAGES):
            all_in.set()

    client.on("message", on_message)
    client.connect()
    try:
        client.subscribe("fmt/#", qos=2, properties=Properties(subscription_identifier=3)).result(
            10
        )
        assert all_in.wait(10), got
    finally:
        assert client.close().wait(10)
    assert [m.topic for m in got] == [topic for topic, _, _ in MESSAGES]
    return got


def mosquitto_sub(broker: MosquittoBroker, *args: str) -> tuple[bytes, bytes]:
    done = real(
        "sub",
        *hp(broker),
        "-V",
        "5",
        "-t",
        "fmt/#",
        "-q",
        "2",
        "-C",
        str(len(MESSAGES)),
        "-D",
        "subscribe",
        "subscription-identifier",
        "3",
        *args,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


CASES = [(fmt, False) for fmt in FORMATS] + [
    (fmt, True)
    for fmt in FORMATS
    if "j" in fmt.lower()  # --pretty changes only %j and %J
]


@pytest.mark.parametrize(("fmt", "pretty"), CASES)
def test_format_output_is_mosquitto_subs(
    broker: MosquittoBroker, received: list[Publish], fmt: str, pretty: bool
) -> None:
    flags = ["--pretty"] if pretty else []
    expected_out, expected_err = mosquitto_sub(broker, "-F", fmt, *flags)
    printer = Printer(fmt, pretty=pretty)
    out, err = b"", b""
    for message in received:
        rendered = printer.render(message)
        out += rendered.data
        err += b"".join(w.encode() + b"\n" for w in rendered.warnings)
    assert masked(out) == masked(expected_out)
    assert err == expected_err


def test_no_eol_and_verbose_with_a_format(broker: MosquittoBroker, received: list[Publish]) -> None:
    # -F wins over -v; -N still drops the newline.
    expected, _ = mosquitto_sub(broker, "-F", "%t", "-v", "-N")
    assert b"".join(Printer("%t", verbose=True, eol=False).render(m).data for m in received) == (
        expected
    )


def test_time_fields(received: list[Publish]) -> None:
    at = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z
    local = time.localtime(1_700_000_000)
    offset = time.strftime("%z", local).encode()
    printer = Printer("%U|%I|@Y-@m-@d@H:@M:@S|@N|@@|@s")
    rendered = printer.render(received[0], at).data
    assert rendered == (
        b"1700000000.123456789|"
        + time.strftime("%Y-%m-%dT%H:%M:%S", local).encode()
        + offset
        + b"|"
        + time.strftime("%Y-%m-%d%H:%M:%S", local).encode()
        + b"|123456789|@|1700000000\n"
    )
    tst = Printer("%j").render(received[0], at).data
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", local).encode() + b".123456Z" + offset
    assert tst.startswith(b'{"tst":"' + stamp + b'","topic":"fmt/a"')


def test_message_expiry_and_the_end_to_end_path(broker: MosquittoBroker) -> None:
    done = real(
        "pub",
        *hp(broker),
        "-V",
        "5",
        "-t",
        "exp/x",
        "-r",
        "-m",
        "x",
        "-D",
        "publish",
        "message-expiry-interval",
        "3600",
    )
    assert done.returncode == 0
    fmt = "%E|%05E|%-6E|%t|%j"
    expected = real("sub", *hp(broker), "-V", "5", "-t", "exp/x", "-C", "1", "-F", fmt)
    ours = run_mqttkit("sub", *hp(broker), "-V", "5", "-t", "exp/x", "-C", "1", "-F", fmt)
    assert ours.returncode == expected.returncode == 0
    # The broker counts the expiry down: a second may have passed between the two runs.
    pattern = rb"(\d+)\|0(\d+)\|(\d+) *\|exp/x\|.*\"message-expiry-interval\":(\d+)\}"
    a = re.fullmatch(pattern + rb".*\n", masked(expected.stdout))
    b = re.fullmatch(pattern + rb".*\n", masked(ours.stdout))
    assert a is not None, expected.stdout
    assert b is not None, ours.stdout
    assert 3598 <= int(b.group(1)) <= int(a.group(1)) <= 3600
    assert masked(ours.stdout).replace(b.group(1), a.group(1)) == masked(expected.stdout)


def test_a_nul_in_the_payload_is_escaped_in_json(broker: MosquittoBroker) -> None:
    # Documented difference: mosquitto_sub cuts %j's payload at a NUL byte; mqttkit writes it
    # as \u0000 and the rest follows.
    message = Publish("n/x", b"a\x00b", 0)
    assert Printer("%j").render(message).data.endswith(b'"payload":"a\\u0000b"}\n')


@pytest.mark.parametrize(
    ("fmt", "error"),
    [
        ("%B", "Invalid format specifier 'B'."),
        ("%@s", "Invalid format specifier '@'."),
        ("%0-5l", "Invalid format specifier '-'."),
        ("%5.5.5t", "Invalid format specifier '.'."),
        ("end%", "Incomplete format specifier."),
        ("%10", "Incomplete format specifier."),
        ("end@", "Incomplete format specifier."),
        ("a\\qb", "Invalid escape specifier 'q'."),
        ("end\\", "Incomplete escape specifier."),
    ],
)
def test_bad_formats_are_refused_as_by_mosquitto_sub(fmt: str, error: str) -> None:
    with pytest.raises(UsageError) as caught:
        compile_format(fmt)
    assert str(caught.value) == error
    expected = real("sub", "-t", "x", "-F", fmt)
    ours = run_mqttkit("sub", "-t", "x", "-F", fmt)
    assert ours.returncode == expected.returncode == 1
    assert ours.first_error_line == expected.first_error_line == f"Error: {error}".encode()
