"""The flag table: every flag of mosquitto_pub, mosquitto_sub and mosquitto_rr is in it (their
``--help`` and man pages are the source), docs/cli.md shows it as the code has it, and the
parser takes every flag the table says it takes."""

from __future__ import annotations

import gzip
import re
import subprocess
from pathlib import Path

import pytest

from mqttkit.cli.flags import FLAGS, Status, UsageError, flags_for, markdown_table, parse
from tests.cli.tools import ROOT, mosquitto_tool

TOOLS = {"pub": "mosquitto_pub", "sub": "mosquitto_sub", "rr": "mosquitto_rr"}

# Flags that Mosquitto 2.0's man pages document, or its binaries accept, but `--help` does not
# list (each tried on mosquitto-clients 2.0.11).
MAN_ONLY = {
    "pub": {"-S", "--property", "-s", "--repeat", "--repeat-delay"},
    "sub": {"-S", "-M", "--retain-as-published", "--pretty", "--random-filter", "--property"},
    "rr": {"-S", "-s", "-I", "-M", "--pretty", "--property", "--retain-as-published"},
}
# Named in the man pages' prose, not flags the tools accept ("Unknown option").
NOT_FLAGS = {"--clean-session", "-option"}  # "-option value" lines of a config file
_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][A-Za-z0-9-]*)")


def help_flags(tool: str) -> set[str]:
    """The flags a tool's --help mentions."""
    shown = subprocess.run(
        [mosquitto_tool(TOOLS[tool]), "--help"], capture_output=True, timeout=10, check=False
    )
    text = shown.stdout.decode()
    # Only the usage block and the option list: not the prose ("-option", "mqtt(s)://...").
    flags = set(_FLAG.findall(text.split("See https://", 1)[0]))
    return {f for f in flags if not f.startswith("--") or len(f) > 3}


def man_flags(tool: str) -> set[str]:
    """The flags in the OPTIONS section of the tool's man page, if it is installed."""
    page = Path(f"/usr/share/man/man1/{TOOLS[tool]}.1.gz")
    if not page.exists():
        return set()
    text = gzip.decompress(page.read_bytes()).decode("utf-8", "replace")
    # Option entries are ".PP\n\fB\-x\fR, \fB\-\-long\fR": take the option lines.
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("\\fB\\-") and not line.endswith("\\&."):
            flags |= set(_FLAG.findall(line.replace("\\-", "-").replace("\\fB", " ")))
    return flags


@pytest.mark.parametrize("tool", TOOLS)
def test_every_mosquitto_flag_is_in_the_table(tool: str) -> None:
    ours = flags_for(tool)
    theirs = help_flags(tool) | MAN_ONLY[tool] | man_flags(tool)
    theirs -= NOT_FLAGS
    missing = sorted(f for f in theirs if f not in ours)
    assert not missing, f"mosquitto_{tool} flags missing from mqttkit.cli.flags: {missing}"
    # And the table does not claim a Mosquitto flag the tool does not have.
    claimed = {n for f in FLAGS if tool in f.tools for n in f.names if n != "--rap"}
    assert not sorted(claimed - theirs - {"--version"})


def test_the_docs_table_is_the_codes() -> None:
    docs = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    table = docs.split("<!-- flags:begin -->\n", 1)[1].split("<!-- flags:end -->", 1)[0]
    assert table == markdown_table(), (
        "docs/cli.md's flag table is out of date: paste the output of\n"
        '  python -c "from mqttkit.cli.flags import markdown_table; print(markdown_table())"'
    )


def _value(flag_dest: str) -> list[str]:
    samples = {
        "port": "1883",
        "keepalive": "60",
        "protocol": "5",
        "session_expiry": "60",
        "max_inflight": "10",
        "will_qos": "1",
        "qos": "1",
        "repeat": "2",
        "repeat_delay": "0.1",
        "count": "3",
        "timeout": "2",
        "random_filter": "50",
        "retain_handling": "1",
        "tls_version": "tlsv1.2",
        "bench_count": "10",
        "size": "16",
        "window": "10",
        "bench_timeout": "5",
    }
    return [samples.get(flag_dest, "value")]


@pytest.mark.parametrize("command", ["pub", "sub", "rr", "bench"])
def test_the_parser_takes_every_flag_of_the_table(command: str) -> None:
    for name, flag in flags_for(command).items():
        if flag.dest == "properties":
            args = [name, "connect", "user-property", "k", "v"]
        else:
            args = [name, *(_value(flag.dest) if flag.metavar else [])]
        parsed = parse(command, args)
        assert flag.dest in parsed.given, name


def test_each_unsupported_flag_has_its_reason() -> None:
    for flag in FLAGS:
        if flag.status in (Status.PENDING, Status.LEFT_OUT):
            assert flag.note, flag.names


def test_mosquitto_style_parsing() -> None:
    a = parse("pub", ["-m", "-x", "-t", "a", "-t", "b"])  # a value is the next argument
    assert (a.message, a.topic) == ("-x", "b")  # a flag given twice: the last one
    a = parse(
        "sub",
        [
            "-t",
            "a",
            "-t",
            "b",
            "-T",
            "c",
            "-D",
            "subscribe",
            "user-property",
            "k",
            "v",
            "-D",
            "subscribe",
            "subscription-identifier",
            "3",
        ],
    )
    assert a.topics == ["a", "b"]
    assert a.properties == [
        ("subscribe", "user-property", ("k", "v")),
        ("subscribe", "subscription-identifier", ("3",)),
    ]
    with pytest.raises(UsageError, match="Unknown option '-vq'"):
        parse("sub", ["-vq", "1"])  # no bundling, as in Mosquitto's tools
    with pytest.raises(UsageError, match="Unexpected argument"):
        parse("pub", ["stray"])
