"""Opening transports (TCP, TLS, WebSocket, Unix socket) and mapping OS errors to mqttkit errors.

This module owns everything that knows about sockets and ssl: building the TLS context from the
options, opening the connection with asyncio, and the one place where OS / ssl exceptions become
:mod:`mqttkit.protocol.errors` exceptions (``map_connect_error``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from ..options import DEFAULT_PORTS, ClientOptions, Server
from ..protocol.errors import (
    CertificateVerifyError,
    ConnectionLostError,
    HostNotFoundError,
    MQTTConnectionError,
    MQTTError,
    ServerNotFoundError,
    TLSError,
)
from .websocket import WebSocketAdapter

__all__ = ["make_ssl_context", "map_connect_error", "map_lost_error", "open_transport"]

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
        context.load_cert_chain(options.certfile, options.keyfile)
    if options.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def open_transport(
    options: ClientOptions,
    server: Server,
    protocol_factory: Callable[[], asyncio.Protocol],
    ssl_context: ssl.SSLContext | None,
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """Open a connection to ``server`` (one of ``options.servers``) with these options.

    Raises:
        MQTTConnectionError: a subclass saying what failed (DNS, refused, TLS...).
    """
    loop = asyncio.get_running_loop()
    secure = server.transport in ("tls", "wss") or options.ssl_context is not None
    ssl_context = ssl_context if secure else None
    try:
        if server.transport == "unix":
            assert server.path is not None
            transport, protocol = await loop.create_unix_connection(
                protocol_factory,
                server.path,
                ssl=ssl_context,
                server_hostname=(options.server_hostname or "localhost") if ssl_context else None,
            )
        else:
            server_hostname = None
            if ssl_context is not None:
                server_hostname = options.server_hostname or server.host
            factory = protocol_factory
            if server.transport in ("ws", "wss"):
                factory = _websocket_factory(options, server, protocol_factory)
            transport, protocol = await _connect_tcp(
                loop, factory, server.host, server.port, ssl_context, server_hostname
            )
            if isinstance(protocol, WebSocketAdapter):
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


def _websocket_factory(
    options: ClientOptions, server: Server, protocol_factory: Callable[[], asyncio.Protocol]
) -> Callable[[], asyncio.Protocol]:
    host = server.host
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    if server.port != DEFAULT_PORTS[server.transport]:
        host = f"{host}:{server.port}"
    path = server.path or options.path or "/mqtt"
    return lambda: WebSocketAdapter(protocol_factory(), host, path)


async def _connect_tcp(
    loop: asyncio.AbstractEventLoop,
    protocol_factory: Callable[[], asyncio.Protocol],
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """``loop.create_connection``, with host names resolved by :func:`_resolve`.

    Each address is tried in turn (as asyncio does); the error of a single failure, or
    "Multiple exceptions: ..." when the addresses failed differently, is raised.
    """
    if _is_ip_address(host):
        return await loop.create_connection(
            protocol_factory, host, port, ssl=ssl_context, server_hostname=server_hostname
        )
    errors: list[OSError] = []
    for family, kind, proto, _, address in await _resolve(loop, host, port):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return await loop.create_connection(
            protocol_factory, sock=sock, ssl=ssl_context, server_hostname=server_hostname
        )
    if not errors:  # pragma: no cover - getaddrinfo returns addresses or raises
        raise OSError(f"no address found for {host!r}")
    if len({str(exc) for exc in errors}) == 1:
        raise errors[0]
    raise OSError(f"Multiple exceptions: {', '.join(str(exc) for exc in errors)}")


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[Any]:
    """``socket.getaddrinfo`` for a TCP connection, on a daemon thread of its own.

    Not ``loop.getaddrinfo``: it runs on the loop's default executor, which refuses work (or
    cannot even be created) once the interpreter has begun shutting down, which is exactly
    when a script whose main thread has ended is kept alive by a client's dispatch thread (the
    seed examples: ``mqtt.connect("mqtt://localhost")`` then listeners only).

    Raises:
        socket.gaierror: the name does not resolve.
    """
    future: asyncio.Future[list[Any]] = loop.create_future()

    def settle(result: list[Any] | None, error: BaseException | None) -> None:
        if future.done():  # cancelled: the connect timeout ran out meanwhile
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result or [])

    def lookup() -> None:
        result: list[Any] | None = None
        error: BaseException | None = None
        try:
            result = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except Exception as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=lookup, name=f"mqttkit-resolve-{host}", daemon=True).start()
    return await future


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
        return MQTTConnectionError(f"cannot connect to {where}: {exc.strerror or exc}")
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
