"""The core stays sans-IO: no module of mqttkit.protocol imports an I/O, clock or randomness module.

Time is passed in (``now``), randomness and sockets belong to the drivers. A static AST scan, so a
lazy import inside a function is caught as well as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mqttkit.protocol

FORBIDDEN = frozenset(
    {"socket", "ssl", "asyncio", "threading", "time", "random", "selectors", "select"}
)
PROTOCOL_DIR = Path(mqttkit.protocol.__file__).parent
MODULES = sorted(PROTOCOL_DIR.rglob("*.py"))


def forbidden_imports(source: str, filename: str) -> list[str]:
    """The forbidden top-level modules ``source`` imports, as "line: module"."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and getattr(node.func, "id", getattr(node.func, "attr", ""))
            in ("__import__", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        else:
            continue
        found += [f"{node.lineno}: {n}" for n in names if n.partition(".")[0] in FORBIDDEN]
    return found


def test_the_scan_sees_the_package() -> None:
    names = {m.name for m in MODULES}
    assert {"__init__.py", "codec.py", "packets.py", "topics.py", "errors.py"} <= names


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_protocol_module_is_sans_io(module: Path) -> None:
    assert forbidden_imports(module.read_text(encoding="utf-8"), str(module)) == []


@pytest.mark.parametrize(
    "source",
    [
        "import socket",
        "import ssl as _ssl",
        "import os, asyncio",
        "import asyncio.events",
        "from threading import Lock",
        "from time import monotonic",
        "from random import random",
        "import selectors",
        "from select import select",
        "def f():\n    import time\n",
        "import importlib\nimportlib.import_module('socket')",
        "__import__('random')",
    ],
)
def test_the_scan_catches(source: str) -> None:
    assert forbidden_imports(source, "<test>")


@pytest.mark.parametrize(
    "source",
    ["import struct", "from .time_utils import x", "from . import codec", "import timeit"],
)
def test_the_scan_allows(source: str) -> None:
    assert forbidden_imports(source, "<test>") == []
