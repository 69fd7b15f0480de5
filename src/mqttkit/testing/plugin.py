"""The pytest plugin: broker fixtures and the ``mosquitto``, ``nats`` and ``rabbitmq`` markers.

pytest loads it through :mod:`mqttkit.testing` (the ``pytest11`` entry point), whose
``pytest_plugins`` names this module; the package itself does not import it, so
``import mqttkit.testing`` never imports pytest. A fixture whose broker is not installed
*fails* the test with the install command; it never skips.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar

import pytest

from .mosquitto import MosquittoBroker, MosquittoNotFoundError
from .nats import NatsServer, NatsServerNotFoundError
from .nats_cluster import NatsCluster
from .rabbitmq import RabbitMQServer, RabbitMQServerNotFoundError

#: The fixtures that need Mosquitto; tests using them get the ``mosquitto`` marker.
MOSQUITTO_FIXTURES: Final = frozenset({"mosquitto", "mosquitto_factory", "mosquitto_auth"})

#: The fixtures that need a NATS server; tests using them get the ``nats`` marker.
NATS_FIXTURES: Final = frozenset(
    {"nats_server", "nats_server_factory", "nats_cluster", "nats_cluster_factory"}
)

#: The fixtures that need RabbitMQ; tests using them get the ``rabbitmq`` marker.
RABBITMQ_FIXTURES: Final = frozenset({"rabbitmq_server", "rabbitmq_server_factory"})

_Server = TypeVar("_Server", MosquittoBroker, NatsServer, NatsCluster, RabbitMQServer)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``mosquitto``, ``nats`` and ``rabbitmq`` markers (for projects using
    this plugin)."""
    config.addinivalue_line(
        "markers", "mosquitto: needs a real Mosquitto broker (started by the test suite)"
    )
    config.addinivalue_line(
        "markers", "nats: needs a real NATS server's MQTT gateway (started by the test suite)"
    )
    config.addinivalue_line(
        "markers",
        "rabbitmq: needs a real RabbitMQ with rabbitmq_mqtt (started by the test suite)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a broker fixture, so ``-m 'not mosquitto'`` works."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if MOSQUITTO_FIXTURES & names:
            item.add_marker(pytest.mark.mosquitto)
        if NATS_FIXTURES & names:
            item.add_marker(pytest.mark.nats)
        if RABBITMQ_FIXTURES & names:
            item.add_marker(pytest.mark.rabbitmq)


def _start_or_fail(broker: _Server) -> _Server:
    try:
        return broker.start()
    except (
        MosquittoNotFoundError,
        NatsServerNotFoundError,
        RabbitMQServerNotFoundError,
    ) as exc:
        # A missing broker is a broken test environment: fail loudly, never skip.
        broker.close()
        pytest.fail(str(exc), pytrace=False)
    except BaseException:
        broker.close()
        raise


@pytest.fixture
def mosquitto() -> Iterator[MosquittoBroker]:
    """A fresh Mosquitto broker for this test (anonymous, no persistence)."""
    broker = _start_or_fail(MosquittoBroker())
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def mosquitto_factory() -> Iterator[Callable[..., MosquittoBroker]]:
    """A function taking :class:`MosquittoBroker` keyword arguments, returning it started.

    Every broker it started is stopped, and its directory removed, when the test ends.
    """
    started: list[MosquittoBroker] = []

    def factory(**kwargs: Any) -> MosquittoBroker:
        broker = MosquittoBroker(**kwargs)
        started.append(broker)
        return _start_or_fail(broker)

    try:
        yield factory
    finally:
        for broker in reversed(started):
            broker.close()


@pytest.fixture
def mosquitto_auth() -> Iterator[MosquittoBroker]:
    """A broker with one user, ``alice`` / ``secret``, and anonymous access off."""
    broker = _start_or_fail(MosquittoBroker(users={"alice": "secret"}))
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """One NATS server (MQTT gateway) shared by the whole test session.

    Shared: do not stop, kill or restart it (use ``nats_server_factory`` for that), and use
    topics and client ids of your own, since other tests' sessions live in it too.
    """
    server = _start_or_fail(NatsServer())
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def nats_server_factory() -> Iterator[Callable[..., NatsServer]]:
    """A function taking :class:`NatsServer` keyword arguments, returning it started.

    Every server it started is stopped, and its directory removed, when the test ends.
    """
    started: list[NatsServer] = []

    def factory(**kwargs: Any) -> NatsServer:
        server = NatsServer(**kwargs)
        started.append(server)
        return _start_or_fail(server)

    try:
        yield factory
    finally:
        for server in reversed(started):
            server.close()


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitMQServer]:
    """One RabbitMQ node (MQTT plugin) shared by the whole test session; starting one takes
    about 10 s.

    Shared: never stop, kill or restart it (use ``rabbitmq_server_factory`` for that), and
    use topics and client ids of your own, since other tests' sessions and retained
    messages live in it too.
    """
    server = _start_or_fail(RabbitMQServer())
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def rabbitmq_server_factory() -> Iterator[Callable[..., RabbitMQServer]]:
    """A function taking :class:`RabbitMQServer` keyword arguments, returning it started
    (about 10 s each: only for tests that stop, kill or restart their server).

    Every server it started is stopped, and its directory removed, when the test ends.
    """
    started: list[RabbitMQServer] = []

    def factory(**kwargs: Any) -> RabbitMQServer:
        server = RabbitMQServer(**kwargs)
        started.append(server)
        return _start_or_fail(server)

    try:
        yield factory
    finally:
        for server in reversed(started):
            server.close()


@pytest.fixture
def nats_cluster() -> Iterator[NatsCluster]:
    """A fresh 3-node NATS cluster for this test, the MQTT gateway on every node and the
    MQTT streams replicated on all three (:class:`NatsCluster`); it takes 2-4 s to start.

    Per test, not shared: kill, stop and restart its nodes at will.
    """
    cluster = _start_or_fail(NatsCluster())
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def nats_cluster_factory() -> Iterator[Callable[..., NatsCluster]]:
    """A function taking :class:`NatsCluster` keyword arguments, returning it started.

    Every cluster it started is stopped, and its directories removed, when the test ends.
    """
    started: list[NatsCluster] = []

    def factory(**kwargs: Any) -> NatsCluster:
        cluster = NatsCluster(**kwargs)
        started.append(cluster)
        return _start_or_fail(cluster)

    try:
        yield factory
    finally:
        for cluster in reversed(started):
            cluster.close()
