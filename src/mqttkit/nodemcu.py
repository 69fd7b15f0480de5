"""The NodeMCU firmware's ``mqtt`` module (seed 001), in Python.

A thin facade over :class:`mqttkit.Client` (the blocking front): it owns only the NodeMCU calling
conventions (positional arguments with optional callbacks, 0/1 flags, true/false results,
callbacks that receive the client first, one callback per event), the firmware's rules around
the first connection (no reconnect after it failed) and the mapping of connection failures to
the firmware's reason constants. Every protocol decision stays in the core; this module opens no
socket and starts no thread of its own.

::

    from mqttkit import nodemcu as mqtt

    m = mqtt.Client("clientid", 120, "user", "password")
    m.lwt("/lwt", "offline", 0, 0)
    m.on("connect", lambda client: print("connected"))
    m.on("offline", lambda client: print("offline"))
    m.on("message", lambda client, topic, data: print(topic, data))
    m.connect("127.0.0.1", 1883, 0, 0,
              lambda client: client.subscribe("/topic", 0),
              lambda client, reason: print("failed reason:", reason))

Theory of operation
-------------------
Each :meth:`Client.connect` builds one core client (a :class:`_Connection` here) and
:meth:`Client.close` closes it; a later ``connect`` builds a new one. Callbacks run on that core
client's dispatch thread, in order, never on the caller's thread and never on the loop thread.

``autoreconnect=1`` reconnects only once a first CONNACK accepted the connection, as the
firmware does: the core client is built with ``retry_first_connect=False``, so the engine itself
stops after a failed first attempt and reconnects a connection lost at any time after its
CONNACK: a rule, not a race with the dispatch thread. The core client's ``on_stopped`` hook
records, on the loop thread and before the last events reach the dispatch thread, that the
engine stopped, so that :meth:`Client.connect` may start anew.

Differences from the firmware are listed in ``docs/nodemcu.md``; the main one: each call's own
callback fires for that call (the firmware keeps only the last one given).
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

from ._api import filters_from, subscriptions_from
from .options import parse_options
from .protocol import session as s
from .protocol.codec import encode_varint
from .protocol.errors import (
    ConnectionLostError,
    ConnectRefusedError,
    ConnectTimeoutError,
    HostNotFoundError,
    InvalidArgumentError,
    MQTTError,
    ProtocolError,
    TLSError,
)
from .protocol.packets import MQTT_3_1_1, Publish, Will
from .protocol.store import Store
from .sync.client import Client as _SyncClient
from .sync.events import arity
from .sync.handle import Handle

__all__ = [
    "CONNACK_ACCEPTED",
    "CONNACK_REFUSED_BAD_USER_OR_PASS",
    "CONNACK_REFUSED_ID_REJECTED",
    "CONNACK_REFUSED_NOT_AUTHORIZED",
    "CONNACK_REFUSED_PROTOCOL_VER",
    "CONNACK_REFUSED_SERVER_UNAVAILABLE",
    "CONNECT_TIMEOUT",
    "CONN_FAIL_DNS",
    "CONN_FAIL_NOT_A_CONNACK_MSG",
    "CONN_FAIL_SERVER_NOT_FOUND",
    "CONN_FAIL_TIMEOUT_RECEIVING",
    "CONN_FAIL_TIMEOUT_SENDING",
    "DEFAULT_MAX_MESSAGE_LENGTH",
    "EVENTS",
    "RECONNECT_PERIOD",
    "Client",
    "reason_for",
]

log = logging.getLogger("mqttkit.nodemcu")

#: There is no broker listening at the specified IP address and port.
CONN_FAIL_SERVER_NOT_FOUND: Final = -5
#: The response from the broker was not a CONNACK as required by the protocol.
CONN_FAIL_NOT_A_CONNACK_MSG: Final = -4
#: DNS lookup failed.
CONN_FAIL_DNS: Final = -3
#: Timeout waiting for a CONNACK from the broker.
CONN_FAIL_TIMEOUT_RECEIVING: Final = -2
#: Timeout trying to send the CONNECT message (the TCP connection did not complete).
CONN_FAIL_TIMEOUT_SENDING: Final = -1
#: No errors (never passed to a failure callback).
CONNACK_ACCEPTED: Final = 0
#: The broker is not a 3.1.1 MQTT broker.
CONNACK_REFUSED_PROTOCOL_VER: Final = 1
#: The client id was rejected by the broker.
CONNACK_REFUSED_ID_REJECTED: Final = 2
#: The server is unavailable.
CONNACK_REFUSED_SERVER_UNAVAILABLE: Final = 3
#: The broker refused the user name or password.
CONNACK_REFUSED_BAD_USER_OR_PASS: Final = 4
#: The user is not authorized.
CONNACK_REFUSED_NOT_AUTHORIZED: Final = 5

#: Events ``on()`` accepts: the seed's three and those of later NodeMCU versions.
EVENTS: Final = frozenset(
    {"connect", "message", "offline", "connfail", "suback", "unsuback", "puback", "overflow"}
)

#: The firmware's default for ``max_message_length`` (also used when 0 is given).
DEFAULT_MAX_MESSAGE_LENGTH: Final = 1024

#: Default seconds a connection attempt (TCP, TLS, CONNECT, CONNACK) may take; ``connect()``
#: reads it at each call, and its ``connect_timeout`` keyword overrides it for one connection.
CONNECT_TIMEOUT: float = 10.0

#: Seconds before the first reconnect attempt with ``autoreconnect=1``; later attempts back off
#: exponentially (with jitter) up to a minute.
RECONNECT_PERIOD: Final = 1.0

#: Seconds ``connect()`` waits for the previous connection of the same client to finish closing
#: (its DISCONNECT must reach the broker before the new CONNECT with the same client id).
_PREVIOUS_CLOSE_WAIT: Final = 5.0


def reason_for(error: BaseException) -> int:
    """The NodeMCU reason constant for a failed first connection.

    Args:
        error: the cause, as reported by the core client's ``error`` event.

    Returns:
        ``CONN_FAIL_*`` (negative) or the CONNACK return code (1 to 5).

    TLS failures (untrusted certificate, wrong host name) have no constant of their own; like
    the firmware, which reports a failed TLS connection through the same path as a refused TCP
    connection, they are :data:`CONN_FAIL_SERVER_NOT_FOUND`, with the precise cause in
    :attr:`Client.error`.
    """
    if isinstance(error, ConnectRefusedError):
        return error.reason_code
    if isinstance(error, HostNotFoundError):
        return CONN_FAIL_DNS
    if isinstance(error, ConnectTimeoutError):
        if error.stage == "sending":
            return CONN_FAIL_TIMEOUT_SENDING
        return CONN_FAIL_TIMEOUT_RECEIVING
    if isinstance(error, ProtocolError | ConnectionLostError):
        # The broker answered with something other than CONNACK, or hung up instead.
        return CONN_FAIL_NOT_A_CONNACK_MSG
    if isinstance(error, TLSError):
        return CONN_FAIL_SERVER_NOT_FOUND
    return CONN_FAIL_SERVER_NOT_FOUND  # refused, unreachable, any other socket error


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise InvalidArgumentError(f"{name} must be 0 or 1 (or a bool), not {value!r}")


def _callable_or_none(value: Any, name: str) -> Callable[..., Any] | None:
    """The callback, taking only the leading arguments it accepts (a Lua function ignores
    extra arguments: ``function(client)`` is a valid ``message`` callback); None stays None."""
    if value is None:
        return None
    if not callable(value):
        raise InvalidArgumentError(f"{name} must be a function, not {type(value).__name__}")
    fn: Callable[..., Any] = value
    n = arity(fn)
    if n is None:
        return fn

    def leading(*args: Any) -> Any:
        return fn(*args[:n])

    return leading


def _packet_size(topic_length: int, payload_length: int, qos: int) -> int:
    # The whole MQTT message as the firmware counts it: fixed header (type byte and Remaining
    # Length), topic, packet id (QoS 1/2), payload.
    remaining = 2 + topic_length + (2 if qos else 0) + payload_length
    return 1 + len(encode_varint(min(remaining, 268_435_455))) + remaining


def _truncated_length(topic_length: int, qos: int, limit: int) -> int:
    """The longest payload whose whole message fits in ``limit`` bytes (0 if none does)."""
    overhead = _packet_size(topic_length, 0, qos)
    keep = max(0, limit - overhead)
    # A shorter payload may need a shorter Remaining Length: at most 3 steps down.
    for _ in range(4):
        if keep == 0 or _packet_size(topic_length, keep, qos) <= limit:
            break
        keep -= 1
    return keep


class _Connection:
    """One ``connect()`` of a :class:`Client`: its core client and where it stands.

    Args:
        make_client: builds the core client, given the ``on_stopped`` hook to pass it.

    Fields are changed under the owning client's lock (``engine_stopped`` excepted: the loop
    thread sets it).
    """

    __slots__ = (
        "autoreconnect",
        "client",
        "close_handle",
        "closed",
        "connected",
        "connected_once",
        "engine_stopped",
        "on_connected",
        "on_failed",
        "stopped",
    )

    def __init__(
        self,
        make_client: Callable[[Callable[[], None]], _SyncClient],
        autoreconnect: bool,
        on_connected: Callable[..., Any] | None,
        on_failed: Callable[..., Any] | None,
    ) -> None:
        self.autoreconnect = autoreconnect
        self.on_connected = on_connected
        self.on_failed = on_failed
        #: Between an accepted CONNACK and the end of that connection.
        self.connected = False
        #: A CONNACK accepted this connection at least once.
        self.connected_once = False
        #: ``close()`` was called: every later event of this connection is ignored.
        self.closed = False
        #: The connection ended for good (failed first attempt, or lost without autoreconnect).
        self.stopped = False
        #: The engine stopped (set on the loop thread: the core client's ``on_stopped``).
        self.engine_stopped = False
        self.close_handle: Handle[None] | None = None
        self.client = make_client(self._engine_stopped)

    def _engine_stopped(self) -> None:
        # On the loop thread, before the connection's last events reach the dispatch thread:
        # a callback there that calls connect() sees this connection over.
        self.engine_stopped = True

    @property
    def busy(self) -> bool:
        """Connecting, connected or reconnecting."""
        return not (self.closed or self.stopped or self.engine_stopped)


class Client:
    """``mqtt.Client(clientid, keepalive[, username, password, cleansession,
    max_message_length])``.

    Args:
        clientid: the client identifier ("" lets mqttkit pick a random one).
        keepalive: keepalive seconds (0 disables keepalive).
        username: user name, or None.
        password: password (str or bytes), or None; needs a user name.
        cleansession: 0/1 (default 1).
        max_message_length: the largest incoming message (the whole MQTT packet, in bytes)
            delivered through ``message``; larger ones go, truncated to this size, to
            ``overflow``. Default (and 0): 1024.

    Raises:
        InvalidArgumentError: an argument of the wrong type or range (the firmware raises a Lua
            error there too).
    """

    def __init__(
        self,
        clientid: str,
        keepalive: int,
        username: str | None = None,
        password: str | bytes | None = None,
        cleansession: int | bool = 1,
        max_message_length: int = DEFAULT_MAX_MESSAGE_LENGTH,
        *,
        incoming_store: Store | None = None,
        outgoing_store: Store | None = None,
    ) -> None:
        if not isinstance(clientid, str):
            raise InvalidArgumentError(f"clientid must be a string, not {type(clientid).__name__}")
        if (
            isinstance(max_message_length, bool)
            or not isinstance(max_message_length, int)
            or max_message_length < 0
        ):
            raise InvalidArgumentError(
                f"max_message_length must be an int >= 0 (0: default), not {max_message_length!r}"
            )
        # The core validates the rest now (keepalive range, password without user name...),
        # so that a bad argument raises here and not at connect().
        options = parse_options(
            client_id=clientid,
            keepalive=keepalive,
            username=username,
            password=password,
            clean=_flag(cleansession, "cleansession"),
            protocol_version=MQTT_3_1_1,
            incoming_store=incoming_store,
            outgoing_store=outgoing_store,
        )
        #: The QoS 1/2 stores every connection of this client uses (mqttkit extension): a
        #: durable pair (``mqttkit.stores.SQLiteStore.pair``) with ``cleansession=0`` lets a
        #: restarted program finish what the previous one started.
        self.incoming_store: Store = options.incoming_store
        self.outgoing_store: Store = options.outgoing_store
        self.clientid: str = options.client_id
        self.keepalive: int = options.keepalive
        self.username = options.username
        self._password = options.password
        self.cleansession: bool = options.clean
        self.max_message_length: int = max_message_length or DEFAULT_MAX_MESSAGE_LENGTH
        #: The cause of the last failed first connection (an :class:`~mqttkit.MQTTError`:
        #: :class:`~mqttkit.TLSError`, :class:`~mqttkit.ConnectTimeoutError`...), else None.
        self.error: MQTTError | None = None
        self._will: Will | None = None
        self._callbacks: dict[str, Callable[..., Any]] = {}
        self._lock = threading.Lock()
        self._conn: _Connection | None = None

    def __repr__(self) -> str:
        conn = self._conn
        state = "connected" if conn is not None and conn.connected else "not connected"
        return f"<mqttkit.nodemcu.Client {self.clientid!r} {state}>"

    @property
    def connected(self) -> bool:
        """True between an accepted CONNACK and the end of that connection (or ``close()``)."""
        conn = self._conn
        return conn is not None and conn.connected and not conn.closed

    # -- setup ---------------------------------------------------------------------------

    def lwt(self, topic: str, message: str | bytes, qos: int = 0, retain: int | bool = 0) -> None:
        """``lwt(topic, message[, qos[, retain]])``: the Last Will and Testament.

        The broker publishes it if the connection ends without ``close()`` (a lost link, a
        missed keepalive). It takes effect at the next :meth:`connect`.

        Raises:
            InvalidArgumentError: bad topic name, payload type, QoS or retain flag.
        """
        will = {"topic": topic, "payload": message, "qos": qos, "retain": _flag(retain, "retain")}
        self._will = parse_options(will=will).will

    def on(self, event: str, function: Callable[..., Any] | None) -> None:
        """Register the callback of ``event`` (one per event: a new one replaces the old).

        Events: ``connect(client)``, ``message(client, topic, data)``, ``offline(client)``,
        ``connfail(client, reason)``, ``suback(client)``, ``unsuback(client)``,
        ``puback(client)``, ``overflow(client, topic, data)``. ``None`` removes the callback.

        Raises:
            InvalidArgumentError: an unknown event name, or a callback that is not callable.
        """
        if event not in EVENTS:
            raise InvalidArgumentError(
                f"unknown event {event!r}; use one of {', '.join(sorted(EVENTS))}"
            )
        fn = _callable_or_none(function, "callback")
        if fn is None:
            self._callbacks.pop(event, None)
        else:
            self._callbacks[event] = fn

    def _fire(self, event: str, *args: Any) -> None:
        fn = self._callbacks.get(event)
        if fn is not None:
            _call(fn, f"{event} callback", self, *args)

    # -- connection ---------------------------------------------------------------------------

    def connect(
        self,
        host: str,
        *args: Any,
        on_connected: Callable[..., Any] | None = None,
        on_failed: Callable[..., Any] | None = None,
        cafile: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float | None = None,
    ) -> bool:
        """``connect(host[, port[, secure[, autoreconnect]]][, on_connected[, on_failed]])``.

        Args:
            host: host name or IP address.
            args: ``port`` (1883), ``secure`` (0/1 or bool: TLS, certificate and host name
                verified), ``autoreconnect`` (0/1), then ``on_connected(client)`` and
                ``on_failed(client, reason)``; trailing numbers may be left out before the
                functions, as in Lua.
            on_connected, on_failed: the same callbacks by name (not both ways at once).
            cafile: CA bundle for ``secure=1`` (default: the system's trust store).
            ssl_context: a ready ``ssl.SSLContext`` for ``secure=1`` (overrides ``cafile``).
            connect_timeout: seconds for TCP, TLS, CONNECT and CONNACK together (default
                :data:`CONNECT_TIMEOUT`, 10 s).

        Returns:
            True when the connection attempt started; False if this client is already
            connecting, connected or reconnecting.

        Raises:
            InvalidArgumentError: a bad argument (port, flags, callbacks, TLS files...).

        If the very first connection fails, no reconnect is attempted (also with
        ``autoreconnect=1``): ``on_failed`` and the ``connfail`` event get the reason
        (``CONN_FAIL_*`` or the CONNACK code) and :attr:`error` the precise cause.
        ``on_connected`` fires once, for the first accepted CONNACK; the ``connect`` event
        fires for every one, reconnections included. After :meth:`close`, a new ``connect()``
        first waits (at most 5 s) until the previous connection's DISCONNECT is out.
        """
        # As in Lua: the numbers, any of them may be left out (or None/nil), then the
        # functions; a None followed only by functions (or Nones) holds a function's place.
        split = len(args)
        for i, arg in enumerate(args):
            if callable(arg) or (arg is None and all(a is None or callable(a) for a in args[i:])):
                split = i
                break
        numbers, functions = args[:split], args[split:]
        if any(not (f is None or callable(f)) for f in functions):
            raise InvalidArgumentError("port/secure/autoreconnect go before the callbacks")
        if len(numbers) > 3 or len(functions) > 2:
            raise InvalidArgumentError(
                "connect(host[, port[, secure[, autoreconnect]]][, on_connected[, on_failed]])"
            )
        numbers += (None,) * (3 - len(numbers))
        port = 1883 if numbers[0] is None else numbers[0]
        secure = numbers[1] is not None and _flag(numbers[1], "secure")
        autoreconnect = numbers[2] is not None and _flag(numbers[2], "autoreconnect")
        if (on_connected is not None and functions[:1] not in ((), (None,))) or (
            on_failed is not None and functions[1:2] not in ((), (None,))
        ):
            raise InvalidArgumentError(
                "on_connected / on_failed given both by position and by name"
            )
        on_connected = _callable_or_none(
            on_connected if on_connected is not None else (functions[0] if functions else None),
            "on_connected",
        )
        on_failed = _callable_or_none(
            on_failed if on_failed is not None else (functions[1] if len(functions) > 1 else None),
            "on_failed",
        )
        settings: dict[str, Any] = {
            "host": host,
            "port": port,
            "transport": "tls" if secure else "tcp",
            "client_id": self.clientid,
            "keepalive": self.keepalive,
            "clean": self.cleansession,
            "username": self.username,
            "password": self._password,
            "will": self._will,
            "protocol_version": MQTT_3_1_1,
            "connect_timeout": CONNECT_TIMEOUT if connect_timeout is None else connect_timeout,
            # Never after a failed first attempt: see retry_first_connect below.
            "reconnect_period": RECONNECT_PERIOD if autoreconnect else 0,
            "cafile": cafile,
            "ssl_context": ssl_context,
            "incoming_store": self.incoming_store,
            "outgoing_store": self.outgoing_store,
        }
        parse_options(**settings)  # a bad argument raises in any state
        with self._lock:
            previous = self._conn
            if previous is not None and previous.busy:
                return False
        if previous is not None and previous.close_handle is not None:
            # Its DISCONNECT goes out before our CONNECT (same client id: a takeover would
            # make the broker publish the Last Will).
            previous.close_handle.wait(_PREVIOUS_CLOSE_WAIT)
        conn = _Connection(
            lambda on_stopped: _SyncClient(
                **settings, retry_first_connect=False, on_stopped=on_stopped
            ),
            autoreconnect,
            on_connected,
            on_failed,
        )
        client = conn.client
        client.on("connect", lambda _connack: self._on_connect(conn))
        client.on("error", lambda error: self._on_error(conn, error))
        client.on("offline", lambda: self._on_offline(conn))
        client.on("message", lambda topic, payload, packet: self._on_message(conn, packet))
        with self._lock:
            if self._conn is not previous:  # another thread connected meanwhile
                return False
            self._conn = conn
            self.error = None
        client.connect()
        return True

    # Event handlers, on the connection's dispatch thread.

    def _on_connect(self, conn: _Connection) -> None:
        with self._lock:
            if conn.closed:
                return
            conn.connected = True
            first = not conn.connected_once
            conn.connected_once = True
        if first and conn.on_connected is not None:
            _call(conn.on_connected, "on_connected callback", self)
        self._fire("connect")

    def _on_error(self, conn: _Connection, error: MQTTError) -> None:
        with self._lock:
            if conn.closed or conn.connected_once or conn.stopped:
                return  # a failed reconnect, or a lost link: the firmware reports neither
            # The engine stops by itself: it reconnects only after a first CONNACK.
            conn.stopped = True
            self.error = error
        reason = reason_for(error)
        if conn.on_failed is not None:
            _call(conn.on_failed, "on_failed callback", self, reason)
        self._fire("connfail", reason)

    def _on_offline(self, conn: _Connection) -> None:
        with self._lock:
            if conn.closed or not conn.connected_once:
                return
            conn.connected = False
            if not conn.autoreconnect:
                conn.stopped = True
        self._fire("offline")

    def _on_message(self, conn: _Connection, packet: Publish) -> None:
        if conn.closed:
            return
        topic, payload = packet.topic, packet.payload
        topic_length = len(topic.encode("utf-8"))
        limit = self.max_message_length
        if _packet_size(topic_length, len(payload), packet.qos) > limit:
            keep = _truncated_length(topic_length, packet.qos, limit)
            self._fire("overflow", topic, payload[:keep])
        else:
            self._fire("message", topic, payload)

    def close(self) -> bool:
        """Close the connection gracefully: what was published before is sent, its
        acknowledgements are awaited (at most ``close_timeout``, 10 s; also while a reconnect
        is under way), then DISCONNECT (so the broker discards the Last Will). The firmware
        drops its queue instead; here an accepted message is not dropped. No ``offline``
        follows. Non-blocking: safe from a callback.

        Returns:
            True if a connection was open or under way (connecting, reconnecting); False if
            there was nothing to close (never connected, closed already, or stopped after a
            failure or a lost link without autoreconnect).
        """
        with self._lock:
            conn = self._conn
            if conn is None or not conn.busy:
                return False
            conn.closed = True
            conn.connected = False
            conn.close_handle = conn.client.close()
        return True

    # -- operations ---------------------------------------------------------------------------

    def _live(self) -> _SyncClient | None:
        with self._lock:
            conn = self._conn
            if conn is None or conn.closed or not conn.connected:
                return None
            return conn.client

    def publish(
        self,
        topic: str,
        payload: str | bytes,
        qos: int = 0,
        retain: int | bool = 0,
        function: Callable[..., Any] | None = None,
    ) -> bool:
        """``publish(topic, payload, qos, retain[, function])``.

        ``function(client)`` fires once this message's flow completes (QoS 0: once written,
        QoS 1: PUBACK, QoS 2: PUBCOMP), followed by the ``puback`` event.

        Returns:
            True if the message was queued for sending; False when not connected.

        Raises:
            InvalidArgumentError: bad topic, payload type, QoS, retain flag or callback (also
                when not connected).
        """
        retain_flag = _flag(retain, "retain")
        fn = _callable_or_none(function, "callback")
        s.prepare_publish(topic, payload, qos, retain_flag)  # raises on bad arguments
        client = self._live()
        if client is None:
            return False

        def done(err: BaseException | None) -> None:
            if err is not None:
                log.info("publish to %r failed: %s", topic, err)
                return
            if fn is not None:
                _call(fn, "publish callback", self)
            self._fire("puback")

        client.publish(topic, payload, qos=qos, retain=retain_flag, callback=done)
        return True

    def subscribe(
        self,
        topic: str | Mapping[str, int],
        qos: int | Callable[..., Any] | None = None,
        function: Callable[..., Any] | None = None,
    ) -> bool:
        """``subscribe(topic[, qos[, function]])`` or ``subscribe({topic: qos, ...}[, function])``.

        ``qos`` defaults to 0. ``function(client)`` fires once, when the SUBACK of this call
        arrives (one SUBSCRIBE for the whole table), followed by the ``suback`` event.

        Returns:
            True if the SUBSCRIBE was queued; False when not connected.

        Raises:
            InvalidArgumentError: bad topic filter, QoS or callback (also when not connected).
        """
        if isinstance(topic, Mapping):
            if function is None and (qos is None or callable(qos)):
                function, qos = qos, None
            elif qos is not None:
                raise InvalidArgumentError(
                    "subscribe({topic: qos, ...}[, function]): the table gives the QoS"
                )
            topics: Any = dict(topic)
            level = 0
        else:
            if callable(qos):
                raise InvalidArgumentError(
                    "subscribe(topic[, qos[, function]]): the function goes after the qos"
                )
            topics = topic
            level = 0 if qos is None else qos
        fn = _callable_or_none(function, "callback")
        s.prepare_subscribe(subscriptions_from(topics, level))  # raises on bad arguments
        client = self._live()
        if client is None:
            return False

        def done(err: BaseException | None, _granted: object = None) -> None:
            if err is not None:
                log.info("subscribe failed: %s", err)
                return
            if fn is not None:
                _call(fn, "subscribe callback", self)
            self._fire("suback")

        client.subscribe(topics, qos=level, callback=done)
        return True

    def unsubscribe(
        self,
        topic: str | Mapping[str, Any],
        function: Callable[..., Any] | None = None,
    ) -> bool:
        """``unsubscribe(topic[, function])`` or ``unsubscribe({topic: anything, ...}[,
        function])``.

        ``function(client)`` fires once, when the UNSUBACK of this call arrives, followed by
        the ``unsuback`` event.

        Returns:
            True if the UNSUBSCRIBE was queued; False when not connected.

        Raises:
            InvalidArgumentError: bad topic filter or callback (also when not connected).
        """
        filters = filters_from(topic)
        fn = _callable_or_none(function, "callback")
        s.prepare_unsubscribe(filters)  # raises on bad arguments
        client = self._live()
        if client is None:
            return False

        def done(err: BaseException | None) -> None:
            if err is not None:
                log.info("unsubscribe failed: %s", err)
                return
            if fn is not None:
                _call(fn, "unsubscribe callback", self)
            self._fire("unsuback")

        client.unsubscribe(list(filters), callback=done)
        return True


def _call(fn: Callable[..., Any], what: str, *args: Any) -> None:
    """Run a user callback; what it raises is logged and does not stop the client."""
    try:
        fn(*args)
    except Exception:
        log.exception("%s raised", what)
