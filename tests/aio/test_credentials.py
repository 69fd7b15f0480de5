"""Fresh credentials before every connection attempt: a password (or username) function, sync or
async, and the ``before_connect`` hook; on both fronts and in the seed dict.

Against Mosquitto whose password file changes between connections (reloaded with SIGHUP, which
disconnects the client): the client reconnects with the new password, a refusal of the stale
one does not stop it, and nothing queued while it was out is lost. Against the fake broker:
what each CONNECT carries, and what a failing function does."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import pytest

import mqttkit
from mqttkit.aio import Client
from mqttkit.options import ConnectSettings
from mqttkit.protocol.packets import Connect, Properties, Will
from mqttkit.testing import MosquittoBroker
from tests.support.fake_broker import FakeBroker

TIMEOUT = 10.0
N = 20  # messages before the rotation, and as many while the client is out


def run(coro: Any, timeout: float = 30.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def rotate_password(broker: MosquittoBroker, user: str, password: str) -> None:
    """Change ``user``'s password in the broker's password file and make Mosquitto reload it
    (SIGHUP): it disconnects the clients whose credentials no longer hold."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    subprocess.run(
        [tool, "-b", str(broker.directory / "passwd"), user, password],
        check=True,
        capture_output=True,
        timeout=30,
    )
    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGHUP)


class Watcher:
    """A blocking subscriber (its own, unchanging credentials) collecting ``rot/#``."""

    def __init__(self, broker: MosquittoBroker, make_client: Callable[..., mqttkit.Client]):
        self.payloads: set[bytes] = set()
        self.duplicates = 0
        self._cond = threading.Condition()
        self.client = make_client(url=broker.url, username="watcher", password="w", connect=False)
        self.client.on("message", self._on_message)
        self.client.connect()
        self.client.subscribe("rot/#", qos=1).result(TIMEOUT)

    def _on_message(self, topic: str, payload: bytes) -> None:
        with self._cond:
            if payload in self.payloads:
                self.duplicates += 1
            self.payloads.add(payload)
            self._cond.notify_all()

    def wait_for(self, expected: set[bytes]) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: expected <= self.payloads, TIMEOUT), (
                f"missing: {sorted(expected - self.payloads)[:5]}"
            )


def test_asyncio_reconnects_with_a_rotated_password_and_loses_nothing(
    mosquitto_factory: Callable[..., MosquittoBroker],
    make_client: Callable[..., mqttkit.Client],
) -> None:
    broker = mosquitto_factory(users={"dev": "token-1", "watcher": "w"})
    watcher = Watcher(broker, make_client)
    current = {"token": "token-1"}
    given: list[str] = []

    async def main() -> None:
        called = asyncio.Event()

        async def token() -> str:  # e.g. a JWT minted per connection
            given.append(current["token"])
            called.set()
            return current["token"]

        async with Client(
            broker.url,
            username="dev",
            password=token,
            clean=False,
            client_id="rotating",
            reconnect_period=0.05,
            reconnect_max=0.2,
        ) as client:
            assert given == ["token-1"]
            for i in range(N):
                await client.publish("rot/a", b"before-%d" % i, qos=1)
            called.clear()
            rotate_password(broker, "dev", "token-2")
            # The broker drops the client; its next attempt still sends the stale token and is
            # refused, which must not stop it: the attempt after that asks for a token again.
            for _ in range(2):
                await asyncio.wait_for(called.wait(), TIMEOUT)
                called.clear()
            assert not client.connected
            pending = [
                asyncio.ensure_future(client.publish("rot/a", b"during-%d" % i, qos=1))
                for i in range(N)
            ]
            current["token"] = "token-2"
            await asyncio.wait_for(asyncio.gather(*pending), TIMEOUT)
            assert client.connected

    run(main())
    assert given[:3] == ["token-1"] * 3
    assert given[-1] == "token-2"
    expected = {b"before-%d" % i for i in range(N)} | {b"during-%d" % i for i in range(N)}
    watcher.wait_for(expected)
    assert watcher.payloads == expected


def test_seed_dict_password_function_with_the_blocking_front(
    mosquitto_factory: Callable[..., MosquittoBroker],
    make_client: Callable[..., mqttkit.Client],
) -> None:
    broker = mosquitto_factory(users={"dev": "token-1", "watcher": "w"})
    watcher = Watcher(broker, make_client)
    current = {"token": "token-1"}
    threads: list[str] = []

    def token() -> str:  # a blocking call, e.g. an HTTP request to a token service
        threads.append(threading.current_thread().name)
        return current["token"]

    refused = threading.Event()
    connects: list[object] = []
    reconnected = threading.Event()
    client = make_client(
        {"username": "dev", "password": token, "reconnectPeriod": 50},
        url=broker.url,
        reconnect_max=0.2,
        connect=False,
    )
    client.on(
        "error", lambda err: refused.set() if isinstance(err, mqttkit.ConnectRefusedError) else None
    )
    client.on("connect", lambda connack: (connects.append(connack), reconnected.set()))
    client.connect()
    for i in range(N):
        client.publish("rot/b", b"before-%d" % i, qos=1).result(TIMEOUT)
    reconnected.clear()
    rotate_password(broker, "dev", "token-2")
    assert refused.wait(TIMEOUT), "the stale password was never refused"
    handles = [client.publish("rot/b", b"during-%d" % i, qos=1) for i in range(N)]
    current["token"] = "token-2"
    assert reconnected.wait(TIMEOUT), "no reconnection with the new password"
    for handle in handles:
        handle.result(TIMEOUT)
    expected = {b"before-%d" % i for i in range(N)} | {b"during-%d" % i for i in range(N)}
    watcher.wait_for(expected)
    # A sync function runs on a thread of its own: the loop thread every blocking client
    # shares is never held up by a token service.
    assert threads
    assert all(name.startswith("mqttkit-call-") for name in threads)
    assert len(connects) == 2


