"""Which build of the core is under test: the pure-Python package (the default) or the optional
mypyc build (docs/performance.md). scripts/compiled.sh sets MQTTKIT_EXPECT_COMPILED=1 and runs
the core's tests against the installed compiled wheel; this test makes sure that run cannot
silently test the pure package (say, mqttkit imported from src/ instead of the wheel), and that
the ordinary run does not pick up stray compiled modules."""

from __future__ import annotations

import importlib
import os
import tomllib
from pathlib import Path

import mqttkit

ROOT = Path(__file__).resolve().parents[1]


def compiled_modules() -> list[str]:
    """The modules the build hook compiles (pyproject.toml), as dotted names."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        hook = tomllib.load(f)["tool"]["hatch"]["build"]["targets"]["wheel"]["hooks"]["mypyc"]
    assert hook["enable-by-default"] is False  # `pip install mqttkit` stays pure Python
    return [
        path.removeprefix("src/").removesuffix(".py").replace("/", ".") for path in hook["include"]
    ]


def test_the_build_under_test_is_the_one_expected() -> None:
    expect_compiled = os.environ.get("MQTTKIT_EXPECT_COMPILED", "0") == "1"
    assert mqttkit.compiled is expect_compiled
    for name in compiled_modules():
        path = Path(importlib.import_module(name).__file__ or "")
        assert (path.suffix != ".py") is expect_compiled, path
        if expect_compiled:
            assert ROOT / "src" not in path.parents, path  # the installed wheel, not the tree
