"""Opening transports (TCP, TLS, Unix socket) and mapping OS errors to mqttkit errors.

This module owns everything that knows about sockets and ssl: building the TLS context from the
options, opening the connection with asyncio, and the one place where OS / ssl exceptions become
:mod:`mqttkit.protocol.errors` exceptions (``map_connect_error``).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections.abc import Callable

from ..options import ClientOptions
from ..protocol.errors import (
    ConnectionLostError,
    HostNotFoundError,
    MQTTConnectionError,
    MQTTError,
    ServerNotFoundError,
    TLSError,
)

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
    if options.transport not in ("tls", "wss") and options.ssl_context is None:
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
    protocol_factory: Callable[[], asyncio.Protocol],
    ssl_context: ssl.SSLContext | None,
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """Open the connection the options describe.

    Raises:
        MQTTConnectionError: a subclass saying what failed (DNS, refused, TLS...).
    """
    loop = asyncio.get_running_loop()
    try:
        if options.transport == "unix":
            assert options.path is not None
            transport, protocol = await loop.create_unix_connection(
                protocol_factory,
                options.path,
                ssl=ssl_context,
                server_hostname=(options.server_hostname or "localhost") if ssl_context else None,
            )
        else:
            assert options.port is not None  # set by the options layer
            server_hostname = None
            if ssl_context is not None:
                server_hostname = options.server_hostname or options.host
            transport, protocol = await loop.create_connection(
                protocol_factory,
                options.host,
                options.port,
                ssl=ssl_context,
                server_hostname=server_hostname,
            )
    except (OSError, ssl.SSLError) as exc:
        raise map_connect_error(exc, options) from exc
    return transport, protocol


def map_connect_error(exc: BaseException, options: ClientOptions) -> MQTTError:
    """The mqttkit error for an exception raised while opening a connection."""
    where = options.url
    if isinstance(exc, MQTTError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TLSError(f"TLS certificate verification failed for {where}: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        return TLSError(f"TLS handshake with {where} failed: {exc.reason or exc}")
    if isinstance(exc, socket.gaierror):
        return HostNotFoundError(f"cannot resolve host {options.host!r}: {exc.strerror or exc}")
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
