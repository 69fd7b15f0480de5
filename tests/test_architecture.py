"""The architecture, enforced: the import contracts of pyproject.toml hold, each of them can fail,
and the exception tree drawn in :mod:`mqttkit.protocol.errors` is the real one.

The contracts (``[tool.importlinter]``) are DESIGN.md's layer order: a wrong arrow fails the suite
with import-linter's report of the import chain. They run on ``src/`` of this tree, in a
subprocess, so that the graph is built from the files and not from what this process imported.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest

from mqttkit.protocol import errors

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PYPROJECT = ROOT / "pyproject.toml"

# What the `lint-imports` console script runs (importlinter.cli:lint_imports_command), without
# relying on the script being on $PATH; no cache directory, no logo.
_LINT = (
    "from importlinter.cli import lint_imports_command; "
    "lint_imports_command(['--no-cache', '--no-logo', *__import__('sys').argv[1:]])"
)


def lint_imports(config: Path, src: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter with ``config`` on the ``mqttkit`` package found in ``src``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), *filter(None, [os.environ.get("PYTHONPATH")])]),
        # rich (import-linter's output) wraps at the terminal width; keep one line per contract.
        "COLUMNS": "400",
        "NO_COLOR": "1",
        "TERM": "dumb",
    }
    return subprocess.run(
        [sys.executable, "-c", _LINT, str(config)],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def contracts() -> list[dict[str, object]]:
    """The contracts of pyproject.toml."""
    with PYPROJECT.open("rb") as f:
        config = tomllib.load(f)
    result: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return result


def test_import_contracts_are_kept() -> None:
    result = lint_imports(PYPROJECT, SRC)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(contracts())} kept, 0 broken." in result.stdout, result.stdout


#: Per contract id: (a file of src/mqttkit, a line that breaks the contract when appended to it,
#: the import edge import-linter must then report).
BREAKS = {
    "layers": (
        "aio/__init__.py",
        "from ..sync import client",
        "mqttkit.aio -> mqttkit.sync.client",
    ),
    "stores": ("options.py", "from . import stores", "mqttkit.options -> mqttkit.stores"),
    "stores-root": ("__init__.py", "from .stores import SQLiteStore", "mqttkit -> mqttkit.stores"),
    # A submodule: the contract covers the whole mqttkit.testing package.
    "testing": (
        "testing/mosquitto.py",
        "from ..protocol import errors",
        "mqttkit.testing.mosquitto -> mqttkit.protocol.errors",
    ),
    "sans-io": ("protocol/topics.py", "import socket", "mqttkit.protocol.topics -> socket"),
    "errors": (
        "protocol/errors.py",
        "from . import packets",
        "mqttkit.protocol.errors -> mqttkit.protocol.packets",
    ),
}


def test_import_contracts_catch_a_wrong_import(tmp_path: Path) -> None:
    """Every contract fails on a copy of the package with one wrong import added for it."""
    assert set(BREAKS) == {c["id"] for c in contracts()}, "give every contract a case in BREAKS"
    src = tmp_path / "src"
    shutil.copytree(SRC / "mqttkit", src / "mqttkit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PYPROJECT, tmp_path / "pyproject.toml")
    for path, line, _ in BREAKS.values():
        with (src / "mqttkit" / path).open("a", encoding="utf-8") as f:
            f.write(f"\n{line}\n")

    result = lint_imports(tmp_path / "pyproject.toml", src)

    assert result.returncode == 1, result.stdout + result.stderr
    for contract in contracts():
        assert f"{contract['name']} BROKEN" in result.stdout, (contract["id"], result.stdout)
    for _, _, edge in BREAKS.values():
        assert f"{edge} (l." in result.stdout, (edge, result.stdout)


# -- the exception tree drawn in errors.py's docstring ----------------------------------------

_TREE_LINE = re.compile(r"(?P<rails>(?:│   |    )*)(?P<branch>[├└]── )?(?P<name>[A-Za-z_]\w*)")


def drawn_tree(doc: str) -> tuple[dict[str, str | None], list[str]]:
    """The drawing after ``The tree::`` in ``doc``: {class name: drawn parent (None: the root)},
    and what is wrong with the drawing itself (rails and branches that do not match the nesting,
    a level skipped, a name drawn twice)."""
    _, found, rest = doc.partition("The tree::")
    if not found:
        return {}, ["no 'The tree::' block"]
    block = rest.lstrip("\n").splitlines()
    lines = block[: next((i for i, line in enumerate(block) if not line.strip()), len(block))]
    if not lines:
        return {}, ["an empty drawing"]
    indent = len(lines[0]) - len(lines[0].lstrip())
    parsed: list[tuple[int, str, str]] = []  # (depth, name, the drawing before the name)
    problems: list[str] = []
    for line in lines:
        text = line[indent:]
        m = _TREE_LINE.match(text)
        if m is None or line[:indent].strip():
            problems.append(f"cannot read {line.strip()!r}")
            continue
        depth = len(m["rails"]) // 4 + (1 if m["branch"] else 0)
        parsed.append((depth, m["name"], text[: m.start("name")]))

    def continues(index: int, depth: int) -> bool:
        """Whether a later line is a sibling at ``depth`` within the same parent."""
        for later, _, _ in parsed[index + 1 :]:
            if later <= depth:
                return later == depth
        return False

    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for index, (depth, name, drawing) in enumerate(parsed):
        if depth > len(stack) or (depth == 0 and index > 0):
            problems.append(f"{name}: drawn at a depth that does not follow from the line above")
            continue
        del stack[depth:]
        if name in parents:
            problems.append(f"{name}: drawn twice")
        parents[name] = stack[-1] if stack else None
        stack.append(name)
        if depth:
            expected = "".join(
                "│   " if continues(index, level) else "    " for level in range(1, depth)
            )
            expected += "├── " if continues(index, depth) else "└── "
            if drawing != expected:
                problems.append(f"{name}: drawn as {drawing!r}, the nesting needs {expected!r}")
    return parents, problems


def tree_problems(module: types.ModuleType, root: type[BaseException]) -> list[str]:
    """What the drawing in ``module``'s docstring gets wrong about its classes: every class in
    ``__all__`` that subclasses ``root`` is drawn once, under its base on ``root``'s side."""
    parents, problems = drawn_tree(module.__doc__ or "")
    classes = {
        id(obj): obj
        for name in module.__all__
        if inspect.isclass(obj := getattr(module, name)) and issubclass(obj, root)
    }
    for cls in classes.values():
        bases = [base for base in cls.__bases__ if issubclass(base, root)]
        if cls is not root and len(bases) != 1:
            problems.append(f"{cls.__name__}: {len(bases)} bases under {root.__name__}, draw one")
            continue
        real = bases[0].__name__ if bases else None
        if cls.__name__ not in parents:
            problems.append(f"{cls.__name__}: not drawn (its base: {real})")
        elif parents[cls.__name__] != real:
            problems.append(
                f"{cls.__name__}: drawn under {parents[cls.__name__]}, its base is {real}"
            )
    names = {cls.__name__ for cls in classes.values()}
    problems += [
        f"{name}: drawn, but not a class of __all__" for name in parents if name not in names
    ]
    return problems


