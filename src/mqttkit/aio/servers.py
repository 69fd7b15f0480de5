"""Which server the next connection attempt goes to: a server list in turn, MQTT 5 redirection.

This module owns the choice of broker for each connection attempt of an :class:`Engine`
(``servers=[...]``): the servers are tried in turn, the next one at once after a failure, and
the reconnect backoff only once every server has failed in a row; a CONNACK or DISCONNECT with
reason 0x9C (use another server) or 0x9D (server moved) and a Server Reference sends the next
attempt to the server it names, at most :data:`MAX_REDIRECTS` times in a row and never back to
one this chain of redirections has visited. It does no I/O and reads no clock: the engine says
how each attempt ended.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from ..options import Server, parse_server_reference
from ..protocol.errors import (
    ConnectRefusedError,
    InvalidOptionError,
    MQTTError,
    ReasonCode,
    RedirectError,
    ServerDisconnectError,
)
from ..protocol.packets import MQTT_5

__all__ = ["MAX_REDIRECTS", "Next", "ServerRotation", "Step"]

_log = logging.getLogger("mqttkit")

#: Most redirections followed in a row (without a connection lasting in between).
MAX_REDIRECTS = 5

_REDIRECTS = (ReasonCode.USE_ANOTHER_SERVER, ReasonCode.SERVER_MOVED)


class Next(enum.Enum):
    """What the engine does after an attempt or a connection ended."""

    REDIRECT = "redirect"
    """Connect at once to the server a redirection named."""
    NEXT = "next"
    """Connect at once to the next server of the list (not every one has failed yet)."""
    BACKOFF = "backoff"
    """Wait the reconnect backoff first: every server has failed in a row."""
    STOP = "stop"
    """Stop reconnecting: every server refused for good (a permanent error from each)."""


@dataclass(frozen=True, slots=True)
class Step:
    """The decision after an attempt: what to do, and the error to report (None: none)."""

    next: Next
    error: MQTTError | None


class ServerRotation:
    """The servers of one client, in turn, with redirections (see the module docstring).

    Args:
        servers: the client's servers (at least one), in the order to try them.
        follow_redirects: follow MQTT 5 redirections (``follow_redirects`` option).
        log: where a followed redirection is logged (the client's log).
    """

    def __init__(
        self,
        servers: tuple[Server, ...],
        follow_redirects: bool = True,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] = _log,
    ) -> None:
        if not servers:
            raise ValueError("a ServerRotation needs at least one server")
        self.servers = list(servers)
        self.follow_redirects = follow_redirects
        self._log = log
        self.current = self.servers[0]
        """The server of the current (or last) attempt."""
        self._index = 0
        self._redirect: Server | None = None  # where the next attempt goes, once
        self._failures = 0  # attempts failed in a row (none lasting)
        self._permanent = 0  # of those, ended by a permanent error, in a row
        self._redirects = 0  # redirections followed in a row
        self._visited: set[Server] = set()  # servers of this chain of redirections

    def next_target(self) -> Server:
        """The server to connect to now (and remember it as :attr:`current`)."""
        if self._redirect is not None:
            self.current, self._redirect = self._redirect, None
        else:
            self.current = self.servers[self._index]
        return self.current

    def ended(self, error: MQTTError | None, lasted: bool) -> Step:
        """An attempt or a connection to :attr:`current` ended with ``error`` (None: closed
        without one); ``lasted``: it had been up long enough to count as a working connection
        (the failure counts start over)."""
        if lasted:
            self._failures = self._permanent = self._redirects = 0
            self._visited.clear()
        redirect = self._redirection(error)
        if isinstance(redirect, Server):
            return Step(Next.REDIRECT, None)
        report: MQTTError | None = redirect or error
        n = len(self.servers)
        self._failures += 1
        if getattr(report, "permanent", False):
            self._permanent += 1
            if self._permanent >= n:
                return Step(Next.STOP, report)
        else:
            self._permanent = 0
        self._index = (self._index + 1) % n
        return Step(Next.BACKOFF if self._failures % n == 0 else Next.NEXT, report)

    def _redirection(self, error: MQTTError | None) -> Server | RedirectError | None:
        """Follow the redirection ``error`` carries: the server it sets as the next target,
        the error to report when it cannot be followed, or None when it is no redirection."""
        if isinstance(error, ConnectRefusedError):
            if error.protocol_version != MQTT_5:
                return None
        elif not isinstance(error, ServerDisconnectError):
            return None
        if error.reason_code not in _REDIRECTS or not self.follow_redirects:
            return None
        reference = error.server_reference
        what = "server moved" if error.reason_code == ReasonCode.SERVER_MOVED else "use another"
        if not reference:
            return RedirectError(
                f"{self.current.url} redirected the client ({what} server) without a Server "
                "Reference: nowhere to go",
                error,
            )
        try:
            candidates = parse_server_reference(reference, self.current)
        except InvalidOptionError as exc:
            return RedirectError(f"{self.current.url} redirected the client: {exc}", error)
        visited = self._visited | {self.current}
        target = next((s for s in candidates if s not in visited), None)
        if target is None:
            return RedirectError(
                f"{self.current.url} redirected the client to {reference!r}, a server this "
                "chain of redirections has already visited (a redirection loop)",
                error,
            )
        if self._redirects >= MAX_REDIRECTS:
            return RedirectError(
                f"{self.current.url} redirected the client to {reference!r}: more than "
                f"{MAX_REDIRECTS} redirections in a row, not following",
                error,
            )
        self._redirects += 1
        self._visited.add(self.current)
        if error.reason_code == ReasonCode.SERVER_MOVED and self.current in self.servers:
            # Moved for good: the list names the new server from now on.
            self.servers[self.servers.index(self.current)] = target
        self._log.info("%s redirects to %s (%s server)", self.current.url, target.url, what)
        self._redirect = target
        return target
