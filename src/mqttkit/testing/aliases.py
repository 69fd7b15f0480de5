"""The short fixture names of earlier versions, each an alias of its ``mqttkit_`` fixture.

``mosquitto`` is ``mqttkit_mosquitto``, ``tls_files`` is ``mqttkit_tls_files``, and so on: each
alias requests its fixture and returns the very same object, with the same scope. They stay
for compatibility; new code uses the ``mqttkit_`` names, which clash with no other plugin.

:func:`mqttkit.testing.plugin.pytest_configure` registers this module as a plugin, named
``mqttkit.testing.aliases`` (``-p no:mqttkit.testing.aliases`` leaves it out), unless
pytest-mqtt, whose own ``mosquitto`` fixture must keep its name, is loaded.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .mosquitto import MosquittoBroker, TLSFiles
from .nats import NatsServer
from .nats_cluster import NatsCluster
from .rabbitmq import RabbitMQServer

#: Alias -> the fixture it stands for.
ALIASES = {
    "mosquitto": "mqttkit_mosquitto",
    "mosquitto_factory": "mqttkit_mosquitto_factory",
    "mosquitto_auth": "mqttkit_mosquitto_auth",
    "nats_server": "mqttkit_nats_server",
    "nats_server_factory": "mqttkit_nats_server_factory",
    "nats_cluster": "mqttkit_nats_cluster",
    "nats_cluster_factory": "mqttkit_nats_cluster_factory",
    "rabbitmq_server": "mqttkit_rabbitmq_server",
    "rabbitmq_server_factory": "mqttkit_rabbitmq_server_factory",
    "tls_files": "mqttkit_tls_files",
}


@pytest.fixture
def mosquitto(mqttkit_mosquitto: MosquittoBroker) -> MosquittoBroker:
    """Alias of ``mqttkit_mosquitto``."""
    return mqttkit_mosquitto


@pytest.fixture
def mosquitto_factory(
    mqttkit_mosquitto_factory: Callable[..., MosquittoBroker],
) -> Callable[..., MosquittoBroker]:
    """Alias of ``mqttkit_mosquitto_factory``."""
    return mqttkit_mosquitto_factory


@pytest.fixture
def mosquitto_auth(mqttkit_mosquitto_auth: MosquittoBroker) -> MosquittoBroker:
    """Alias of ``mqttkit_mosquitto_auth``."""
    return mqttkit_mosquitto_auth


@pytest.fixture(scope="session")
def nats_server(mqttkit_nats_server: NatsServer) -> NatsServer:
    """Alias of ``mqttkit_nats_server``."""
    return mqttkit_nats_server


@pytest.fixture
def nats_server_factory(
    mqttkit_nats_server_factory: Callable[..., NatsServer],
) -> Callable[..., NatsServer]:
    """Alias of ``mqttkit_nats_server_factory``."""
    return mqttkit_nats_server_factory


@pytest.fixture
def nats_cluster(mqttkit_nats_cluster: NatsCluster) -> NatsCluster:
    """Alias of ``mqttkit_nats_cluster``."""
    return mqttkit_nats_cluster


@pytest.fixture
def nats_cluster_factory(
    mqttkit_nats_cluster_factory: Callable[..., NatsCluster],
) -> Callable[..., NatsCluster]:
    """Alias of ``mqttkit_nats_cluster_factory``."""
    return mqttkit_nats_cluster_factory


@pytest.fixture(scope="session")
def rabbitmq_server(mqttkit_rabbitmq_server: RabbitMQServer) -> RabbitMQServer:
    """Alias of ``mqttkit_rabbitmq_server``."""
    return mqttkit_rabbitmq_server


@pytest.fixture
def rabbitmq_server_factory(
    mqttkit_rabbitmq_server_factory: Callable[..., RabbitMQServer],
) -> Callable[..., RabbitMQServer]:
    """Alias of ``mqttkit_rabbitmq_server_factory``."""
    return mqttkit_rabbitmq_server_factory


@pytest.fixture(scope="session")
def tls_files(mqttkit_tls_files: TLSFiles) -> TLSFiles:
    """Alias of ``mqttkit_tls_files``."""
    return mqttkit_tls_files
