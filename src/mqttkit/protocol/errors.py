"""The exception tree and the MQTT reason codes.

This module owns every exception mqttkit raises or reports, and the reason-code tables of
MQTT 3.1.1 (CONNACK return codes, SUBACK granted QoS / failure) and MQTT 5.0 (section 2.4).
It imports nothing but the standard library and is imported by every other layer.

The tree::

    MQTTError                          every mqttkit exception
    ├── InvalidArgumentError           misuse of a sending method (also a ValueError)
    │   ├── InvalidTopicError          bad topic name or topic filter
    │   ├── InvalidQoSError            QoS not 0, 1 or 2
    │   ├── PayloadTypeError           payload not str/bytes/bytearray/memoryview (also a TypeError)
    │   ├── PacketTooLargeError        a packet over the peer's Maximum Packet Size / 268,435,455
    │   └── InvalidOptionError         a bad client option or URL
    │       └── UnknownOptionError     an option name mqttkit does not know (also a TypeError)
    ├── ProtocolError                  the peer broke the protocol; the connection is closed
    │   └── MalformedPacketError       bytes that do not decode to a valid packet
    ├── MQTTConnectionError            the connection could not be made or was lost
    │   ├── HostNotFoundError          the host name does not resolve (DNS)
    │   ├── ServerNotFoundError        nothing accepts connections there (refused, unreachable)
    │   ├── TLSError                   TLS handshake or certificate verification failed
    │   │   └── CertificateVerifyError the broker's certificate does not verify (permanent)
    │   ├── ConnectTimeoutError        no CONNACK within the connect timeout (also a TimeoutError)
    │   ├── ConnectRefusedError        CONNACK with a failure code (``reason_code``)
    │   ├── KeepaliveTimeoutError      no answer to PINGREQ in time: the link is dead
    │   ├── ConnectionLostError        the transport closed under us
    │   ├── ServerDisconnectError      MQTT 5 DISCONNECT from the server (``reason_code``)
    │   ├── RedirectError              a redirection (0x9C, 0x9D) that cannot be followed
    │   └── ProxyError                 the proxy did not open a tunnel to the broker
    │       ├── ProxyUnreachableError  nothing accepts connections at the proxy's address
    │       └── ProxyAuthError         the proxy refused the proxy credentials (or needs some)
    ├── OperationError                 the broker refused an operation (``reason_code``)
    │   ├── PublishError               PUBACK / PUBREC with a failure reason code
    │   ├── SubscribeError             SUBACK with a failure for every requested filter
    │   └── UnsubscribeError           UNSUBACK with a failure reason code
    ├── QueueFullError                 the offline queue is at ``max_queued`` (policy ``reject``)
    ├── StoreError                     the outgoing/incoming store failed (disk full...)
    ├── ClientClosedError              the client was closed before the operation completed
    └── OperationTimeoutError          ``wait(timeout)`` ran out (also a TimeoutError)

``MQTTConnectionError`` is also the builtin ``ConnectionError``, so ``except ConnectionError``
catches every connection failure. No class here is named like a builtin: ``ConnectionRefusedError``
is the deprecated alias of :class:`ConnectRefusedError` (the same class), kept so that code written
before the rename still imports; it shadows ``builtins.ConnectionRefusedError`` (a refused TCP
connect, which mqttkit reports as :class:`ServerNotFoundError`), so new code uses the new name.
tests/test_architecture.py checks that this drawing matches the classes.

Receiving never raises: a bad packet from the broker becomes a :class:`ProtocolError` stored on
the session, an ``error`` event and a clean disconnect. Sending raises at once, with a message that
says what to fix.
"""

from __future__ import annotations

import builtins
import enum

__all__ = [
    "CONNACK_V3_MESSAGES",
    "CertificateVerifyError",
    "ClientClosedError",
    "ConnectRefusedError",
    "ConnectTimeoutError",
    "ConnectionLostError",
    "ConnectionRefusedError",
    "HostNotFoundError",
    "InvalidArgumentError",
    "InvalidOptionError",
    "InvalidQoSError",
    "InvalidTopicError",
    "KeepaliveTimeoutError",
    "MQTTConnectionError",
    "MQTTError",
    "MalformedPacketError",
    "OperationError",
    "OperationTimeoutError",
    "PacketTooLargeError",
    "PayloadTypeError",
    "ProtocolError",
    "ProxyAuthError",
    "ProxyError",
    "ProxyUnreachableError",
    "PublishError",
    "QueueFullError",
    "ReasonCode",
    "RedirectError",
    "ServerDisconnectError",
    "ServerNotFoundError",
    "StoreError",
    "SubscribeError",
    "TLSError",
    "UnknownOptionError",
    "UnsubscribeError",
    "reason_name",
]


class ReasonCode(enum.IntEnum):
    """MQTT 5.0 reason codes (section 2.4). Values below 0x80 are success."""

    SUCCESS = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL_MESSAGE = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


