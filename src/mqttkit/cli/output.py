"""How ``sub`` and ``rr`` print a message: payload only, ``-v``, or an ``-F`` format.

This module owns the output bytes, which are those of mosquitto_sub / mosquitto_rr 2.0:

* payload only: the payload and a newline (``-N``: none); an empty payload prints nothing;
* ``-v``: ``topic payload``; an empty payload prints ``topic (null)`` (nothing with ``-N``);
* ``-F``: the format, then a newline unless ``-N``. ``%`` sequences are message fields, ``@``
  sequences go to ``strftime`` (``@N``: nanoseconds), ``\\`` sequences are escapes. A field may
  have flags ``-`` (left align) and ``0`` (zero padding), a width and a precision (maximum
  width), each applying to the fields Mosquitto applies it to (``_WIDTH``, ``_ZERO``,
  ``_PRECISION``);
* ``%j`` / ``%J``: JSON as Mosquitto writes it with cJSON: keys in its order, numbers with 15
  significant digits (17 when 15 do not give the number back), ``--pretty`` indented with tabs.

Known differences (docs/cli.md): ``%j`` escapes a NUL byte in a payload as ``\\u0000`` (Mosquitto
cuts the payload there), and prints properties in one fixed order (:data:`PROPERTY_ORDER`), where
mosquitto_sub prints them in the order they arrived (the client's decoded properties keep no
order). It does no I/O: :meth:`Printer.render` returns the bytes and any warning.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Final

from ..protocol.packets import Publish
from .flags import UsageError

__all__ = ["PROPERTY_ORDER", "Printer", "Rendered", "compile_format"]

#: The PUBLISH properties in ``%j``, in this order: Mosquitto (the broker) sends a subscription
#: identifier first, then the publisher's properties in the publisher's order (here: the order
#: of the specification's property table), and the message expiry interval last (it rewrites it
#: to the time left).
PROPERTY_ORDER: Final = (
    ("subscription-identifier", "subscription_identifier"),
    ("payload-format-indicator", "payload_format_indicator"),
    ("content-type", "content_type"),
    ("response-topic", "response_topic"),
    ("correlation-data", "correlation_data"),
    ("topic-alias", "topic_alias"),
    ("user-properties", "user_property"),
    ("message-expiry-interval", "message_expiry_interval"),
)

#: The fields a width applies to, zero padding, and a precision (maximum width).
_WIDTH: Final = frozenset("ACEFIlmpRStxX")
_ZERO: Final = frozenset("AEFlmSxXp")
_PRECISION: Final = frozenset("CIRt")
_FIELDS: Final = frozenset("%ACDEFIjJlmPpqRrStUxX")
_ESCAPES: Final = {
    "\\": b"\\",
    "0": b"\0",
    "a": b"\a",
    "e": b"\x1b",
    "n": b"\n",
    "r": b"\r",
    "t": b"\t",
    "v": b"\v",
}
_DBL_EPSILON: Final = sys.float_info.epsilon


@dataclass(frozen=True)
class _Field:
    spec: str
    left: bool = False
    zero: bool = False
    width: int = 0
    precision: int | None = None


@dataclass(frozen=True)
class _Time:
    code: str  # a strftime letter, or "N" for nanoseconds


_Part = bytes | _Field | _Time


def compile_format(text: str) -> tuple[_Part, ...]:
    """Parse an ``-F`` format into literal bytes and fields.

    Raises:
        UsageError: an unknown field or escape, or a sequence cut off at the end.
    """
    parts: list[_Part] = []
    literal = bytearray()
    i = 0
    n = len(text)

    def flush() -> None:
        if literal:
            parts.append(bytes(literal))
            literal.clear()

    while i < n:
        c = text[i]
        if c == "%":
            i += 1
            left = zero = False
            if i < n and text[i] == "-":
                left, i = True, i + 1
            if i < n and text[i] == "0":
                zero, i = True, i + 1
            start = i
            while i < n and text[i].isdigit():
                i += 1
            width = int(text[start:i]) if i > start else 0
            precision = None
            if i < n and text[i] == ".":
                i += 1
                start = i
                while i < n and text[i].isdigit():
                    i += 1
                precision = int(text[start:i]) if i > start else 0
            if i >= n:
                raise UsageError("Incomplete format specifier.")
            spec = text[i]
            i += 1
            if spec not in _FIELDS:
                raise UsageError(f"Invalid format specifier '{spec}'.")
            if spec == "%":
                literal += b"%"
                continue
            flush()
            parts.append(_Field(spec, left, zero, width, precision))
        elif c == "@":
            if i + 1 >= n:
                raise UsageError("Incomplete format specifier.")
            code = text[i + 1]
            i += 2
            if code == "@":
                literal += b"@"
            else:
                flush()
                parts.append(_Time(code))
        elif c == "\\":
            if i + 1 >= n:
                raise UsageError("Incomplete escape specifier.")
            code = text[i + 1]
            i += 2
            if code not in _ESCAPES:
                raise UsageError(f"Invalid escape specifier '{code}'.")
            literal += _ESCAPES[code]
        else:
            literal += c.encode("utf-8", "surrogateescape")
            i += 1
    flush()
    return tuple(parts)


@dataclass(frozen=True)
class Rendered:
    """One message's output: the bytes for stdout, and warnings for stderr."""

    data: bytes
    warnings: tuple[str, ...] = ()


