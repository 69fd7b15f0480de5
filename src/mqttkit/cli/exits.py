"""Exit statuses and error messages, as Mosquitto's command-line tools have them.

mosquitto_pub / mosquitto_sub / mosquitto_rr exit with libmosquitto's error numbers
(``MOSQ_ERR_*`` in mosquitto.h), except that a refused CONNACK exits with its return / reason
code. This module maps mqttkit's exceptions to those statuses and to the first line Mosquitto
prints for each; mqttkit adds its own, more precise, explanation on a second line.
"""

from __future__ import annotations

from typing import Final

from ..protocol.errors import (
    ConnectRefusedError,
    ConnectTimeoutError,
    HostNotFoundError,
    KeepaliveTimeoutError,
    MQTTConnectionError,
    ProtocolError,
    ReasonCode,
    ServerNotFoundError,
    TLSError,
)

__all__ = [
    "EXIT_CONN_LOST",
    "EXIT_ERROR",
    "EXIT_KEEPALIVE",
    "EXIT_NO_CONN",
    "EXIT_PROTOCOL",
    "EXIT_TIMEOUT",
    "EXIT_TLS",
    "describe",
]

EXIT_ERROR: Final = 1
"""Bad flags or values, a connection that cannot be made (refused, DNS), other errors."""
EXIT_PROTOCOL: Final = 2
"""MOSQ_ERR_PROTOCOL: the broker broke the protocol."""
EXIT_NO_CONN: Final = 4
"""MOSQ_ERR_NO_CONN: not connected."""
EXIT_CONN_LOST: Final = 7
"""MOSQ_ERR_CONN_LOST: the connection was lost."""
EXIT_TLS: Final = 8
"""MOSQ_ERR_TLS: the TLS handshake or certificate verification failed."""
EXIT_KEEPALIVE: Final = 19
"""MOSQ_ERR_KEEPALIVE: the broker stopped answering PINGREQ."""
EXIT_TIMEOUT: Final = 27
"""MOSQ_ERR_TIMEOUT: ``-W`` ran out (sub, rr), or bench's ``-W``."""

#: MQTT 3.1 / 3.1.1 CONNACK return codes as libmosquitto words them.
_V3_REFUSALS: Final = {
    1: "Connection Refused: unacceptable protocol version.",
    2: "Connection Refused: identifier rejected.",
    3: "Connection Refused: broker unavailable.",
    4: "Connection Refused: bad user name or password.",
    5: "Connection Refused: not authorised.",
}


def _v5_reason(code: int) -> str:
    # libmosquitto's wording is the specification's reason name in sentence case.
    try:
        name = ReasonCode(code).name.replace("_", " ").lower()
    except ValueError:
        return "Unknown reason"
    return name[:1].upper() + name[1:]


def describe(error: BaseException, command: str) -> tuple[int, list[str]]:
    """The exit status for ``error`` and the lines to print on stderr (without ``--quiet``).

    The first line is Mosquitto's for the same failure; a second one, when it says more, is
    mqttkit's own message.
    """
    detail = str(error)
    if isinstance(error, ConnectRefusedError):
        if error.protocol_version < 5:
            words = _V3_REFUSALS.get(error.reason_code, "Connection Refused: unknown reason.")
        else:
            words = _v5_reason(error.reason_code)
        lines = [f"Connection error: {words}"]
        if command == "pub" and error.protocol_version < 5:
            lines.append("Error: The connection was refused.")
        return error.reason_code, lines
    if isinstance(error, TLSError):
        return EXIT_TLS, ["Error: A TLS error occurred.", f"  {detail}"]
    if isinstance(error, HostNotFoundError):
        return EXIT_ERROR, ["Unable to connect (Lookup error.).", f"  {detail}"]
    if isinstance(error, ServerNotFoundError):
        return EXIT_ERROR, ["Error: Connection refused", f"  {detail}"]
    if isinstance(error, ConnectTimeoutError):
        return EXIT_ERROR, ["Error: Connection timed out", f"  {detail}"]
    if isinstance(error, KeepaliveTimeoutError):
        return EXIT_KEEPALIVE, ["Error: The client is not currently connected.", f"  {detail}"]
    if isinstance(error, ProtocolError):
        return EXIT_PROTOCOL, [
            "Error: A network protocol error occurred when communicating with the broker.",
            f"  {detail}",
        ]
    if isinstance(error, MQTTConnectionError):
        return EXIT_CONN_LOST, ["Error: The connection was lost.", f"  {detail}"]
    return EXIT_ERROR, [f"Error: {detail}"]
