"""Opening transports (TCP, TLS, WebSocket, Unix socket) and mapping OS errors to mqttkit errors.

This module owns everything that knows about sockets and ssl: building the TLS context from the
options, opening the connection with asyncio, and the one place where OS / ssl exceptions become
:mod:`mqttkit.protocol.errors` exceptions (``map_connect_error``).
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..netoptions import check_ws_headers
from ..options import DEFAULT_PORTS, ClientOptions, Server
from ..protocol.errors import (
    CertificateVerifyError,
    ConnectionLostError,
    HostNotFoundError,
    InvalidOptionError,
    MQTTConnectionError,
    MQTTError,
    ServerNotFoundError,
    TLSError,
)
from ..protocol.packets import MQTT_3_1
from .calls import call_user, resolve

if TYPE_CHECKING:
    from . import websocket

__all__ = [
    "make_ssl_context",
    "map_connect_error",
    "map_lost_error",
    "open_transport",
    "websocket_handshake",
]

log = logging.getLogger("mqttkit")

_UNREACHABLE = {
    errno.ECONNREFUSED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EADDRNOTAVAIL,
    errno.ENOENT,  # unix socket path missing
}


def make_ssl_context(options: ClientOptions) -> ssl.SSLContext | None:
    """The TLS context for these options, or None for a plain transport.

    Verification of the certificate and the host name is on unless ``insecure`` is set.

    Raises:
        OSError, ValueError: a file that cannot be read, a wrong ``keyfile_password``, a
            cipher list OpenSSL does not know (``ssl.SSLError`` is an ``OSError``).
    """
    secure = any(server.transport in ("tls", "wss") for server in options.servers)
    if not secure and options.transport not in ("tls", "wss") and options.ssl_context is None:
        return None
    if options.ssl_context is not None:
        return options.ssl_context
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=options.cafile, cadata=options.cadata
    )
    if options.certfile:
        context.load_cert_chain(options.certfile, options.keyfile, options.keyfile_password)
    if options.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if options.alpn_protocols:
        context.set_alpn_protocols(list(options.alpn_protocols))
    if options.ciphers:
        context.set_ciphers(options.ciphers)
    if options.tls_min_version is not None:
        context.minimum_version = options.tls_min_version
    return context


async def open_transport(
    options: ClientOptions,
    server: Server,
    protocol_factory: Callable[[], asyncio.Protocol],
    ssl_context: ssl.SSLContext | None,
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """Open a connection to ``server`` (one of ``options.servers``) with these options:
    directly or through ``options.proxy``, then TLS, then the WebSocket upgrade, as the
    server's transport says.

    Raises:
        MQTTConnectionError: a subclass saying what failed (DNS, refused, proxy, TLS...).
    """
    loop = asyncio.get_running_loop()
    secure = server.transport in ("tls", "wss") or options.ssl_context is not None
    ssl_context = ssl_context if secure else None
    try:
        if server.transport == "unix":
            assert server.path is not None
            return await loop.create_unix_connection(
                protocol_factory,
                server.path,
                ssl=ssl_context,
                server_hostname=(options.server_hostname or "localhost") if ssl_context else None,
            )
        host, port = server.host, server.port
        factory = protocol_factory
        ws = None
        if server.transport in ("ws", "wss"):
            ws = _extra_module(".websocket", "MQTT over WebSocket", "wsproto", "ws")
            handshake, host, port = await websocket_handshake(options, server)
            factory = _websocket_factory(ws, handshake, protocol_factory)
        server_hostname = None
        if ssl_context is not None:
            server_hostname = options.server_hostname or host
        if options.proxy is not None:
            proxy = _extra_module(".proxy", "the proxy option", "python-socks", "proxy")
            sock = await proxy.open_tunnel(
                options.proxy,
                host,
                port,
                bind_address=options.bind_address,
                timeout=options.connect_timeout,
            )
            set_nodelay(sock)
            _set_options(sock, options.socket_options)
        else:
            sock = await _connect_tcp(host, port, options.bind_address, options.socket_options)
        try:
            transport, protocol = await loop.create_connection(
                factory, sock=sock, ssl=ssl_context, server_hostname=server_hostname
            )
        except ConnectionError as exc:
            sock.close()
            if ssl_context is None:
                raise
            # Connected, then cut during the TLS handshake: the server refused what we offered
            # (versions, ciphers) without an alert, or does not speak TLS on this port.
            raise TLSError(
                f"TLS handshake with {server.url} failed: the server closed the connection "
                f"({type(exc).__name__}); check the TLS versions and ciphers it accepts"
            ) from exc
        except BaseException:
            sock.close()
            raise
        if ws is not None:
            assert isinstance(protocol, ws.WebSocketAdapter)
            try:
                await protocol.upgraded  # the HTTP Upgrade, before any MQTT byte
            except BaseException:
                transport.abort()
                raise
            assert protocol.transport is not None
            return protocol.transport, protocol.inner
    except (OSError, ssl.SSLError) as exc:
        raise map_connect_error(exc, server) from exc
    return transport, protocol


def _extra_module(name: str, what: str, needs: str, extra: str) -> Any:
    """The module ``name`` of this package that needs the optional dependency ``needs``
    (:mod:`.websocket`: wsproto; :mod:`.proxy`: python-socks), imported on first use so that
    the client works without them.

    Raises:
        MQTTConnectionError: it is not installed (the options check it for the servers they
            name; a redirection to a ws:// server may still get here).
    """
    try:
        return importlib.import_module(name, __package__)
    except ImportError as exc:
        raise MQTTConnectionError(
            f"{what} needs {needs}: pip install 'mqttkit[{extra}]' ({exc})"
        ) from None


def _websocket_factory(
    ws: Any, handshake: websocket.Handshake, protocol_factory: Callable[[], asyncio.Protocol]
) -> Callable[[], asyncio.Protocol]:
    adapter: type[websocket.WebSocketAdapter] = ws.WebSocketAdapter
    return lambda: adapter(protocol_factory(), handshake)


async def websocket_handshake(
    options: ClientOptions, server: Server
) -> tuple[websocket.Handshake, str, int]:
    """The WebSocket Upgrade request for ``server``, and the host and port to connect to
    (``transform_ws_url`` may change them): calls the options' URL hook and header function.

    Raises:
        MQTTConnectionError: a hook failed or returned something unusable.
    """
    path = server.path or options.ws_path or options.path or "/mqtt"
    url = f"{server.transport}://{_authority(server.host, server.port, server.transport)}{path}"
    host, port = server.host, server.port
    if options.transform_ws_url is not None:
        returned = await _call_hook(options.transform_ws_url, "transform_ws_url", url)
        host, port, path = _parse_ws_url(returned, server.transport)
        url = returned
    headers: Any = options.ws_headers or ()
    if callable(headers):
        returned = await _call_hook(headers, "the ws_headers function")
        try:
            headers = check_ws_headers(returned or (), "the ws_headers function's result")
        except InvalidOptionError as exc:
            raise MQTTConnectionError(str(exc)) from exc
    subprotocols = options.ws_subprotocols or (
        ("mqttv3.1", "mqtt") if options.protocol_version == MQTT_3_1 else ("mqtt",)
    )
    log.debug("WebSocket upgrade: GET %s (subprotocols %s)", _without_query(url), subprotocols)
    ws = _extra_module(".websocket", "MQTT over WebSocket", "wsproto", "ws")
    handshake = ws.Handshake(
        _authority(host, port, server.transport), path, subprotocols, tuple(headers)
    )
    return handshake, host, port


def _authority(host: str, port: int, transport: str) -> str:
    """``host[:port]`` as in a URL and the Host header (no port when it is the default)."""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    return host if port == DEFAULT_PORTS[transport] else f"{host}:{port}"


def _without_query(url: str) -> str:
    # A presigned URL carries its signature in the query: never logged.
    return url.partition("?")[0]


def _parse_ws_url(url: Any, transport: str) -> tuple[str, int, str]:
    """Host, port and path (with query) of the URL ``transform_ws_url`` returned."""
    if not isinstance(url, str):
        raise MQTTConnectionError(f"transform_ws_url must return a str URL, not {url!r}")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme.lower() != transport or not parts.hostname or port == -1:
        raise MQTTConnectionError(
            f"transform_ws_url returned {_without_query(url)!r}: it must be a "
            f"{transport}:// URL with a host (the scheme cannot change)"
        )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, port or DEFAULT_PORTS[transport], path


async def _call_hook(fn: Callable[..., Any], what: str, *args: Any) -> Any:
    try:
        return await call_user(fn, *args)
    except Exception as exc:
        raise MQTTConnectionError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


async def _connect_tcp(
    host: str,
    port: int,
    bind_address: tuple[str, int] | None = None,
    socket_options: tuple[tuple[int, int, int | bytes], ...] = (),
) -> socket.socket:
    """A non-blocking socket connected to ``host:port``, host names resolved by
    :func:`~mqttkit.aio.calls.resolve`, bound to ``bind_address`` and with ``socket_options``
    set before it connects.

    Each address is tried in turn (as asyncio does); the error of a single failure, or
    "Multiple exceptions: ..." when the addresses failed differently, is raised.
    """
    loop = asyncio.get_running_loop()
    if _is_ip_address(host):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        infos: list[Any] = [(family, socket.SOCK_STREAM, 0, "", (host, port))]
    else:
        infos = await resolve(host, port)
    errors: list[OSError] = []
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            set_nodelay(sock)
            _set_options(sock, socket_options)
            if bind_address is not None:
                _bind(sock, bind_address)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    if not errors:  # pragma: no cover - getaddrinfo returns addresses or raises
        raise OSError(f"no address found for {host!r}")
    for error in errors:
        if isinstance(error, MQTTConnectionError):
            raise error  # a local setting failed: say so, not "no broker there"
    if len({str(exc) for exc in errors}) == 1:
        raise errors[0]
    raise OSError(f"Multiple exceptions: {', '.join(str(exc) for exc in errors)}")


class _LocalSettingError(MQTTConnectionError, OSError):
    """A socket option or the bind address could not be applied (an OSError, so that the
    next address is still tried)."""


def set_nodelay(sock: socket.socket) -> None:
    """Turn Nagle's algorithm off on a TCP socket: an MQTT packet leaves when it is written.

    asyncio does this only for sockets it makes itself, or whose ``proto`` is
    ``IPPROTO_TCP``; a socket made here with ``proto`` 0 (an IP address given, a proxy's
    tunnel) kept Nagle on, and a small packet written while another was unacknowledged waited
    for the peer's delayed ACK (~40 ms). The user's ``socket_options`` are applied after
    this, so an explicit ``(IPPROTO_TCP, TCP_NODELAY, 0)`` still wins.
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _set_options(
    sock: socket.socket, socket_options: tuple[tuple[int, int, int | bytes], ...]
) -> None:
    for level, option, value in socket_options:
        try:
            sock.setsockopt(level, option, value)
        except OSError as exc:
            raise _LocalSettingError(
                f"cannot set socket option ({level}, {option}, {value!r}): {exc.strerror or exc}"
            ) from exc


def _bind(sock: socket.socket, bind_address: tuple[str, int]) -> None:
    try:
        sock.bind(bind_address)
    except OSError as exc:
        raise _LocalSettingError(
            f"cannot bind to bind_address {bind_address[0]}:{bind_address[1]}: "
            f"{exc.strerror or exc}"
        ) from exc


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def map_connect_error(exc: BaseException, server: Server) -> MQTTError:
    """The mqttkit error for an exception raised while opening a connection to ``server``."""
    where = server.url
    if isinstance(exc, MQTTError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        return CertificateVerifyError(
            f"TLS certificate verification failed for {where}: {exc.verify_message}"
        )
    if isinstance(exc, ssl.SSLError):
        return TLSError(f"TLS handshake with {where} failed: {exc.reason or exc}")
    if isinstance(exc, socket.gaierror):
        return HostNotFoundError(f"cannot resolve host {server.host!r}: {exc.strerror or exc}")
    if isinstance(exc, OSError):
        if exc.errno in _UNREACHABLE or isinstance(exc, ConnectionRefusedError):
            return ServerNotFoundError(
                f"no MQTT broker accepts connections at {where}: {exc.strerror or exc}"
            )
        if exc.errno is None and "Multiple exceptions" in str(exc):
            # create_connection tried several addresses; each refused.
            return ServerNotFoundError(f"no MQTT broker accepts connections at {where}: {exc}")
        detail = exc.strerror or str(exc) or type(exc).__name__
        return MQTTConnectionError(f"cannot connect to {where}: {detail}")
    return MQTTConnectionError(f"cannot connect to {where}: {exc!r}")


def map_lost_error(exc: BaseException | None) -> MQTTError | None:
    """The mqttkit error for a transport that closed; None for an orderly end of stream."""
    if exc is None:
        return None
    if isinstance(exc, MQTTError):
        return exc
    if isinstance(exc, ssl.SSLError):
        return TLSError(f"TLS error on the connection: {exc.reason or exc}")
    return ConnectionLostError(f"connection lost: {exc}")