class Printer:
    """Renders messages as ``sub`` / ``rr`` print them (see the module docstring)."""

    def __init__(
        self, fmt: str | None, *, verbose: bool = False, eol: bool = True, pretty: bool = False
    ) -> None:
        self.parts = compile_format(fmt) if fmt is not None else None
        self.verbose = verbose
        self.eol = b"\n" if eol else b""
        self.pretty = pretty

    def render(self, message: Publish, now_ns: int | None = None) -> Rendered:
        """The output for ``message`` received at ``now_ns`` (ns since the epoch; default now)."""
        payload = message.payload
        if self.parts is None:
            if self.verbose:
                topic = message.topic.encode("utf-8", "surrogatepass")
                if payload:
                    return Rendered(topic + b" " + payload + self.eol)
                return Rendered(topic + b" (null)\n" if self.eol else b"")
            return Rendered(payload + self.eol if payload else b"")
        if now_ns is None:
            now_ns = time.time_ns()
        out = bytearray()
        warnings: list[str] = []
        for part in self.parts:
            if isinstance(part, bytes):
                out += part
            elif isinstance(part, _Time):
                out += _strftime(part.code, now_ns)
            else:
                out += self._field(part, message, now_ns, warnings)
        out += self.eol
        return Rendered(bytes(out), tuple(warnings))

    def _field(self, f: _Field, message: Publish, now_ns: int, warnings: list[str]) -> bytes:
        props = message.properties
        spec = f.spec
        value: bytes
        if spec == "t":
            value = message.topic.encode("utf-8", "surrogatepass")
        elif spec in "pxX":
            payload = message.payload
            if f.width:
                # Mosquitto's width here is also a maximum: at most `width` payload bytes, and
                # for hex at most width / 2 of them (so that the digits fit).
                payload = payload[: min(len(payload), f.width) // (1 if spec == "p" else 2)]
            if spec == "p":
                value = payload
            else:
                value = payload.hex().encode("ascii")
                if spec == "X":
                    value = value.upper()
        elif spec == "l":
            value = b"%d" % len(message.payload)
        elif spec == "m":
            value = b"%d" % (message.packet_id or 0)
        elif spec == "q":
            value = b"%d" % message.qos
        elif spec == "r":
            value = b"1" if message.retain else b"0"
        elif spec == "A":
            value = _optional(props.topic_alias)
        elif spec == "C":
            value = _optional(props.content_type)
        elif spec == "D":
            value = props.correlation_data or b""
        elif spec == "E":
            value = _optional(props.message_expiry_interval)
        elif spec == "F":
            value = _optional(props.payload_format_indicator)
        elif spec == "R":
            if props.response_topic is None:
                return b""  # absent: not even padded to the width, as Mosquitto prints it
            value = props.response_topic.encode("utf-8", "surrogatepass")
        elif spec == "S":
            value = b" ".join(b"%d" % i for i in props.subscription_identifier)
        elif spec == "P":
            value = b" ".join(
                k.encode("utf-8", "surrogatepass") + b":" + v.encode("utf-8", "surrogatepass")
                for k, v in props.user_property
            )
        elif spec == "I":
            local = time.localtime(now_ns // 1_000_000_000)
            value = time.strftime("%Y-%m-%dT%H:%M:%S%z", local).encode("ascii", "replace")
        elif spec == "U":
            seconds, nanoseconds = divmod(now_ns, 1_000_000_000)
            value = b"%d.%09d" % (seconds, nanoseconds)
        elif spec == "j":
            value = _message_json(message, now_ns, None, self.pretty)
        else:  # "J"
            parsed = _parse_json(message.payload)
            if parsed is _INVALID:
                warnings.append(
                    f"Error: Message payload is not valid JSON on topic {message.topic}."
                )
                return b""
            value = _message_json(message, now_ns, parsed, self.pretty)
        if f.precision is not None and spec in _PRECISION:
            value = value[: f.precision]
        if f.width and spec in _WIDTH and len(value) < f.width:
            if f.left:
                value = value.ljust(f.width, b" ")
            else:
                value = value.rjust(f.width, b"0" if f.zero and spec in _ZERO else b" ")
        return value


def _optional(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, int):
        return b"%d" % value
    return str(value).encode("utf-8", "surrogatepass")


def _strftime(code: str, now_ns: int) -> bytes:
    seconds, nanoseconds = divmod(now_ns, 1_000_000_000)
    if code == "N":
        return b"%09d" % nanoseconds
    return time.strftime("%" + code, time.localtime(seconds)).encode("utf-8", "replace")


# -- JSON as cJSON writes it ---------------------------------------------------------------------


class _Object(list[tuple[str, object]]):
    """A JSON object as its (key, value) pairs, in order, duplicate keys kept (as cJSON)."""


class _InvalidJSON:
    pass


_INVALID: Final = _InvalidJSON()


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python's extension, not cJSON's


def _parse_json(payload: bytes) -> object:
    """The payload as JSON values (_Object for objects, float for numbers), or _INVALID."""
    # Invalid UTF-8 inside strings passes through, as cJSON passes the bytes through.
    text = payload.decode("utf-8", "surrogateescape")
    try:
        return json.loads(
            text,
            object_pairs_hook=_Object,
            parse_int=float,  # cJSON keeps every number as a double ("-0" stays -0)
            parse_float=float,
            parse_constant=_reject_constant,
        )
    except (ValueError, RecursionError):
        return _INVALID


def _message_json(message: Publish, now_ns: int, payload: object, pretty: bool) -> bytes:
    seconds, nanoseconds = divmod(now_ns, 1_000_000_000)
    local = time.localtime(seconds)
    # Mosquitto's own timestamp shape: local time, microseconds, a literal "Z", then the offset.
    tst = "{}.{:06d}Z{}".format(
        time.strftime("%Y-%m-%dT%H:%M:%S", local),
        nanoseconds // 1000,
        time.strftime("%z", local),
    )
    obj = _Object(
        [
            ("tst", tst),
            ("topic", message.topic),
            ("qos", message.qos),
            ("retain", 1 if message.retain else 0),
            ("payloadlen", len(message.payload)),
        ]
    )
    if message.qos:
        obj.append(("mid", message.packet_id or 0))
    props = message.properties
    fields = _Object()
    for key, name in PROPERTY_ORDER:
        value = getattr(props, name)
        if name == "subscription_identifier":
            value = value[0] if value else None
        elif name == "user_property":
            value = _Object(value) if value else None
        if value is not None:
            fields.append((key, value))
    if fields:
        obj.append(("properties", fields))
    if payload is None:
        obj.append(("payload", message.payload if message.payload else None))
    else:
        obj.append(("payload", _Raw(payload)))
    out = bytearray()
    _write(out, obj, pretty, 0)
    return bytes(out)


@dataclass(frozen=True)
class _Raw:
    """A parsed payload (%J): strings in it are text, cut at a NUL as cJSON's C strings are."""

    value: object


def _write(out: bytearray, value: object, pretty: bool, depth: int, parsed: bool = False) -> None:
    if isinstance(value, _Raw):
        _write(out, value.value, pretty, depth, True)
    elif value is None:
        out += b"null"
    elif value is True:
        out += b"true"
    elif value is False:
        out += b"false"
    elif isinstance(value, int):
        out += b"%d" % value
    elif isinstance(value, float):
        out += _number(value)
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogateescape" if parsed else "surrogatepass")
        _string(out, data.split(b"\0", 1)[0] if parsed else data)
    elif isinstance(value, bytes):
        _string(out, value)
    elif isinstance(value, _Object):
        _object(out, value, pretty, depth, parsed)
    elif isinstance(value, list):
        out += b"["
        for index, item in enumerate(value):
            if index:
                out += b", " if pretty else b","
            _write(out, item, pretty, depth + 1, parsed)
        out += b"]"
    else:  # pragma: no cover - every JSON value is one of the above
        raise TypeError(f"not a JSON value: {value!r}")


def _object(out: bytearray, obj: _Object, pretty: bool, depth: int, parsed: bool) -> None:
    depth += 1
    out += b"{\n" if pretty else b"{"
    for index, (key, item) in enumerate(obj):
        if pretty:
            out += b"\t" * depth
        _string(out, key.encode("utf-8", "surrogateescape" if parsed else "surrogatepass"))
        out += b":\t" if pretty else b":"
        _write(out, item, pretty, depth, parsed)
        if index < len(obj) - 1:
            out += b","
        if pretty:
            out += b"\n"
    if pretty:
        out += b"\t" * (depth - 1)
    out += b"}"


_SHORT_ESCAPES: Final = {
    0x22: b'\\"',
    0x5C: b"\\\\",
    0x08: b"\\b",
    0x0C: b"\\f",
    0x0A: b"\\n",
    0x0D: b"\\r",
    0x09: b"\\t",
}


def _string(out: bytearray, data: bytes) -> None:
    out += b'"'
    for byte in data:
        if byte in _SHORT_ESCAPES:
            out += _SHORT_ESCAPES[byte]
        elif byte < 0x20:
            out += b"\\u%04x" % byte
        else:
            out.append(byte)
    out += b'"'


def _number(value: float) -> bytes:
    if not math.isfinite(value):
        return b"null"
    text = format(value, ".15g")
    # cJSON takes the 15-digit form when it reads back within one epsilon of the number.
    back = float(text)
    if abs(back - value) > max(abs(back), abs(value)) * _DBL_EPSILON:
        text = format(value, ".17g")
    return text.encode("ascii")
