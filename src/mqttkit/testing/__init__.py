"""Test helpers: throw-away brokers on free loopback ports, and pytest fixtures.

This package owns starting, restarting and stopping real Mosquitto brokers for tests and
benchmarks: it writes each broker's configuration (listeners, authentication, TLS, WebSocket,
persistence, limits, logging) into a private temporary directory, picks free ports on
127.0.0.1 (never 1883), waits until the broker accepts connections and reports its log when it
does not. :class:`NatsServer` does the same for a second, very different broker: a NATS server
with its MQTT gateway (MQTT 3.1.1 only, QoS 0/1, JetStream-backed sessions), and
:class:`NatsCluster` runs several of them as one cluster whose sessions survive a node's death,
and :class:`RabbitMQServer` runs a third broker: a RabbitMQ node with its MQTT plugin (MQTT 3.1
and 3.1.1, QoS 0/1, sessions as durable queues), private down to its own ``epmd`` and Erlang
cookie. It also registers the fixtures ``mqttkit_mosquitto``, ``mqttkit_mosquitto_factory``,
``mqttkit_mosquitto_auth``, ``mqttkit_tls_files``, ``mqttkit_nats_server``,
``mqttkit_nats_server_factory``, ``mqttkit_nats_cluster``, ``mqttkit_nats_cluster_factory``,
``mqttkit_rabbitmq_server`` and ``mqttkit_rabbitmq_server_factory`` as a pytest plugin (entry
point ``pytest11``), and the same names without ``mqttkit_`` as aliases.

The modules, one concern each (this one only re-exports)::

    _process.py      the base of every server (directory, ports, PID, context manager),
                     free_port, the binary lookup, the atexit orphan killer
    mosquitto.py     MosquittoBroker, TLSFiles, find_mosquitto
    nats.py          NatsServer, find_nats_server
    nats_cluster.py  NatsCluster
    rabbitmq.py      RabbitMQServer, find_rabbitmq_server
    plugin.py        the pytest fixtures and markers
    aliases.py       the fixtures' short names of earlier versions (``mosquitto``...)
    __main__.py      ``python -m mqttkit.testing run -- COMMAND``

It must import wherever pytest runs, with or without Mosquitto, NATS or RabbitMQ installed, and
it must not import the rest of mqttkit: a broken client must not break the tools that test it.
pytest itself is optional: importing this package never imports it, and the fixtures exist only
when pytest loads this package as its plugin. A test that needs a broker and cannot find it
*fails* with the install command; it never skips.
"""

from __future__ import annotations

from ._process import free_port
from .mosquitto import (
    INSTALL_HINT,
    MosquittoBroker,
    MosquittoError,
    MosquittoNotFoundError,
    TLSFiles,
    find_mosquitto,
)
from .nats import (
    NATS_INSTALL_HINT,
    NatsServer,
    NatsServerError,
    NatsServerNotFoundError,
    find_nats_server,
)
from .nats_cluster import NatsCluster
from .rabbitmq import (
    RABBITMQ_INSTALL_HINT,
    RabbitMQServer,
    RabbitMQServerError,
    RabbitMQServerNotFoundError,
    find_rabbitmq_server,
)

__all__ = [
    "INSTALL_HINT",
    "NATS_INSTALL_HINT",
    "RABBITMQ_INSTALL_HINT",
    "MosquittoBroker",
    "MosquittoError",
    "MosquittoNotFoundError",
    "NatsCluster",
    "NatsServer",
    "NatsServerError",
    "NatsServerNotFoundError",
    "RabbitMQServer",
    "RabbitMQServerError",
    "RabbitMQServerNotFoundError",
    "TLSFiles",
    "find_mosquitto",
    "find_nats_server",
    "find_rabbitmq_server",
    "free_port",
]

# The pytest11 entry point names this package (`mqttkit.testing`); when pytest registers it as a
# plugin, it also loads the modules listed here. Only pytest reads this list: importing the
# package does not import pytest.
pytest_plugins = ["mqttkit.testing.plugin"]
