"""The network options: proxy URL, WebSocket handshake, local socket and TLS settings.

This module owns the parsing and validation of the options that say *how* a connection is
made rather than what the MQTT session does (:mod:`mqttkit.options` owns the rest and calls
these). It does no I/O: the asyncio driver (:mod:`mqttkit.aio.transport`,
:mod:`mqttkit.aio.proxy`, :mod:`mqttkit.aio.websocket`) applies what is checked here. Every
checker raises :class:`InvalidOptionError` saying what is allowed, and never echoes a secret
(a proxy password, a header value) in it.
"""

from __future__ import annotations

import importlib
import ipaddress
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from .protocol.errors import InvalidOptionError

__all__ = [
    "PROXY_SCHEMES",
    "Proxy",
    "check_ws_headers",
    "check_ws_path",
    "parse_alpn_protocols",
    "parse_bind_address",
    "parse_proxy",
    "parse_socket_options",
    "parse_tls_version",
    "parse_ws_subprotocols",
    "require_extra",
]

#: Proxy URL scheme -> what it is. SOCKS5 always lets the proxy resolve the broker's name (as
#: curl's ``socks5h``): on the networks that need a proxy, the client often cannot resolve
#: outside names itself. SOCKS4 carries an IPv4 address: the client resolves the name.
PROXY_SCHEMES: Final = {
    "socks5": "SOCKS5",
    "socks5h": "SOCKS5",
    "socks4": "SOCKS4",
    "http": "HTTP CONNECT",
}
_DEFAULT_PROXY_PORTS: Final = {"socks5": 1080, "socks5h": 1080, "socks4": 1080}


@dataclass(frozen=True, slots=True)
class Proxy:
    """A proxy the client reaches its brokers through (the ``proxy`` option).

    Build it from a URL with :func:`parse_proxy`. Its ``repr`` and :attr:`url` never show the
    credentials.
    """

    scheme: str
    """``socks5`` (or ``socks5h``), ``socks4`` or ``http`` (HTTP CONNECT)."""
    host: str
    """The proxy's host name or IP address."""
    port: int
    """The proxy's port."""
    username: str | None = field(default=None, repr=False)
    """User name for the proxy (SOCKS4: the user id), or None."""
    password: str | None = field(default=None, repr=False)
    """Password for the proxy, or None; never logged or shown."""

    @property
    def url(self) -> str:
        """The proxy as a URL, without its credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def kind(self) -> str:
        """What it speaks, for messages: ``SOCKS5``, ``SOCKS4`` or ``HTTP CONNECT``."""
        return PROXY_SCHEMES[self.scheme]

    def __repr__(self) -> str:
        secret = ", credentials='***'" if self.username or self.password else ""
        return f"Proxy({self.url!r}{secret})"

    def __str__(self) -> str:
        return self.url


def parse_proxy(value: Any) -> Proxy | None:
    """The ``proxy`` option: a URL such as ``socks5://user:pass@host:1080`` or a :class:`Proxy`.

    Raises:
        InvalidOptionError: not a proxy URL (the message never shows its password).
    """
    if value is None or isinstance(value, Proxy):
        return value
    if not isinstance(value, str):
        raise InvalidOptionError(
            f"proxy must be a URL such as 'socks5://host:1080' or 'http://host:3128', "
            f"not {type(value).__name__}"
        )
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    shown = _without_credentials(value)
    if scheme == "https":
        raise InvalidOptionError(
            f"proxy {shown!r}: TLS to the proxy itself (https://) is not supported; use an "
            "http:// proxy (the MQTT connection inside the tunnel can still be TLS: mqtts://)"
        )
    if scheme not in PROXY_SCHEMES:
        raise InvalidOptionError(
            f"proxy {shown!r}: unsupported scheme {parts.scheme!r}; use "
            + ", ".join(f"{s}://" for s in PROXY_SCHEMES)
        )
    if not parts.hostname:
        raise InvalidOptionError(f"proxy {shown!r} names no host")
    try:
        port = parts.port
    except ValueError:
        raise InvalidOptionError(f"proxy {shown!r}: the port is not a number in 1..65535") from None
    if port is None:
        if scheme not in _DEFAULT_PROXY_PORTS:
            raise InvalidOptionError(
                f"proxy {shown!r}: give the HTTP proxy's port (e.g. http://{parts.hostname}:3128)"
            )
        port = _DEFAULT_PROXY_PORTS[scheme]
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidOptionError(f"proxy {shown!r}: a proxy URL has no path, query or fragment")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if scheme == "socks4" and password:
        raise InvalidOptionError(
            f"proxy {shown!r}: SOCKS4 has no passwords (only a user id: socks4://userid@host); "
            "use socks5:// for a proxy that checks a password"
        )
    return Proxy(scheme, parts.hostname, port, username, password)


def _without_credentials(url: str) -> str:
    """``url`` with anything before an ``@`` in its authority replaced by ``***``."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1***@", url)


