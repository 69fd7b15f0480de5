"""A TCP connection to the broker through a proxy: SOCKS5, SOCKS4 or HTTP CONNECT.

This module owns the tunnel (the ``proxy`` option): it asks python-socks (the optional extra
``mqttkit[proxy]``; the protocols are its, not ours) for a socket connected through the proxy
to the broker's host and port, and maps what can go wrong to :class:`ProxyError` and its
subclasses. What runs over the socket (TLS, WebSocket, MQTT) is the transport's business:
TLS starts after the tunnel, so it verifies the broker's host name, not the proxy's.

The proxy's credentials never appear in a message: errors name the proxy by
:attr:`Proxy.url`, which has none.
"""

from __future__ import annotations

import socket
from typing import Any

from python_socks import ProxyConnectionError, ProxyTimeoutError, ProxyType
from python_socks import ProxyError as SocksError
from python_socks.async_.asyncio import Proxy as SocksProxy

from ..netoptions import Proxy
from ..protocol.errors import (
    ConnectTimeoutError,
    HostNotFoundError,
    ProxyAuthError,
    ProxyError,
    ProxyUnreachableError,
)
from .calls import resolve

__all__ = ["open_tunnel"]

# SOCKS4 reply codes 0x5C / 0x5D: the proxy's identd check of the user id failed.
_SOCKS4_IDENT_FAILED = (0x5C, 0x5D)


async def open_tunnel(
    proxy: Proxy,
    host: str,
    port: int,
    *,
    bind_address: tuple[str, int] | None,
    timeout: float,
) -> socket.socket:
    """A non-blocking socket connected through ``proxy`` to ``host:port``.

    Raises:
        ProxyUnreachableError: nothing accepts connections at the proxy's address.
        ProxyAuthError: the proxy refused the credentials, or needs some.
        ProxyError: the proxy refused the tunnel or broke its protocol.
        HostNotFoundError: SOCKS4 only (the client resolves): the broker's name.
        ConnectTimeoutError: the proxy did not answer within ``timeout``.
    """
    kinds = {"SOCKS5": ProxyType.SOCKS5, "HTTP CONNECT": ProxyType.HTTP}
    kind = kinds.get(proxy.kind, ProxyType.SOCKS4)
    if proxy.scheme == "socks4" and not _is_ip(host):
        host = await _ipv4_of(host)  # SOCKS4 carries an IPv4 address, not a name
    # Resolved here, not by python-socks: it would use the loop's default executor (see calls).
    addresses = await _proxy_addresses(proxy)
    failures: list[str] = []
    for address in addresses:
        client: Any = SocksProxy(
            kind,
            address,
            proxy.port,
            username=proxy.username,
            password=(proxy.password or "") if proxy.username else None,
            rdns=proxy.kind == "SOCKS5",
        )
        try:
            sock: socket.socket = await client.connect(
                host, port, timeout=timeout, local_addr=bind_address
            )
        except ProxyConnectionError as exc:
            failures.append(exc.strerror or str(exc))
            continue
        except ProxyTimeoutError:
            raise ConnectTimeoutError(
                f"the {proxy.kind} proxy {proxy.url} did not open a tunnel to {host}:{port} "
                f"within {timeout:g} s",
                "sending",
            ) from None
        except SocksError as exc:
            raise _refusal(proxy, host, port, str(exc), exc.error_code) from None
        sock.setblocking(False)
        return sock
    raise ProxyUnreachableError(
        f"no {proxy.kind} proxy accepts connections at {proxy.url}: " + "; ".join(failures)
    )


def _refusal(proxy: Proxy, host: str, port: int, message: str, code: int | None) -> ProxyError:
    """The error for a proxy that answered but did not open the tunnel."""
    where = f"the {proxy.kind} proxy {proxy.url}"
    given = proxy.username is not None
    lowered = message.lower()
    if code == 407 or "authentication failure" in lowered:
        if not given:
            return ProxyAuthError(f"{where} asks for credentials: give them in the proxy URL")
        return ProxyAuthError(f"{where} refused the proxy user name or password ({message})")
    if "no acceptable authentication methods" in lowered:
        if not given:
            return ProxyAuthError(
                f"{where} asks for a user name and password: give them in the proxy URL"
            )
        return ProxyAuthError(f"{where} accepts no user name / password authentication")
    if proxy.kind == "SOCKS4" and code in _SOCKS4_IDENT_FAILED:
        return ProxyAuthError(f"{where} did not accept the user id ({message})")
    if "closed unexpectedly" in lowered:
        hint = " (proxies that refuse credentials often do so)" if given else ""
        return ProxyError(f"{where} closed the connection during its handshake{hint}")
    return ProxyError(f"{where} did not open a tunnel to {host}:{port}: {message}")


async def _proxy_addresses(proxy: Proxy) -> list[str]:
    if _is_ip(proxy.host):
        return [proxy.host]
    try:
        infos = await resolve(proxy.host, proxy.port)
    except socket.gaierror as exc:
        raise ProxyUnreachableError(
            f"cannot resolve the proxy's host {proxy.host!r}: {exc.strerror or exc}"
        ) from None
    return list(dict.fromkeys(info[4][0] for info in infos))  # in order, once each


async def _ipv4_of(host: str) -> str:
    try:
        infos = await resolve(host, 0)
    except socket.gaierror as exc:
        raise HostNotFoundError(f"cannot resolve host {host!r}: {exc.strerror or exc}") from None
    for family, *_, address in infos:
        if family == socket.AF_INET:
            return str(address[0])
    raise HostNotFoundError(
        f"host {host!r} has no IPv4 address, which SOCKS4 needs (socks5:// takes names)"
    )


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True
