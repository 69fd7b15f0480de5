"""Fresh credentials before every connection attempt: username / password functions and the
``before_connect`` hook.

This module owns what the CONNECT of the next attempt carries when the options say it is to be
fetched anew (tokens that expire: JWT, SAS): it calls the functions (:func:`call_user`: an
async one on the loop, a sync one on a thread of its own), checks what they return, and writes
it into the session's live :class:`~mqttkit.protocol.config.SessionConfig`, which the session
reads when the transport opens. Nothing here touches a socket; a failure is an
:class:`MQTTConnectionError` that fails the attempt like any other (and is never permanent).
"""

from __future__ import annotations

from typing import Any

from ..options import ClientOptions, ConnectSettings, Server, check_connect_settings
from ..protocol.config import SessionConfig
from ..protocol.errors import ConnectRefusedError, InvalidOptionError, MQTTConnectionError
from .calls import call_user

__all__ = ["fresh_credentials", "mark_refusal", "refresh_credentials"]


def fresh_credentials(options: ClientOptions) -> bool:
    """True when the options fetch credentials before every attempt."""
    return (
        callable(options.username)
        or callable(options.password)
        or (options.before_connect is not None)
    )


async def refresh_credentials(
    options: ClientOptions, server: Server, config: SessionConfig
) -> None:
    """Call the username / password functions and then ``before_connect`` (those the options
    have), and put what they give into ``config`` for the CONNECT of this attempt.

    Raises:
        MQTTConnectionError: a function raised, or returned a value of the wrong type (the
            cause is chained; a password's value is never in the message).
    """
    username: Any = config.username
    password: Any = config.password
    if callable(options.username):
        username = await _call(options.username, "the username function")
    if callable(options.password):
        password = await _call(options.password, "the password function")
    settings = ConnectSettings(server, username, password, config.will, config.properties)
    hook = options.before_connect
    if hook is not None:
        await _call(hook, "the before_connect hook", settings)
    try:
        checked = check_connect_settings(settings, config.protocol_level)
    except InvalidOptionError as exc:
        where = "before_connect" if hook is not None else "the username / password function"
        raise MQTTConnectionError(f"{where} gave a bad CONNECT setting: {exc}") from exc
    config.username, config.password, config.will, config.properties = checked


async def _call(fn: Any, what: str, *args: Any) -> Any:
    try:
        return await call_user(fn, *args)
    except Exception as exc:
        raise MQTTConnectionError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def mark_refusal(error: BaseException, options: ClientOptions) -> None:
    """With fresh credentials, a CONNACK refusing them is not permanent: the next attempt
    fetches new ones (see :attr:`ConnectRefusedError.fresh_credentials`)."""
    if isinstance(error, ConnectRefusedError) and fresh_credentials(options):
        error.fresh_credentials = True
