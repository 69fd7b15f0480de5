"""The network options as users give them: proxy URLs, WebSocket, TLS and socket settings, in
keywords and in the seed / MQTT.js dict; each bad value a clear error that shows no secret."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import pytest

import mqttkit
from mqttkit.aio.transport import websocket_handshake
from mqttkit.netoptions import Proxy, parse_proxy
from mqttkit.options import parse_options


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("socks5://proxy.example", Proxy("socks5", "proxy.example", 1080)),
        ("socks5h://p:9050", Proxy("socks5h", "p", 9050)),
        ("socks4://agent@10.0.0.1", Proxy("socks4", "10.0.0.1", 1080, "agent")),
        ("http://u:p%40ss@[::1]:3128", Proxy("http", "::1", 3128, "u", "p@ss")),
        ("HTTP://proxy:8080/", Proxy("http", "proxy", 8080)),
    ],
)
def test_proxy_urls(url: str, expected: Proxy) -> None:
    proxy = parse_proxy(url)
    assert proxy == expected
    assert proxy is not None
    assert (proxy.username, proxy.password) == (expected.username, expected.password)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("ftp://proxy:21", "unsupported scheme 'ftp'"),
        ("https://u:hunter2@proxy:443", "not supported; use an http:// proxy"),
        ("http://u:hunter2@proxy", "give the HTTP proxy's port"),
        ("socks5://u:hunter2@proxy:99999", "port is not a number"),
        ("socks5://u:hunter2@proxy:1080/path", "no path"),
        ("socks4://u:hunter2@proxy", "SOCKS4 has no passwords"),
        ("socks5://", "names no host"),
    ],
)
def test_bad_proxy_urls_never_show_the_password(url: str, match: str) -> None:
    with pytest.raises(mqttkit.InvalidOptionError, match=match) as info:
        parse_options("mqtt://broker", proxy=url)
    assert "hunter2" not in str(info.value)


def test_a_proxy_is_never_shown_with_its_credentials() -> None:
    options = parse_options("mqtt://broker", proxy="socks5://alice:hunter2@proxy:1080")
    assert options.proxy is not None
    assert options.proxy.url == "socks5://proxy:1080"
    for text in (repr(options), repr(options.proxy), str(options.proxy)):
        assert "hunter2" not in text
        assert "alice" not in text


def test_mqttjs_names_in_the_seed_dict() -> None:
    def presign(url: str) -> str:
        return url

    options = parse_options(
        "wss://broker",
        {
            "socksProxy": "socks5://proxy:1080",
            "wsOptions": {"headers": {"Authorization": "Bearer t"}},
            "transformWsUrl": presign,
            "ALPNProtocols": ["x-amzn-mqtt-ca"],
            "ciphers": "ECDHE+AESGCM",
            "minVersion": "TLSv1.3",
            "localAddress": "127.0.0.1",
        },
    )
    assert options.proxy == Proxy("socks5", "proxy", 1080)
    assert options.ws_headers == (("Authorization", "Bearer t"),)
    assert options.transform_ws_url is presign
    assert options.alpn_protocols == ("x-amzn-mqtt-ca",)
    assert options.ciphers == "ECDHE+AESGCM"
    assert options.tls_min_version is ssl.TLSVersion.TLSv1_3
    assert options.bind_address == ("127.0.0.1", 0)


def test_wsoptions_takes_only_headers() -> None:
    with pytest.raises(mqttkit.UnknownOptionError, match="wsOptions key"):
        parse_options("ws://broker", {"wsOptions": {"perMessageDeflate": True}})


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"alpn_protocols": ["x"]}, "alpn_protocols is a TLS setting"),
        ({"tls_min_version": "TLSv1.2"}, "tls_min_version is a TLS setting"),
        ({"ciphers": "HIGH"}, "ciphers is a TLS setting"),
    ],
)
def test_tls_settings_without_tls_are_refused(options: dict[str, Any], match: str) -> None:
    with pytest.raises(mqttkit.InvalidOptionError, match=match):
        parse_options("mqtt://broker", **options)


def test_tls_settings_and_an_ssl_context_are_refused() -> None:
    with pytest.raises(mqttkit.InvalidOptionError, match="set it on the ssl_context"):
        parse_options(
            "mqtts://broker", ssl_context=ssl.create_default_context(), alpn_protocols=["x"]
        )


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"alpn_protocols": []}, "non-empty list"),
        ({"alpn_protocols": ["x" * 256]}, "1 to 255 bytes"),
        ({"tls_min_version": "SSLv3"}, "tls_min_version must be"),
        ({"keyfile_password": "x"}, "keyfile_password needs certfile"),
        ({"bind_address": ("eth0", 0)}, "not an IP address"),
        ({"bind_address": ("127.0.0.1", 70000)}, "port must be an int in 0..65535"),
        ({"bind_address": "127.0.0.1:80"}, "not an IP address"),
        ({"socket_options": [(1, 2)]}, "not a \\(level, option, value\\) triple"),
        ({"socket_options": [(1, 2, "on")]}, "must be int or bytes"),
        ({"ws_path": "mqtt"}, "starting with '/'"),
        ({"ws_subprotocols": []}, "non-empty list"),
        ({"ws_subprotocols": ["a b"]}, "not a valid subprotocol"),
        ({"transform_ws_url": "https://x"}, "transform_ws_url must be a function"),
        ({"before_connect": 42}, "before_connect must be a function"),
    ],
)
def test_bad_network_options(options: dict[str, Any], match: str) -> None:
    with pytest.raises(mqttkit.InvalidOptionError, match=match):
        parse_options("wss://broker", **options)


def test_good_network_options_are_normalised() -> None:
    options = parse_options(
        "mqtts://broker",
        bind_address=["::1", 5000],
        socket_options=[[socket.SOL_SOCKET, socket.SO_KEEPALIVE, True]],
        tls_min_version="1.2",
        alpn_protocols="mqtt",
    )
    assert options.bind_address == ("::1", 5000)
    assert options.socket_options == ((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),)
    assert options.tls_min_version is ssl.TLSVersion.TLSv1_2
    assert options.alpn_protocols == ("mqtt",)


def test_ws_path_applies_to_servers_without_a_path_of_their_own() -> None:
    options = parse_options(servers=["ws://a:80", "ws://b:8080/own"], ws_path="/shared?t=1")

    async def targets() -> list[tuple[str, str]]:
        shakes = [await websocket_handshake(options, server) for server in options.servers]
        return [(handshake.host, handshake.target) for handshake, _, _ in shakes]

    assert asyncio.run(targets()) == [("a", "/shared?t=1"), ("b:8080", "/own")]
