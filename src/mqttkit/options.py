"""Client options: one dataclass, parsed from a URL, the seed's option dict, and keywords.

This module owns the option names, units, defaults and validation shared by every front. It
does no I/O. Two spellings are accepted:

* the seed / MQTT.js dict (``{"clientId": ..., "connectTimeout": 5000}``): camelCase names,
  durations in **milliseconds** (``keepalive`` is in seconds, as in the seed);
* Python keywords (``client_id=..., connect_timeout=5.0``): snake_case, durations in
  **seconds**.

Precedence: keywords over the dict over the URL over defaults. An unknown name is an
:class:`UnknownOptionError` (a ``TypeError``) naming it; a bad value is an
:class:`InvalidOptionError` (a ``ValueError``) saying what is allowed.
"""

from __future__ import annotations

import difflib
import os
import secrets
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from .netoptions import (
    Proxy,
    check_ws_headers,
    check_ws_path,
    parse_alpn_protocols,
    parse_bind_address,
    parse_proxy,
    parse_socket_options,
    parse_tls_version,
    parse_ws_subprotocols,
    require_extra,
)
from .protocol.errors import InvalidArgumentError, InvalidOptionError, UnknownOptionError
from .protocol.packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    NO_PROPERTIES,
    Auth,
    Properties,
    Will,
)
from .protocol.session import SessionConfig, normalize_payload
from .protocol.store import Store, private_store
from .protocol.topics import validate_topic_name

__all__ = [
    "DEFAULT_PORTS",
    "ClientOptions",
    "ConnectSettings",
    "Proxy",
    "Server",
    "check_connect_settings",
    "parse_disconnect",
    "parse_options",
    "parse_server_reference",
]

#: URL scheme -> transport.
SCHEMES: Final = {
    "mqtt": "tcp",
    "tcp": "tcp",
    "mqtts": "tls",
    "ssl": "tls",
    "tls": "tls",
    "ws": "ws",
    "wss": "wss",
    "unix": "unix",
}
#: QoS 2 in-flight window for MQTT 3.x, which has no Receive Maximum: Mosquitto's default.
DEFAULT_INFLIGHT_QOS2_V3: Final = 20
#: Default port per transport.
DEFAULT_PORTS: Final = {"tcp": 1883, "tls": 8883, "ws": 80, "wss": 443}


@dataclass(frozen=True, slots=True)
class Server:
    """One broker a client can connect to: an entry of ``servers``, and ``client.server``."""

    host: str
    """Host name or IP address (for ``unix``: empty)."""
    port: int
    """TCP port (for ``unix``: 0)."""
    transport: str = "tcp"
    """``tcp``, ``tls``, ``ws``, ``wss`` or ``unix``."""
    path: str | None = None
    """The Unix socket path, or the WebSocket path (None: the client's ``path``, or ``/mqtt``)."""

    @property
    def url(self) -> str:
        """This server as a URL (``mqtt://host:port``)."""
        if self.transport == "unix":
            return f"unix://{self.path}"
        scheme = {"tcp": "mqtt", "tls": "mqtts"}.get(self.transport, self.transport)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def __str__(self) -> str:
        return self.url


@dataclass(slots=True)
class ConnectSettings:
    """What the next CONNECT sends: handed to the ``before_connect`` hook, which may change
    ``username``, ``password``, ``will`` and ``properties`` in place (each accepts what the
    option of that name accepts: ``password`` a str or bytes, ``will`` a dict or
    :class:`Will`, ``properties`` a dict or :class:`Properties`)."""

    server: Server
    """The server this attempt connects to (read it; changing it has no effect)."""
    username: str | None
    """User name for CONNECT."""
    password: str | bytes | None = field(repr=False)
    """Password for CONNECT; never shown."""
    will: Will | Mapping[str, Any] | None
    """The Last Will."""
    properties: Properties | Mapping[str, Any]
    """MQTT 5 CONNECT properties (ignored by MQTT 3.x)."""


