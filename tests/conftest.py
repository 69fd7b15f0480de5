"""Fixtures shared by the whole suite (the Mosquitto fixtures come from mqttkit.testing)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import mqttkit
from mqttkit import nodemcu


@pytest.fixture
def make_client() -> Iterator[Callable[..., mqttkit.Client]]:
    """Build sync clients (``connect=True`` starts them); all are force-closed at teardown,
    so no dispatch thread outlives its test."""
    clients: list[mqttkit.Client] = []

    def factory(*args: Any, connect: bool = True, **kwargs: Any) -> mqttkit.Client:
        client = mqttkit.Client(*args, **kwargs)
        clients.append(client)
        if connect:
            client.connect()
        return client

    yield factory
    for client in clients:
        assert client.close(force=True).wait(10), f"{client!r} did not close"
    for client in clients:
        thread = client._dispatcher.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)
            assert not thread.is_alive(), f"dispatch thread of {client!r} still running"


class NodeMCUClients:
    """Builds :class:`mqttkit.nodemcu.Client` objects and records every core client they create
    (one per ``connect()``), so that tests can look inside and teardown can close them all."""

    def __init__(self) -> None:
        self.clients: list[nodemcu.Client] = []
        #: Every core client created by a ``connect()``, in order.
        self.cores: list[mqttkit.Client] = []

    def __call__(self, *args: Any, **kwargs: Any) -> nodemcu.Client:
        client = nodemcu.Client(*args, **kwargs)
        self.clients.append(client)
        return client

    @property
    def core(self) -> mqttkit.Client:
        """The core client of the latest ``connect()``."""
        assert self.cores, "no connect() yet"
        return self.cores[-1]


@pytest.fixture
def make_nodemcu(monkeypatch: pytest.MonkeyPatch) -> Iterator[NodeMCUClients]:
    """Build NodeMCU clients; at teardown every one is closed and every dispatch thread of
    their core clients has ended (none outlives its test)."""
    made = NodeMCUClients()

    class RecordingClient(mqttkit.Client):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.cores.append(self)

    monkeypatch.setattr(nodemcu, "_SyncClient", RecordingClient)
    yield made
    for client in made.clients:
        client.close()
    for core in made.cores:
        assert core.close(force=True).wait(10), f"{core!r} did not close"
    for core in made.cores:
        thread = core._dispatcher.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)
            assert not thread.is_alive(), f"dispatch thread of {core!r} still running"
