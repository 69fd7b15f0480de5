"""The one I/O driver: runs a ClientSession over an asyncio transport.

Theory of operation
-------------------
:class:`Engine` owns the socket, the single keepalive timer and the reconnect loop; the
:class:`~mqttkit.protocol.session.ClientSession` owns every protocol decision. The engine feeds
the session what arrives, writes what the session wants sent, arms one timer at the session's
deadline, and turns session events into two kinds of output:

* **client events**, through ``listener.emit(name, *args)``: ``connect(connack)``,
  ``reconnect()``, ``close()``, ``offline()``, ``error(err)``, ``message(msg, ack)``,
  ``disconnect(packet)``, ``auth(packet)``, ``end()``, ``packetsend(packet)``,
  ``packetreceive(packet)``; and ``listener.stopped()`` when the engine will emit nothing more
  until started again;
* **operation results**, through the token each operation was given: ``token.resolve(value)``
  or ``token.reject(error)``.

Every method runs on the engine's event loop; the blocking front brings calls from other
threads there itself (:class:`mqttkit.sync.loop.Commands`), a batch at a time, each batch one
turn of the engine (:meth:`Engine.run_batch`). How and when output is written is described in
one place: the comment "The write path" in :class:`Engine`.

Event order, per connection attempt: ``reconnect`` (not before the first attempt), then either
``connect`` or ``error``; when an open connection ends: ``error`` (if it ended by an error),
``close``, and ``offline`` once per outage; a user ``close()`` gives ``close`` (if a connection
was open) and ``end``, never ``offline``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from collections.abc import Callable
from typing import Any, Protocol

from ..options import ClientOptions, Server
from ..protocol import session as s
from ..protocol.errors import (
    ClientClosedError,
    ConnectionLostError,
    ConnectRefusedError,
    ConnectTimeoutError,
    InvalidOptionError,
    MQTTConnectionError,
    MQTTError,
    ReasonCode,
    ServerDisconnectError,
    StoreError,
)
from ..protocol.logs import ClientLog, describe
from ..protocol.packets import (
    MQTT_3_1_1,
    MQTT_5,
    NO_PROPERTIES,
    Auth,
    ConnAck,
    Properties,
    Publish,
)
from ..protocol.store import MemoryStore
from .credentials import fresh_credentials, mark_refusal, refresh_credentials
from .servers import Next, ServerRotation
from .transport import make_ssl_context, map_connect_error, map_lost_error, open_transport

__all__ = ["Engine", "Listener", "Token", "backoff_delay"]


class Listener(Protocol):
    """Receives client events from the engine, on the engine's loop."""

    def emit(self, name: str, *args: Any) -> None:
        """A client event (see the module docstring for names and arguments)."""

    def message(self, message: Publish, ack: s.Ack | None) -> None:
        """An incoming message: ``emit("message", message, ack)``, as a direct call (per
        message, the hot path). Always followed by :meth:`events_done` once the batch of
        events it belongs to has been reported."""

    def stopped(self) -> None:
        """The engine is idle: no event comes until it is started again."""

    def events_done(self) -> None:
        """The end of a batch of events (those of one read, timer or batch of commands): a
        listener that hands events to another thread ships them now, once per batch."""


class Token(Protocol):
    """Completion of one operation (publish, subscribe, unsubscribe, close)."""

    def resolve(self, value: Any) -> None:
        """The operation succeeded with ``value``."""

    def reject(self, error: BaseException) -> None:
        """The operation failed with ``error``."""