# RFC 9110 section 5.6.2: a header name is a token.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# The handshake's own headers: mqttkit writes them (Host from the URL; the subprotocol from
# ws_subprotocols), and a second copy would make an invalid request.
_RESERVED_HEADERS: Final = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "content-length",
        "transfer-encoding",
    }
)


def check_ws_headers(value: Any, what: str = "ws_headers") -> tuple[tuple[str, str], ...]:
    """Extra headers for the WebSocket handshake: a dict ``{name: value}`` or a list of
    ``(name, value)`` pairs (a name may repeat). Returns them as pairs, in order.

    Raises:
        InvalidOptionError: not a dict or pairs; a name that is no HTTP token or that the
            handshake writes itself; a value with a line break (never shown).
    """
    if isinstance(value, Mapping):
        pairs: list[Any] = list(value.items())
    elif isinstance(value, list | tuple):
        pairs = list(value)
    else:
        raise InvalidOptionError(
            f"{what} must be a dict {{name: value}} or a list of (name, value) pairs, "
            f"not {type(value).__name__}"
        )
    checked = []
    for pair in pairs:
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise InvalidOptionError(f"{what}: each header is a (name, value) pair")
        name, text = pair
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise InvalidOptionError(f"{what}: {name!r} is not a valid HTTP header name")
        if name.lower() in _RESERVED_HEADERS:
            hint = " (use ws_subprotocols)" if name.lower() == "sec-websocket-protocol" else ""
            raise InvalidOptionError(
                f"{what}: the WebSocket handshake writes {name!r} itself{hint}"
            )
        if isinstance(text, bytes):
            text = text.decode("latin-1")
        if not isinstance(text, str):
            raise InvalidOptionError(
                f"{what}: the value of {name!r} must be a str, not {type(text).__name__}"
            )
        if any(c in text for c in "\r\n\0"):
            # The value itself may be a secret (Authorization): not shown.
            raise InvalidOptionError(f"{what}: the value of {name!r} contains a line break")
        checked.append((name, text))
    return tuple(checked)


def check_ws_path(value: Any, what: str = "ws_path") -> str:
    """A WebSocket request path (with an optional ``?query``).

    Raises:
        InvalidOptionError: not a str starting with ``/``, or with spaces or line breaks.
    """
    if not isinstance(value, str) or not value.startswith("/"):
        raise InvalidOptionError(f"{what} must be a path starting with '/', not {value!r}")
    if any(c.isspace() for c in value):
        raise InvalidOptionError(f"{what} must not contain spaces or line breaks: {value!r}")
    return value


