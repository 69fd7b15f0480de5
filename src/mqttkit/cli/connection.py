"""From the connection flags to a connected client, as Mosquitto's tools connect.

This module owns what the connection flags mean: where to connect (``-h``/``-p``/``-L``/
``--unix``), when TLS is on and what it checks (Mosquitto's rules: a CA option, ``--psk``,
``mqtts://`` or port 8883; ``--insecure`` skips only the host name check), the client id,
session, will and MQTT 5 properties, and the ``-d`` packet log. :class:`Connection` wraps the
blocking client for one command: it connects (the first failure ends the command, as in
Mosquitto's tools), records why the connection ended, and closes.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import fields
from typing import IO, Any, Final
from urllib.parse import unquote, urlsplit

from ..protocol.errors import MQTTConnectionError, MQTTError
from ..protocol.packets import (
    MQTT_5,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
)
from ..sync.client import Client
from .flags import Args, UsageError
from .properties import build_properties

__all__ = ["Connection", "Setup", "build_ssl_context", "setup"]

#: How long a command waits for the first connection (TCP, TLS and CONNACK).
CONNECT_TIMEOUT: Final = 30.0


class Setup:
    """What the flags say about the connection: the client's keyword arguments and more."""

    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}
        self.url_topic: str | None = None
        """The topic a ``-L`` URL names (``mqtt://host/topic``)."""
        self.properties: dict[str, Properties] = {}
        """``-D`` properties per packet: ``publish``, ``subscribe``, ``unsubscribe``."""
        self.named_id: str | None = None
        """The client id the user gave (``-i``/``-I``), for the ``-d`` lines."""
        self.protocol: int = 4
        self.warnings: list[str] = []


