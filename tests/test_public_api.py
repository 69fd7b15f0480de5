"""The public surface: __all__ complete and importable, docs generated from the code current,
examples runnable."""

from __future__ import annotations

import builtins
import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mqttkit
from mqttkit.testing import MosquittoBroker

ROOT = Path(__file__).resolve().parents[1]

PUBLIC_MODULES = [
    "mqttkit",
    "mqttkit.aio",
    "mqttkit.sync",
    "mqttkit.nodemcu",
    "mqttkit.protocol",
    "mqttkit.protocol.errors",
    "mqttkit.protocol.packets",
    "mqttkit.protocol.codec",
    "mqttkit.protocol.session",
    "mqttkit.protocol.store",
    "mqttkit.protocol.topics",
    "mqttkit.stores",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing
    assert len(set(module.__all__)) == len(module.__all__)


def test_top_level_exports_every_exception() -> None:
    errors = importlib.import_module("mqttkit.protocol.errors")
    classes = {
        n
        for n, obj in vars(errors).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == errors.__name__
    }
    assert classes <= set(mqttkit.__all__), classes - set(mqttkit.__all__)


def test_public_callables_have_docstrings() -> None:
    undocumented = []
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for attr in module.__all__:
            obj = getattr(module, attr)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and not inspect.getdoc(obj):
                undocumented.append(f"{name}.{attr}")
    assert not undocumented


def test_options_doc_is_generated_from_the_code() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_options_doc.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_asyncio_example_runs(mosquitto: MosquittoBroker) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "asyncio_hello.py")],
        env={**os.environ, "MQTT_URL": mosquitto.url},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello mqtt\n"


def test_the_asyncio_consumer_example_runs(mosquitto: MosquittoBroker) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "asyncio_consumer.py")],
        env={**os.environ, "MQTT_URL": mosquitto.url},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sorted(lines[:-1]) == [  # connected before the watcher started: not shown
        "ALARM alarms/door open",
        "reading sensors/hall/temp 19.0",
        "reading sensors/kitchen/temp 21.5",
    ]
    assert lines[-1] == "disconnected: closed"


def test_the_routing_example_runs(mosquitto: MosquittoBroker) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "routing.py")],
        env={**os.environ, "MQTT_URL": mosquitto.url},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "temperature sensors/kitchen/temp: 21.5",
        "other misc/x",
        "ALARM alarms/door: open",
    ]


#: Old public names kept for compatibility, each documented as a deprecated alias in errors.py:
#: old name -> the name of the very same class.
DEPRECATED_ALIASES = {"ConnectionRefusedError": "ConnectRefusedError"}


@pytest.mark.parametrize("name", ["mqttkit", "mqttkit.protocol", "mqttkit.protocol.errors"])
def test_deprecated_aliases_are_the_same_class(name: str) -> None:
    module = importlib.import_module(name)
    for old, new in DEPRECATED_ALIASES.items():
        assert getattr(module, old) is getattr(module, new)
        assert getattr(module, new).__name__ == new
        assert {old, new} <= set(module.__all__)


def test_deprecated_aliases_are_documented() -> None:
    errors = importlib.import_module("mqttkit.protocol.errors")
    doc = " ".join((errors.__doc__ or "").split())
    for old, new in DEPRECATED_ALIASES.items():
        assert f"``{old}`` is the deprecated alias of :class:`{new}`" in doc


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_no_public_name_shadows_a_builtin(name: str) -> None:
    module = importlib.import_module(name)
    shadowing = set(module.__all__) & set(dir(builtins)) - set(DEPRECATED_ALIASES)
    assert not shadowing, f"{name} exports names of builtins: {sorted(shadowing)}"
