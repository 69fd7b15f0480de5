"""The command-line flags: one table, the parser that reads it, and the help it prints.

This module owns every flag of ``mqttkit pub|sub|rr|bench``: its names, the commands that take
it, what it means, and whether mqttkit supports it (``Status``). The table covers every flag of
mosquitto_pub, mosquitto_sub and mosquitto_rr 2.0, the few mqttkit adds, and those it leaves
out (each with the reason); docs/cli.md's flag table is checked against it by the tests.

Parsing follows Mosquitto's tools, not argparse: each argument is a whole flag (no bundling of
``-vq``), a flag's value is the next argument whatever it looks like (``-m -x`` publishes
"-x"), a flag given twice keeps the last value (except the repeatable ones), ``-D`` takes three
arguments (four for ``user-property``), and a bad flag is exit status 1 with ``Error: ...`` and a
pointer to ``--help``. It does no I/O beyond printing help and the version.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "COMMANDS",
    "FLAGS",
    "Args",
    "Flag",
    "Status",
    "UsageError",
    "flags_for",
    "help_text",
    "parse",
]

#: The commands, and the Mosquitto tool each one stands for.
COMMANDS: Final = {
    "pub": "mosquitto_pub",
    "sub": "mosquitto_sub",
    "rr": "mosquitto_rr",
    "bench": "",
}

_PUB: Final = frozenset({"pub"})
_SUB: Final = frozenset({"sub"})
_RR: Final = frozenset({"rr"})
_BENCH: Final = frozenset({"bench"})
_CLIENTS: Final = frozenset({"pub", "sub", "rr"})
_ALL: Final = frozenset({"pub", "sub", "rr", "bench"})


class UsageError(Exception):
    """Bad flags or flag values: exit status 1, ``Error: <message>`` and a pointer to --help."""


class Status(enum.Enum):
    """What mqttkit does with a flag (the docs table's status column)."""

    SUPPORTED = "supported"
    """Same meaning as in Mosquitto's tool."""
    EXTENSION = "mqttkit"
    """mqttkit's own flag; Mosquitto's tools have no such flag."""
    PENDING = "pending"
    """Accepted by the parser, refused with a message saying which client feature it waits for."""
    LEFT_OUT = "left out"
    """Deliberately not supported; refused with the reason."""


@dataclass(frozen=True)
class Flag:
    """One command-line flag."""

    names: tuple[str, ...]
    """Its spellings, short first (``("-h", "--host")``)."""
    dest: str
    """The :class:`Args` field it sets."""
    commands: frozenset[str]
    """The commands that take it."""
    help: str
    """One line for ``--help`` and the docs."""
    metavar: str | None = None
    """The value's name; None for a switch."""
    convert: Callable[[str, str], Any] | None = None
    """Turns the value into the field's type: ``convert(value, flag)``; raises UsageError."""
    const: Any = True
    """A switch's value."""
    repeat: bool = False
    """Each use appends to a list (``-t`` of sub, ``-T``, ``-U``, ``-D``)."""
    status: Status = Status.SUPPORTED
    note: str = ""
    """Why it is left out or pending, or how it differs from Mosquitto's."""
    mosquitto: frozenset[str] | None = None
    """The Mosquitto tools that have it (default: ``commands`` minus bench)."""

    @property
    def tools(self) -> frozenset[str]:
        """The commands whose Mosquitto tool has this flag."""
        if self.status is Status.EXTENSION:
            return frozenset()
        return (self.mosquitto if self.mosquitto is not None else self.commands) - _BENCH


# -- value converters ----------------------------------------------------------------------------


def _int(lo: int, hi: int, what: str) -> Callable[[str, str], int]:
    def convert(value: str, flag: str) -> int:
        try:
            number = int(value, 10)
        except ValueError:
            raise UsageError(f"{flag}: {what} must be a whole number, not {value!r}.") from None
        if not lo <= number <= hi:
            raise UsageError(f"{flag}: {what} must be between {lo} and {hi}, not {number}.")
        return number

    return convert


def _seconds(positive: bool) -> Callable[[str, str], float]:
    def convert(value: str, flag: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"{flag}: expected a number of seconds, not {value!r}.") from None
        if not math.isfinite(number):
            raise UsageError(f"{flag}: expected a finite number of seconds, not {value!r}.")
        if positive and number <= 0:
            raise UsageError(f"{flag}: the time must be more than 0 seconds, not {value}.")
        if number < 0:
            raise UsageError(f"{flag}: the time must be 0 or more seconds, not {value}.")
        return number

    return convert


def _qos(value: str, flag: str) -> int:
    if value not in ("0", "1", "2"):
        raise UsageError(f"Invalid QoS given: {value}")
    return int(value)


def _will_qos(value: str, flag: str) -> int:
    if value not in ("0", "1", "2"):
        raise UsageError(f"Invalid will QoS {value}.")
    return int(value)


def _timeout(value: str, flag: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise UsageError(f'Invalid timeout "{value}".')
    return seconds


def _port(value: str, flag: str) -> int:
    try:
        port = int(value, 10)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise UsageError(f"Invalid port given: {value}")
    return port


def _keepalive(value: str, flag: str) -> int:
    try:
        seconds = int(value, 10)
    except ValueError:
        seconds = -1
    if not 5 <= seconds <= 65535:
        raise UsageError("Invalid keepalive given, it must be between 5 and 65535 inclusive.")
    return seconds


_VERSIONS: Final = {
    "31": 3,
    "mqttv31": 3,
    "311": 4,
    "mqttv311": 4,
    "5": 5,
    "mqttv5": 5,
}


def _version(value: str, flag: str) -> int:
    try:
        return _VERSIONS[value]
    except KeyError:
        raise UsageError("Invalid protocol version argument given.") from None


def _session_expiry(value: str, flag: str) -> int:
    if value in ("-1", "∞"):
        return 0xFFFFFFFF
    try:
        seconds = int(value, 10)
    except ValueError:
        raise UsageError("session-expiry-interval not a number.") from None
    if not 0 <= seconds <= 0xFFFFFFFF:
        raise UsageError("session-expiry-interval out of range.")
    return seconds


def _max_inflight(value: str, flag: str) -> int:
    try:
        number = int(value, 10)
    except ValueError:
        number = 0
    if number < 1:
        raise UsageError("Maximum inflight messages must be greater than 0.")
    # Packet identifiers are 16 bits: more than 65,535 in flight cannot exist (Mosquitto takes
    # a larger number as no limit, which is the same).
    return min(number, 65535)


def _count(value: str, flag: str) -> int:
    try:
        number = int(value, 10)
    except ValueError:
        number = 0
    if number < 1:
        raise UsageError(f'Invalid message count "{value}".')
    return number


def _repeat(value: str, flag: str) -> int:
    try:
        number = int(value, 10)
    except ValueError:
        number = 0
    if number < 1:
        raise UsageError("--repeat argument must be >0.")
    return number


def _repeat_delay(value: str, flag: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0.0 <= seconds < float("inf"):
        raise UsageError("--repeat-delay argument must be >=0.0.")
    return seconds


def _chance(value: str, flag: str) -> float:
    try:
        chance = float(value)
    except ValueError:
        chance = -1.0
    if not 0.1 <= chance <= 100.0:
        raise UsageError("--random-filter chance must be between 0.1-100.0")
    return chance


def _retain_handling(value: str, flag: str) -> int:
    if value not in ("0", "1", "2"):
        raise UsageError(
            f"--rh must be 0 (retained messages on every subscribe), 1 (only on a new "
            f"subscription) or 2 (never), not {value!r}."
        )
    return int(value)


def _tls_version(value: str, flag: str) -> str:
    if value not in ("tlsv1.3", "tlsv1.2", "tlsv1.1"):
        raise UsageError(f"Invalid TLS version {value!r}: use tlsv1.3, tlsv1.2 or tlsv1.1.")
    return value


def _text(value: str, flag: str) -> str:
    return value


# -- the table ------------------------------------------------------------------------------------

_ENGINE = "OpenSSL engines (hardware keys, TPM) are not reachable through Python's ssl module"

FLAGS: Final[tuple[Flag, ...]] = (
    # Where to connect.
    Flag(("-h", "--host"), "host", _ALL, "broker host (default localhost)", "HOST", _text),
    Flag(
        ("-p", "--port"),
        "port",
        _ALL,
        "broker port (default 1883; 8883 with TLS; port 8883 turns TLS on)",
        "PORT",
        _port,
    ),
    Flag(
        ("-L", "--url"),
        "url",
        _ALL,
        "mqtt(s)://[user[:password]@]host[:port]/topic (mqttkit: also ws(s):// and unix://)",
        "URL",
        _text,
    ),
    Flag(("--unix",), "unix", _ALL, "connect through this Unix socket", "PATH", _text),
    Flag(
        ("-A",),
        "bind_address",
        _ALL,
        "bind the connection to this local address",
        "ADDRESS",
        _text,
        note="the client's `bind_address` option; a host name is resolved to its first address",
    ),
    Flag(
        ("--proxy",),
        "proxy",
        _ALL,
        "connect through this SOCKS5 proxy: socks5h://[user[:password]@]host[:port]",
        "URL",
        _text,
        note=(
            "the client's `proxy` option (`pip install 'mqttkit[proxy]'`); mqttkit also takes "
            "socks4:// and http:// (HTTP CONNECT) proxies"
        ),
    ),
    Flag(
        ("-S",),
        "srv",
        _ALL,
        "find the broker with a DNS SRV lookup",
        status=Status.LEFT_OUT,
        note=(
            "needs a DNS SRV resolver, which Python's standard library lacks (Debian's "
            "mosquitto-clients 2.0 is built without it too)"
        ),
    ),
    # Who we are.
    Flag(
        ("-i", "--id"),
        "client_id",
        _ALL,
        "client id (default: assigned by the broker)",
        "ID",
        _text,
    ),
    Flag(
        ("-I", "--id-prefix"),
        "id_prefix",
        _ALL,
        "client id = this prefix + the process id",
        "PREFIX",
        _text,
    ),
    Flag(("-u", "--username"), "username", _ALL, "user name", "USER", _text),
    Flag(("-P", "--pw"), "password", _ALL, "password", "PASSWORD", _text),
    Flag(
        ("-k", "--keepalive"),
        "keepalive",
        _ALL,
        "seconds between PINGREQs when idle, 5..65535 (default 60)",
        "SECONDS",
        _keepalive,
    ),
    Flag(
        ("-V", "--protocol-version"),
        "protocol",
        _ALL,
        "MQTT version: 31, 311 or 5 (mqttv31, mqttv311, mqttv5); default 311, rr: 5",
        "VERSION",
        _version,
    ),
    Flag(
        ("-c", "--disable-clean-session"),
        "persistent",
        _ALL,
        "keep the session on the broker (needs -i); MQTT 5: it never expires unless -x",
    ),
    Flag(
        ("-x",),
        "session_expiry",
        _ALL,
        "MQTT 5 session expiry interval in seconds; -1 or ∞: never (default -1 with -c, else 0)",
        "SECONDS",
        _session_expiry,
    ),
    Flag(
        ("-M",),
        "max_inflight",
        _ALL,
        "most outgoing QoS 1/2 messages awaiting acknowledgement",
        "COUNT",
        _max_inflight,
    ),
    Flag(
        ("--nodelay",),
        "nodelay",
        _ALL,
        "disable Nagle's algorithm",
        note="accepted and a no-op: mqttkit sets TCP_NODELAY on every TCP connection anyway",
    ),
    Flag(
        ("-D", "--property"),
        "properties",
        _ALL,
        "MQTT 5 property: COMMAND NAME VALUE (user-property: COMMAND user-property KEY VALUE)",
        "COMMAND NAME VALUE",
        repeat=True,
        note=(
            "commands connect, publish, subscribe, unsubscribe, disconnect and will, for the "
            "packets the command sends; auth, puback, pubrec, pubrel and pubcomp are refused "
            "(the client sends those itself, without properties from the command line)"
        ),
    ),
    # Last Will.
    Flag(("--will-topic",), "will_topic", _ALL, "topic of the Last Will", "TOPIC", _text),
    Flag(
        ("--will-payload",),
        "will_payload",
        _ALL,
        "payload of the Last Will (default empty)",
        "PAYLOAD",
        _text,
    ),
    Flag(("--will-qos",), "will_qos", _ALL, "QoS of the Last Will", "QOS", _will_qos),
    Flag(("--will-retain",), "will_retain", _ALL, "retain the Last Will"),
    # TLS.
    Flag(
        ("--cafile",),
        "cafile",
        _ALL,
        "trust the CA certificates in this PEM file: turns TLS on",
        "FILE",
        _text,
    ),
    Flag(
        ("--capath",),
        "capath",
        _ALL,
        "trust the CA certificates in this directory (hashed, `openssl rehash`): turns TLS on",
        "DIR",
        _text,
    ),
    Flag(
        ("--tls-use-os-certs",),
        "os_certs",
        _ALL,
        "trust the system's CA certificates: turns TLS on (default with mqtts:// or port 8883)",
    ),
    Flag(("--cert",), "certfile", _ALL, "client certificate (PEM), with TLS", "FILE", _text),
    Flag(("--key",), "keyfile", _ALL, "client private key (PEM)", "FILE", _text),
    Flag(("--ciphers",), "ciphers", _ALL, "OpenSSL cipher list (TLS 1.2 and below)", "LIST", _text),
    Flag(
        ("--tls-version",),
        "tls_version",
        _ALL,
        "use exactly this TLS version: tlsv1.3, tlsv1.2 or tlsv1.1",
        "VERSION",
        _tls_version,
    ),
    Flag(
        ("--tls-alpn",),
        "tls_alpn",
        _ALL,
        "offer this ALPN protocol in the TLS handshake",
        "PROTOCOL",
        _text,
    ),
    Flag(
        ("--insecure",),
        "insecure",
        _ALL,
        "do not check the server certificate's host name (the certificate is still verified)",
    ),
    Flag(
        ("--psk",),
        "psk",
        _ALL,
        "TLS-PSK key in hexadecimal: turns TLS-PSK on",
        "HEX",
        _text,
        note="needs Python 3.13 or later (ssl's TLS-PSK support); refused, saying so, before",
    ),
    Flag(
        ("--psk-identity",),
        "psk_identity",
        _ALL,
        "client identity for TLS-PSK",
        "IDENTITY",
        _text,
    ),
    Flag(
        ("--keyform",),
        "keyform",
        _ALL,
        "private key type",
        "FORM",
        _text,
        note="`pem`, the default, is accepted; `engine` is refused: " + _ENGINE,
    ),
    Flag(
        ("--tls-engine",),
        "tls_engine",
        _ALL,
        "use this OpenSSL engine",
        "ENGINE",
        _text,
        status=Status.LEFT_OUT,
        note=_ENGINE,
    ),
    Flag(
        ("--tls-engine-kpass-sha1",),
        "tls_engine_kpass",
        _ALL,
        "SHA1 of the key password for the OpenSSL engine",
        "SHA1",
        _text,
        status=Status.LEFT_OUT,
        note=_ENGINE,
    ),
    # Output and diagnostics.
    Flag(
        ("-d", "--debug"),
        "debug",
        _ALL,
        "print each packet sent and received on stdout, as Mosquitto's tools do",
    ),
    Flag(("--quiet",), "quiet", _ALL, "print no runtime error messages"),
    Flag(("--help",), "help", _ALL, "show this help and exit"),
    Flag(
        ("--version",),
        "version",
        _ALL,
        "print the version and exit",
        note="exit status 0 (mosquitto_pub/sub/rr 2.0 exit 1 after printing their version)",
    ),
    # pub.
    Flag(("-t", "--topic"), "topic", _PUB, "topic to publish to", "TOPIC", _text),
    Flag(("-m", "--message"), "message", _PUB | _RR, "the payload", "MESSAGE", _text),
    Flag(
        ("-f", "--file"), "file", _PUB | _RR, "send this file's bytes as one message", "FILE", _text
    ),
    Flag(
        ("-l", "--stdin-line"),
        "stdin_line",
        _PUB,
        "one message per line of stdin (sent as read, reconnecting if need be)",
    ),
    Flag(("-s", "--stdin-file"), "stdin_file", _PUB | _RR, "all of stdin as one message"),
    Flag(("-n", "--null-message"), "null_message", _PUB | _RR, "an empty message"),
    Flag(("-q", "--qos"), "qos", _CLIENTS | _BENCH, "QoS 0, 1 or 2 (default 0)", "QOS", _qos),
    Flag(("-r", "--retain"), "retain", _PUB, "retain the message"),
    Flag(
        ("--repeat",),
        "repeat",
        _PUB,
        "publish the message (-m, -f, -s, -n) this many times",
        "COUNT",
        _repeat,
    ),
    Flag(
        ("--repeat-delay",),
        "repeat_delay",
        _PUB,
        "seconds between one message's completion and the next publish",
        "SECONDS",
        _repeat_delay,
    ),
    # sub.
    Flag(
        ("-t", "--topic"),
        "topics",
        _SUB,
        "subscribe to this filter (repeatable)",
        "FILTER",
        _text,
        repeat=True,
    ),
    Flag(("-t", "--topic"), "topic", _RR, "topic to send the request to", "TOPIC", _text),
    Flag(
        ("-e",),
        "response_topic",
        _RR,
        "topic to wait on for the response (MQTT 5: sent as the Response Topic)",
        "TOPIC",
        _text,
    ),
    Flag(
        ("-T", "--filter-out"),
        "filter_out",
        _SUB,
        "do not print messages whose topic matches this filter (repeatable)",
        "FILTER",
        _text,
        repeat=True,
    ),
    Flag(
        ("-U", "--unsubscribe"),
        "unsubscribe",
        _SUB,
        "unsubscribe from this filter after subscribing (repeatable)",
        "FILTER",
        _text,
        repeat=True,
        note="also on its own, as the man page says (mosquitto_sub 2.0.11 insists on a -t)",
    ),
    Flag(("-C",), "count", _SUB, "exit after printing this many messages", "COUNT", _count),
    Flag(("-E",), "exit_after_sub", _SUB, "exit once the subscriptions are acknowledged"),
    Flag(
        ("-W",),
        "timeout",
        _SUB | _RR,
        "exit with status 27 if still running after this many seconds",
        "SECONDS",
        _timeout,
        note="fractions of a second accepted (Mosquitto: whole seconds)",
    ),
    Flag(("-v", "--verbose"), "verbose", _SUB | _RR, "print 'topic payload'"),
    Flag(("-N",), "no_eol", _SUB | _RR, "no end of line after each message"),
    Flag(
        ("-F",),
        "format",
        _SUB | _RR,
        "output format: %t topic, %p payload, %j JSON... (see docs/cli.md)",
        "FORMAT",
        _text,
    ),
    Flag(("--pretty",), "pretty", _SUB | _RR, "indent the JSON of %j and %J"),
    Flag(("-R",), "no_stale", _SUB | _RR, "do not print retained (stale) messages"),
    Flag(
        ("--retained-only",),
        "retained_only",
        _SUB,
        "print only retained messages; exit at the first message that is not",
        note="as the man page says (mosquitto_sub 2.0.11 stops printing but does not exit)",
    ),
    Flag(
        ("--remove-retained",),
        "remove_retained",
        _SUB,
        "clear each retained message received (not those filtered out by -T)",
    ),
    Flag(
        ("--retain-as-published", "--rap"),
        "retain_as_published",
        _SUB | _RR,
        "MQTT 5 subscription option Retain As Published",
        note="`--rap` is mqttkit's short spelling",
    ),
    Flag(
        ("--nl",),
        "no_local",
        _SUB | _RR,
        "MQTT 5 subscription option No Local: not our own messages",
        status=Status.EXTENSION,
    ),
    Flag(
        ("--rh",),
        "retain_handling",
        _SUB | _RR,
        "MQTT 5 subscription option Retain Handling: 0, 1 or 2",
        "N",
        _retain_handling,
        status=Status.EXTENSION,
    ),
    Flag(
        ("--random-filter",),
        "random_filter",
        _SUB,
        "print only this percentage of the messages, at random",
        "PERCENT",
        _chance,
    ),
    # bench.
    Flag(
        ("-t", "--topic"),
        "topic",
        _BENCH,
        "topic (default mqttkit/bench/<random>)",
        "TOPIC",
        _text,
        status=Status.EXTENSION,
    ),
    Flag(
        ("-n", "--count"),
        "bench_count",
        _BENCH,
        "messages to send (default 10,000)",
        "COUNT",
        _int(1, 1 << 62, "the message count"),
        status=Status.EXTENSION,
    ),
    Flag(
        ("-s", "--size"),
        "size",
        _BENCH,
        "payload bytes, at least 8 (default 64)",
        "BYTES",
        _int(8, 268_435_000, "the payload size (at least 8: it carries a sequence number)"),
        status=Status.EXTENSION,
    ),
    Flag(
        ("-w", "--window"),
        "window",
        _BENCH,
        "most messages published but not yet received (default 500)",
        "COUNT",
        _int(1, 1 << 30, "the window"),
        status=Status.EXTENSION,
    ),
    Flag(
        ("-W", "--timeout"),
        "bench_timeout",
        _BENCH,
        "give up after this many seconds (default 60): exit status 27",
        "SECONDS",
        _seconds(positive=True),
        status=Status.EXTENSION,
    ),
    Flag(
        ("--progress",),
        "progress",
        _BENCH,
        "show progress even when stderr is not a terminal",
        status=Status.EXTENSION,
    ),
    Flag(
        ("--no-progress",),
        "progress",
        _BENCH,
        "show no progress, even on a terminal",
        const=False,
        status=Status.EXTENSION,
    ),
)


def flags_for(command: str) -> dict[str, Flag]:
    """Every spelling of every flag ``command`` takes -> the flag."""
    table: dict[str, Flag] = {}
    for flag in FLAGS:
        if command in flag.commands:
            for name in flag.names:
                assert name not in table, f"{name} twice for {command}"
                table[name] = flag
    return table


@dataclass
class Args:
    """The parsed command line. Fields are None (or empty) when the flag was not given."""

    command: str
    # connection
    host: str | None = None
    port: int | None = None
    url: str | None = None
    unix: str | None = None
    bind_address: str | None = None
    proxy: str | None = None
    srv: bool = False
    client_id: str | None = None
    id_prefix: str | None = None
    username: str | None = None
    password: str | None = None
    keepalive: int = 60
    protocol: int | None = None
    persistent: bool = False
    session_expiry: int | None = None
    max_inflight: int | None = None
    nodelay: bool = False
    properties: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    will_topic: str | None = None
    will_payload: str | None = None
    will_qos: int = 0
    will_retain: bool = False
    cafile: str | None = None
    capath: str | None = None
    os_certs: bool = False
    certfile: str | None = None
    keyfile: str | None = None
    ciphers: str | None = None
    tls_version: str | None = None
    tls_alpn: str | None = None
    insecure: bool = False
    psk: str | None = None
    psk_identity: str | None = None
    keyform: str | None = None
    tls_engine: str | None = None
    tls_engine_kpass: str | None = None
    debug: bool = False
    quiet: bool = False
    help: bool = False
    version: bool = False
    # pub / rr
    topic: str | None = None
    source: str | None = None
    """Which message flag was given: message, file, stdin_line, stdin_file or null_message."""
    message: str | None = None
    file: str | None = None
    qos: int = 0
    retain: bool = False
    repeat: int = 1
    repeat_delay: float = 0.0
    # sub / rr
    topics: list[str] = field(default_factory=list)
    response_topic: str | None = None
    filter_out: list[str] = field(default_factory=list)
    unsubscribe: list[str] = field(default_factory=list)
    count: int | None = None
    exit_after_sub: bool = False
    timeout: float | None = None
    verbose: bool = False
    no_eol: bool = False
    format: str | None = None
    pretty: bool = False
    no_stale: bool = False
    retained_only: bool = False
    remove_retained: bool = False
    retain_as_published: bool = False
    no_local: bool = False
    retain_handling: int = 0
    random_filter: float | None = None
    # bench
    bench_count: int = 10_000
    size: int = 64
    window: int = 500
    bench_timeout: float = 60.0
    progress: bool | None = None
    given: set[str] = field(default_factory=set)
    """The dest of every flag given (to tell a default from a value)."""


_SOURCES: Final = frozenset({"message", "file", "stdin_line", "stdin_file", "null_message"})


def parse(command: str, argv: Sequence[str]) -> Args:
    """Read ``argv`` (the arguments after the command name) for ``command``.

    Raises:
        UsageError: an unknown flag, a missing or bad value, two message sources.
    """
    table = flags_for(command)
    args = Args(command)
    i = 0
    while i < len(argv):
        name = argv[i]
        flag = table.get(name)
        if flag is None:
            if name.startswith("-") and len(name) > 1:
                raise UsageError(f"Unknown option '{name}'.")
            raise UsageError(f"Unexpected argument '{name}': every value follows its flag.")
        i += 1
        args.given.add(flag.dest)
        if flag.dest == "properties":
            values, i = _property_arguments(argv, i)
            args.properties.append(values)
            continue
        if flag.metavar is None:
            if flag.dest in _SOURCES:
                _set_source(args, flag.dest)
            setattr(args, flag.dest, flag.const)
            continue
        if i >= len(argv):
            raise UsageError(f"{name} argument given but no {flag.metavar.lower()} specified.")
        raw = argv[i]
        i += 1
        assert flag.convert is not None
        value = flag.convert(raw, name)
        if flag.dest in _SOURCES:
            _set_source(args, flag.dest)
        if flag.repeat:
            getattr(args, flag.dest).append(value)
        else:
            setattr(args, flag.dest, value)
    return args


def _set_source(args: Args, dest: str) -> None:
    if args.source is not None:
        raise UsageError("Only one type of message can be sent at once.")
    args.source = dest


def _property_arguments(
    argv: Sequence[str], i: int
) -> tuple[tuple[str, str, tuple[str, ...]], int]:
    # -D COMMAND NAME VALUE, or -D COMMAND user-property KEY VALUE.
    if i + 3 > len(argv):
        raise UsageError("--property argument given but not enough arguments specified.")
    command, name = argv[i].lower(), argv[i + 1].lower()
    count = 2 if name == "user-property" else 1
    if i + 2 + count > len(argv):
        raise UsageError("--property argument given but not enough arguments specified.")
    return (command, name, tuple(argv[i + 2 : i + 2 + count])), i + 2 + count


# -- help -----------------------------------------------------------------------------------------

_SUMMARY: Final = {
    "pub": "publish messages (mosquitto_pub's flags)",
    "sub": "subscribe and print messages (mosquitto_sub's flags)",
    "rr": "publish a request and print the response (mosquitto_rr's flags)",
    "bench": "publish messages to yourself through a broker: throughput and loss",
}


def help_text(command: str | None) -> str:
    """``mqttkit --help`` (command None) or ``mqttkit COMMAND --help``."""
    if command is None:
        lines = [
            "usage: mqttkit {pub,sub,rr,bench} [flags]   (mqttkit COMMAND --help for its flags)",
            "       mqttkit --version",
            "",
            "MQTT command-line tools with the flags of Mosquitto's mosquitto_pub, "
            "mosquitto_sub and mosquitto_rr.",
            "",
        ]
        lines += [f"  {name:<6} {text}" for name, text in _SUMMARY.items()]
        return "\n".join(lines) + "\n"
    lines = [f"usage: mqttkit {command} [flags]", "", f"{_SUMMARY[command]}.", ""]
    for flag in FLAGS:
        if command not in flag.commands or flag.status is Status.LEFT_OUT:
            continue
        spelled = ", ".join(f"{n} {flag.metavar}" if flag.metavar else n for n in flag.names)
        text = flag.help
        if flag.status is Status.PENDING:
            text += " [pending]"
        lines.append(f"  {spelled}")
        lines.append(f"        {text}")
    lines += ["", "See docs/cli.md for every flag, the -F format and the exit statuses."]
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """docs/cli.md's flag table, from :data:`FLAGS` (the tests check the docs hold it)."""
    order = ("pub", "sub", "rr", "bench")
    lines = [
        "| flag | mqttkit | Mosquitto's | status | meaning; differences |",
        "|---|---|---|---|---|",
    ]
    for flag in FLAGS:
        spelled = ", ".join(
            f"`{n} {flag.metavar}`" if flag.metavar else f"`{n}`" for n in flag.names
        )
        ours = " ".join(c for c in order if c in flag.commands)
        theirs = " ".join(COMMANDS[c] for c in order if c in flag.tools) or "-"
        text = flag.help.replace("|", "\\|")
        if flag.note:
            text += "; " + flag.note.replace("|", "\\|")
        lines.append(f"| {spelled} | {ours} | {theirs} | {flag.status.value} | {text} |")
    return "\n".join(lines) + "\n"