def setup(a: Args, default_protocol: int = 4) -> Setup:
    """The client options for these flags.

    Raises:
        UsageError: contradictory or bad connection flags, each with Mosquitto's message where
            it has one.
    """
    s = Setup()
    _refuse_unsupported(a)
    props = build_properties(a.command, a.properties)
    protocol = a.protocol
    if protocol is None:
        # -D makes an MQTT 5 client unless -V says otherwise (as in Mosquitto's tools).
        protocol = 5 if a.properties else default_protocol
    elif a.properties and protocol != MQTT_5:
        raise UsageError("-D (MQTT 5 properties) needs MQTT 5: leave out -V, or use -V 5.")
    s.protocol = protocol
    s.properties = props
    kwargs = s.kwargs
    kwargs["protocol_version"] = protocol
    kwargs["keepalive"] = a.keepalive
    kwargs["connect_timeout"] = CONNECT_TIMEOUT

    # Where. Mosquitto reads the flags in order: a later -h/-p overrides what -L said.
    host, port, scheme, url_user, url_password = _where(a, s)
    if a.username is not None:
        kwargs["username"] = a.username
    elif url_user is not None:
        kwargs["username"] = url_user
    if a.password is not None:
        kwargs["password"] = a.password
    elif url_password is not None:
        kwargs["password"] = url_password
    if "password" in kwargs and "username" not in kwargs and protocol != MQTT_5:
        raise UsageError("-P needs -u with MQTT 3.1 / 3.1.1 (a password needs a user name).")

    tls = scheme in ("mqtts", "wss") or bool(a.cafile or a.capath or a.os_certs or a.psk)
    if scheme == "mqtt" and port == 8883 and a.unix is None:
        tls = True  # Mosquitto: port 8883 means TLS, trusting the system's CAs
    if tls:
        kwargs["ssl_context"] = build_ssl_context(a)
        if scheme == "mqtt":
            scheme = "mqtts"
        if scheme == "ws":
            scheme = "wss"
    else:
        ignored = [
            flag
            for flag, given in (
                ("--insecure", a.insecure),
                ("--cert", a.certfile),
                ("--key", a.keyfile),
                ("--ciphers", a.ciphers),
                ("--tls-version", a.tls_version),
                ("--tls-alpn", a.tls_alpn),
            )
            if given
        ]
        if ignored:
            s.warnings.append(
                f"Warning: {', '.join(ignored)} without TLS: as in Mosquitto's tools, TLS is "
                "on only with --cafile, --capath, --tls-use-os-certs, --psk, mqtts:// or port "
                "8883; connecting without TLS."
            )
    if a.unix is not None:
        kwargs["url"] = f"unix://{a.unix}"
    else:
        bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
        if port is None:
            port = 8883 if scheme == "mqtts" else 1883
        kwargs["url"] = f"{scheme}://{bracketed}:{port}"

    # Who.
    if a.client_id is not None and a.id_prefix is not None:
        raise UsageError("-i and -I argument cannot be used together.")
    if a.client_id is not None:
        kwargs["client_id"] = s.named_id = a.client_id
    elif a.id_prefix is not None:
        kwargs["client_id"] = s.named_id = f"{a.id_prefix}{os.getpid()}"
    else:
        # As Mosquitto's tools: an empty id, and the broker assigns one (with a clean session).
        kwargs["client_id"] = ""

    # Session.
    expiry = a.session_expiry
    if protocol == MQTT_5:
        if expiry is None:
            expiry = 0xFFFFFFFF if a.persistent else 0
        if expiry and s.named_id is None:
            raise UsageError(
                "You must provide a client id if you are using an infinite session expiry interval."
                if expiry == 0xFFFFFFFF
                else "You must provide a client id (-i) to keep a session (-x)."
            )
    elif a.persistent and s.named_id is None:
        raise UsageError("You must provide a client id if you are using the -c option.")
    kwargs["clean"] = not a.persistent
    connect_props = props.get("connect", Properties())
    if protocol == MQTT_5 and expiry:
        if connect_props.session_expiry_interval is not None and a.session_expiry is not None:
            raise UsageError("Give the session expiry interval with -x or with -D, not both.")
        if connect_props.session_expiry_interval is None:
            connect_props = _replace(connect_props, session_expiry_interval=expiry)
    if connect_props:
        kwargs["properties"] = connect_props
    if a.max_inflight is not None:
        kwargs["max_inflight"] = a.max_inflight

    # Will.
    if a.will_topic is not None:
        will: dict[str, Any] = {
            "topic": a.will_topic,
            "payload": (a.will_payload or "").encode("utf-8", "surrogateescape"),
            "qos": a.will_qos,
            "retain": a.will_retain,
        }
        if "will" in props:
            will["properties"] = props["will"]
        if any(c in a.will_topic for c in "+#"):
            raise UsageError(f"Invalid will topic '{a.will_topic}', does it contain '+' or '#'?")
        kwargs["will"] = will
    elif a.will_payload is not None:
        raise UsageError("Will payload given, but no will topic given.")
    elif a.will_retain:
        raise UsageError("Will retain given, but no will topic given.")
    elif "will" in props:
        raise UsageError("-D will ... needs --will-topic.")

    if a.proxy is not None:
        kwargs["proxy"] = a.proxy
    if a.bind_address is not None:
        kwargs["bind_address"] = _local_address(a.bind_address)
    return s


def _local_address(name: str) -> str:
    """An IP address for ``-A`` (Mosquitto's takes a host name too: its first address)."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise UsageError(f"-A: cannot resolve {name!r}: {exc.strerror}.") from None
        return str(infos[0][4][0])
    return name


def _where(a: Args, s: Setup) -> tuple[str, int | None, str, str | None, str | None]:
    """host, port, scheme (mqtt, mqtts, ws, wss), and the URL's user and password."""
    host, port, scheme = "localhost", None, "mqtt"
    user = password = None
    if a.url is not None:
        parts = urlsplit(a.url)
        scheme = parts.scheme.lower()
        if scheme in ("tcp",):
            scheme = "mqtt"
        if scheme in ("ssl", "tls"):
            scheme = "mqtts"
        if scheme == "unix":
            if a.unix is None:
                a.unix = unquote(parts.path)
            return host, None, "mqtt", None, None
        if scheme not in ("mqtt", "mqtts", "ws", "wss"):
            raise UsageError("unsupported URL scheme.")
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"Invalid port in URL {a.url!r}.") from None
        if parts.hostname:
            host = parts.hostname
        if parts.username is not None:
            user = unquote(parts.username)
        if parts.password is not None:
            password = unquote(parts.password)
        topic = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
        if scheme in ("ws", "wss"):
            topic = ""  # the path of a WebSocket URL is the HTTP path
            s.kwargs["path"] = parts.path or "/mqtt"
        if topic:
            s.url_topic = topic
        elif a.command == "pub" and scheme in ("mqtt", "mqtts"):
            raise UsageError("Invalid URL for -L argument specified - topic missing.")
    if a.host is not None:
        host = a.host
    if a.port is not None:
        port = a.port
    return host, port, scheme, user, password


