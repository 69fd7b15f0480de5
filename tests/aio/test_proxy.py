"""The ``proxy`` option against real servers: pproxy (SOCKS5, SOCKS4, HTTP CONNECT) on a free
loopback port with Mosquitto behind it over TCP, TLS and WebSocket; a proxy that wants a password
(right, wrong, none), a proxy that is down, a proxy that cannot reach the broker; and a scripted
SOCKS5 server that refuses the password the way RFC 1929 says."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

import mqttkit
from mqttkit.aio import Client
from mqttkit.options import parse_options
from mqttkit.testing import MosquittoBroker, TLSFiles, free_port
from tests.support.proxy_server import ProxyServer

TIMEOUT = 10.0
PASSWORD = "pr0xy-s3cret-Zq"


def run(coro: Any, timeout: float = 30.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def peer_of(client: Client | mqttkit.Client) -> tuple[str, int]:
    """Where the client's socket goes (the proxy, when there is one)."""
    engine = client._engine
    assert engine is not None
    assert engine._protocol is not None
    transport = engine._protocol.transport
    assert transport is not None
    host, port = transport.get_extra_info("peername")[:2]
    return host, port


async def round_trip(client: Client, topic: str) -> None:
    await client.subscribe(topic, qos=1)
    await client.publish(topic, b"through the proxy", qos=1)
    async for message in client.messages():
        assert (message.topic, message.payload) == (topic, b"through the proxy")
        break


# -- each kind of proxy, each transport ------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["socks5", "socks4", "http"])
def test_mqtt_through_each_kind_of_proxy(
    scheme: str, mosquitto: MosquittoBroker, proxy_factory: Callable[..., ProxyServer]
) -> None:
    proxy = proxy_factory(("socks5", "socks4", "http"))

    async def main() -> None:
        async with Client(mosquitto.url, proxy=proxy.url(scheme)) as client:
            assert peer_of(client) == (proxy.host, proxy.port)  # the socket goes to the proxy
            sock = client._engine._protocol.transport.get_extra_info("socket")  # type: ignore[union-attr]
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1  # Nagle off
            await round_trip(client, f"proxy/{scheme}")

    run(main())
    # ... and the proxy opened the tunnel to the broker.
    assert f"{scheme} 127.0.0.1:" in proxy.log_text()
    assert f"-> 127.0.0.1:{mosquitto.port}" in proxy.log_text()


def test_the_seed_api_through_a_socks5_proxy_with_a_password(
    mosquitto: MosquittoBroker,
    proxy_factory: Callable[..., ProxyServer],
    make_client: Callable[..., mqttkit.Client],
) -> None:
    proxy = proxy_factory(("socks5",), username="alice", password=PASSWORD)
    # MQTT.js spells it socksProxy.
    url = proxy.url("socks5", username="alice", password=PASSWORD)
    client = make_client({"socksProxy": url}, url=mosquitto.url, connect=False)
    got: list[tuple[str, bytes]] = []
    done = threading.Event()
    client.on("message", lambda topic, message: (got.append((topic, message)), done.set()))
    client.connect()
    client.subscribe("seed/proxy", qos=1).result(TIMEOUT)
    client.publish("seed/proxy", "Hello mqtt", qos=1).result(TIMEOUT)
    assert done.wait(TIMEOUT)
    assert got == [("seed/proxy", b"Hello mqtt")]
    assert peer_of(client) == (proxy.host, proxy.port)
    assert PASSWORD not in repr(client.options)
    assert PASSWORD not in repr(client)


