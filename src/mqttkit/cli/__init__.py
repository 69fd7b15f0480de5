"""``mqttkit pub|sub|rr|bench``: Mosquitto's command-line tools, flag for flag.

    mqttkit sub -h broker -t 'sensors/#' -v
    mqttkit pub -h broker -t sensors/t1 -m 21.5 -q 1
    mqttkit rr -h broker -t service/req -e service/resp -m ping
    mqttkit bench -h broker -n 20000 -q 1

Also ``python -m mqttkit ...``. ``pub``, ``sub`` and ``rr`` take every flag of mosquitto_pub,
mosquitto_sub and mosquitto_rr 2.0 with the same meaning, output and exit statuses (the few left
out are refused with the reason: :mod:`mqttkit.cli.flags`, docs/cli.md). The package: ``flags``
(the table and the parser), ``connection`` (what the connection flags mean), ``properties``
(``-D``), ``output`` (``-v``, ``-F``, JSON), ``exits`` (statuses and messages), ``ending``, and
one module per command. It sits on the blocking client (:mod:`mqttkit.sync`) and below nothing
but ``python -m mqttkit``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from importlib import metadata
from types import FrameType
from typing import Any, Final

from .. import compiled
from ..protocol.errors import InvalidArgumentError, MQTTError
from . import bench, pub, rr, sub
from .exits import EXIT_CONN_LOST, EXIT_ERROR, EXIT_TIMEOUT, EXIT_TLS, describe
from .flags import COMMANDS, UsageError, help_text, parse

__all__ = ["EXIT_CONN_LOST", "EXIT_ERROR", "EXIT_TIMEOUT", "EXIT_TLS", "main", "version"]

_RUN: Final[dict[str, Callable[[Any, Any], int]]] = {
    "pub": pub.run,
    "sub": sub.run,
    "rr": rr.run,
    "bench": bench.run,
}


def version() -> str:
    """The installed mqttkit's version, and "(compiled)" for the mypyc build of the core."""
    try:
        number = metadata.version("mqttkit")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree only
        number = "unknown"
    return f"{number} (compiled)" if compiled else number


class _Terminated(BaseException):
    """SIGTERM: end as on Ctrl-C (Mosquitto's tools exit with status 0 on both)."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mqttkit COMMAND FLAGS...`` (``argv`` default ``sys.argv[1:]``); the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    out, err = sys.stdout, sys.stderr
    if not args or args[0] in ("--help", "help"):
        (out if args else err).write(help_text(None))
        return 0 if args else EXIT_ERROR
    if args[0] == "--version":
        out.write(f"mqttkit {version()}\n")
        return 0
    command = args[0]
    if command not in COMMANDS:
        err.write(
            f"Error: unknown command {command!r}: use pub, sub, rr or bench (mqttkit --help).\n"
        )
        return EXIT_ERROR
    try:
        a = parse(command, args[1:])
    except UsageError as exc:
        _usage_error(err, command, exc)
        return EXIT_ERROR
    if a.help:
        out.write(help_text(command))
        return 0
    if a.version:
        python = sys.version.split()[0]
        out.write(f"mqttkit {command} version {version()} running on Python {python}.\n")
        return 0
    # The command reports every failure itself, in Mosquitto's words; without this the client's
    # own warnings would reach stderr through logging's last-resort handler as well.
    library_log = logging.getLogger("mqttkit")
    if not library_log.handlers:
        library_log.addHandler(logging.NullHandler())
    previous = None
    if _on_main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _RUN[command](a, err)
    except UsageError as exc:
        _usage_error(err, command, exc)
        return EXIT_ERROR
    except InvalidArgumentError as exc:
        # Refused by the client before anything was sent (a bad option value, a message over
        # the broker's Maximum Packet Size...).
        if not a.quiet:
            err.write(f"Error: {exc}\n")
        return EXIT_ERROR
    except MQTTError as exc:
        status, lines = describe(exc, command)
        if not a.quiet:
            err.write("".join(line + "\n" for line in lines))
        return status
    except OSError as exc:
        if not a.quiet:
            err.write(f"Error: {exc.strerror or exc}\n")
        return EXIT_ERROR
    except (KeyboardInterrupt, _Terminated):
        return 0  # as Mosquitto's tools on SIGINT / SIGTERM
    finally:
        err.flush()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _usage_error(err: Any, command: str, exc: UsageError) -> None:
    err.write(f"Error: {exc}\n\nUse 'mqttkit {command} --help' to see usage.\n")


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