def _replace(props: Properties, **changes: Any) -> Properties:
    values = {f.name: getattr(props, f.name) for f in fields(props)}
    values.update(changes)
    return Properties(**values)


def _refuse_unsupported(a: Args) -> None:
    """Refuse, saying why, the flags this version cannot honour."""
    if a.srv:
        raise UsageError(
            "-S (DNS SRV lookup) is not supported by mqttkit: Python's standard library has no "
            "SRV resolver. Give the broker with -h and -p."
        )
    if a.tls_engine is not None or a.tls_engine_kpass is not None:
        raise UsageError(
            "--tls-engine and --tls-engine-kpass-sha1 are not supported by mqttkit: OpenSSL "
            "engines are not reachable through Python's ssl module."
        )
    if a.keyform is not None and a.keyform != "pem":
        if a.keyform == "engine":
            raise UsageError(
                "--keyform engine is not supported by mqttkit: OpenSSL engines are not "
                "reachable through Python's ssl module."
            )
        raise UsageError(f"Invalid keyform {a.keyform!r}: use pem.")
    if a.psk is not None and a.psk_identity is None:
        raise UsageError("--psk-identity required if --psk used.")
    if a.psk_identity is not None and a.psk is None:
        raise UsageError("--psk required if --psk-identity used.")
    if a.psk is not None and (a.cafile or a.capath):
        raise UsageError("Only one of --psk or --cafile/--capath may be used at once.")


_TLS_VERSIONS: Final = {
    "tlsv1.3": ssl.TLSVersion.TLSv1_3,
    "tlsv1.2": ssl.TLSVersion.TLSv1_2,
    "tlsv1.1": ssl.TLSVersion.TLSv1_1,
}


def build_ssl_context(a: Args) -> ssl.SSLContext:
    """The TLS context for these flags, with Mosquitto's meaning of each.

    The certificate chain is always verified; ``--insecure`` only skips the host name check.
    ``--cafile``/``--capath`` trust those CAs (and not the system's, unless
    ``--tls-use-os-certs``); without either, the system's CAs are trusted.

    Raises:
        UsageError: a file that cannot be read, a bad cipher list, PSK on a Python without it.
    """
    for path in (a.cafile, a.capath, a.certfile, a.keyfile):
        if path is not None and not os.path.exists(path):
            raise UsageError(f"Problem setting TLS options: File not found: {path}.")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chain and host name
    try:
        if a.psk is not None:
            _set_psk(context, a.psk, a.psk_identity or "")
        elif a.cafile or a.capath:
            context.load_verify_locations(cafile=a.cafile, capath=a.capath)
            if a.os_certs:
                context.load_default_certs()
        else:
            context.load_default_certs()
        if a.certfile or a.keyfile:
            if not a.certfile:
                raise UsageError("--key needs --cert.")
            context.load_cert_chain(a.certfile, a.keyfile)
        if a.ciphers:
            context.set_ciphers(a.ciphers)
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"Problem setting TLS options: {exc}.") from None
    if a.tls_version:
        version = _TLS_VERSIONS[a.tls_version]
        try:
            context.minimum_version = version
            context.maximum_version = version
        except ValueError as exc:  # an OpenSSL built without that version
            raise UsageError(f"--tls-version {a.tls_version}: {exc}.") from None
    if a.tls_alpn:
        context.set_alpn_protocols([a.tls_alpn])
    if a.insecure:
        context.check_hostname = False  # and nothing more: the chain is still verified
    return context


