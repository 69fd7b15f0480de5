"""The typed API under ``mypy --strict``: correct uses type-check clean, wrong ones are rejected.

``typed_usage/usage_ok.py`` holds the correct uses (every event with every listener arity,
decorators, each handle's result type, the asyncio client's results). Each snippet in
:data:`WRONG` is one mistake a user could make; its wrong line is marked ``# E: <code>`` and must
be the only line mypy reports an error on in that snippet, with that error code among its errors
(so the snippet fails for the reason it is there for, not for a typo in it).

One mypy run checks them all (mypy is slow to start), with a cache of its own in the test's
temporary directory (a cache shared between runs replays old errors under old file names).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from mypy import api as mypy_api

ROOT = Path(__file__).resolve().parents[1]
USAGE_OK = Path(__file__).resolve().parent / "typed_usage" / "usage_ok.py"

HEADER = """\
from __future__ import annotations

import mqttkit
import mqttkit.aio
from mqttkit import ConnAck, Granted, MQTTError, Publish, Server

"""

#: name -> the body of one wrong snippet (after HEADER); the wrong line ends in ``# E: <code>``.
WRONG: dict[str, str] = {
    "unknown_event": """
        def f(client: mqttkit.Client) -> None:
            client.on("mesage", lambda topic, payload: None)  # E: call-overload
    """,
    "unknown_event_decorator": """
        def f(client: mqttkit.Client) -> None:
            @client.once("connected")  # E: call-overload
            def on_connect(connack: ConnAck) -> None: ...
    """,
    "unknown_event_off": """
        def f(client: mqttkit.Client) -> None:
            client.off("closed", lambda: None)  # E: call-overload
    """,
    "message_listener_wrong_types": """
        def on_message(topic: bytes, payload: str) -> None: ...

        def f(client: mqttkit.Client) -> None:
            client.on("message", on_message)  # E: call-overload
    """,
    "message_listener_decorator_wrong_types": """
        def f(client: mqttkit.Client) -> None:
            @client.on("message")  # E: type-var
            def on_message(topic: str, payload: str) -> None: ...
    """,
    "message_listener_too_many_args": """
        def f(client: mqttkit.Client) -> None:
            client.on("message", lambda topic, payload, packet, extra: None)  # E: call-overload
    """,
    "connect_listener_too_many_args": """
        def on_connect(connack: ConnAck, server: Server, extra: int) -> None: ...

        def f(client: mqttkit.Client) -> None:
            client.on("connect", on_connect)  # E: call-overload
    """,
    "no_arg_event_with_argument": """
        def on_close(reason: int) -> None: ...

        def f(client: mqttkit.Client) -> None:
            client.once("close", on_close)  # E: call-overload
    """,
    "error_listener_too_narrow": """
        def on_error(err: ConnectionError) -> None: ...

        def f(client: mqttkit.Client) -> None:
            client.on("error", on_error)  # E: call-overload
    """,
    "route_listener_wrong_types": """
        def on_temp(topic: str, payload: float) -> None: ...

        def f(client: mqttkit.Client) -> None:
            client.on_message("sensors/+/temp", on_temp)  # E: type-var
    """,
    "decorator_keeps_the_signature": """
        def f(client: mqttkit.Client) -> None:
            @client.on("message")
            def on_message(topic: str, payload: bytes) -> None: ...

            on_message("t", "not bytes")  # E: arg-type
    """,
    "publish_result_is_no_list": """
        def f(client: mqttkit.Client) -> list[Granted]:
            return client.publish("t", b"x").result()  # E: return-value
    """,
    "subscribe_result_is_no_int": """
        def f(client: mqttkit.Client) -> int:
            return client.subscribe("t").result(5)  # E: return-value
    """,
    "unsubscribe_result_is_no_list": """
        def f(client: mqttkit.Client) -> list[Granted]:
            return client.unsubscribe("t").result()  # E: return-value
    """,
    "close_result_is_none": """
        def f(client: mqttkit.Client) -> int:
            return client.close().result()  # E: return-value
    """,
    "aio_publish_result": """
        async def f(client: mqttkit.aio.Client) -> str:
            return await client.publish("t", b"x")  # E: return-value
    """,
    "aio_subscribe_result": """
        async def f(client: mqttkit.aio.Client) -> int:
            return await client.subscribe("t")  # E: return-value
    """,
}

_ERROR = re.compile(
    r"^(?P<path>.+?):(?P<line>\d+): error: (?P<message>.*?)(?:  \[(?P<code>[\w-]+)\])?$"
)
_MARK = re.compile(r"# E: (?P<code>[\w-]+)\s*$")


@dataclass
class MypyRun:
    """One mypy run: its report, and its errors by file as ``(line, code)``."""

    report: str
    errors: dict[Path, list[tuple[int, str]]]


@pytest.fixture(scope="module")
def mypy_run(tmp_path_factory: pytest.TempPathFactory) -> MypyRun:
    """Run mypy --strict once over usage_ok.py and every WRONG snippet."""
    work = tmp_path_factory.mktemp("typing")
    config = work / "mypy.ini"
    # mypy_path comes first in mypy's search: the mqttkit of this checkout, whatever is installed.
    config.write_text(
        "[mypy]\nstrict = True\npython_version = 3.11\nwarn_unreachable = True\n"
        f"mypy_path = {ROOT / 'src'}\n"
    )
    files = [USAGE_OK]
    for name, body in WRONG.items():
        path = work / f"wrong_{name}.py"
        path.write_text(HEADER + textwrap.dedent(body).lstrip("\n"))
        files.append(path)
    stdout, stderr, _status = mypy_api.run(
        [
            "--config-file",
            str(config),
            "--cache-dir",
            str(work / "mypy-cache"),
            "--no-error-summary",
            "--show-error-codes",
            "--no-pretty",
            *map(str, files),
        ]
    )
    assert not stderr, stderr
    errors: dict[Path, list[tuple[int, str]]] = {path.resolve(): [] for path in files}
    for line in stdout.splitlines():
        match = _ERROR.match(line)
        if match is None:
            continue  # a note
        path = Path(match["path"]).resolve()
        assert path in errors, f"an error outside the checked files (in mqttkit?): {line}"
        errors[path].append((int(match["line"]), match["code"] or ""))
    return MypyRun(stdout, errors)


def test_correct_usage_type_checks_clean(mypy_run: MypyRun) -> None:
    assert mypy_run.errors[USAGE_OK.resolve()] == [], mypy_run.report


@pytest.mark.parametrize("name", sorted(WRONG))
def test_wrong_usage_is_rejected(name: str, mypy_run: MypyRun) -> None:
    path = next(p for p in mypy_run.errors if p.name == f"wrong_{name}.py")
    source = path.read_text()
    expected = [
        (number, mark["code"])
        for number, text in enumerate(source.splitlines(), start=1)
        if (mark := _MARK.search(text)) is not None
    ]
    assert len(expected) == 1, f"snippet {name!r} must mark exactly one line"
    [(line, code)] = expected
    found = mypy_run.errors[path]
    assert (line, code) in found, f"{name}:\n{source}\n{mypy_run.report}"
    assert {number for number, _ in found} == {line}, f"{name}:\n{source}\n{mypy_run.report}"
