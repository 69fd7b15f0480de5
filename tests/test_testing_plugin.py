"""Tests of mqttkit.testing's pytest plugin as a user meets it: the ``mqttkit_`` fixture names and
their aliases, ``mqttkit_tls_files``, living next to pytest-mqtt, and docs/testing.md's examples.

What only a fresh pytest can show (a plugin loaded or missing, a module that cannot be imported,
the documented examples as someone's test file) runs ``python -m pytest`` in a subprocess, in
a directory of its own with its own ``pytest.ini``.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mqttkit.testing import MosquittoBroker, TLSFiles, aliases, plugin

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
TESTING_DOC = ROOT / "docs" / "testing.md"

#: The configuration of every pytest run in a subprocess: as strict as this suite's.
PYTEST_INI = """\
[pytest]
addopts = --strict-markers --strict-config -p no:cacheprovider -ra
filterwarnings = error
"""


def run_pytest(
    directory: Path, files: dict[str, str], *args: str, timeout: float = 100
) -> subprocess.CompletedProcess[str]:
    """Write ``files`` (name -> text) into ``directory`` and run ``python -m pytest *args``
    there, with this tree's ``src`` (and ``directory``) first on the import path."""
    (directory / "pytest.ini").write_text(PYTEST_INI, encoding="utf-8")
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(directory)])}
    return subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def summary(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit status {result.returncode}\n{result.stdout}\n{result.stderr}"


# -- names and aliases ----------------------------------------------------------------------------


def test_every_fixture_is_named_mqttkit_and_has_its_alias() -> None:
    fixtures = {name for name in vars(plugin) if name.startswith("mqttkit_")}
    assert fixtures == set(aliases.ALIASES.values())
    for alias, target in aliases.ALIASES.items():
        assert alias == target.removeprefix("mqttkit_")
        assert callable(getattr(aliases, alias)), alias


def test_the_docs_name_every_fixture_and_its_alias() -> None:
    rows = re.findall(r"^\| `(mqttkit_\w+)` \| `(\w+)` \|", TESTING_DOC.read_text(), re.M)
    assert {alias: target for target, alias in rows} == aliases.ALIASES


def test_an_alias_is_the_same_fixture(
    mosquitto: MosquittoBroker,
    mqttkit_mosquitto: MosquittoBroker,
    tls_files: TLSFiles,
    mqttkit_tls_files: TLSFiles,
) -> None:
    assert mosquitto is mqttkit_mosquitto
    assert tls_files is mqttkit_tls_files


def test_tests_using_the_new_names_are_marked(
    mqttkit_mosquitto_factory: Callable[..., MosquittoBroker], request: pytest.FixtureRequest
) -> None:
    assert request.node.get_closest_marker("mosquitto") is not None
    assert request.node.get_closest_marker("nats") is None


def test_importing_the_package_does_not_import_pytest() -> None:
    code = "import sys, mqttkit.testing; print('pytest' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout == "False\n"


# A stand-in for pytest-mqtt: its plugin modules live in the `pytest_mqtt` package, and its
# `mosquitto` fixture gives (host, port).
FAKE_PYTEST_MQTT = {
    "pytest_mqtt/__init__.py": "",
    "pytest_mqtt/mosquitto.py": (
        "import pytest\n\n\n"
        "@pytest.fixture(scope='session')\n"
        "def mosquitto():\n"
        "    return ('localhost', 1883)\n"
    ),
}


def test_pytest_mqtt_keeps_its_mosquitto_fixture(tmp_path: Path) -> None:
    test = (
        "from mqttkit.testing import MosquittoBroker\n\n\n"
        "def test_both(mosquitto, mqttkit_mosquitto):\n"
        "    assert mosquitto == ('localhost', 1883)\n"
        "    assert isinstance(mqttkit_mosquitto, MosquittoBroker)\n\n\n"
        "def test_no_aliases(request):\n"
        "    assert request.config.pluginmanager.get_plugin('mqttkit.testing.aliases') is None\n"
    )
    result = run_pytest(
        tmp_path, {**FAKE_PYTEST_MQTT, "test_it.py": test}, "-p", "pytest_mqtt.mosquitto"
    )
    assert result.returncode == 0, summary(result)
    assert "2 passed" in result.stdout


def test_the_aliases_can_be_turned_off(tmp_path: Path) -> None:
    test = "def test_it(mosquitto):\n    pass\n"
    result = run_pytest(tmp_path, {"test_it.py": test}, "-p", "no:mqttkit.testing.aliases")
    assert result.returncode == 1, summary(result)
    assert "fixture 'mosquitto' not found" in result.stdout
    assert "mqttkit_mosquitto" in result.stdout  # among the available fixtures


# -- mqttkit_tls_files ----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_tls_files_serve_a_certificate_the_ca_verifies(
    mqttkit_mosquitto_factory: Callable[..., MosquittoBroker],
    mqttkit_tls_files: TLSFiles,
    host: str,
) -> None:
    broker = mqttkit_mosquitto_factory(tls=mqttkit_tls_files)
    context = ssl.create_default_context(cafile=os.fspath(mqttkit_tls_files.cafile))
    with (
        socket.create_connection((broker.host, broker.tls_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version() is not None  # the handshake, certificate and name verified


def test_tls_files_without_trustme_fail_with_the_install_command(tmp_path: Path) -> None:
    conftest = "import sys\n\nsys.modules['trustme'] = None  # import trustme: ImportError\n"
    test = "def test_it(mqttkit_tls_files):\n    pass\n"
    result = run_pytest(tmp_path, {"conftest.py": conftest, "test_it.py": test})
    assert result.returncode == 1, summary(result)
    assert "mqttkit_tls_files needs trustme: install it with `pip install trustme`" in (
        result.stdout
    )
    assert "1 error" in result.stdout  # a fixture that fails: an error, never a skip
    assert "skipped" not in result.stdout


# -- docs/testing.md ------------------------------------------------------------------------------


def doc_blocks() -> list[tuple[int, str]]:
    """Every ```python block of docs/testing.md: (its first line's number, its code)."""
    text = TESTING_DOC.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start(1)) + 1, m.group(1))
        for m in re.finditer(r"^```python\n(.*?)^```$", text, re.M | re.S)
    ]


def _doc_param(line: int, code: str) -> object:
    marks = [
        getattr(pytest.mark, broker)
        for broker in ("mosquitto", "nats", "rabbitmq")
        if broker in code.lower()
    ]
    return pytest.param(code, marks=marks, id=f"testing.md-line-{line}")


def test_the_docs_have_examples() -> None:
    blocks = doc_blocks()
    assert len(blocks) >= 5
    assert all("def test_" in code for _, code in blocks), "every example is a pytest file"


@pytest.mark.parametrize("code", [_doc_param(line, code) for line, code in doc_blocks()])
def test_docs_example_runs(tmp_path: Path, code: str) -> None:
    result = run_pytest(tmp_path, {"test_example.py": code}, "test_example.py")
    assert result.returncode == 0, summary(result)
    assert re.search(r"\b\d+ passed", result.stdout), summary(result)
    assert "skipped" not in result.stdout, summary(result)