def _set_psk(context: ssl.SSLContext, key: str, identity: str) -> None:
    try:
        secret = bytes.fromhex(key)
    except ValueError:
        raise UsageError("--psk must be hexadecimal (no leading 0x).") from None
    setter = getattr(context, "set_psk_client_callback", None)
    if setter is None:
        raise UsageError(
            "--psk needs Python 3.13 or later (ssl's TLS-PSK support); this is Python "
            f"{sys.version.split()[0]}."
        )
    context.check_hostname = False  # PSK: no certificate, so no name in one
    context.verify_mode = ssl.CERT_NONE
    # TLS 1.3 PSK in Python's ssl needs a session ticket setup that Mosquitto does not offer;
    # Mosquitto's PSK listeners speak TLS 1.2 PSK cipher suites.
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("PSK")
    setter(lambda hint: (identity, secret))


# -- the connection -------------------------------------------------------------------------------


class Connection:
    """A blocking client connected for one command.

    ``reconnect``: keep reconnecting after the first connection (sub, ``pub -l``); otherwise a
    lost connection is the end (:attr:`lost`). The first connection is never retried: its
    failure is the command's error, as in Mosquitto's tools.
    """

    def __init__(
        self,
        a: Args,
        s: Setup,
        *,
        reconnect: bool = False,
        out: IO[bytes] | None = None,
        **extra: Any,
    ) -> None:
        kwargs = dict(s.kwargs)
        kwargs.update(extra)
        if reconnect:
            # libmosquitto's loop retries every second; a little backoff, never above 5 s.
            kwargs.setdefault("reconnect_period", 1.0)
            kwargs.setdefault("reconnect_max", 5.0)
        else:
            kwargs["reconnect_period"] = 0
        url = kwargs.pop("url")
        self.client = Client(url=url, retry_first_connect=False, **kwargs)
        self.setup = s
        self.debug = a.debug
        self.command = a.command
        self.out = out if out is not None else sys.stdout.buffer
        self.error: MQTTError | None = None
        """Why the connection ended or failed (the last error reported)."""
        self.connected = threading.Event()
        self.stopped = threading.Event()
        """Set when the client stopped for good (failed, or reconnecting off and lost)."""
        self.lost = threading.Event()
        """Set when a connection ends (also one that will be re-established)."""
        self._first = threading.Event()
        self.write_lock = threading.Lock()
        self.on_broken_pipe: Callable[[], None] | None = None
        client = self.client
        client.on("connect", self._on_connect)
        client.on("error", self._on_error)
        client.on("close", self._on_close)
        client.on("end", self._on_end)
        if self.debug:
            client.on("packetsend", self._on_send)
            client.on("packetreceive", self._on_receive)

    # -- events (dispatch thread) ----------------------------------------------------------------

    def _on_connect(self, connack: ConnAck) -> None:
        self.lost.clear()
        self.connected.set()
        self._first.set()

    def _on_error(self, error: MQTTError) -> None:
        self.error = error
        if not self.connected.is_set():
            self._first.set()  # the first connection failed: the command ends
        if getattr(error, "permanent", False):
            self.stopped.set()  # a refusal that retrying cannot change: no more reconnecting

    def _on_close(self) -> None:
        self.lost.set()
        if self.client.options.reconnect_period <= 0:
            self.stopped.set()

    def _on_end(self) -> None:
        self.stopped.set()
        self._first.set()

    def write(self, data: bytes) -> bool:
        """Write to the output and flush; False (after calling ``on_broken_pipe``) if the
        reader has gone (``| head -1``)."""
        if not data:
            return True
        with self.write_lock:
            try:
                self.out.write(data)
                self.out.flush()
            except BrokenPipeError:
                if self.on_broken_pipe is not None:
                    self.on_broken_pipe()
                return False
        return True

    def _name(self) -> str:
        if self.setup.named_id is not None:
            return self.setup.named_id
        assigned = self.client.client_id
        return assigned if assigned else "(null)"

    def _on_send(self, packet: Packet) -> None:
        for line in _sent(packet):
            self.write(f"Client {self._name()} {line}\n".encode("utf-8", "surrogatepass"))

    def _on_receive(self, packet: Packet) -> None:
        line = _received(packet)
        self.write(f"Client {self._name()} {line}\n".encode("utf-8", "surrogatepass"))
        if isinstance(packet, SubAck) and self.command == "sub":
            # mosquitto_sub's own line, after libmosquitto's.
            codes = ", ".join(str(code) for code in packet.reason_codes)
            self.write(f"Subscribed (mid: {packet.packet_id}): {codes}\n".encode())

    # -- the command's side ----------------------------------------------------------------------

    def open(self) -> Connection:
        """Connect; returns once connected.

        Raises:
            MQTTError: the first connection failed (the error says why).
        """
        self.client.connect()
        # Bounded: the client's own connect timeout ends an attempt before this runs out.
        if not self._first.wait(CONNECT_TIMEOUT + 10):
            raise MQTTConnectionError("no answer from the broker")
        if not self.connected.is_set():
            if self.error is not None:
                raise self.error
            raise MQTTConnectionError("the connection closed before the broker accepted it")
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Close: what is queued is sent and acknowledged (bounded), then DISCONNECT (with the
        ``-D disconnect`` properties)."""
        properties = self.setup.properties.get("disconnect")
        handle = self.client.close(properties=properties) if properties else self.client.close()
        if not handle.wait(timeout):
            self.client.close(force=True).wait(5)

    def __enter__(self) -> Connection:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the -d lines, as libmosquitto logs its packets ------------------------------------------------


def _sent(packet: Packet) -> list[str]:
    if isinstance(packet, Publish):
        return [
            f"sending PUBLISH (d{int(packet.dup)}, q{packet.qos}, r{int(packet.retain)}, "
            f"m{packet.packet_id or 0}, '{packet.topic}', ... ({len(packet.payload)} bytes))"
        ]
    if isinstance(packet, Subscribe):
        return [
            f"sending SUBSCRIBE (Mid: {packet.packet_id}, Topic: {sub.topic_filter}, "
            f"QoS: {sub.qos}, Options: 0x{_sub_options(sub):02x})"
            for sub in packet.subscriptions
        ]
    if isinstance(packet, Unsubscribe):
        return [
            f"sending UNSUBSCRIBE (Mid: {packet.packet_id}, Topic: {topic})"
            for topic in packet.topic_filters
        ]
    if isinstance(packet, PubAck):
        return [f"sending PUBACK (m{packet.packet_id}, rc{packet.reason_code})"]
    if isinstance(packet, PubRec):
        return [f"sending PUBREC (m{packet.packet_id}, rc{packet.reason_code})"]
    if isinstance(packet, PubRel):
        return [f"sending PUBREL (m{packet.packet_id})"]
    if isinstance(packet, PubComp):
        return [f"sending PUBCOMP (m{packet.packet_id})"]
    names = {Connect: "CONNECT", PingReq: "PINGREQ", Disconnect: "DISCONNECT"}
    name = names.get(type(packet), type(packet).__name__.upper())
    return [f"sending {name}"]


def _sub_options(sub: Subscription) -> int:
    # The subscription options byte without its QoS bits, as libmosquitto logs it.
    return (
        (0x04 if sub.no_local else 0)
        | (0x08 if sub.retain_as_published else 0)
        | (sub.retain_handling << 4)
    )


def _received(packet: Packet) -> str:
    if isinstance(packet, Publish):
        return (
            f"received PUBLISH (d{int(packet.dup)}, q{packet.qos}, r{int(packet.retain)}, "
            f"m{packet.packet_id or 0}, '{packet.topic}', ... ({len(packet.payload)} bytes))"
        )
    if isinstance(packet, ConnAck):
        return f"received CONNACK ({packet.reason_code})"
    if isinstance(packet, PubAck):
        return f"received PUBACK (Mid: {packet.packet_id}, RC:{packet.reason_code})"
    if isinstance(packet, PubRec):
        return f"received PUBREC (Mid: {packet.packet_id})"
    if isinstance(packet, PubRel):
        return f"received PUBREL (Mid: {packet.packet_id})"
    if isinstance(packet, PubComp):
        return f"received PUBCOMP (Mid: {packet.packet_id}, RC:{packet.reason_code})"
    if isinstance(packet, SubAck):
        return "received SUBACK"
    if isinstance(packet, UnsubAck):
        return "received UNSUBACK"
    if isinstance(packet, PingResp):
        return "received PINGRESP"
    if isinstance(packet, Disconnect):
        return f"received DISCONNECT ({packet.reason_code})"
    return f"received {type(packet).__name__.upper()}"
