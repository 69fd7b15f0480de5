"""TLS flags side by side with Mosquitto's tools: when TLS is on (a CA option, --psk, mqtts://,
port 8883; not --insecure alone), what ``--insecure`` skips (the host name check, nothing else),
client certificates, --capath, --tls-version, --tls-alpn, and the exit status of a TLS failure."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from mqttkit.cli.connection import setup
from mqttkit.cli.exits import EXIT_CONN_LOST, EXIT_TLS
from mqttkit.cli.flags import UsageError, parse
from mqttkit.testing import MosquittoBroker, TLSFiles, free_port
from tests.cli.tools import TIMEOUT, Result, both, mqttkit, real


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(tmp_path: Path, ca: trustme.CA) -> dict[str, str]:
    """The CA, a server certificate for 127.0.0.1 and one for another name, a client cert."""
    server = ca.issue_cert("127.0.0.1", "localhost")
    elsewhere = ca.issue_cert("broker.example")
    client = ca.issue_cert("client@example")
    paths = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "server.pem",
        "key": tmp_path / "server.key",
        "other_cert": tmp_path / "other.pem",
        "other_key": tmp_path / "other.key",
        "client_cert": tmp_path / "client.pem",
        "client_key": tmp_path / "client.key",
        "wrong_ca": tmp_path / "wrong-ca.pem",
    }
    ca.cert_pem.write_to_path(paths["ca"])
    server.private_key_pem.write_to_path(paths["key"])
    server.cert_chain_pems[0].write_to_path(paths["cert"])
    elsewhere.private_key_pem.write_to_path(paths["other_key"])
    elsewhere.cert_chain_pems[0].write_to_path(paths["other_cert"])
    client.private_key_pem.write_to_path(paths["client_key"])
    client.cert_chain_pems[0].write_to_path(paths["client_cert"])
    trustme.CA().cert_pem.write_to_path(paths["wrong_ca"])
    return {name: str(path) for name, path in paths.items()}


def tls(broker: MosquittoBroker) -> list[str]:
    return ["-h", "127.0.0.1", "-p", str(broker.tls_port)]


PUB = ["-t", "tls/x", "-m", "x", "-q", "1"]


def assert_tls_failure(expected: Result, ours: Result) -> None:
    """A failed TLS handshake: mqttkit exits with 8 (MOSQ_ERR_TLS). mosquitto_pub exits with 8
    ("Error: A TLS error occurred.") when the handshake fails in its network loop, and with 1
    ("Unable to connect (A TLS error occurred.).") when it fails within its connect call: which
    one depends on timing, so either is accepted from it."""
    assert ours.returncode == EXIT_TLS
    assert ours.first_error_line == b"Error: A TLS error occurred."
    assert expected.returncode in (1, EXIT_TLS)
    assert b"A TLS error occurred." in expected.first_error_line


def test_cafile_turns_tls_on_and_verifies(
    mosquitto_factory: Callable[..., MosquittoBroker], files: dict[str, str]
) -> None:
    broker = mosquitto_factory(tls=TLSFiles(files["ca"], files["cert"], files["key"]))
    expected, ours = both("pub", *tls(broker), *PUB, "--cafile", files["ca"])
    assert (ours.returncode, ours.stderr) == (expected.returncode, expected.stderr) == (0, b"")
    # A CA that did not sign the broker's certificate: status 8, as Mosquitto.
    expected, ours = both("pub", *tls(broker), *PUB, "--cafile", files["wrong_ca"])
    assert_tls_failure(expected, ours)
    # mqtts:// in -L turns TLS on too.
    url = f"mqtts://127.0.0.1:{broker.tls_port}/tls/x"
    expected, ours = both("pub", "-L", url, "-m", "x", "--cafile", files["ca"])
    assert ours.returncode == expected.returncode == 0


def test_insecure_skips_the_host_name_check_only(
    mosquitto_factory: Callable[..., MosquittoBroker], files: dict[str, str]
) -> None:
    # The broker's certificate names broker.example, not 127.0.0.1.
    broker = mosquitto_factory(tls=TLSFiles(files["ca"], files["other_cert"], files["other_key"]))
    expected, ours = both("pub", *tls(broker), *PUB, "--cafile", files["ca"])
    assert_tls_failure(expected, ours)
    assert b"IP address mismatch" in ours.stderr  # mqttkit's second line says what failed
    expected, ours = both("pub", *tls(broker), *PUB, "--cafile", files["ca"], "--insecure")
    assert ours.returncode == expected.returncode == 0
    # The chain is still verified: --insecure with a CA that did not sign it fails.
    expected, ours = both("pub", *tls(broker), *PUB, "--cafile", files["wrong_ca"], "--insecure")
    assert_tls_failure(expected, ours)
    # --insecure alone does not turn TLS on: plain MQTT to a TLS port, which closes.
    expected, ours = both("pub", *tls(broker), *PUB, "--insecure")
    assert ours.returncode == expected.returncode == EXIT_CONN_LOST
    assert ours.stderr.startswith(b"Warning: --insecure without TLS")  # mqttkit says so
    assert expected.first_error_line in ours.stderr


def test_client_certificate(
    mosquitto_factory: Callable[..., MosquittoBroker], files: dict[str, str]
) -> None:
    broker = mosquitto_factory(
        tls=TLSFiles(files["ca"], files["cert"], files["key"], require_certificate=True)
    )
    mutual = ["--cafile", files["ca"], "--cert", files["client_cert"], "--key", files["client_key"]]
    expected, ours = both("pub", *tls(broker), *PUB, *mutual)
    assert ours.returncode == expected.returncode == 0
    expected, ours = both("pub", *tls(broker), *PUB, "--cafile", files["ca"])
    assert ours.returncode != 0
    assert expected.returncode != 0


def test_capath(
    mosquitto_factory: Callable[..., MosquittoBroker], files: dict[str, str], tmp_path: Path
) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl not found: install it with `apt-get install -y openssl`")
    capath = tmp_path / "capath"
    capath.mkdir()
    shutil.copy(files["ca"], capath / "ca.crt")
    subprocess.run([openssl, "rehash", str(capath)], check=True, timeout=TIMEOUT)
    broker = mosquitto_factory(tls=TLSFiles(files["ca"], files["cert"], files["key"]))
    expected, ours = both("pub", *tls(broker), *PUB, "--capath", str(capath))
    assert ours.returncode == expected.returncode == 0


@pytest.mark.parametrize("version", ["tlsv1.2", "tlsv1.3"])
def test_tls_version(
    mosquitto_factory: Callable[..., MosquittoBroker], files: dict[str, str], version: str
) -> None:
    broker = mosquitto_factory(tls=TLSFiles(files["ca"], files["cert"], files["key"]))
    args = [*PUB, "--cafile", files["ca"], "--tls-version", version]
    expected, ours = both("pub", *tls(broker), *args)
    assert ours.returncode == expected.returncode == 0


class _Listener:
    """A loopback TCP listener that records the first byte (or the TLS handshake) of each
    connection, then closes it."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(TIMEOUT)
        self.port = self.sock.getsockname()[1]
        self.context = context
        self.seen: list[object] = []

    def accept_one(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            if self.context is None:
                self.seen.append(conn.recv(1))
                return
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls_conn:
                    self.seen.append(tls_conn.selected_alpn_protocol())
            except (ssl.SSLError, OSError) as exc:
                self.seen.append(exc)


@pytest.fixture
def listener() -> Iterator[Callable[..., _Listener]]:
    made: list[_Listener] = []

    def make(context: ssl.SSLContext | None = None) -> _Listener:
        made.append(_Listener(context))
        return made[-1]

    yield make
    for item in made:
        item.sock.close()


@pytest.mark.parametrize(
    ("flags", "first"),
    [
        (["--insecure"], b"\x10"),  # an MQTT CONNECT: no TLS
        (["--cert", "client_cert", "--key", "client_key"], b"\x10"),
        (["--cafile", "ca"], b"\x16"),  # a TLS handshake
        (["--tls-use-os-certs"], b"\x16"),
    ],
)
def test_what_turns_tls_on_as_in_mosquitto(
    listener: Callable[..., _Listener], files: dict[str, str], flags: list[str], first: bytes
) -> None:
    flags = [files.get(f, f) for f in flags]
    for command in ("real", "ours"):
        server = listener()
        accepting = threading.Thread(target=server.accept_one, daemon=True)
        accepting.start()
        args = ["-h", "127.0.0.1", "-p", str(server.port), *PUB, *flags]
        real("pub", *args) if command == "real" else mqttkit("pub", *args)
        accepting.join(TIMEOUT)
        assert server.seen == [first], command


def test_port_8883_means_tls(files: dict[str, str]) -> None:
    s = setup(parse("pub", ["-h", "127.0.0.1", "-p", "8883", "-t", "a", "-m", "x"]))
    assert s.kwargs["url"] == "mqtts://127.0.0.1:8883"
    context = s.kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    # A CA option turns TLS on, on port 8883 by default.
    s = setup(parse("pub", ["--cafile", files["ca"], "-t", "a", "-m", "x"]))
    assert s.kwargs["url"] == "mqtts://localhost:8883"
    s = setup(parse("pub", ["--cafile", files["ca"], "--insecure", "-t", "a", "-m", "x"]))
    context = s.kwargs["ssl_context"]
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, False)


