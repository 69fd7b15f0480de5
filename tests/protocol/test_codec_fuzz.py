"""Any bytes in: the receive path raises ProtocolError (or MalformedPacketError), nothing else.

The session turns exactly these two exceptions into a clean disconnect; anything else escaping the
codec is a bug (an IndexError, a struct.error, a UnicodeDecodeError, a KeyError from a table...).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mqttkit.protocol.codec import PacketBuffer, decode, decode_packet, encode_packet, encode_varint
from mqttkit.protocol.errors import ProtocolError
from mqttkit.protocol.packets import Packet
from tests.protocol.test_codec_properties import LEVELS, level_and_packet


def receive(data: bytes, level: int, chunk: int = 0) -> list[Packet]:
    """The session's receive path: feed, then decode every whole frame. Returns the packets."""
    buffer = PacketBuffer(max_packet_size=1 << 16)
    out: list[Packet] = []
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        for first, buf, start, end in buffer.feed(data[i : i + step]):
            out.append(decode_packet(first, buf, start, end, level))
    return out


def error_of(call: Callable[[], object]) -> ProtocolError | None:
    """The ProtocolError ``call`` raises, or None; any other exception propagates (a bug)."""
    try:
        call()
    except ProtocolError as exc:
        return exc
    return None


def only_protocol_errors(data: bytes, level: int, chunk: int = 0) -> None:
    errors = error_of(lambda: receive(data, level, chunk)), error_of(lambda: decode(data, level))
    for error in errors:
        assert error is None or str(error), "an error message says what is wrong"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.sampled_from(LEVELS), st.integers(0, 8))
@example(b"\x00\x00", 3, 0)
@example(b"\xf0\x00", 4, 0)
@example(b"\x30\xff\xff\xff\xff\x7f", 5, 1)
def test_arbitrary_bytes(data: bytes, level: int, chunk: int) -> None:
    only_protocol_errors(data, level, chunk)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 255), st.binary(max_size=48), st.sampled_from(LEVELS))
def test_arbitrary_bodies_behind_a_valid_header(first: int, body: bytes, level: int) -> None:
    """Random bytes framed correctly reach every packet decoder, past the framing checks."""
    only_protocol_errors(bytes([first]) + encode_varint(len(body)) + body, level)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[int, bytes]:
    level, packet = draw(level_and_packet())
    data = bytearray(encode_packet(packet, level))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[i]
        elif op == "truncate":
            del data[i:]
    return level, bytes(data)


@settings(max_examples=400, deadline=None)
@given(mutated())
def test_mutated_valid_encodings(case: tuple[int, bytes]) -> None:
    level, data = case
    only_protocol_errors(data, level)


@st.composite
def mutated_bodies(draw: st.DrawFn) -> tuple[int, bytes]:
    """Mutate inside the body and fix the remaining length, so the decoder sees every mutation."""
    level, packet = draw(level_and_packet())
    data = encode_packet(packet, level)
    (frame,) = PacketBuffer().feed(data)
    first, buf, start, end = frame
    body = bytearray(buf[start:end])
    for _ in range(draw(st.integers(1, 3))):
        if body and draw(st.booleans()):
            body[draw(st.integers(0, len(body) - 1))] = draw(st.integers(0, 255))
        else:
            i = draw(st.integers(0, len(body)))
            body[i:i] = draw(st.binary(min_size=1, max_size=3))
    return level, bytes([first]) + encode_varint(len(body)) + bytes(body)


@settings(max_examples=400, deadline=None)
@given(mutated_bodies())
def test_mutated_bodies(case: tuple[int, bytes]) -> None:
    level, data = case
    only_protocol_errors(data, level)


@settings(max_examples=150, deadline=None)
@given(st.lists(level_and_packet(), min_size=1, max_size=4), st.binary(max_size=16))
def test_garbage_after_valid_packets(cases: list[tuple[int, Packet]], garbage: bytes) -> None:
    """Valid packets are delivered up to the garbage; then only a ProtocolError, or waiting."""
    level = cases[0][0]
    sent = [p for lvl, p in cases if lvl == level]
    data = b"".join(encode_packet(p, level) for p in sent)
    assert receive(data, level) == sent
    with contextlib.suppress(ProtocolError):
        receive(data + garbage, level)


@pytest.mark.parametrize("level", LEVELS)
def test_every_first_byte_with_empty_and_short_bodies(level: int) -> None:
    for first in range(256):
        for body in (b"", b"\x00", b"\x00\x01", b"\x00\x01\x00", b"\xff\xff\xff\xff"):
            only_protocol_errors(bytes([first]) + encode_varint(len(body)) + body, level)
