"""Fixtures of the fault tests, and the report: one line per scenario, printed when it finishes
(visible with ``-s``), attached to the test as the ``fault_result`` property, and repeated in
pytest's terminal summary; with ``MQTTKIT_FAULT_REPORT=<path>`` also written there as JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import SCALE, Children, Result

_RESULTS: list[Result] = []


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    """Start publisher.py / subscriber.py runs in ``tmp_path``; leftovers are killed at the end."""
    started = Children(tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def report(record_property: Callable[[str, object], None]) -> Callable[[Result], None]:
    """Report a scenario's result (call it before asserting the pass criteria)."""

    def add(result: Result) -> None:
        _RESULTS.append(result)
        record_property("fault_result", result.as_dict())
        print(f"\nfault {result.line()}", flush=True)

    return add


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _RESULTS:
        return
    terminalreporter.section(f"fault tests ({SCALE.name} scale, seed {SCALE.seed})")
    for result in _RESULTS:
        terminalreporter.write_line(result.line())
    path = os.environ.get("MQTTKIT_FAULT_REPORT")
    if path:
        Path(path).write_text(
            json.dumps([r.as_dict() for r in _RESULTS], indent=2) + "\n", encoding="utf-8"
        )
        terminalreporter.write_line(f"written to {path}")