@dataclass(slots=True)
class ClientOptions:
    """Every setting of a client. Build it with :func:`parse_options`."""

    host: str = "localhost"
    """Broker host name or IP address (seed: ``hostname``)."""
    port: int | None = None
    """Broker port; default 1883 (TCP), 8883 (TLS), 80 (ws), 443 (wss)."""
    transport: str = "tcp"
    """``tcp``, ``tls``, ``ws``, ``wss`` or ``unix``; set by the URL scheme (seed: ``protocol``)."""
    path: str | None = None
    """Unix socket path (``unix://``), or the WebSocket path (default ``/mqtt``)."""
    servers: tuple[Server, ...] = ()
    """The brokers to connect to, tried in turn (a cluster's nodes): each a URL, a
    ``(host, port)`` tuple, an MQTT.js-style ``{"host": ..., "port": ...[, "protocol": ...]}``
    dict or a :class:`Server`. Entries without a scheme use the client's transport (from the
    URL's scheme or ``protocol``). The client connects to the first that answers; when a
    connection is lost or refused, it tries the next at once, and waits the reconnect backoff
    only after every server has failed in a row. Default: the one broker of the URL / ``host``
    and ``port`` (giving both is an error)."""
    follow_redirects: bool = True
    """MQTT 5: follow a CONNACK or DISCONNECT with reason 0x9C (use another server) or 0x9D
    (server moved) and a Server Reference to the server it names (at most 5 redirections in a
    row, never back to one already visited); 0x9D replaces the server in ``servers`` for good.
    False: treat it as any other refusal (the ``error`` event says where it pointed)."""
    client_id: str = ""
    """Client identifier (seed: ``clientId``); default a random ``mqttkit_`` + 8 hex digits."""
    keepalive: int = 10
    """Seconds between keepalive probes; 0 disables them (seed default 10)."""
    clean: bool = True
    """Start with a clean session (MQTT 5: Clean Start; 3.1.1: Clean Session)."""
    connect_timeout: float = 30.0
    """Seconds for TCP + TLS + CONNACK (seed: ``connectTimeout`` in ms, default 30,000)."""
    reconnect_period: float = 1.0
    """Seconds before the first reconnect, doubling with jitter up to ``reconnect_max``;
    0 disables reconnecting (seed: ``reconnectPeriod`` in ms, default 1,000)."""
    reconnect_max: float = 60.0
    """Upper bound of the reconnect backoff, in seconds."""
    username: str | Callable[[], Any] | None = None
    """User name for CONNECT; or a function returning it, called before every connection
    attempt (as for ``password``)."""
    password: bytes | Callable[[], Any] | None = field(default=None, repr=False)
    """Password for CONNECT (str is sent as UTF-8); never logged or shown. Or a function (no
    arguments, sync or async) returning it (str, bytes or None), called before every connection
    attempt: tokens that expire (JWT, SAS) are fetched afresh for each reconnect, and a refusal
    of them (bad user name or password, not authorized) is retried with the next token instead
    of stopping the client. A sync function runs on a thread of its own, an async one on the
    client's event loop; either counts against ``connect_timeout``, and if it raises, the
    attempt fails (``error`` event) and the client retries after the backoff."""
    before_connect: Callable[[ConnectSettings], Any] | None = None
    """Called (sync or async, as the ``password`` function) before every connection attempt
    with a :class:`ConnectSettings`: the ``server`` of this attempt and the ``username``,
    ``password``, ``will`` and MQTT 5 ``properties`` the CONNECT will send, which it may
    change in place; later attempts start from what it left. Runs after the username and
    password functions (paho: ``on_pre_connect``)."""
    protocol_version: int = MQTT_3_1_1
    """3 (MQTT 3.1), 4 (MQTT 3.1.1, default) or 5 (MQTT 5.0) (seed: ``protocolVersion``)."""
    protocol_fallback: bool = False
    """With ``protocol_version=5``: fall back to MQTT 3.1.1 when the server refuses MQTT 5
    (CONNACK return code 1, as NATS answers; or a close before CONNACK on the first
    connection, as RabbitMQ's MQTT plugin does). ``protocol_version`` then reads 4; messages
    and subscriptions that need MQTT 5 fail with :class:`InvalidArgumentError`."""
    manual_ack: bool = False
    """Acknowledge incoming QoS 1/2 messages yourself: each message is then an
    :class:`~mqttkit.AckableMessage` whose ``ack(reason_code=0)`` sends its PUBACK / PUBREC
    (from any thread or task, in the order MQTT requires), instead of the client sending it
    when the listener returns / the loop asks for the next message (MQTT.js
    ``customHandleAcks``, paho ``manual_ack``). A message never acknowledged stays so: the
    broker holds back what follows (its window) and sends it again after a reconnect (the
    client still holding it does not deliver it twice: its ``ack()`` answers the resend)."""
    auto_topic_alias: bool = False
    """MQTT 5 (needs ``protocol_version=5``): send repeated topics by Topic Alias, numbered
    automatically up to the broker's Topic Alias Maximum (CONNACK; none if it allows 0), anew
    on each connection. The first message of a topic carries its name and alias, later ones
    the alias alone. When every alias is taken, a new topic takes over the least recently used
    one only if that one has been idle for 30 publishes per alias, else it goes with its full
    name. An alias you set yourself (``topic_alias`` property) keeps its number for the rest
    of the connection (seed/MQTT.js: ``autoAssignTopicAlias``)."""
    will: Will | None = None
    """Last Will: a :class:`Will` or a dict with ``topic``, ``payload``, ``qos``, ``retain``."""
    properties: Properties = NO_PROPERTIES
    """MQTT 5 CONNECT properties (session expiry, receive maximum, user properties...)."""
    authenticate: Callable[[Auth], Properties] | None = None
    """MQTT 5 enhanced authentication: called (on the client's loop) with each AUTH the broker
    sends with reason 0x18 (continue); returns the properties (``authentication_method``,
    ``authentication_data``) of the AUTH sent back. Start it with ``authentication_method`` in
    ``properties``; see also ``reauthenticate()``."""
    cafile: str | None = None
    """CA bundle (PEM file) that signs the broker's certificate (seed/MQTT.js: ``ca``)."""
    cadata: str | None = None
    """CA certificates as PEM text (MQTT.js ``ca`` given as content)."""
    certfile: str | None = None
    """Client certificate (PEM file) for mutual TLS (MQTT.js: ``cert``)."""
    keyfile: str | None = None
    """Private key of ``certfile`` (MQTT.js: ``key``)."""
    ssl_context: ssl.SSLContext | None = None
    """A ready ``ssl.SSLContext``; overrides cafile/certfile/keyfile/insecure."""
    insecure: bool = False
    """Skip certificate and host name verification. Only for tests
    (MQTT.js: ``rejectUnauthorized: false``)."""
    server_hostname: str | None = None
    """Host name checked against the certificate, if not ``host`` (MQTT.js: ``servername``)."""
    alpn_protocols: tuple[str, ...] | None = None
    """Protocols offered by TLS ALPN, e.g. ``["x-amzn-mqtt-ca"]`` for AWS IoT on port 443."""
    ciphers: str | None = None
    """TLS cipher suites to allow, in OpenSSL's cipher list format (TLS 1.2 and below)."""
    tls_min_version: ssl.TLSVersion | None = None
    """Lowest TLS version accepted: ``"TLSv1.2"``, ``"TLSv1.3"`` or an ``ssl.TLSVersion``
    (default: Python's, TLS 1.2). MQTT.js: ``minVersion``."""
    keyfile_password: str | bytes | Callable[[], Any] | None = field(default=None, repr=False)
    """Password of an encrypted ``keyfile`` (or a function returning it); never shown."""
    proxy: Proxy | None = None
    """Reach the brokers through a proxy: ``"socks5://[user:pass@]host[:1080]"`` (the proxy
    resolves the broker's name), ``"socks4://[userid@]host[:1080]"`` or
    ``"http://[user:pass@]host:port"`` (HTTP CONNECT). Works for mqtt, mqtts, ws and wss: TLS
    runs through the tunnel and verifies the broker's host name, not the proxy's. Proxy
    failures are :class:`ProxyError` (unreachable, refused, authentication failed) and are
    retried like any failed attempt. The credentials are never shown. Needs
    ``pip install 'mqttkit[proxy]'`` (python-socks)."""
    bind_address: tuple[str, int] | None = None
    """Local ``(ip, port)`` to connect from (port 0: any), for multi-homed hosts; with a
    proxy, the address the connection to the proxy comes from. MQTT.js: ``localAddress``
    (an IP alone)."""
    socket_options: tuple[tuple[int, int, int | bytes], ...] = ()
    """``(level, option, value)`` triples set with ``setsockopt`` on each TCP socket before it
    connects (with a proxy: on the socket to the proxy, once the tunnel is open), e.g.
    ``[(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]``."""
    ws_path: str | None = None
    """WebSocket request path (and ``?query``) for ws/wss servers that name none in their
    URL; default ``path``, else ``/mqtt``."""
    ws_headers: tuple[tuple[str, str], ...] | Mapping[str, str] | Callable[[], Any] | None = field(
        default=None, repr=False
    )
    """Extra HTTP headers for the WebSocket handshake (``Authorization``, API keys): a dict, a
    list of ``(name, value)`` pairs, or a function (sync or async, no arguments) returning
    one, called before every connection. Never shown. MQTT.js: ``wsOptions.headers``."""
    ws_subprotocols: tuple[str, ...] | None = None
    """WebSocket subprotocols offered; default ``["mqtt"]``, and ``["mqttv3.1", "mqtt"]``
    with MQTT 3.1 (old servers know only ``mqttv3.1``)."""
    transform_ws_url: Callable[[str], Any] | None = None
    """Called (sync or async) before every WebSocket connection with the URL about to be
    used (``ws://host:port/path``); returns the URL to connect to instead, e.g. a presigned
    one (AWS IoT SigV4). It may change the host, port, path and query, not the scheme.
    MQTT.js: ``transformWsUrl``."""
    incoming_store: Store = field(default_factory=private_store)
    """Store for incoming QoS 2 state (seed: ``incomingStore``)."""
    outgoing_store: Store = field(default_factory=private_store)
    """Store for outgoing QoS 1/2 messages (seed: ``outgoingStore``)."""
    max_inflight: int | None = None
    """Most outgoing QoS 1/2 messages awaiting acknowledgement. Default: 65,535, and with
    MQTT 5 no more than the broker's Receive Maximum."""
    max_inflight_qos2: int | None = None
    """Most outgoing QoS 2 messages awaiting PUBCOMP. Default: 20 with MQTT 3.x, which cannot
    learn the broker's limit (brokers hold QoS 2 messages until PUBREL, and Mosquitto silently
    drops those beyond its window of 20); with MQTT 5, the broker's Receive Maximum. While
    this window is full, QoS 1 messages wait too (Mosquitto counts both against one quota and
    drops a QoS 1 message beyond it, answering with a plain PUBACK under MQTT 3.x)."""
    max_queued: int = 100_000
    """Most messages waiting to be sent (offline, or behind a full window); see
    ``queue_policy`` for what happens beyond."""
    max_queued_bytes: int | None = None
    """Most payload bytes waiting to be sent (None: only ``max_queued`` counts)."""
    queue_policy: str = "reject"
    """When the outgoing queue is full: ``reject`` (publish raises :class:`QueueFullError`),
    ``drop_oldest`` (the oldest waiting message is dropped to make room) or ``drop_newest``
    (the new message is dropped). A dropped message's handle fails with QueueFullError and
    the ``dropped`` event fires."""
    dispatch: str = "thread"
    """Where the blocking client runs its listeners and callbacks: ``"thread"`` (default), on a
    dispatch thread of its own, so that a slow listener never delays the network, keepalive or
    other clients; or ``"inline"``, on the loop thread that does the I/O of every blocking client
    in the process: about half the CPU per message and a shorter round trip, for listeners that
    return quickly and never wait on a client (waiting on a handle there raises rather than
    deadlocking). The asyncio client has no dispatch thread."""
    max_buffered: int = 10_000
    """Most incoming QoS 0 messages waiting for the application (slow handlers); beyond, new
    QoS 0 messages are dropped (``dropped`` event). QoS 1/2 messages are never dropped: they
    stay unacknowledged and the broker holds the rest."""
    max_packet_size: int = 268_435_460
    """Largest incoming packet accepted, in bytes."""
    close_timeout: float = 10.0
    """Seconds a graceful ``close()`` waits for outstanding acknowledgements."""
    callback: Callable[..., Any] | None = None
    """Called for each message, as a ``message`` listener (seed: ``callback``)."""

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.repr:  # secrets: password, keyfile_password, ws_headers
                if value is not None:
                    shown.append(f"{f.name}='***'")
                continue
            if value != f.default and not callable(f.default_factory):
                shown.append(f"{f.name}={value!r}")
        return f"ClientOptions({', '.join(shown)})"

    @property
    def url(self) -> str:
        """The (first) broker's address as a URL (no credentials)."""
        if self.servers:
            return self.servers[0].url
        return Server(self.host, self.port or 0, self.transport, self.path).url

    def session_config(self) -> SessionConfig:
        """The part of the options the sans-IO session needs."""
        return SessionConfig(
            client_id=self.client_id,
            protocol_level=self.protocol_version,
            clean_start=self.clean,
            keepalive=self.keepalive,
            # A username / password function is called before each connection attempt.
            username=None if callable(self.username) else self.username,
            password=None if callable(self.password) else self.password,
            will=self.will,
            properties=self.properties,
            max_inflight=self.max_inflight or 65_535,
            max_inflight_qos2=self.max_inflight_qos2
            or (None if self.protocol_version == MQTT_5 else DEFAULT_INFLIGHT_QOS2_V3),
            max_queued=self.max_queued,
            max_queued_bytes=self.max_queued_bytes,
            queue_policy=self.queue_policy,
            max_packet_size=self.max_packet_size,
            outgoing_store=self.outgoing_store,
            incoming_store=self.incoming_store,
            auto_topic_alias=self.auto_topic_alias,
        )


