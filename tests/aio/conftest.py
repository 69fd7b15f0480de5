"""Fixtures shared by the asyncio tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from mqttkit.testing import TLSFiles
from tests.support.proxy_server import ProxyServer


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, TLSFiles, Path]:
    """A test CA and a server certificate for 127.0.0.1 / localhost, as Mosquitto files."""
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    server.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    files = TLSFiles(
        cafile=directory / "ca.pem",
        certfile=directory / "server.pem",
        keyfile=directory / "server.key",
    )
    return ca, files, directory


@pytest.fixture
def proxy_factory() -> Iterator[Callable[..., ProxyServer]]:
    """Start pproxy servers (``ProxyServer`` arguments); all are stopped at teardown."""
    servers: list[ProxyServer] = []

    def factory(*args: Any, **kwargs: Any) -> ProxyServer:
        server = ProxyServer(*args, **kwargs)
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.close()