# -- against the fake broker: what each CONNECT carries --------------------------------------------


def test_before_connect_sets_the_connect_of_every_attempt(
    make_client: Callable[..., mqttkit.Client],
) -> None:
    with FakeBroker() as broker:
        servers: list[mqttkit.Server] = []

        async def hook(settings: ConnectSettings) -> None:
            servers.append(settings.server)
            n = len(servers)
            assert settings.username == ("app" if n == 1 else f"user{n - 1}")  # what it left
            settings.username = f"user{n}"
            settings.password = f"pw{n}"
            settings.will = {"topic": f"will/{n}", "payload": b"gone", "qos": 1}
            settings.properties = {"userProperty": [("attempt", str(n))]}

        client = make_client(
            url=broker.url,
            username="app",
            protocol_version=5,
            before_connect=hook,
            reconnect_period=0.05,
            connect=False,
        )
        client.connect()
        connects: list[Connect] = []
        for _ in range(2):
            conn = broker.accept()
            connects.append(conn.handshake())
            if len(connects) == 1:
                conn.close()  # the client reconnects
        assert [(c.username, c.password) for c in connects] == [
            ("user1", b"pw1"),
            ("user2", b"pw2"),
        ]
        assert [c.will for c in connects] == [Will(f"will/{n}", b"gone", 1) for n in (1, 2)]
        assert [c.properties.user_property for c in connects] == [
            (("attempt", "1"),),
            (("attempt", "2"),),
        ]
        assert servers == [client.options.servers[0]] * 2


def test_a_failing_password_function_fails_the_attempt_and_is_retried(
    make_client: Callable[..., mqttkit.Client],
) -> None:
    calls: list[int] = []

    def token() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("token service unavailable")
        return "fresh"

    errors: list[BaseException] = []
    with FakeBroker() as broker:
        client = make_client(
            url=broker.url, username="u", password=token, reconnect_period=0.05, connect=False
        )
        client.on("error", errors.append)
        client.connect()
        connect = broker.accept().handshake()
        assert connect.password == b"fresh"
    assert len(calls) == 2
    assert isinstance(errors[0], mqttkit.MQTTConnectionError)
    assert "the password function failed: RuntimeError: token service unavailable" in str(errors[0])


def test_a_password_function_returning_a_bad_value_is_an_error_that_hides_it() -> None:
    async def main() -> None:
        client = Client(
            "mqtt://127.0.0.1:9", username="u", password=lambda: 12345678, reconnect_period=0
        )
        with pytest.raises(mqttkit.MQTTConnectionError, match="password must be str or bytes") as e:
            await client.connect()
        assert "12345678" not in str(e.value)

    run(main())


def test_a_hook_that_does_not_return_in_time_is_a_connect_timeout() -> None:
    async def main() -> None:
        never = asyncio.Event()

        async def hook(settings: ConnectSettings) -> None:
            await never.wait()

        client = Client(
            "mqtt://127.0.0.1:9", before_connect=hook, connect_timeout=0.3, reconnect_period=0
        )
        with pytest.raises(mqttkit.ConnectTimeoutError, match="before_connect did not return"):
            await client.connect()

    run(main())


def test_an_async_password_function_in_the_blocking_front_runs_on_its_loop(
    make_client: Callable[..., mqttkit.Client],
) -> None:
    where: list[str] = []

    async def token() -> bytes:
        where.append(threading.current_thread().name)
        await asyncio.sleep(0)  # a real coroutine, awaited on the client's loop
        return b"async-token"

    with FakeBroker() as broker:
        make_client(url=broker.url, username="u", password=token)
        assert broker.accept().handshake().password == b"async-token"
    assert where == ["mqttkit-loop"]


def test_a_password_function_needs_a_username_with_mqtt_3() -> None:
    with pytest.raises(mqttkit.InvalidOptionError, match="needs a username"):
        mqttkit.Client(url="mqtt://broker", password=lambda: "x")
    # ... unless one comes from a function or the hook, or with MQTT 5.
    mqttkit.Client(url="mqtt://broker", username=lambda: "u", password=lambda: "x")
    mqttkit.Client(url="mqtt://broker", password=lambda: "x", before_connect=lambda s: None)
    mqttkit.Client(url="mqtt://broker", password=lambda: "x", protocol_version=5)


def test_connect_settings_never_show_the_password() -> None:
    server = mqttkit.Server("h", 1883)
    settings = ConnectSettings(server, "u", b"hunter2", None, Properties())
    assert "hunter2" not in repr(settings)
    options = mqttkit.Client(url="mqtt://h", username="u", password=lambda: "hunter2").options
    assert "password='***'" in repr(options)
