"""The pytest plugin: broker fixtures and the ``mosquitto``, ``nats`` and ``rabbitmq`` markers.

Every fixture is named ``mqttkit_<what>`` (``mqttkit_mosquitto``, ``mqttkit_nats_server``,
``mqttkit_tls_files``...), so that it clashes with no other plugin's (pytest-mqtt defines
``mosquitto``). The short names of earlier versions (``mosquitto``, ``nats_server``,
``tls_files``...) are aliases, in :mod:`mqttkit.testing.aliases`: registered by
:func:`pytest_configure` unless pytest-mqtt is loaded.

pytest loads this module through :mod:`mqttkit.testing` (the ``pytest11`` entry point), whose
``pytest_plugins`` names it; the package itself does not import it, so
``import mqttkit.testing`` never imports pytest. A fixture whose broker (or trustme) is not
installed *fails* the test with the install command; it never skips.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar

import pytest

from . import aliases
from .mosquitto import MosquittoBroker, MosquittoNotFoundError, TLSFiles
from .nats import NatsServer, NatsServerNotFoundError
from .nats_cluster import NatsCluster
from .rabbitmq import RabbitMQServer, RabbitMQServerNotFoundError

#: The fixtures that need Mosquitto; tests using them get the ``mosquitto`` marker (an alias
#: requests its fixture, so tests using an alias get it too).
MOSQUITTO_FIXTURES: Final = frozenset(
    {"mqttkit_mosquitto", "mqttkit_mosquitto_factory", "mqttkit_mosquitto_auth"}
)

#: The fixtures that need a NATS server; tests using them get the ``nats`` marker.
NATS_FIXTURES: Final = frozenset(
    {
        "mqttkit_nats_server",
        "mqttkit_nats_server_factory",
        "mqttkit_nats_cluster",
        "mqttkit_nats_cluster_factory",
    }
)

#: The fixtures that need RabbitMQ; tests using them get the ``rabbitmq`` marker.
RABBITMQ_FIXTURES: Final = frozenset({"mqttkit_rabbitmq_server", "mqttkit_rabbitmq_server_factory"})

#: The name the aliases are registered under: ``-p no:mqttkit.testing.aliases`` leaves them out.
ALIASES_PLUGIN: Final = "mqttkit.testing.aliases"

#: The top-level package of pytest-mqtt, whose ``mosquitto`` fixture keeps its name: with one of
#: its modules registered as a plugin, the aliases are left out.
_PYTEST_MQTT: Final = "pytest_mqtt"

#: How to get trustme, quoted when ``mqttkit_tls_files`` cannot import it.
TRUSTME_INSTALL_HINT: Final = "install it with `pip install trustme`"

#: The module of mqttkit's blocking front that knows the clients still open. Looked up in
#: ``sys.modules``, never imported: this package imports nothing of mqttkit (a broken client
#: must not break its test tools), and a session that made no blocking client has none open.
_LIFETIME: Final = "mqttkit.sync.lifetime"

#: The dispatch threads (``mqttkit-dispatch-<client id>``) of the clients found open at the end
#: of the session.
_LEFT_OPEN = pytest.StashKey[list[str]]()

_Server = TypeVar("_Server", MosquittoBroker, NatsServer, NatsCluster, RabbitMQServer)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``mosquitto``, ``nats`` and ``rabbitmq`` markers (for projects using
    this plugin), and the short fixture names (:mod:`mqttkit.testing.aliases`) unless
    pytest-mqtt is loaded."""
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
    manager = config.pluginmanager
    pytest_mqtt = any(
        getattr(plugin, "__name__", "").partition(".")[0] == _PYTEST_MQTT
        for plugin in manager.get_plugins()
    )
    if not pytest_mqtt and not manager.has_plugin(ALIASES_PLUGIN):
        # Every plugin named on the command line, by entry point or in the root conftest's
        # pytest_plugins is registered by now. A blocked name (-p no:...) registers nothing.
        manager.register(aliases, ALIASES_PLUGIN)


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


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Close the blocking clients the tests left open (after every fixture's teardown).

    A blocking client keeps the process alive after its main thread ends (Node semantics, see
    :mod:`mqttkit.sync.lifetime`): a test that forgets ``close()`` would make pytest print its
    summary and then wait for ever. They are closed here instead, and named in the summary.
    """
    lifetime = sys.modules.get(_LIFETIME)
    if lifetime is None:
        return
    try:
        left: list[str] = lifetime.close_all()
    except Exception as exc:  # a broken client must not break the test run's end
        left = [f"(closing them failed: {exc!r})"]
    session.config.stash[_LEFT_OPEN] = left


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Name the clients :func:`pytest_sessionfinish` had to close."""
    left = config.stash.get(_LEFT_OPEN, [])
    if left:
        terminalreporter.write_sep("=", "mqttkit: clients left open", yellow=True)
        names = ", ".join(name.removeprefix("mqttkit-dispatch-") for name in left)
        terminalreporter.write_line(
            f"{len(left)} blocking client(s) still open at the end of the session were "
            f"closed: {names}. Close each client in the test or fixture that opens it."
        )


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


def _running(server: _Server) -> Iterator[_Server]:
    """A fixture's body: ``server`` started (or the test failed), closed after the test."""
    _start_or_fail(server)
    try:
        yield server
    finally:
        server.close()


def _factory(kind: Callable[..., _Server]) -> Iterator[Callable[..., _Server]]:
    """A factory fixture's body: a function making ``kind(**kwargs)`` started; every one it
    made is closed (its directory removed) after the test, the last first."""
    started: list[_Server] = []

    def factory(**kwargs: Any) -> _Server:
        server = kind(**kwargs)
        started.append(server)
        return _start_or_fail(server)

    try:
        yield factory
    finally:
        for server in reversed(started):
            server.close()


@pytest.fixture
def mqttkit_mosquitto() -> Iterator[MosquittoBroker]:
    """A fresh Mosquitto broker for this test (anonymous, no persistence)."""
    yield from _running(MosquittoBroker())


@pytest.fixture
def mqttkit_mosquitto_factory() -> Iterator[Callable[..., MosquittoBroker]]:
    """A function taking :class:`MosquittoBroker` keyword arguments, returning it started.

    Every broker it started is stopped, and its directory removed, when the test ends.
    """
    yield from _factory(MosquittoBroker)


@pytest.fixture
def mqttkit_mosquitto_auth() -> Iterator[MosquittoBroker]:
    """A broker with one user, ``alice`` / ``secret``, and anonymous access off."""
    yield from _running(MosquittoBroker(users={"alice": "secret"}))


@pytest.fixture(scope="session")
def mqttkit_nats_server() -> Iterator[NatsServer]:
    """One NATS server (MQTT gateway) shared by the whole test session.

    Shared: do not stop, kill or restart it (use ``mqttkit_nats_server_factory`` for that), and
    use topics and client ids of your own, since other tests' sessions live in it too.
    """
    yield from _running(NatsServer())


@pytest.fixture
def mqttkit_nats_server_factory() -> Iterator[Callable[..., NatsServer]]:
    """A function taking :class:`NatsServer` keyword arguments, returning it started.

    Every server it started is stopped, and its directory removed, when the test ends.
    """
    yield from _factory(NatsServer)


@pytest.fixture(scope="session")
def mqttkit_rabbitmq_server() -> Iterator[RabbitMQServer]:
    """One RabbitMQ node (MQTT plugin) shared by the whole test session; starting one takes
    about 10 s.

    Shared: never stop, kill or restart it (use ``mqttkit_rabbitmq_server_factory`` for that), and
    use topics and client ids of your own, since other tests' sessions and retained
    messages live in it too.
    """
    yield from _running(RabbitMQServer())


@pytest.fixture
def mqttkit_rabbitmq_server_factory() -> Iterator[Callable[..., RabbitMQServer]]:
    """A function taking :class:`RabbitMQServer` keyword arguments, returning it started
    (about 10 s each: only for tests that stop, kill or restart their server).

    Every server it started is stopped, and its directory removed, when the test ends.
    """
    yield from _factory(RabbitMQServer)


@pytest.fixture
def mqttkit_nats_cluster() -> Iterator[NatsCluster]:
    """A fresh 3-node NATS cluster for this test, the MQTT gateway on every node and the
    MQTT streams replicated on all three (:class:`NatsCluster`); it takes 2-4 s to start.

    Per test, not shared: kill, stop and restart its nodes at will.
    """
    yield from _running(NatsCluster())


@pytest.fixture
def mqttkit_nats_cluster_factory() -> Iterator[Callable[..., NatsCluster]]:
    """A function taking :class:`NatsCluster` keyword arguments, returning it started.

    Every cluster it started is stopped, and its directories removed, when the test ends.
    """
    yield from _factory(NatsCluster)


@pytest.fixture(scope="session")
def mqttkit_tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A test CA and a server certificate for ``127.0.0.1`` and ``localhost`` signed by it, as
    the PEM files of a TLS listener (``mqttkit_mosquitto_factory(tls=mqttkit_tls_files)``).

    Clients trust ``cafile`` (the CA) to verify the broker. Made with trustme (a test
    dependency, not one of mqttkit's): without it the test fails with the install command.
    Shared by the session; the files are only read.
    """
    try:
        # Imported here: trustme is needed by this fixture alone, and only when it is used.
        import trustme  # noqa: PLC0415
    except ImportError:
        pytest.fail(f"mqttkit_tls_files needs trustme: {TRUSTME_INSTALL_HINT}", pytrace=False)
    directory = tmp_path_factory.mktemp("mqttkit-tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    with (directory / "server.pem").open("wb") as f:
        for blob in server.cert_chain_pems:  # the certificate, then any intermediates
            f.write(blob.bytes())
    return TLSFiles(
        cafile=directory / "ca.pem",
        certfile=directory / "server.pem",
        keyfile=directory / "server.key",
    )