def backoff_delay(attempt: int, period: float, maximum: float, rng: random.Random) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based).

    Exponential from ``period``, capped at ``maximum``, with "equal jitter": uniformly in
    [d/2, d], so that many clients cut at once do not come back in step.
    """
    delay = min(maximum, period * float(1 << min(attempt, 30)))
    jitter: float = rng.random()
    return delay / 2 + jitter * delay / 2


#: Longest an output waits to be written during a burst of calls that does not yield (see
#: "The write path" in Engine): long enough to batch a burst, short enough to keep the broker
#: busy.
WRITE_DELAY = 0.001

#: Jitter for reconnect delays (one generator for every engine in the process).
_RNG = random.Random()


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Transport(enum.Enum):
    """What a transport tells the engine (through :class:`_Protocol`)."""

    MADE = "made"
    DATA = "data"
    LOST = "lost"
    PAUSED = "paused"
    RESUMED = "resumed"


_MADE, _DATA, _LOST = _Transport.MADE, _Transport.DATA, _Transport.LOST
_PAUSED, _RESUMED = _Transport.PAUSED, _Transport.RESUMED


class _Protocol(asyncio.Protocol):
    """One connection's transport callbacks, handed to the engine's handler (given at
    creation) with the protocol itself, so that the engine can ignore a stale connection's.

    One handler, not one per callback: four bound methods would cost ~240 B per connection
    (10,000 idle connections in one process are a benchmark)."""

    __slots__ = ("_handler", "transport")

    def __init__(self, handler: Callable[[_Protocol, _Transport, Any], None]) -> None:
        self._handler = handler
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # Room for a few large messages before pause_writing() holds the session back.
        transport.set_write_buffer_limits(high=1 << 20)  # type: ignore[attr-defined]
        self._handler(self, _MADE, None)

    def data_received(self, data: bytes) -> None:
        self._handler(self, _DATA, data)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._handler(self, _LOST, exc)

    def pause_writing(self) -> None:
        self._handler(self, _PAUSED, None)

    def resume_writing(self) -> None:
        self._handler(self, _RESUMED, None)


# Engine states.
_IDLE, _RUNNING, _CLOSING, _CLOSED = "idle", "running", "closing", "closed"
#: The state of an engine that connects, is connected or reconnects (compare with ``is``).
RUNNING = _RUNNING


class Engine:
    """Drives one client connection (and its reconnections) on an asyncio loop.

    Args:
        options: parsed client options.
        listener: receives client events.
        loop: the loop to run on (the running loop by default).
        retry_first_connect: False: when the very first connection attempt fails, stop (as
            after a permanent refusal) instead of reconnecting; reconnect (per
            ``reconnect_period``) only once a CONNACK has accepted a connection.
    """

    def __init__(
        self,
        options: ClientOptions,
        listener: Listener,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        retry_first_connect: bool = True,
    ) -> None:
        self.options = options
        self.retry_first_connect = retry_first_connect
        self.listener = listener
        self.loop = loop or asyncio.get_running_loop()
        self.session = s.ClientSession(options.session_config())
        #: This client's log (logger ``mqttkit.client``, the client id in every record).
        self.log = ClientLog(self._client_id)
        #: The servers, in turn (``servers`` option), and MQTT 5 redirections.
        self.servers = ServerRotation(options.servers, options.follow_redirects, self.log)
        try:
            self._ssl = make_ssl_context(options)
        except (OSError, ValueError) as exc:
            raise InvalidOptionError(f"cannot set up TLS: {exc}") from exc
        self.state = _IDLE
        self.rng = _RNG  # shared: a Random() holds ~2.5 KB of state, per connection adds up
        self._protocol: _Protocol | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._close_drain: asyncio.Future[None] | None = None
        self._connack: asyncio.Future[ConnAck] | None = None
        self._lost: asyncio.Future[MQTTError | None] | None = None
        self._wake: asyncio.Future[None] | None = None  # set while waiting to reconnect
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._write_scheduled = False
        self._out_since = -1.0  # when the oldest output not yet written was added (-1: none)
        # Called once the session has nothing pending (flush(), graceful close).
        self._drain_waiters: list[Callable[[], None]] = []
        self._close_tokens: list[Token] = []
        # The reason code and properties of the DISCONNECT a close() sends (MQTT 5).
        self._disconnect_with: tuple[int, Properties] = (0, NO_PROPERTIES)
        self._batching = False  # in run_batch()
        self._dispatching = False  # in _process_events(), calling the listener
        self._stop_reconnecting = False
        self._reconnect_now = False
        # Packet tracing (PacketSent / PacketReceived from the session) serves two readers:
        # packetsend / packetreceive listeners (set_trace) and DEBUG records; it is on only
        # while one of them wants it (it costs a decode per outgoing PUBLISH).
        self._trace_events = False
        self._debug_packets = False
        # Stores that batch writes (begin/commit, e.g. SQLiteStore): a loop turn holds the
        # session's writes and commits them all before its bytes are written (one fsync per
        # turn, not per write). A MemoryStore needs neither.
        self._store_begins: list[Callable[[], None]] = []
        self._store_commits: list[Callable[[], None]] = []
        self._holding = False
        self._ever_connected = False  # a CONNACK accepted once (protocol_fallback)
        self._closed_before_connack = False  # the last attempt ended so
        for store in {
            id(st): st for st in (options.outgoing_store, options.incoming_store)
        }.values():
            begin, commit = getattr(store, "begin", None), getattr(store, "commit", None)
            if not isinstance(store, MemoryStore) and callable(begin) and callable(commit):
                self._store_begins.append(begin)
                self._store_commits.append(commit)
        #: Publish calls run so far (a front counting what is on its way reads it; only the
        #: loop thread writes it).
        self.publishes_taken = 0
        #: True while the first connection goes on to the next of several servers after one
        #: failed (the ``error`` event of that failure is not the end of connecting).
        self.trying_next_server = False
        #: Reconnection attempts since the last accepted connection (the one starting now,
        #: at a ``reconnect`` event), the backoff waited before it (0: none), and why the
        #: last connection or attempt ended (at a ``close`` event; None: it just closed).
        self.reconnect_attempt = 0
        self.reconnect_delay = 0.0
        self.last_error: MQTTError | None = None
        #: Why the engine stopped for good (set when it stops without close(); cleared by
        #: start()): every pending operation failed with it, and new ones fail with it at once.
        self.stop_error: MQTTError | None = None

    # -- state -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a connection is open and accepted by CONNACK."""
        return self.session.connected

    @property
    def server(self) -> Server:
        """The server of the current connection (or of the last attempt)."""
        return self.servers.current

    @property
    def active(self) -> bool:
        """True while the engine connects, is connected, reconnects or closes."""
        return self.state in (_RUNNING, _CLOSING)

    def _client_id(self) -> str:
        # The session's (an MQTT 5 server may have assigned it), else the one configured.
        return self.session.config.client_id or self.options.client_id

    # -- a batch of calls -------------------------------------------------------------------------

    def run_batch(self, run: Callable[[], None]) -> None:
        """Run ``run()``, a run of calls into this engine (the blocking front's commands from
        other threads), as one turn: the events of every call are dispatched, and what they
        queued is written, once at the end (a burst of publishes becomes one write; see "The
        write path"). ``run`` should not raise: each call's error is its own."""
        self._batching = True
        if self._store_begins:
            self._hold_stores()
        try:
            run()
        finally:
            self._batching = False
            try:
                self._end_turn()
            finally:
                if self._holding:
                    self._commit_stores()

    def _hold_stores(self) -> None:
        try:
            for begin in self._store_begins:
                begin()
        except Exception:  # e.g. closed under us: its writes will fail, one by one
            self.log.debug("a store cannot hold writes", exc_info=True)
        self._holding = True

    def _commit_stores(self) -> bool:
        """Make the writes held in this turn durable; False (and the connection dropped,
        nothing written) if a store failed: the bytes those writes record must not leave."""
        if not self._holding:
            return True
        self._holding = False
        try:
            for commit in self._store_commits:
                commit()
        except Exception as exc:
            self.log.exception("a store failed to commit; dropping the connection unwritten")
            self.session.data_to_send()  # discarded: they would get ahead of the store
            protocol = self._protocol
            if protocol is not None and protocol.transport is not None:
                protocol.transport.abort()
            error = StoreError(f"the store failed: {exc!r}")
            error.__cause__ = exc
            self.listener.emit("error", error)
            return False
        return True

    # -- operations (loop thread) ----------------------------------------------------------------

    def start(self) -> None:
        """Begin connecting (and reconnecting); a no-op while already running."""
        if self.state in (_RUNNING, _CLOSING):
            return
        if self.state == _CLOSED:
            # A closed client that connects again starts a new session object (which
            # reloads unfinished flows from the stores); store keys go on from the old one's.
            self.session = s.ClientSession(
                self.options.session_config(), new_key=self.session.new_key
            )
        self.state = _RUNNING
        self.stop_error = None
        self._stop_reconnecting = False
        self._disconnect_with = (0, NO_PROPERTIES)
        self._run_task = self.loop.create_task(self._run())

    # Two ways in for a publish, on purpose: publish() is the one entry (it takes this fast
    # path itself); publish_now() lets a front learn that a QoS 0 message is done before it
    # makes a token for it. The asyncio front returns one shared completed future for such
    # messages; making and resolving a future per message instead costs ~0.3 us, a sixth of
    # its publisher's CPU per QoS 0 message (BENCHMARKS.md, optimisation 13).
    def publish_now(self, request: s.PublishRequest) -> bool:
        """QoS 0 that can be written at once: put it in the output and return True (it is
        done); otherwise False, nothing changed (use :meth:`publish`)."""
        now = self.loop.time()
        if self.state != _RUNNING or not self.session.publish_now(request, now):
            return False
        # No completion event; with packet tracing, its PacketSent.
        self._added(now, self.session.config.trace_packets)
        return True

    def publish(self, request: s.PublishRequest, token: Token | None, key: int = 0) -> None:
        """Queue a publish; ``token`` resolves when its QoS flow completes.

        ``key``: nonzero when the publishing thread has already put the message in the
        outgoing store (:func:`~mqttkit.protocol.session.record_publish`)."""
        self.publishes_taken += 1
        if not request.qos and self.publish_now(request):
            if token is not None:
                token.resolve(0)
            return
        refusal = None if self.state is _RUNNING else self.refusal()
        if refusal is not None:
            if key and isinstance(self.session.config.outgoing_store, MemoryStore):
                self.session.config.outgoing_store.delete(key)
            # A durable store keeps a recorded message: the next run sends it (as with the
            # messages still unfinished when the client closed).
            if token is not None:
                token.reject(refusal)
            return
        now = self.loop.time()
        try:
            self.session.publish(request, now, token, key)
        except MQTTError as exc:
            if token is not None:
                token.reject(exc)
            return
        except Exception as exc:  # the store failed before the message could be recorded
            error = StoreError(f"the outgoing store failed: {exc!r}")
            error.__cause__ = exc
            if token is not None:
                token.reject(error)
            return
        self._added(now)

    def subscribe(self, request: s.SubscribeRequest, token: Token | None) -> None:
        """Queue a SUBSCRIBE; ``token`` resolves with the SubscribeCompleted event."""
        refusal = self.refusal()
        if refusal is not None:
            if token is not None:
                token.reject(refusal)
            return
        now = self.loop.time()
        self.session.subscribe(request, now, token)
        self._added(now)

    def unsubscribe(self, request: s.UnsubscribeRequest, token: Token | None) -> None:
        """Queue an UNSUBSCRIBE; ``token`` resolves with the UnsubscribeCompleted event."""
        refusal = self.refusal()
        if refusal is not None:
            if token is not None:
                token.reject(refusal)
            return
        now = self.loop.time()
        self.session.unsubscribe(request, now, token)
        self._added(now)

    def take_ticket(self) -> None:
        """Count a publish call that never came (see :attr:`publishes_taken`)."""
        self.publishes_taken += 1

    def refusal(self) -> MQTTError | None:
        """Why a new operation fails at once, or None: the client is closed, or stopped for
        good (a permanent refusal, or the last attempt failed with reconnecting off)."""
        if self.stop_error is not None and self.state in (_IDLE, _CLOSED):
            return self.stop_error  # the cause outlives a close() after it (asyncio: connect)
        if self.state in (_CLOSED, _CLOSING):
            return ClientClosedError("the client is closed; call connect() first")
        return None

    def reauthenticate(self, properties: Properties) -> None:
        """MQTT 5: start re-authentication (AUTH, reason 0x19) with these properties."""
        if not self.session.connected:
            self.log.warning("reauthenticate() while not connected: ignored")
            return
        now = self.loop.time()
        self.session.send_auth(now, ReasonCode.RE_AUTHENTICATE, properties)
        self._added(now)

    def _answer_auth(self, packet: Auth) -> None:
        step = self.options.authenticate
        if step is None or packet.reason_code != ReasonCode.CONTINUE_AUTHENTICATION:
            return  # success (0x00) needs no answer; without a step function, nothing to say
        try:
            answer = step(packet)
            if not isinstance(answer, Properties):
                raise TypeError(f"it returned {type(answer).__name__}, not Properties")
            self.session.send_auth(self.loop.time(), ReasonCode.CONTINUE_AUTHENTICATION, answer)
        except Exception as exc:
            error = MQTTConnectionError(f"the authenticate function failed: {exc!r}")
            error.__cause__ = exc
            self.session.abort(error, ReasonCode.NOT_AUTHORIZED)
            self.loop.call_soon(self._end_turn)  # its ConnectionClosing, after this batch

    def acknowledge(self, ack: s.Ack, reason_code: int = 0) -> None:
        """The application has the message of ``ack``. A QoS 2 receipt is durable in the
        incoming store when this returns (the next listener may run then), even in the middle
        of a turn that holds the store's writes.

        Also from a listener the engine is calling (``dispatch="inline"``): the
        acknowledgement is then written with the rest of the turn's output, after its events.
        """
        if reason_code and not ack.done:
            ack.reason_code = reason_code  # MQTT 5 (checked by the front)
        now = self.loop.time()
        self.session.acknowledge(ack, now)
        if ack.qos == 2:
            self._commit_held()
        if not self._dispatching:
            self._added(now)

    def _commit_held(self) -> None:
        # Make what this turn holds durable now, and go on holding for the rest of it.
        if self._holding and self._commit_stores():
            self._hold_stores()

    def flush(self, token: Token) -> None:
        """Resolve ``token`` once every operation issued so far has completed (QoS 0 written,
        QoS 1/2 acknowledged, SUBACK/UNSUBACK received)."""
        if not self.session.pending:
            token.resolve(None)
        else:
            self._drain_waiters.append(lambda: token.resolve(None))

    def set_trace(self, enabled: bool) -> None:
        """Emit packetsend / packetreceive events (costs a decode per outgoing PUBLISH)."""
        self._trace_events = enabled
        self._update_trace()

    def _update_trace(self) -> None:
        """Trace packets while listeners want the events or DEBUG records are wanted (read
        at each connection attempt and by set_trace(): switching DEBUG on takes effect from
        the next connection, and costs nothing while it is off)."""
        self._debug_packets = self.log.isEnabledFor(logging.DEBUG)
        self.session.config.trace_packets = self._trace_events or self._debug_packets

    def reconnect(self) -> None:
        """Reconnect now: drop the current connection (if any) or cut a backoff short."""
        if self.state == _RUNNING:
            self._wake_up()
            if self._protocol is not None and self._protocol.transport is not None:
                self._reconnect_now = True  # the end of this connection waits no backoff
                self._protocol.transport.close()
        else:
            self.start()

    def close(
        self,
        force: bool = False,
        token: Token | None = None,
        reason_code: int = 0,
        properties: Properties = NO_PROPERTIES,
    ) -> None:
        """Close the client: gracefully (wait for outstanding acks, bounded by
        ``close_timeout``, then DISCONNECT) or at once with ``force``. MQTT 5: the DISCONNECT
        carries ``reason_code`` and ``properties`` (checked by ``options.parse_disconnect``)."""
        if token is not None:
            self._close_tokens.append(token)
        if reason_code or properties:
            self._disconnect_with = (reason_code, properties)
        if self.state in (_IDLE, _CLOSED):
            self.state = _CLOSED
            if self.session.pending:  # queued before connect(), or after it stopped
                self.session.fail_pending(
                    ClientClosedError("the client was closed before the operation completed"),
                    forget=isinstance(self.session.config.outgoing_store, MemoryStore),
                )
                self._process_events()
            self._resolve_close_tokens()
            return
        if self._close_task is not None:
            if force and self._close_drain is not None and not self._close_drain.done():
                self._close_drain.set_result(None)  # stop waiting for acknowledgements
            return
        self._close_task = self.loop.create_task(self._close(force))

    # -- the connection loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0  # backoffs waited in a row
        offline_emitted = False
        first = True
        emit = self.listener.emit
        error: MQTTError | None = None
        servers = self.servers
        # A connection counts as up (and the failure counts start over) once it has lasted
        # this long: a server that accepts and then closes at once must not be hammered.
        steady = max(float(self.options.keepalive), 1.0)
        log = self.log
        while self.state == _RUNNING:
            server = servers.next_target()
            if not first:
                self.reconnect_attempt += 1
                log.info(
                    "reconnecting to %s (attempt %d, after %s)",
                    server.url,
                    self.reconnect_attempt,
                    f"{self.reconnect_delay:.3g} s" if self.reconnect_delay else "no delay",
                )
                emit("reconnect")
            first = False
            lasted = False
            connected = False
            try:
                await self._connect_once(server)
            except MQTTError as exc:
                error = exc
                if self._fall_back(error):
                    first = True  # not a reconnect: the same first attempt, at 3.1.1
                    continue
            except Exception as exc:  # a bug must not end reconnecting silently
                self.log.exception("unexpected error while connecting")
                error = map_connect_error(exc, server)
            else:
                connected = True
                offline_emitted = False
                self._ever_connected = True
                self.reconnect_attempt = 0
                connected_at = self.loop.time()
                assert self._lost is not None
                error = await self._lost
                lasted = self.loop.time() - connected_at >= steady
                if lasted:
                    attempt = 0
            if self.state != _RUNNING:
                return
            step = servers.ended(error, lasted)
            self.reconnect_delay = 0.0
            # Before the error event: a front waiting for the first connection waits on.
            self.trying_next_server = step.next is Next.NEXT and not self._ever_connected
            if step.error is not None:
                error = step.error
            going_on = self._reconnects_after(step.next)
            self._log_end(server, connected, error, step.next, going_on)
            if step.error is not None and not isinstance(error, ServerDisconnectError):
                emit("error", error)
            self.last_error = error
            emit("close")
            if not offline_emitted:
                offline_emitted = True
                emit("offline")
            if not going_on:
                break
            if step.next is Next.REDIRECT or step.next is Next.NEXT:
                continue  # the next server (or the redirection's) without a backoff
            if self._reconnect_now:  # reconnect() asked for it
                self._reconnect_now = False
                continue
            delay = backoff_delay(
                attempt, self.options.reconnect_period, self.options.reconnect_max, self.rng
            )
            attempt += 1
            self.reconnect_delay = delay
            self._wake = wake = self.loop.create_future()
            await asyncio.wait({wake}, timeout=delay)
            self._wake = None
        if self.state == _RUNNING:
            self._stop(error)

    def _reconnects_after(self, next_step: Next) -> bool:
        """Whether :meth:`_run` goes on connecting after a connection or attempt ended and
        the server rotation said ``next_step``."""
        if next_step is Next.REDIRECT:
            return True  # part of connecting: followed even with reconnecting off
        if next_step is Next.STOP:
            return False  # a permanent refusal from every server
        if next_step is Next.NEXT and not self._ever_connected:
            return True  # the first connection tries every server once, whatever the settings
        if self.options.reconnect_period <= 0 or self._stop_reconnecting:
            return False
        return self._ever_connected or self.retry_first_connect

    def _log_end(
        self,
        server: Server,
        connected: bool,
        error: MQTTError | None,
        next_step: Next,
        going_on: bool,
    ) -> None:
        """Log the end of a connection or of an attempt, with its cause: one record per end
        (INFO; WARNING when the client stops reconnecting). The ``error`` event that may
        follow is not logged again (by the engine or the fronts)."""
        log = self.log
        level = logging.INFO if going_on else logging.WARNING
        if not log.isEnabledFor(level):
            return
        if connected:
            what = f"disconnected from {server.url}"
            cause = str(error) if error is not None else "the connection was closed"
        else:
            what = f"connection to {server.url} failed"
            cause = str(error) if error is not None else "closed before CONNACK"
        if not going_on:
            then = "not reconnecting"
        elif next_step is Next.REDIRECT:
            then = "following the redirection"
        elif next_step is Next.NEXT:
            then = "trying the next server"
        else:
            then = "reconnecting"
        log.log(level, "%s: %s; %s", what, cause, then)

    def _fall_back(self, error: MQTTError) -> bool:
        """With protocol_fallback: the server refused MQTT 5, so speak 3.1.1 from now on."""
        if not self.options.protocol_fallback or self.session.config.protocol_level != MQTT_5:
            return False
        refused = isinstance(error, ConnectRefusedError) and error.unsupported_version
        closed = self._closed_before_connack and not self._ever_connected
        if not (refused or closed):
            return False
        self.log.warning(
            "%s refused MQTT 5 (%s): falling back to MQTT 3.1.1", self.server.url, error
        )
        self.session.fall_back(MQTT_3_1_1)
        self.options.protocol_version = MQTT_3_1_1
        self._process_events()  # what needed MQTT 5 has failed
        return True

    def _stop(self, error: MQTTError | None) -> None:
        """Stopped for good without close(): every pending operation fails at once with the
        cause, and so does every new one until start() (a durable store keeps the messages
        for the next run)."""
        self.state = _IDLE
        if error is None:
            error = ConnectionLostError("the connection ended and reconnecting is off")
        self.stop_error = error
        forget = isinstance(self.session.config.outgoing_store, MemoryStore)
        self.session.fail_pending(error, forget=forget)
        self._process_events()
        self.listener.stopped()

    async def _connect_once(self, server: Server) -> None:
        loop = self.loop
        self._update_trace()
        self._connack = loop.create_future()
        self._lost = loop.create_future()
        stage = "sending"
        timeout = self.options.connect_timeout
        waiting_for = "the username / password function or before_connect did not return"
        try:
            async with asyncio.timeout(timeout):
                if fresh_credentials(self.options):  # what this attempt's CONNECT carries
                    await refresh_credentials(self.options, server, self.session.config)
                waiting_for = "the TCP/TLS connection or the CONNECT write did not complete"
                try:
                    await open_transport(self.options, server, self._new_protocol, self._ssl)
                except MQTTError:
                    raise
                except Exception as exc:  # anything else the loop raises while connecting
                    raise map_connect_error(exc, server) from exc
                stage = "receiving"
                await self._connack
        except TimeoutError:
            await self._drop_transport()
            what = waiting_for if stage == "sending" else "no CONNACK arrived"
            raise ConnectTimeoutError(
                f"{what} within connect_timeout={timeout:g} s ({server.url})", stage
            ) from None
        except MQTTError as exc:
            await self._drop_transport()
            mark_refusal(exc, self.options)  # fresh credentials: a refusal is retried
            raise

    async def _drop_transport(self) -> None:
        """Close a half-open connection and wait (bounded) until it is gone."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            return
        protocol.transport.abort()
        lost = self._lost
        if lost is not None and not lost.done():
            try:
                await asyncio.wait_for(asyncio.shield(lost), 5.0)
            except TimeoutError:  # pragma: no cover - abort() always calls connection_lost
                self.log.warning("transport did not report its end after abort()")
                self._on_connection_lost(protocol, None)

    async def _close(self, force: bool) -> None:
        if not force and self.session.pending and self.state == _RUNNING:
            # Connected, connecting or between attempts: what is queued is sent, and its
            # acknowledgements awaited, within close_timeout. A backoff is cut short.
            self._wake_up()
            waiter: asyncio.Future[None] = self.loop.create_future()
            self._drain_waiters.append(lambda: _set_once(waiter))
            self._close_drain = waiter
            done, _ = await asyncio.wait({waiter}, timeout=self.options.close_timeout)
            self._close_drain = None
            if not done:
                self.log.warning(
                    "close: %d operations still unfinished after close_timeout=%g s",
                    self.session.pending,
                    self.options.close_timeout,
                )
        self.state = _CLOSING
        self._wake_up()
        had_connection = self._protocol is not None
        if self.session.connected:
            now = self.loop.time()
            self.session.disconnect(now, *self._disconnect_with)
            self._added(now)
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            lost = self._lost
            if lost is not None and not lost.done():
                try:
                    await asyncio.wait_for(asyncio.shield(lost), 2.0)
                except TimeoutError:
                    protocol.transport.abort()
        if self._run_task is not None and not self._run_task.done():
            self._run_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._run_task
        forget = isinstance(self.session.config.outgoing_store, MemoryStore)
        self.session.fail_pending(
            ClientClosedError("the client was closed before the operation completed"),
            forget=forget,
        )
        self._process_events()
        self._cancel_timer()
        self.state = _CLOSED
        if had_connection:
            self.log.info("disconnected from %s: close() was called", self.server.url)
            self.listener.emit("close")
        else:
            self.log.info("closed (not connected)")
        self.listener.emit("end")
        self._close_task = None
        self._resolve_close_tokens()
        self.listener.stopped()

    def _wake_up(self) -> None:
        """Cut a reconnect backoff short."""
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _resolve_close_tokens(self) -> None:
        tokens, self._close_tokens = self._close_tokens, []
        for token in tokens:
            token.resolve(None)

    # -- transport callbacks ---------------------------------------------------------------------

    def _new_protocol(self) -> _Protocol:
        return _Protocol(self._on_transport)

    def _on_transport(self, protocol: _Protocol, what: _Transport, arg: Any) -> None:
        if what is _DATA:  # most frequent first
            self._on_data(protocol, arg)
        elif what is _MADE:
            self._on_connection_made(protocol)
        elif what is _LOST:
            self._on_connection_lost(protocol, arg)
        else:
            self._on_writable(protocol, what is _RESUMED)

    def _on_connection_made(self, protocol: _Protocol) -> None:
        if self.state != _RUNNING or self._protocol is not None:
            assert protocol.transport is not None
            protocol.transport.abort()
            return
        self._protocol = protocol
        self.session.connection_made(self.loop.time())
        self._end_turn()

    def _on_data(self, protocol: _Protocol, data: bytes) -> None:
        if protocol is not self._protocol:
            return
        if self._store_begins:
            self._hold_stores()
            try:
                self.session.receive_data(data, self.loop.time())
                self._end_turn()
            finally:
                self._commit_stores()
            return
        self.session.receive_data(data, self.loop.time())
        self._end_turn()

    def _on_writable(self, protocol: _Protocol, writable: bool) -> None:
        if protocol is not self._protocol:
            return
        if not writable:
            self.session.pause_writing()
            return
        now = self.loop.time()
        self.session.resume_writing(now)
        self._added(now)

    def _on_connection_lost(self, protocol: _Protocol, exc: BaseException | None) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        session = self.session
        session.connection_lost(self.loop.time(), map_lost_error(exc))
        self._process_events()
        self._cancel_timer()
        error = session.error  # the first cause: ours (protocol, keepalive) or the transport's
        connack = self._connack
        self._closed_before_connack = (
            connack is not None
            and not connack.done()
            and (error is None or isinstance(error, ConnectionLostError))
        )
        if connack is not None and not connack.done():
            connack.set_exception(
                error
                or ConnectionLostError(f"{self.server.url} closed the connection before CONNACK")
            )
            connack.exception()  # mark retrieved; _connect_once reads it
        lost = self._lost
        if lost is not None and not lost.done():
            lost.set_result(error)

    # -- the write path ----------------------------------------------------------------------------
    #
    # Every byte the engine writes leaves through _write(), by these rules:
    #
    # * Turns. The engine works in turns: a read (_on_data), the timer, a new connection, a
    #   batch of calls from other threads (run_batch). A turn dispatches its events, then
    #   writes its output, once, at its end (_end_turn): a burst of calls becomes one write.
    #   A call made outside a turn (an asyncio task calling publish()) dispatches its events at
    #   once (its token may complete right away). The first such call of a loop iteration has
    #   its output written at once (a request/response waits for no loop iteration: a QoS 1
    #   round trip took 0.072-0.081 ms with the write deferred, 0.056-0.058 ms without); the
    #   calls after it until the end of the iteration (call_soon) share one write.
    # * Write-through. In the middle of a burst that does not yield (a publishing loop without
    #   ``await``, a large batch of commands, many clients publishing in turn), output is
    #   written at once when a whole batch (about 256 KB, session.output_full) waits or the
    #   oldest of it has waited WRITE_DELAY (_added): the burst streams out while the rest is
    #   encoded, and the broker starts on it, instead of all of it leaving at the end.
    # * Stores first. A turn holds the writes of stores that batch them (begin/commit, e.g.
    #   SQLiteStore: one commit per turn, not per write); _write() commits them before any
    #   byte leaves, and if a commit fails, nothing is written and the connection is dropped
    #   (_commit_stores): the bytes would get ahead of what the store holds.
    # * A listener the engine is calling (dispatch="inline") may acknowledge: that output waits
    #   for the write that ends the turn, after the events (acknowledge()).
    # * A session that closes the connection (ConnectionClosing) has its last output (an MQTT 5
    #   DISCONNECT) written through _write() too, then the transport is closed.
    # * QoS 0 written at once (publish_now) adds output but no completion event.

    def _added(self, now: float, events: bool = True) -> None:
        """An operation at ``now`` may have added output (and, if ``events``, events)."""
        since = self._out_since
        if self.session.output_full or (since >= 0.0 and now - since >= WRITE_DELAY):
            self._write()
        elif since < 0.0:
            self._out_since = now
        if self._batching:
            return  # run_batch() ends the turn
        if events:
            self._process_events()
        if not self._write_scheduled:
            self._write()  # the first output of this iteration: at once (see "The write path")
            self._write_scheduled = True
            self.loop.call_soon(self._write)

    def _end_turn(self) -> None:
        self._process_events()
        self._write()

    def _write(self) -> bool:
        """Write what the session has to send (the only place that writes). False if a store
        failed to commit: nothing was written and the connection is being dropped."""
        self._write_scheduled = False
        self._out_since = -1.0
        if self._holding and not self._commit_stores():
            return False
        session = self.session
        protocol = self._protocol
        transport = protocol.transport if protocol is not None else None
        # Write in batches of about OUT_LIMIT bytes: the session keeps the rest of a burst
        # queued until the transport has taken the previous batch (or paused us).
        for _ in range(1000):
            data = session.data_to_send()
            if not data or transport is None:
                break
            transport.write(data)
            if not session.wants_to_send:
                break
            session.pump(self.loop.time())
            self._process_events()
        self._arm_timer()
        return True

    def _arm_timer(self) -> None:
        deadline = self.session.next_deadline()
        if deadline is None:
            self._cancel_timer()
        elif self._timer is None or deadline < self._timer_at:
            self._cancel_timer()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        self.session.handle_timer(self.loop.time())
        self._end_turn()

    def _process_events(self) -> None:
        events = self.session.events_received()
        if not events:
            if self._drain_waiters and not self.session.pending:
                self._drained()
            return
        emit = self.listener.emit
        deliver = self.listener.message
        message_received = s.MessageReceived
        # Set while the listener runs: an inline listener's acknowledge() leaves the writing
        # to the end of the turn (see "The write path").
        dispatching = self._dispatching
        self._dispatching = True
        try:
            for event in events:
                # Most frequent first: this runs per message.
                if type(event) is message_received:
                    deliver(event.message, event.ack)
                elif isinstance(event, s.PublishCompleted):
                    token: Token = event.token
                    if event.error is not None:
                        token.reject(event.error)
                    elif event.downgraded:
                        token.resolve(s.PublishResult(event.reason_code, qos=1))
                    else:
                        token.resolve(event.reason_code)
                elif isinstance(event, s.SubscribeCompleted | s.UnsubscribeCompleted):
                    if event.token is None:  # our own resubscribe after a lost session
                        if event.error is not None:
                            self.log.warning("resubscribing failed: %s", event.error)
                            emit("error", event.error)
                    elif event.error is None:
                        event.token.resolve(event)
                    else:
                        event.token.reject(event.error)
                elif isinstance(event, s.Connected):
                    if not self.options.client_id:
                        # MQTT 5 Assigned Client Identifier: every later connection uses it.
                        self.options.client_id = self.session.config.client_id
                    if self._connack is not None and not self._connack.done():
                        self._connack.set_result(event.connack)
                    self.log.info(
                        "connected to %s (session present: %s)",
                        self.server.url,
                        "yes" if event.connack.session_present else "no",
                    )
                    emit("connect", event.connack, self.server)
                elif isinstance(event, s.ConnectionRefused):
                    if self._connack is not None and not self._connack.done():
                        self._connack.set_exception(event.error)
                elif isinstance(event, s.ConnectionClosing):
                    # The session's last output (an MQTT 5 DISCONNECT), then the end.
                    protocol = self._protocol
                    if self._write() and protocol is not None and protocol.transport is not None:
                        protocol.transport.close()
                elif isinstance(event, s.MessageDropped):
                    self.log.warning(
                        "dropped a message to %r: the outgoing queue was full (%s)",
                        event.message.topic,
                        event.policy,
                    )
                    emit("dropped", event.message)
                elif isinstance(event, s.ServerDisconnected):
                    emit("disconnect", event.packet)
                elif isinstance(event, s.AuthReceived):
                    emit("auth", event.packet)
                    self._answer_auth(event.packet)
                elif isinstance(event, s.PacketSent):
                    if self._debug_packets:
                        self.log.debug("sending %s", describe(event.packet))
                    if self._trace_events:
                        emit("packetsend", event.packet)
                elif isinstance(event, s.PacketReceived):
                    if self._debug_packets:
                        self.log.debug("received %s", describe(event.packet))
                    if self._trace_events:
                        emit("packetreceive", event.packet)
        finally:
            self._dispatching = dispatching
        self.listener.events_done()
        if self._drain_waiters and not self.session.pending:
            self._drained()

    def _drained(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            waiter()