def test_tls_alpn_is_offered(listener: Callable[..., _Listener], files: dict[str, str]) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files["cert"], files["key"])
    context.set_alpn_protocols(["mqtt", "x-other"])
    for command in ("real", "ours"):
        server = listener(context)
        accepting = threading.Thread(target=server.accept_one, daemon=True)
        accepting.start()
        args = [
            "-h",
            "127.0.0.1",
            "-p",
            str(server.port),
            *PUB,
            "--cafile",
            files["ca"],
            "--tls-alpn",
            "mqtt",
        ]
        real("pub", *args) if command == "real" else mqttkit("pub", *args)
        accepting.join(TIMEOUT)
        assert server.seen == ["mqtt"], command


def test_psk(mosquitto_factory: Callable[..., MosquittoBroker], tmp_path: Path) -> None:
    port = free_port()
    psk_file = tmp_path / "psk"
    psk_file.write_text("me:0123456789abcdef\n")
    broker = mosquitto_factory(
        extra_config=f"listener {port} 127.0.0.1\npsk_hint hint\npsk_file {psk_file}\n"
        "use_identity_as_username true\n"
    )
    args = [
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        *PUB,
        "--psk",
        "0123456789abcdef",
        "--psk-identity",
        "me",
    ]
    expected, ours = both("pub", *args)
    assert expected.returncode == 0, expected.stderr
    assert broker.running
    if sys.version_info >= (3, 13):
        assert ours.returncode == 0, ours.stderr
    else:
        # Python's ssl has TLS-PSK from 3.13 on: refused, saying so.
        assert ours.returncode == 1
        assert ours.first_error_line == (
            b"Error: --psk needs Python 3.13 or later (ssl's TLS-PSK support); this is Python "
            + sys.version.split()[0].encode()
            + b"."
        )


def test_unsupported_tls_flags_say_why() -> None:
    for args, words in (
        (["--tls-engine", "pkcs11"], "OpenSSL engines"),
        (["--keyform", "engine"], "OpenSSL engines"),
        (["-S"], "SRV"),
    ):
        with pytest.raises(UsageError, match=words):
            setup(parse("pub", ["-t", "a", "-m", "x", *args]))