# Seed / MQTT.js option name -> (field, converter from the seed's unit).
def _ms(value: Any) -> float:
    return _number(value, "milliseconds") / 1000.0


def _same(value: Any) -> Any:
    return value


def _not_bool(value: Any) -> bool:
    return not value


def _ws_options(value: Any) -> Any:
    # MQTT.js passes wsOptions to the `ws` package; of those, mqttkit takes the headers.
    if not isinstance(value, Mapping):
        raise InvalidOptionError("wsOptions must be a dict such as {'headers': {...}}")
    unknown = sorted(set(value) - {"headers"})
    if unknown:
        raise UnknownOptionError(
            f"unsupported wsOptions key(s) {unknown}: mqttkit takes wsOptions.headers (see "
            "also ws_subprotocols, transformWsUrl, ca/cert/key)"
        )
    return value.get("headers")


_SEED_NAMES: Final[dict[str, tuple[str, Callable[[Any], Any]]]] = {
    "clientId": ("client_id", _same),
    "keepalive": ("keepalive", _same),
    "clean": ("clean", _same),
    "connectTimeout": ("connect_timeout", _ms),
    "reconnectPeriod": ("reconnect_period", _ms),
    "hostname": ("host", _same),
    "host": ("host", _same),
    "port": ("port", _same),
    "protocol": ("transport", _same),
    "username": ("username", _same),
    "password": ("password", _same),
    "incomingStore": ("incoming_store", _same),
    "outgoingStore": ("outgoing_store", _same),
    "callback": ("callback", _same),
    "will": ("will", _same),
    "protocolVersion": ("protocol_version", _same),
    "autoAssignTopicAlias": ("auto_topic_alias", _same),
    "properties": ("properties", _same),
    "ca": ("ca", _same),
    "cert": ("certfile", _same),
    "key": ("keyfile", _same),
    "rejectUnauthorized": ("insecure", _not_bool),
    "servername": ("server_hostname", _same),
    "path": ("path", _same),
    "socksProxy": ("proxy", _same),
    "wsOptions": ("ws_headers", _ws_options),
    "transformWsUrl": ("transform_ws_url", _same),
    "ALPNProtocols": ("alpn_protocols", _same),
    "ciphers": ("ciphers", _same),
    "minVersion": ("tls_min_version", _same),
    "passphrase": ("keyfile_password", _same),
    "localAddress": ("bind_address", _same),
}
_FIELD_NAMES: Final = frozenset(f.name for f in fields(ClientOptions))
#: Seed names that are also keywords: a Python identifier, one meaning, the same unit.
_SEED_KEYWORDS: Final = frozenset(
    name
    for name, (field_name, convert) in _SEED_NAMES.items()
    if name.islower() and convert is _same and name not in _FIELD_NAMES
)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOptionError(f"expected a number of {what}, got {value!r}")
    return float(value)


