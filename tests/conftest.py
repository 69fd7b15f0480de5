"""Fixtures shared by the whole suite (the Mosquitto fixtures come from mqttkit.testing)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import mqttkit


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
