"""TLS and socket options at servers that record what they saw: ALPN (the protocol a TLS server
selected from what the client offered), the minimum TLS version, the cipher list, an encrypted
client key (``keyfile_password``), the local ``bind_address`` and ``socket_options``."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

import mqttkit
from mqttkit.aio import Client
from mqttkit.testing import free_port
from tests.support.fake_broker import FakeBroker

CONNACK = b"\x20\x02\x00\x00"


def run(coro: Any, timeout: float = 20.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@dataclass
class Seen:
    """What the TLS server saw of each connection."""

    alpn: list[str | None] = field(default_factory=list)
    versions: list[str | None] = field(default_factory=list)
    ciphers: list[str] = field(default_factory=list)
    peer_certs: list[dict[str, Any]] = field(default_factory=list)


@asynccontextmanager
async def tls_server(context: ssl.SSLContext) -> AsyncIterator[tuple[int, Seen]]:
    """An MQTT-speaking TLS server on 127.0.0.1: records the TLS parameters of each
    connection, reads CONNECT, answers CONNACK, and holds the connection until the client
    closes it."""
    seen = Seen()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls: ssl.SSLObject = writer.get_extra_info("ssl_object")
        seen.alpn.append(tls.selected_alpn_protocol())
        seen.versions.append(tls.version())
        seen.ciphers.append(tls.cipher()[0])
        seen.peer_certs.append(tls.getpeercert() or {})
        await reader.readexactly(2)  # CONNECT's fixed header (a short CONNECT: 1 length byte)
        writer.write(CONNACK)
        await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA(key_type=trustme.KeyType.ECDSA)


@pytest.fixture(scope="module")
def cafile(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(ca: trustme.CA, *, alpn: list[str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", key_type=trustme.KeyType.ECDSA).configure_cert(context)
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    return context


async def connect_once(url: str, **options: Any) -> None:
    async with Client(url, reconnect_period=0, **options) as client:
        assert client.connected


# -- ALPN ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "selected"),
    [
        (["x-amzn-mqtt-ca"], "x-amzn-mqtt-ca"),
        # The whole list is offered: the server picks the one it knows.
        (["mqtt", "x-amzn-mqtt-ca"], "x-amzn-mqtt-ca"),
        (None, None),  # nothing offered, nothing selected
    ],
)
def test_alpn_protocols_are_offered_in_the_tls_handshake(
    offered: list[str] | None, selected: str | None, ca: trustme.CA, cafile: str
) -> None:
    async def main() -> Seen:
        async with tls_server(server_context(ca, alpn=["x-amzn-mqtt-ca"])) as (port, seen):
            await connect_once(f"mqtts://127.0.0.1:{port}", cafile=cafile, alpn_protocols=offered)
        return seen

    assert run(main()).alpn == [selected]


def test_alpn_in_the_seed_dict_and_the_blocking_front(ca: trustme.CA, cafile: str) -> None:
    async def main() -> Seen:
        async with tls_server(server_context(ca, alpn=["x-amzn-mqtt-ca"])) as (port, seen):
            client = mqttkit.Client(
                {"ALPNProtocols": ["x-amzn-mqtt-ca"], "ca": cafile},
                url=f"mqtts://127.0.0.1:{port}",
                reconnect_period=0,
            )
            connected = threading.Event()
            client.on("connect", lambda *_: connected.set())
            try:
                client.connect()
                # The blocking client runs on its own loop thread; wait without blocking ours.
                assert await asyncio.to_thread(connected.wait, 5.0)
            finally:
                await asyncio.to_thread(client.close(force=True).wait, 5.0)
        return seen

    assert run(main()).alpn == ["x-amzn-mqtt-ca"]


# -- TLS version, ciphers, encrypted key -----------------------------------------------------------


def test_tls_min_version_refuses_an_older_server(ca: trustme.CA, cafile: str) -> None:
    async def main() -> Seen:
        context = server_context(ca)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        async with tls_server(context) as (port, seen):
            url = f"mqtts://127.0.0.1:{port}"
            await connect_once(url, cafile=cafile)  # the default accepts TLS 1.2
            with pytest.raises(mqttkit.TLSError):
                await connect_once(url, cafile=cafile, tls_min_version="TLSv1.3")
        return seen

    assert run(main()).versions == ["TLSv1.2"]


def test_ciphers_limit_the_suites_offered(ca: trustme.CA, cafile: str) -> None:
    suites = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"]

    async def main() -> Seen:
        context = server_context(ca)
        context.maximum_version = ssl.TLSVersion.TLSv1_2  # cipher lists are TLS 1.2's
        async with tls_server(context) as (port, seen):
            for suite in suites:
                await connect_once(f"mqtts://127.0.0.1:{port}", cafile=cafile, ciphers=suite)
        return seen

    assert run(main()).ciphers == suites


def test_an_encrypted_client_key_with_keyfile_password(
    ca: trustme.CA, cafile: str, tmp_path: Path
) -> None:
    leaf = ca.issue_cert("device-7@example.com", key_type=trustme.KeyType.ECDSA)
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"key-pass"),
    )
    (tmp_path / "client.key").write_bytes(encrypted)
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    files = {"certfile": str(tmp_path / "client.pem"), "keyfile": str(tmp_path / "client.key")}

    async def main() -> Seen:
        context = server_context(ca)
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
        async with tls_server(context) as (port, seen):
            url = f"mqtts://127.0.0.1:{port}"
            await connect_once(url, cafile=cafile, keyfile_password="key-pass", **files)
            await connect_once(url, cafile=cafile, keyfile_password=lambda: b"key-pass", **files)
        return seen

    seen = run(main())
    assert len(seen.peer_certs) == 2
    assert all(cert.get("subjectAltName") for cert in seen.peer_certs)  # the client's cert
    with pytest.raises(mqttkit.InvalidOptionError, match="cannot set up TLS"):
        mqttkit.Client(url="mqtts://127.0.0.1", cafile=cafile, keyfile_password="wrong", **files)
    assert "wrong" not in repr(
        mqttkit.Client(
            url="mqtts://127.0.0.1", cafile=cafile, keyfile_password="key-pass", **files
        ).options
    ).replace("keyfile_password='***'", "")


# -- the local end: bind_address, socket_options ---------------------------------------------------


def test_bind_address_is_the_local_end_of_the_connection() -> None:
    local = free_port()
    with FakeBroker() as broker:

        async def main() -> None:
            async with Client(broker.url, bind_address=("127.0.0.1", local), reconnect_period=0):
                pass

        async def serve() -> tuple[str, int]:
            conn = await asyncio.to_thread(broker.accept)
            await asyncio.to_thread(conn.handshake)
            return conn.sock.getpeername()[:2]

        async def both() -> tuple[str, int]:
            peer, _ = await asyncio.gather(serve(), main())
            return peer

        assert run(both()) == ("127.0.0.1", local)


def test_a_bind_address_this_host_lacks_is_a_clear_error() -> None:
    async def main() -> None:
        # 192.0.2.0/24 is TEST-NET-1: never an address of this machine.
        client = Client("mqtt://127.0.0.1:9", bind_address="192.0.2.1", reconnect_period=0)
        with pytest.raises(mqttkit.MQTTConnectionError, match=r"cannot bind to bind_address 192"):
            await client.connect()

    run(main())


def test_socket_options_are_set_on_the_socket() -> None:
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 77),
    ]
    with FakeBroker(lambda conn: (conn.handshake(), conn.closed(10))) as broker:

        async def main() -> tuple[int, int]:
            async with Client(broker.url, socket_options=options, reconnect_period=0) as client:
                engine = client._engine
                assert engine is not None
                assert engine._protocol is not None
                assert engine._protocol.transport is not None
                sock = engine._protocol.transport.get_extra_info("socket")
                return (
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                )

        assert run(main()) == (1, 77)


def _nodelay_of(client: Client) -> int:
    engine = client._engine
    assert engine is not None
    assert engine._protocol is not None
    assert engine._protocol.transport is not None
    sock = engine._protocol.transport.get_extra_info("socket")
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_nagle_is_off_on_the_tcp_connection(host: str) -> None:
    # A socket made with proto 0 (as for an IP address) is one asyncio leaves alone: with
    # Nagle on, a PUBACK written while the previous packet is unacknowledged waited for the
    # broker's delayed ACK (~40 ms: a QoS 1 round trip's p99 went from 0.1 ms to 44 ms).
    with FakeBroker(lambda conn: (conn.handshake(), conn.closed(10))) as broker:

        async def main() -> int:
            url = broker.url.replace("127.0.0.1", host)
            async with Client(url, reconnect_period=0) as client:
                return _nodelay_of(client)

        assert run(main()) == 1


def test_socket_options_can_turn_nagle_back_on() -> None:
    with FakeBroker(lambda conn: (conn.handshake(), conn.closed(10))) as broker:

        async def main() -> int:
            options = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)]
            async with Client(broker.url, socket_options=options, reconnect_period=0) as client:
                return _nodelay_of(client)

        assert run(main()) == 0


def test_a_socket_option_the_os_refuses_is_a_clear_error() -> None:
    async def main() -> None:
        client = Client(
            "mqtt://127.0.0.1:9", socket_options=[(socket.SOL_SOCKET, 99999, 1)], reconnect_period=0
        )
        with pytest.raises(mqttkit.MQTTConnectionError, match=r"cannot set socket option"):
            await client.connect()

    run(main())