def test_the_error_tree_drawing_is_true() -> None:
    assert tree_problems(errors, errors.MQTTError) == []


class _Root(Exception):
    pass


class _A(_Root):
    pass


class _B(_Root, ValueError):
    pass


class _C(_B, TypeError):
    pass


def _fake(doc: str) -> types.ModuleType:
    module = types.ModuleType("fake", doc)
    module.__dict__.update(_Root=_Root, _A=_A, _B=_B, _C=_C, _Alias=_C)
    module.__all__ = ["_Root", "_A", "_B", "_C", "_Alias"]
    return module


def test_the_tree_check_accepts_a_true_drawing() -> None:
    drawing = "    _Root  all\n    ├── _A  a\n    └── _B\n        └── _C\n"
    doc = f"Errors.\n\nThe tree::\n\n{drawing}\nEnd.\n"
    assert tree_problems(_fake(doc), _Root) == []


@pytest.mark.parametrize(
    ("drawing", "problem"),
    [
        (
            "    _Root\n    ├── _A\n    ├── _B\n    └── _C\n",
            "_C: drawn under _Root, its base is _B",
        ),
        ("    _Root\n    └── _B\n        └── _C\n", "_A: not drawn (its base: _Root)"),
        (
            "    _Root\n    ├── _A\n    ├── _Gone\n    └── _B\n        └── _C\n",
            "_Gone: drawn, but not a class of __all__",
        ),
        (
            "    _Root\n    ├── _A\n    ├── _B\n        └── _C\n",
            "_B: drawn as '├── ', the nesting needs '└── '",
        ),
        (
            "    _Root\n    ├── _A\n    └── _B\n    │   └── _C\n",
            "_C: drawn as '│   └── ', the nesting needs '    └── '",
        ),
        ("    _Root\n    ├── _A\n    └── _B\n            └── _C\n", "_C: drawn at a depth"),
        ("    _Root\n    ├── _A\n    ├── _A\n    └── _B\n        └── _C\n", "_A: drawn twice"),
    ],
)
def test_the_tree_check_catches(drawing: str, problem: str) -> None:
    problems = tree_problems(_fake(f"The tree::\n\n{drawing}\nText.\n"), _Root)
    assert any(p.startswith(problem) for p in problems), problems