#: MQTT 3.1 / 3.1.1 CONNACK return codes (section 3.2.2.3), by value.
CONNACK_V3_MESSAGES: dict[int, str] = {
    0: "connection accepted",
    1: "connection refused: unacceptable protocol version",
    2: "connection refused: identifier rejected",
    3: "connection refused: server unavailable",
    4: "connection refused: bad user name or password",
    5: "connection refused: not authorized",
}


def reason_name(code: int, protocol_version: int = 5) -> str:
    """A readable name for a reason code (CONNACK return code for MQTT 3.x)."""
    if protocol_version < 5:
        return CONNACK_V3_MESSAGES.get(code, f"unknown return code {code}")
    try:
        return ReasonCode(code).name.lower().replace("_", " ")
    except ValueError:
        return f"unknown reason code 0x{code:02X}"


class MQTTError(Exception):
    """Base class of every mqttkit exception."""


class InvalidArgumentError(MQTTError, ValueError):
    """A sending method or constructor was called with an argument it cannot accept."""


class InvalidTopicError(InvalidArgumentError):
    """A topic name or topic filter breaks the rules of MQTT section 4.7."""


class InvalidQoSError(InvalidArgumentError):
    """QoS must be 0, 1 or 2."""


class PayloadTypeError(InvalidArgumentError, TypeError):
    """A payload must be str (sent as UTF-8), bytes, bytearray or memoryview."""


class PacketTooLargeError(InvalidArgumentError):
    """The packet would exceed the peer's Maximum Packet Size or the protocol limit."""


class InvalidOptionError(InvalidArgumentError):
    """A client option or URL is not valid."""


class UnknownOptionError(InvalidOptionError, TypeError):
    """An option name that mqttkit does not know (a typo, most often)."""