def test_tls_runs_through_the_tunnel_and_verifies_the_brokers_name(
    mosquitto_factory: Callable[..., MosquittoBroker],
    proxy_factory: Callable[..., ProxyServer],
    tmp_path: Path,
) -> None:
    # A certificate for the broker's address 127.0.0.1 only; the proxy is named "localhost",
    # which the certificate does not name: the name TLS checks must be the broker's.
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    files = TLSFiles(tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key")
    broker = mosquitto_factory(tls=files)
    proxy = proxy_factory(("socks5", "http"), username="alice", password=PASSWORD)
    url = proxy.url("socks5", username="alice", password=PASSWORD).replace("127.0.0.1", "localhost")

    async def main() -> None:
        async with Client(broker.tls_url, cafile=str(files.cafile), proxy=url) as client:
            assert peer_of(client)[1] == proxy.port
            await round_trip(client, "proxy/tls")
        # Verification is on through the tunnel: a name the certificate lacks is refused.
        client = Client(
            broker.tls_url,
            cafile=str(files.cafile),
            proxy=url,
            server_hostname="localhost",
            reconnect_period=0,
        )
        with pytest.raises(mqttkit.CertificateVerifyError):
            await client.connect()

    run(main())


@pytest.mark.parametrize(("transport", "scheme"), [("ws", "http"), ("wss", "socks5")])
def test_websocket_through_a_proxy(
    transport: str,
    scheme: str,
    mosquitto_factory: Callable[..., MosquittoBroker],
    proxy_factory: Callable[..., ProxyServer],
    tls_files: tuple[trustme.CA, TLSFiles, Path],
) -> None:
    _, files, _ = tls_files
    broker = mosquitto_factory(websockets=True, tls=files)
    proxy = proxy_factory(("socks5", "http"), username="bob", password=PASSWORD)
    url = broker.ws_url if transport == "ws" else broker.wss_url

    async def main() -> None:
        async with Client(
            url,
            cafile=str(files.cafile),
            proxy=proxy.url(scheme, username="bob", password=PASSWORD),
        ) as client:
            assert peer_of(client) == (proxy.host, proxy.port)
            await round_trip(client, f"proxy/{transport}")

    run(main())
    port = broker.ws_port if transport == "ws" else broker.wss_port
    assert f"-> 127.0.0.1:{port}" in proxy.log_text()


# -- failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "error", "match"),
    [
        # HTTP: 407 Proxy Authentication Required.
        ("http", mqttkit.ProxyAuthError, "refused the proxy user name or password"),
        # pproxy closes a SOCKS5 connection with a wrong password instead of answering it
        # (RFC 1929 wants a status): a ProxyError that says when it happened.
        ("socks5", mqttkit.ProxyError, "closed the connection during its handshake"),
    ],
)
def test_a_wrong_proxy_password_is_a_clear_error_that_never_shows_it(
    scheme: str,
    error: type[Exception],
    match: str,
    mosquitto: MosquittoBroker,
    proxy_factory: Callable[..., ProxyServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = proxy_factory(("socks5", "http"), username="alice", password=PASSWORD)
    wrong = "WRONG-" + PASSWORD
    caplog.set_level(logging.DEBUG, logger="mqttkit")

    async def main() -> BaseException:
        client = Client(
            mosquitto.url,
            proxy=proxy.url(scheme, username="alice", password=wrong),
            reconnect_period=0,
        )
        assert wrong not in repr(client.options)
        with pytest.raises(error, match=match) as info:
            await client.connect()
        return info.value

    failure = run(main())
    assert f"{proxy.host}:{proxy.port}" in str(failure)  # names the proxy...
    for text in (str(failure), repr(failure), caplog.text):
        assert wrong not in text  # ... never its password
        assert PASSWORD not in text
    assert "Unauthorized" in proxy.log_text()


def test_an_http_proxy_that_wants_credentials_says_so(
    mosquitto: MosquittoBroker, proxy_factory: Callable[..., ProxyServer]
) -> None:
    proxy = proxy_factory(("http",), username="alice", password=PASSWORD)

    async def main() -> None:
        client = Client(mosquitto.url, proxy=proxy.url("http"), reconnect_period=0)
        with pytest.raises(mqttkit.ProxyAuthError, match="asks for credentials"):
            await client.connect()

    run(main())


def test_a_proxy_that_cannot_reach_the_broker_is_a_proxy_error(
    proxy_factory: Callable[..., ProxyServer],
) -> None:
    proxy = proxy_factory(("http",))
    closed = free_port()  # nothing listens there

    async def main() -> None:
        client = Client(f"mqtt://127.0.0.1:{closed}", proxy=proxy.url("http"), reconnect_period=0)
        expected = f"did not open a tunnel to 127.0.0.1:{closed}"
        with pytest.raises(mqttkit.ProxyError, match=expected):
            await client.connect()

    run(main())


def test_a_proxy_that_is_down_is_retried_until_it_is_up(
    mosquitto: MosquittoBroker,
    proxy_factory: Callable[..., ProxyServer],
    make_client: Callable[..., mqttkit.Client],
) -> None:
    proxy = proxy_factory(("socks5",))
    proxy.stop()
    errors: list[BaseException] = []
    failed = threading.Event()
    connected = threading.Event()
    client = make_client(
        url=mosquitto.url,
        proxy=proxy.url("socks5"),
        reconnect_period=0.05,
        reconnect_max=0.2,
        connect=False,
    )
    client.on("error", lambda err: (errors.append(err), failed.set()))
    client.on("connect", lambda *_: connected.set())
    client.connect()
    assert failed.wait(TIMEOUT), "no error while the proxy was down"
    assert isinstance(errors[0], mqttkit.ProxyUnreachableError)
    assert f"{proxy.host}:{proxy.port}" in str(errors[0])
    assert not connected.is_set()
    # A transient failure: the client goes on trying and connects once the proxy is back.
    proxy.restart_on_same_port()
    assert connected.wait(TIMEOUT), "no connection after the proxy came back"
    client.publish("proxy/back", "x", qos=1).result(TIMEOUT)


def test_a_socks5_proxy_refusing_the_password_per_rfc_1929_is_a_proxy_auth_error() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    port = listener.getsockname()[1]
    seen: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def script() -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                seen["greeting"] = conn.recv(16)
                conn.sendall(b"\x05\x02")  # username/password, please
                seen["auth"] = conn.recv(600)
                conn.sendall(b"\x01\x01")  # RFC 1929: status != 0 is a failure
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=script, daemon=True)
    thread.start()

    async def main() -> None:
        client = Client(
            "mqtt://127.0.0.1:1883",
            proxy=f"socks5://carol:{PASSWORD}@127.0.0.1:{port}",
            reconnect_period=0,
        )
        with pytest.raises(mqttkit.ProxyAuthError, match="refused the proxy user name") as info:
            await client.connect()
        assert PASSWORD not in str(info.value)

    try:
        run(main())
    finally:
        thread.join(TIMEOUT)
        listener.close()
    assert not errors, errors
    assert seen["greeting"][:1] == b"\x05"
    name, secret = b"carol", PASSWORD.encode()
    assert seen["auth"] == bytes([1, len(name)]) + name + bytes([len(secret)]) + secret


# -- options ---------------------------------------------------------------------------------------


def test_without_python_socks_the_proxy_option_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "python_socks", None)  # as if not installed
    with pytest.raises(mqttkit.InvalidOptionError, match=r"pip install 'mqttkit\[proxy\]'"):
        parse_options("mqtt://broker", proxy="socks5://proxy:1080")
    parse_options("mqtt://broker")  # no proxy, no python-socks needed


def test_a_proxy_cannot_carry_a_unix_socket() -> None:
    with pytest.raises(mqttkit.InvalidOptionError, match="not unix sockets"):
        parse_options("unix:///run/mqtt.sock", proxy="socks5://proxy:1080")