def parse_ws_subprotocols(value: Any) -> tuple[str, ...] | None:
    """The ``ws_subprotocols`` option: a list of subprotocol names (None: the default).

    Raises:
        InvalidOptionError: empty, or a name that is no HTTP token.
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise InvalidOptionError(
            "ws_subprotocols must be a non-empty list of names such as ['mqtt']"
        )
    for name in value:
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise InvalidOptionError(f"ws_subprotocols: {name!r} is not a valid subprotocol name")
    return tuple(value)


def parse_bind_address(value: Any) -> tuple[str, int] | None:
    """The ``bind_address`` option: ``(host, port)`` (port 0: any), or a host alone.

    Raises:
        InvalidOptionError: not an IP address (and port in 0..65535).
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = (value, 0)
    if not (isinstance(value, tuple | list) and len(value) == 2):
        raise InvalidOptionError(
            f"bind_address must be (host, port) such as ('192.0.2.7', 0), not {value!r}"
        )
    host, port = value
    if not isinstance(host, str):
        raise InvalidOptionError(f"bind_address: host must be an IP address str, not {host!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise InvalidOptionError(
            f"bind_address: {host!r} is not an IP address of this machine's interfaces"
        ) from None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidOptionError(f"bind_address: port must be an int in 0..65535, not {port!r}")
    return (host, port)


def parse_socket_options(value: Any) -> tuple[tuple[int, int, int | bytes], ...]:
    """The ``socket_options`` option: ``(level, option, value)`` triples for ``setsockopt``.

    Raises:
        InvalidOptionError: not a list of such triples (ints, and an int or bytes value).
    """
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise InvalidOptionError(
            "socket_options must be a list of (level, option, value) such as "
            "[(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]"
        )
    checked: list[tuple[int, int, int | bytes]] = []
    for entry in value:
        if not (isinstance(entry, tuple | list) and len(entry) == 3):
            raise InvalidOptionError(
                f"socket_options: {entry!r} is not a (level, option, value) triple"
            )
        level, option, setting = entry
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in (level, option)):
            raise InvalidOptionError(f"socket_options: level and option of {entry!r} must be ints")
        if isinstance(setting, bool):
            setting = int(setting)
        if not isinstance(setting, int | bytes):
            raise InvalidOptionError(f"socket_options: the value of {entry!r} must be int or bytes")
        checked.append((level, option, setting))
    return tuple(checked)


_TLS_VERSIONS: Final = {
    "tlsv1": ssl.TLSVersion.TLSv1,
    "tlsv1.0": ssl.TLSVersion.TLSv1,
    "1.0": ssl.TLSVersion.TLSv1,
    "tlsv1.1": ssl.TLSVersion.TLSv1_1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "tlsv1.2": ssl.TLSVersion.TLSv1_2,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "tlsv1.3": ssl.TLSVersion.TLSv1_3,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


def parse_tls_version(value: Any) -> ssl.TLSVersion | None:
    """The ``tls_min_version`` option: an :class:`ssl.TLSVersion` or ``"TLSv1.2"`` / ``"1.3"``.

    Raises:
        InvalidOptionError: another value.
    """
    if value is None or isinstance(value, ssl.TLSVersion):
        return value
    if isinstance(value, str) and value.lower() in _TLS_VERSIONS:
        return _TLS_VERSIONS[value.lower()]
    raise InvalidOptionError(
        f"tls_min_version must be 'TLSv1.2', 'TLSv1.3' (or an ssl.TLSVersion), not {value!r}"
    )


def parse_alpn_protocols(value: Any) -> tuple[str, ...] | None:
    """The ``alpn_protocols`` option: protocol names offered in the TLS handshake.

    Raises:
        InvalidOptionError: not a non-empty list of non-empty str of at most 255 bytes.
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise InvalidOptionError(
            "alpn_protocols must be a non-empty list of names such as ['x-amzn-mqtt-ca']"
        )
    for name in value:
        if not isinstance(name, str) or not 1 <= len(name.encode("utf-8")) <= 255:
            raise InvalidOptionError(
                f"alpn_protocols: {name!r} is not a protocol name (1 to 255 bytes)"
            )
    return tuple(value)


def require_extra(module: str, extra: str, what: str) -> None:
    """Check that the optional dependency ``module`` can be imported.

    Raises:
        InvalidOptionError: it cannot; the message names ``pip install 'mqttkit[extra]'``.
    """
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise InvalidOptionError(
            f"{what} needs the optional dependency {module!r}, which is not installed: "
            f"pip install 'mqttkit[{extra}]' ({exc})"
        ) from None