class ProtocolError(MQTTError):
    """The peer broke the MQTT protocol; the connection is closed.

    Attributes:
        reason_code: the MQTT 5 reason code sent in our DISCONNECT (0x81 or 0x82 mostly).
    """

    def __init__(self, message: str, reason_code: int = ReasonCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class MalformedPacketError(ProtocolError):
    """Bytes that do not decode to a valid MQTT packet."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ReasonCode.MALFORMED_PACKET)


class MQTTConnectionError(MQTTError, builtins.ConnectionError):
    """The connection to the broker could not be made, or it was lost.

    Attributes:
        permanent: True when trying again with the same settings cannot succeed (a refused
            login or protocol version, a certificate that does not verify): the client stops
            reconnecting and fails every pending operation with this error.
    """

    permanent: bool = False


class HostNotFoundError(MQTTConnectionError):
    """The broker's host name could not be resolved."""


class ServerNotFoundError(MQTTConnectionError):
    """Nothing accepts connections at the broker's address (refused, or unreachable)."""


class TLSError(MQTTConnectionError):
    """The TLS handshake failed: certificate not trusted, host name mismatch, protocol error."""


class CertificateVerifyError(TLSError):
    """The broker's certificate did not verify (untrusted, expired, wrong host name): permanent,
    since trying again finds the same certificate."""

    permanent = True


class ConnectTimeoutError(MQTTConnectionError, builtins.TimeoutError):
    """The broker did not complete the connection (TCP, TLS, CONNACK) within the timeout.

    Attributes:
        stage: ``"sending"`` when the transport or the CONNECT write did not complete,
            ``"receiving"`` when CONNECT was sent but no CONNACK came back.
    """

    def __init__(self, message: str, stage: str = "receiving") -> None:
        super().__init__(message)
        self.stage = stage


class ConnectRefusedError(MQTTConnectionError):
    """The broker answered CONNECT with a CONNACK that refuses the connection.

    Not a refused TCP connection (``ECONNREFUSED``: nothing listens there), which is a
    :class:`ServerNotFoundError`. Formerly ``ConnectionRefusedError``, which remains as a
    deprecated alias.

    Attributes:
        reason_code: the CONNACK return code (MQTT 3.x: 1-5) or reason code (MQTT 5: >= 0x80).
        protocol_version: the protocol level that code belongs to.
        server_reference: MQTT 5: the Server Reference property (with reason 0x9C "use another
            server" or 0x9D "server moved": where to connect instead), or None.
    """

    def __init__(
        self,
        reason_code: int,
        protocol_version: int,
        message: str = "",
        server_reference: str | None = None,
    ) -> None:
        text = message or reason_name(reason_code, protocol_version)
        where = f"; server reference {server_reference!r}" if server_reference else ""
        super().__init__(f"{text} (code {reason_code}{where})")
        self.reason_code = reason_code
        self.protocol_version = protocol_version
        self.server_reference = server_reference

    @property
    def unsupported_version(self) -> bool:
        """True when the server refused the protocol version (MQTT 3.x return code 1, MQTT 5
        reason code 0x84)."""
        if self.protocol_version < 5:
            return self.reason_code == 1
        return self.reason_code == ReasonCode.UNSUPPORTED_PROTOCOL_VERSION

    #: True when the client fetches its credentials afresh before every attempt (a password
    #: or username function, a ``before_connect`` hook): a refusal of the credentials is then
    #: not permanent, since the next attempt sends new ones (a token that expired meanwhile).
    fresh_credentials: bool = False

    @property
    def bad_credentials(self) -> bool:
        """True when the server refused the user name or password, or is not authorizing
        this client (MQTT 3.x return codes 4 and 5, MQTT 5 reason codes 0x86 and 0x87)."""
        if self.protocol_version < 5:
            return self.reason_code in (4, 5)
        return self.reason_code in (ReasonCode.BAD_USER_NAME_OR_PASSWORD, ReasonCode.NOT_AUTHORIZED)

    @property
    def permanent(self) -> bool:  # type: ignore[override]
        """True when retrying with the same settings cannot succeed (bad credentials...)."""
        if self.fresh_credentials and self.bad_credentials:
            return False
        if self.protocol_version < 5:
            return self.reason_code in (1, 2, 4, 5)
        return self.reason_code not in (
            ReasonCode.UNSPECIFIED_ERROR,
            ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR,
            ReasonCode.SERVER_UNAVAILABLE,
            ReasonCode.SERVER_BUSY,
            ReasonCode.QUOTA_EXCEEDED,
            ReasonCode.CONNECTION_RATE_EXCEEDED,
            ReasonCode.USE_ANOTHER_SERVER,
            ReasonCode.SERVER_MOVED,
        )


#: Deprecated alias of :class:`ConnectRefusedError` (the same class), for code written before
#: the rename. It shadows ``builtins.ConnectionRefusedError`` wherever it is imported by name;
#: use :class:`ConnectRefusedError`.
ConnectionRefusedError = ConnectRefusedError


class KeepaliveTimeoutError(MQTTConnectionError):
    """The broker did not answer a PINGREQ in time; the link is considered dead."""


class ConnectionLostError(MQTTConnectionError):
    """The transport was closed or reset while connected."""


class ServerDisconnectError(MQTTConnectionError):
    """The server sent DISCONNECT (MQTT 5) with the given reason code.

    Attributes:
        reason_code: the DISCONNECT's reason code.
        server_reference: its Server Reference property (with reason 0x9C or 0x9D: where to
            connect instead), or None.
    """

    def __init__(
        self, reason_code: int, message: str = "", server_reference: str | None = None
    ) -> None:
        where = f"; server reference {server_reference!r}" if server_reference else ""
        super().__init__(
            f"server sent DISCONNECT: {message or reason_name(reason_code)} "
            f"(reason code 0x{reason_code:02X}{where})"
        )
        self.reason_code = reason_code
        self.server_reference = server_reference


class RedirectError(MQTTConnectionError):
    """The server redirected the client (MQTT 5 reason 0x9C "use another server" or 0x9D
    "server moved", in CONNACK or DISCONNECT) and the client cannot follow: no or no usable
    Server Reference, a redirection loop, or too many in a row. The client goes on with its
    next server. (With ``follow_redirects=False`` nothing is followed and the refusal itself is
    reported.)

    Attributes:
        reason_code: 0x9C or 0x9D.
        server_reference: the Server Reference it carried, or None.
        refusal: the CONNACK refusal or server DISCONNECT that carried it.
    """

    def __init__(self, message: str, refusal: ConnectRefusedError | ServerDisconnectError) -> None:
        super().__init__(message)
        self.reason_code = refusal.reason_code
        self.server_reference = refusal.server_reference
        self.refusal = refusal


class ProxyError(MQTTConnectionError):
    """The proxy (``proxy`` option) did not open a tunnel to the broker: it refused the
    connection (rules, the broker unreachable from the proxy) or broke its protocol. Transient:
    the client reconnects as after any failed attempt. Never shows the proxy's credentials."""


class ProxyUnreachableError(ProxyError):
    """Nothing accepts connections at the proxy's address (refused, unreachable, or its host
    name does not resolve)."""


class ProxyAuthError(ProxyError):
    """The proxy refused the proxy user name and password of the ``proxy`` URL, or asks for
    credentials that the URL does not give."""


class OperationError(MQTTError):
    """The broker refused an operation. ``reason_code`` says why."""

    def __init__(self, message: str, reason_code: int) -> None:
        super().__init__(f"{message}: {reason_name(reason_code)} (reason code 0x{reason_code:02X})")
        self.reason_code = reason_code


class PublishError(OperationError):
    """PUBACK or PUBREC carried a failure reason code (MQTT 5)."""


class SubscribeError(OperationError):
    """The broker refused every filter of a SUBSCRIBE."""


class UnsubscribeError(OperationError):
    """UNSUBACK carried a failure reason code (MQTT 5)."""


class QueueFullError(MQTTError):
    """The offline/outgoing queue is full (``max_queued``) and the policy is ``reject``."""


class StoreError(MQTTError):
    """The store failed (disk full, database locked...); ``__cause__`` has the original error."""


class ClientClosedError(MQTTError):
    """The client was closed (or never connected) before the operation could complete."""


class OperationTimeoutError(MQTTError, builtins.TimeoutError):
    """Waiting for an operation ran out of time. The operation itself goes on."""