def parse_options(
    url: str | None = None,
    options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> ClientOptions:
    """Build :class:`ClientOptions` from a URL, a seed-style dict and keywords.

    Raises:
        UnknownOptionError: an option name that does not exist (it is named).
        InvalidOptionError: a value out of range, a bad URL or scheme.
    """
    values: dict[str, Any] = {}
    if url is not None:
        values.update(_parse_url(url))
    if options is not None:
        if not isinstance(options, Mapping):
            raise InvalidOptionError(
                f"options must be a dict of seed option names, not {type(options).__name__}"
            )
        for name, value in options.items():
            if name in _SEED_NAMES:
                field_name, convert = _SEED_NAMES[name]
                values[field_name] = convert(value)
            elif name in _FIELD_NAMES:
                values[name] = value
            else:
                raise UnknownOptionError(_unknown(name, in_dict=True))
    for name, value in kwargs.items():
        if name == "ca":
            values["ca"] = value
        elif name in _FIELD_NAMES:
            values[name] = value
        elif name in _SEED_KEYWORDS:
            values[_SEED_NAMES[name][0]] = value
        elif name in _SEED_NAMES:
            raise UnknownOptionError(_seed_keyword_hint(name))
        else:
            raise UnknownOptionError(_unknown(name))
    if "transport" in values and values["transport"] in SCHEMES:
        # The seed's ``protocol`` option names a scheme ("mqtt", "mqtts", "ws"...).
        values["transport"] = SCHEMES[values["transport"]]
    ca = values.pop("ca", None)
    if ca is not None:
        if isinstance(ca, bytes):
            ca = ca.decode("ascii")
        if not isinstance(ca, str):
            raise InvalidOptionError("ca must be a PEM file path or PEM text")
        if "-----BEGIN" in ca:
            values["cadata"] = ca
        else:
            values["cafile"] = ca
    empty_id = values.get("client_id") == ""
    if (
        "servers" in values
        and isinstance(values["servers"], list | tuple)
        and not values["servers"]
    ):
        raise InvalidOptionError("servers is empty: name at least one server, or leave it out")
    if values.get("servers") is not None and ("host" in values or "port" in values):
        raise InvalidOptionError(
            "give the brokers either as servers=[...] or as one URL / host and port, not both "
            "(a URL without a host, such as 'mqtts://', still sets the scheme of the servers)"
        )
    opts = ClientOptions(**values)
    return _validate(opts, empty_client_id=empty_id)


def _unknown(name: str, in_dict: bool = False) -> str:
    """The message for an unknown option; a dict also takes the seed's camelCase names."""
    candidates = sorted(_FIELD_NAMES | (set(_SEED_NAMES) if in_dict else _SEED_KEYWORDS))
    close = difflib.get_close_matches(name, candidates, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown option {name!r}{hint}"


def _seed_keyword_hint(name: str) -> str:
    """The message for a seed (MQTT.js) option name given as a keyword."""
    field_name, convert = _SEED_NAMES[name]
    unit = " (in seconds, not milliseconds)" if convert is _ms else ""
    meaning = " (its opposite: insecure=True skips verification)" if convert is _not_bool else ""
    return (
        f"{name!r} is the seed's name in the options dict; as a keyword it is "
        f"{field_name}={unit}{meaning}, or pass {{{name!r}: ...}} as the options dict"
    )


def _parse_url(url: str) -> dict[str, Any]:
    if not isinstance(url, str):
        raise InvalidOptionError(f"url must be a str such as 'mqtt://localhost', not {url!r}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise InvalidOptionError(
            f"unsupported URL scheme {parts.scheme!r} in {url!r}; use one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    transport = SCHEMES[scheme]
    values: dict[str, Any] = {"transport": transport}
    if transport == "unix":
        path = unquote(parts.path or parts.netloc)
        if not path:
            raise InvalidOptionError(f"unix URL {url!r} needs a socket path: unix:///run/mqtt.sock")
        values["path"] = path
        return values
    try:
        port = parts.port
    except ValueError:
        raise InvalidOptionError(f"port in {url!r} is not a number in 1..65535") from None
    if parts.hostname:
        values["host"] = parts.hostname
    if port is not None:
        values["port"] = port
    if parts.username:
        values["username"] = unquote(parts.username)
    if parts.password is not None:
        values["password"] = unquote(parts.password)
    if transport in ("ws", "wss") and parts.path:
        values["path"] = parts.path + (f"?{parts.query}" if parts.query else "")
    return values


def _validate(o: ClientOptions, *, empty_client_id: bool = False) -> ClientOptions:
    if o.transport not in DEFAULT_PORTS and o.transport != "unix":
        raise InvalidOptionError(
            f"unsupported transport/protocol {o.transport!r}; use mqtt, mqtts, ws, wss or unix"
        )
    servers: Any = o.servers
    if servers is not None and len(servers if isinstance(servers, list | tuple) else [0]) > 0:
        o.servers = _parse_servers(servers, o.transport)
    elif o.transport == "unix":
        if not o.path:
            raise InvalidOptionError("a unix transport needs path='/path/to/socket'")
        o.servers = (Server("", 0, "unix", o.path),)
    else:
        if not isinstance(o.host, str) or not o.host:
            raise InvalidOptionError(f"host must be a non-empty str, not {o.host!r}")
        if o.port is None:
            o.port = DEFAULT_PORTS[o.transport]
        if isinstance(o.port, bool) or not isinstance(o.port, int) or not 1 <= o.port <= 65535:
            raise InvalidOptionError(f"port must be an int in 1..65535, not {o.port!r}")
        if servers is not None and not isinstance(servers, list | tuple):
            raise InvalidOptionError(f"servers must be a list, not {type(servers).__name__}")
        o.servers = (Server(o.host, o.port, o.transport),)
    if not isinstance(o.manual_ack, bool):
        raise InvalidOptionError(f"manual_ack must be True or False, not {o.manual_ack!r}")
    if not isinstance(o.follow_redirects, bool):
        raise InvalidOptionError(
            f"follow_redirects must be True or False, not {o.follow_redirects!r}"
        )
    if o.protocol_version not in (MQTT_3_1, MQTT_3_1_1, MQTT_5):
        raise InvalidOptionError(
            f"protocol_version must be 3 (MQTT 3.1), 4 (3.1.1) or 5 (5.0), "
            f"not {o.protocol_version!r}"
        )
    keepalive: Any = o.keepalive
    if isinstance(keepalive, float) and keepalive.is_integer():
        o.keepalive = keepalive = int(keepalive)
    if isinstance(keepalive, bool) or not isinstance(keepalive, int):
        raise InvalidOptionError(f"keepalive must be whole seconds, not {keepalive!r}")
    if not 0 <= o.keepalive <= 65535:
        raise InvalidOptionError(
            f"keepalive must be 0..65535 seconds (0 disables it), not {o.keepalive}"
        )
    o.connect_timeout = _number(o.connect_timeout, "seconds")
    if o.connect_timeout <= 0:
        raise InvalidOptionError(f"connect_timeout must be > 0 seconds, not {o.connect_timeout}")
    o.reconnect_period = _number(o.reconnect_period, "seconds")
    o.reconnect_max = _number(o.reconnect_max, "seconds")
    o.close_timeout = _number(o.close_timeout, "seconds")
    if not isinstance(o.protocol_fallback, bool):
        raise InvalidOptionError(
            f"protocol_fallback must be True or False, not {o.protocol_fallback!r}"
        )
    if o.protocol_fallback and o.protocol_version != MQTT_5:
        raise InvalidOptionError("protocol_fallback needs protocol_version=5 (it falls back to 4)")
    if not isinstance(o.auto_topic_alias, bool):
        raise InvalidOptionError(
            f"auto_topic_alias must be True or False, not {o.auto_topic_alias!r}"
        )
    if o.auto_topic_alias and o.protocol_version != MQTT_5:
        raise InvalidOptionError(
            "auto_topic_alias needs protocol_version=5 (Topic Aliases are an MQTT 5 feature)"
        )
    if o.reconnect_period < 0 or o.reconnect_max < 0 or o.close_timeout < 0:
        raise InvalidOptionError("reconnect_period, reconnect_max and close_timeout must be >= 0")
    o.clean = bool(o.clean)
    if o.client_id is None or o.client_id == "":
        if not empty_client_id:
            o.client_id = "mqttkit_" + secrets.token_hex(4)  # not given: a random one
        elif o.protocol_version == MQTT_5:
            pass  # sent empty: the server assigns one (kept for reconnects)
        elif o.protocol_version == MQTT_3_1:
            raise InvalidOptionError(
                "MQTT 3.1 needs a client_id of 1 to 23 characters; give one, or leave it out "
                "for a random one"
            )
        elif not o.clean:
            # [MQTT-3.1.3-7], [MQTT-3.1.3-8]: the server must refuse it, and a persistent
            # session under a random id could never be resumed.
            raise InvalidOptionError(
                "an empty client_id needs clean=True with MQTT 3.1.1 (the server refuses it "
                "with a kept session, which no later connection could resume); give a fixed "
                "client_id, or use protocol_version=5 to get one assigned by the server"
            )
    if not isinstance(o.client_id, str):
        raise InvalidOptionError(f"client_id must be a str, not {type(o.client_id).__name__}")
    if len(o.client_id.encode("utf-8", "surrogatepass")) > 65535:
        raise InvalidOptionError("client_id is longer than 65,535 bytes")
    if not callable(o.username):
        o.username = _check_username(o.username)
    if not callable(o.password):
        o.password = _check_password(o.password)
    _check_function(o.before_connect, "before_connect")
    if (
        o.password is not None
        and o.username is None
        and o.before_connect is None
        and o.protocol_version != MQTT_5
    ):
        # [MQTT-3.1.2-22]: MQTT 3.x sends a password only after a user name.
        raise InvalidOptionError(
            "a password needs a username with MQTT 3.x (or use protocol_version=5)"
        )
    if o.will is not None:
        o.will = _parse_will(o.will, o.protocol_version)
    props: Any = o.properties
    if props is None:
        o.properties = props = NO_PROPERTIES
    if not isinstance(props, Properties):
        if isinstance(props, Mapping):
            o.properties = _properties_from_mapping(props)
        else:
            raise InvalidOptionError("properties must be an mqttkit.Properties or a dict")
    if o.properties and o.protocol_version != MQTT_5:
        raise InvalidOptionError("CONNECT properties need protocol_version=5")
    for name in (
        "max_inflight",
        "max_inflight_qos2",
        "max_queued",
        "max_queued_bytes",
        "max_buffered",
    ):
        value = getattr(o, name)
        if value is None and name not in ("max_queued", "max_buffered"):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidOptionError(f"{name} must be an int >= 1, not {value!r}")
    if o.dispatch not in ("thread", "inline"):
        raise InvalidOptionError(f"dispatch must be 'thread' or 'inline', not {o.dispatch!r}")
    if o.queue_policy not in ("reject", "drop_oldest", "drop_newest"):
        raise InvalidOptionError(
            f"queue_policy must be 'reject', 'drop_oldest' or 'drop_newest', not {o.queue_policy!r}"
        )
    for value in (o.max_inflight, o.max_inflight_qos2):
        if value is not None and value > 65535:
            raise InvalidOptionError("max_inflight and max_inflight_qos2 must be <= 65535")
    for name in ("incoming_store", "outgoing_store"):
        store = getattr(o, name)
        if store is None:
            setattr(o, name, private_store())
        elif not all(
            callable(getattr(store, m, None)) for m in ("put", "get", "delete", "iterate", "close")
        ):
            raise InvalidOptionError(
                f"{name} must implement put, get, delete, iterate and close (see mqttkit.Store)"
            )
    for name in ("cafile", "certfile", "keyfile"):
        path = getattr(o, name)
        if path is not None:
            path = os.fspath(path)
            setattr(o, name, path)
            if not os.path.exists(path):
                raise InvalidOptionError(f"{name} {path!r} does not exist")
    if o.keyfile and not o.certfile:
        raise InvalidOptionError("keyfile needs certfile")
    if o.ssl_context is not None and not isinstance(o.ssl_context, ssl.SSLContext):
        raise InvalidOptionError("ssl_context must be an ssl.SSLContext")
    if o.authenticate is not None:
        if not callable(o.authenticate):
            raise InvalidOptionError(
                f"authenticate must be a function, not {type(o.authenticate).__name__}"
            )
        if o.protocol_version != MQTT_5:
            raise InvalidOptionError("authenticate (enhanced authentication) needs MQTT 5")
    if o.callback is not None and not callable(o.callback):
        raise InvalidOptionError("callback must be callable")
    _validate_network(o)
    return o


def check_connect_settings(
    settings: ConnectSettings, level: int
) -> tuple[str | None, bytes | None, Will | None, Properties]:
    """``settings`` (as a ``before_connect`` hook left them) checked for a CONNECT at protocol
    ``level``: the username, the password as bytes, the Will and the properties.

    Raises:
        InvalidOptionError: a value of the wrong type or not allowed at ``level`` (the
            password's value is never shown).
    """
    username = _check_username(settings.username)
    password = _check_password(settings.password)
    if password is not None and username is None and level != MQTT_5:
        # [MQTT-3.1.2-22]: MQTT 3.x sends a password only after a user name.
        raise InvalidOptionError("a password needs a username with MQTT 3.x")
    will = None if settings.will is None else _parse_will(settings.will, level)
    props: Any = settings.properties
    if props is None:
        props = NO_PROPERTIES
    elif isinstance(props, Mapping):
        props = _properties_from_mapping(props)
    elif not isinstance(props, Properties):
        raise InvalidOptionError("properties must be an mqttkit.Properties or a dict")
    return username, password, will, props


def _check_username(username: Any) -> str | None:
    if username is not None and not isinstance(username, str):
        raise InvalidOptionError(f"username must be a str, not {type(username).__name__}")
    return username


def _check_password(password: Any) -> bytes | None:
    if password is None:
        return None
    if isinstance(password, str):
        return password.encode("utf-8")
    if isinstance(password, bytes | bytearray | memoryview):
        return bytes(password)
    raise InvalidOptionError(f"password must be str or bytes, not {type(password).__name__}")


def _check_function(value: Any, name: str) -> None:
    if value is not None and not callable(value):
        raise InvalidOptionError(f"{name} must be a function, not {type(value).__name__}")


def _validate_network(o: ClientOptions) -> None:
    """The network options (:mod:`mqttkit.netoptions`), against the servers."""
    o.proxy = parse_proxy(o.proxy)
    o.bind_address = parse_bind_address(o.bind_address)
    o.socket_options = parse_socket_options(o.socket_options)
    o.alpn_protocols = parse_alpn_protocols(o.alpn_protocols)
    o.tls_min_version = parse_tls_version(o.tls_min_version)
    o.ws_subprotocols = parse_ws_subprotocols(o.ws_subprotocols)
    if o.ws_path is not None:
        o.ws_path = check_ws_path(o.ws_path)
    if o.ws_headers is not None and not callable(o.ws_headers):
        o.ws_headers = check_ws_headers(o.ws_headers)
    _check_function(o.transform_ws_url, "transform_ws_url")
    if o.ciphers is not None and not isinstance(o.ciphers, str):
        raise InvalidOptionError("ciphers must be an OpenSSL cipher list such as 'ECDHE+AESGCM'")
    password: Any = o.keyfile_password
    if password is not None:
        if not (isinstance(password, str | bytes) or callable(password)):
            raise InvalidOptionError("keyfile_password must be a str, bytes or a function")
        if not o.certfile:
            raise InvalidOptionError("keyfile_password needs certfile (and keyfile)")
    transports = {server.transport for server in o.servers}
    if o.ssl_context is not None:
        for name in ("alpn_protocols", "ciphers", "tls_min_version", "keyfile_password"):
            if getattr(o, name) is not None:
                raise InvalidOptionError(
                    f"{name} and ssl_context both given: set it on the ssl_context "
                    "(e.g. ssl_context.set_alpn_protocols), or leave ssl_context out"
                )
    elif not transports & {"tls", "wss"}:
        for name in ("alpn_protocols", "ciphers", "tls_min_version"):
            if getattr(o, name) is not None:
                raise InvalidOptionError(
                    f"{name} is a TLS setting, but no server uses TLS: use an mqtts:// or "
                    "wss:// URL"
                )
    if "unix" in transports:
        for name in ("proxy", "bind_address"):
            if getattr(o, name) is not None:
                raise InvalidOptionError(f"{name} applies to TCP connections, not unix sockets")
    if o.proxy is not None:
        require_extra("python_socks", "proxy", "the proxy option")
    if transports & {"ws", "wss"}:
        require_extra("wsproto", "ws", "MQTT over WebSocket (ws://, wss://)")


def _parse_servers(servers: Any, transport: str) -> tuple[Server, ...]:
    """The ``servers`` option: a non-empty list of URLs, ``(host, port)``, dicts or Servers."""
    if isinstance(servers, str | bytes) or not isinstance(servers, list | tuple):
        raise InvalidOptionError(
            f"servers must be a list such as ['mqtt://a:1883', ('b', 1883)], not {servers!r}"
        )
    return tuple(_parse_server(entry, transport) for entry in servers)


_SERVER_KEYS: Final = frozenset({"host", "hostname", "port", "protocol", "path"})


def _parse_server(entry: Any, transport: str) -> Server:
    """One ``servers`` entry; ``transport`` is the client's, for entries without a scheme."""
    host: Any
    port: Any
    path: Any = None
    if isinstance(entry, Server):
        host, port, transport, path = entry.host, entry.port, entry.transport, entry.path
    elif isinstance(entry, str):
        values = _parse_url(entry)
        if "username" in values or "password" in values:
            raise InvalidOptionError(
                f"server {entry!r}: give credentials as username/password (they apply to "
                "every server), not in a server URL"
            )
        transport = values["transport"]
        if transport == "unix":
            return Server("", 0, "unix", values["path"])
        if "host" not in values:
            raise InvalidOptionError(f"server {entry!r} names no host")
        host, port, path = values["host"], values.get("port"), values.get("path")
    elif isinstance(entry, tuple) and len(entry) == 2:
        host, port = entry
    elif isinstance(entry, Mapping):
        unknown = set(entry) - _SERVER_KEYS
        if unknown:
            raise InvalidOptionError(
                f"server {dict(entry)!r}: unknown key(s) {sorted(unknown)}; use host, port, "
                "protocol and path"
            )
        host = entry.get("host", entry.get("hostname"))
        port, path = entry.get("port"), entry.get("path")
        protocol = entry.get("protocol")
        if protocol is not None:
            if protocol not in SCHEMES:
                raise InvalidOptionError(
                    f"server {dict(entry)!r}: unsupported protocol {protocol!r}; use one of "
                    + ", ".join(SCHEMES)
                )
            transport = SCHEMES[protocol]
    else:
        raise InvalidOptionError(
            f"a server must be a URL, a (host, port) tuple or a dict with host and port, "
            f"not {entry!r}"
        )
    if transport == "unix":
        if not isinstance(path, str) or not path:
            raise InvalidOptionError(f"server {entry!r}: a unix server needs a socket path")
        return Server("", 0, "unix", path)
    if not isinstance(host, str) or not host:
        raise InvalidOptionError(f"server {entry!r}: host must be a non-empty str")
    if port is None:
        port = DEFAULT_PORTS[transport]
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidOptionError(f"server {entry!r}: port must be an int in 1..65535")
    if path is not None and not isinstance(path, str):
        raise InvalidOptionError(f"server {entry!r}: path must be a str")
    return Server(host, port, transport, path)


def parse_server_reference(reference: str, current: Server) -> list[Server]:
    """The servers an MQTT 5 Server Reference names, in its order.

    The specification leaves its format open (section 4.11); brokers send ``host``,
    ``host:port``, ``[v6]:port`` or a URL, several separated by spaces. Entries without a
    scheme use the current server's transport and, without a port, its default port.

    Raises:
        InvalidOptionError: nothing in it names a server.
    """
    servers = []
    for token in reference.split():
        try:
            if "://" in token:
                servers.append(_parse_server(token, current.transport))
                continue
            parts = urlsplit("//" + token)
            name, number = parts.hostname, parts.port
        except (InvalidOptionError, ValueError):
            continue
        if name:
            servers.append(_parse_server((name, number), current.transport))
    if not servers:
        raise InvalidOptionError(f"the Server Reference {reference!r} names no server")
    return servers


#: The reason codes a client may send in DISCONNECT (MQTT 5, section 3.14.2.1).
DISCONNECT_REASONS: Final = frozenset(
    {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99}
)
#: The properties a client may send in DISCONNECT (section 3.14.2.2).
_DISCONNECT_PROPERTIES: Final = frozenset(
    {"session_expiry_interval", "reason_string", "user_property"}
)


def parse_disconnect(
    options: ClientOptions, reason_code: Any = 0, properties: Any = None
) -> tuple[int, Properties]:
    """The reason code and properties of a ``close()``, checked against the MQTT 5 rules.

    ``properties`` is a :class:`Properties` or a dict (MQTT.js camelCase names too).

    Raises:
        InvalidArgumentError: a reason code a client may not send, a property DISCONNECT does
            not carry, a non-zero session expiry after a CONNECT without one
            [MQTT-3.14.2-2], or either with MQTT 3.x (which has neither).
    """
    if properties is None:
        properties = NO_PROPERTIES
    elif isinstance(properties, Mapping):
        try:
            properties = _properties_from_mapping(properties)
        except UnknownOptionError as exc:
            raise InvalidArgumentError(str(exc)) from None
    if not isinstance(properties, Properties):
        raise InvalidArgumentError("close() properties must be an mqttkit.Properties or a dict")
    if isinstance(reason_code, bool) or not isinstance(reason_code, int):
        raise InvalidArgumentError(f"close() reason_code must be an int, not {reason_code!r}")
    if options.protocol_version != MQTT_5:
        if reason_code or properties:
            raise InvalidArgumentError(
                "a DISCONNECT reason code or properties need protocol_version=5 (MQTT 3.x "
                "DISCONNECT carries neither)"
            )
        return 0, NO_PROPERTIES
    if reason_code not in DISCONNECT_REASONS:
        raise InvalidArgumentError(
            f"0x{reason_code:02X} is not a reason code a client may send in DISCONNECT; use "
            + ", ".join(f"0x{code:02X}" for code in sorted(DISCONNECT_REASONS))
            + " (0x04: disconnect with Will message)"
        )
    given = {f.name for f in fields(Properties) if getattr(properties, f.name) not in (None, ())}
    wrong = given - _DISCONNECT_PROPERTIES
    if wrong:
        raise InvalidArgumentError(
            f"DISCONNECT does not carry {', '.join(sorted(wrong))}; it takes "
            "session_expiry_interval, reason_string and user_property"
        )
    expiry = properties.session_expiry_interval
    if expiry and not options.properties.session_expiry_interval:
        raise InvalidArgumentError(
            "a session expiry in DISCONNECT needs one in CONNECT (properties="
            "{'session_expiry_interval': ...}): the server must refuse it otherwise "
            "[MQTT-3.14.2-2]"
        )
    return reason_code, properties


def _properties_from_mapping(mapping: Mapping[str, Any]) -> Properties:
    # MQTT.js spells properties in camelCase: sessionExpiryInterval -> session_expiry_interval.
    values = {}
    names = {f.name for f in fields(Properties)}
    for key, value in mapping.items():
        snake = "".join("_" + c.lower() if c.isupper() else c for c in key)
        if snake == "user_properties":
            snake = "user_property"
        if snake not in names:
            raise UnknownOptionError(f"unknown MQTT 5 property {key!r}")
        values[snake] = value
    return Properties(**values)


def _parse_will(will: Any, level: int) -> Will:
    if isinstance(will, Will):
        w = will
    elif isinstance(will, Mapping):
        extra = set(will) - {"topic", "payload", "message", "qos", "retain", "properties"}
        if extra:
            raise UnknownOptionError(f"unknown will option(s): {', '.join(sorted(extra))}")
        if "topic" not in will:
            raise InvalidOptionError("will needs a 'topic'")
        payload = will.get("payload", will.get("message", b""))
        props = will.get("properties") or NO_PROPERTIES
        if isinstance(props, Mapping):
            props = _properties_from_mapping(props)
        w = Will(will["topic"], payload, will.get("qos", 0), bool(will.get("retain", False)), props)
    else:
        raise InvalidOptionError("will must be a dict with topic/payload/qos/retain or a Will")
    validate_topic_name(w.topic)
    payload_bytes = normalize_payload(w.payload)
    if isinstance(w.qos, bool) or w.qos not in (0, 1, 2):
        raise InvalidOptionError(f"will qos must be 0, 1 or 2, not {w.qos!r}")
    if w.properties and level != MQTT_5:
        raise InvalidOptionError("will properties need protocol_version=5")
    return replace(w, payload=payload_bytes, retain=bool(w.retain))
