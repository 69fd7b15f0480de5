"""PacketBuffer: a byte stream cut anywhere yields the same frames; Remaining Length edge cases."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqttkit.protocol.codec import (
    MAX_REMAINING_LENGTH,
    PacketBuffer,
    decode,
    decode_packet,
    encode_packet,
    encode_varint,
)
from mqttkit.protocol.errors import MalformedPacketError, ProtocolError
from mqttkit.protocol.packets import MQTT_3_1_1, MQTT_5, Packet, PingReq, Publish
from tests.protocol.test_codec_properties import LEVELS, packets
from tests.protocol.test_codec_vectors import VECTORS

# MQTT 5.0 section 1.5.5 (3.1.1 section 2.2.3), the table of Variable Byte Integer sizes: the
# smallest and largest value of each length, bytes written by hand.
VARINTS = [
    (0, "00"),
    (127, "7f"),
    (128, "80 01"),
    (16_383, "ff 7f"),
    (16_384, "80 80 01"),
    (2_097_151, "ff ff 7f"),
    (2_097_152, "80 80 80 01"),
    (268_435_455, "ff ff ff 7f"),
]

Body = tuple[int, bytes]


def bodies(frames: list[tuple[int, bytes, int, int]]) -> list[Body]:
    """Frames as (first byte, body bytes): comparable whatever buffer they point into."""
    return [(first, bytes(data[start:end])) for first, data, start, end in frames]


def feed_chunks(chunks: list[bytes], buffer: PacketBuffer | None = None) -> list[Body]:
    buffer = buffer or PacketBuffer()
    out: list[Body] = []
    for chunk in chunks:
        out += bodies(buffer.feed(chunk))
    assert len(buffer) == 0, "a whole stream leaves nothing buffered"
    return out


def split_frame(packet: bytes) -> Body:
    """An independent reading of one whole packet: (first byte, body)."""
    length, shift, i = 0, 0, 1
    while True:
        byte = packet[i]
        length |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            break
        shift += 7
    assert len(packet) == i + length
    return packet[0], packet[i:]


# A stream of every hand-written vector of one level, back to back.
STREAM_5 = [v.data for v in VECTORS if MQTT_5 in v.levels]
STREAM_311 = [v.data for v in VECTORS if MQTT_3_1_1 in v.levels]


@pytest.mark.parametrize(("value", "hexbytes"), VARINTS)
def test_encode_varint_table(value: int, hexbytes: str) -> None:
    assert encode_varint(value) == bytes.fromhex(hexbytes)


def test_encode_varint_refuses_more_than_four_bytes() -> None:
    with pytest.raises(ValueError, match="268,435,455"):
        encode_varint(MAX_REMAINING_LENGTH + 1)


@pytest.mark.parametrize(("value", "hexbytes"), VARINTS[:-1])
def test_remaining_length_table(value: int, hexbytes: str) -> None:
    """A frame whose body is exactly ``value`` bytes, header written by hand, frames exactly."""
    body = bytes(value)
    packet = b"\x30" + bytes.fromhex(hexbytes) + body
    frames = PacketBuffer().feed(packet)
    assert len(frames) == 1
    first, data, start, end = frames[0]
    assert (first, start, end) == (0x30, 1 + len(hexbytes.split()), len(packet))
    assert data is packet, "a frame that arrived whole is not copied"


def test_largest_remaining_length_is_accepted_in_the_header() -> None:
    buffer = PacketBuffer()
    assert buffer.feed(bytes.fromhex("30 ff ff ff 7f")) == []
    assert len(buffer) == 5


@pytest.mark.parametrize("header", ["30 ff ff ff ff", "30 80 80 80 80 00", "c0 ff ff ff ff 7f"])
def test_remaining_length_of_five_bytes_is_malformed(header: str) -> None:
    with pytest.raises(MalformedPacketError, match="longer than four bytes"):
        PacketBuffer().feed(bytes.fromhex(header))


@pytest.mark.parametrize("stream", [STREAM_311, STREAM_5], ids=["3.1.1", "5.0"])
def test_every_split_point_yields_the_same_frames(stream: list[bytes]) -> None:
    data = b"".join(stream)
    expected = [split_frame(p) for p in stream]
    assert feed_chunks([data]) == expected
    for cut in range(len(data) + 1):
        assert feed_chunks([data[:cut], data[cut:]]) == expected, cut


@pytest.mark.parametrize("stream", [STREAM_311, STREAM_5], ids=["3.1.1", "5.0"])
def test_one_byte_at_a_time(stream: list[bytes]) -> None:
    data = b"".join(stream)
    assert feed_chunks([data[i : i + 1] for i in range(len(data))]) == [
        split_frame(p) for p in stream
    ]


def test_every_pair_of_split_points_in_a_short_stream() -> None:
    stream = [
        bytes.fromhex("c0 00"),                         # PINGREQ
        bytes.fromhex("32 09 00 03") + b"a/b" + bytes.fromhex("00 0a") + b"hi",  # PUBLISH QoS 1
        bytes.fromhex("40 02 00 0a"),                   # PUBACK 10
        bytes.fromhex("d0 00"),                         # PINGRESP
    ]  # fmt: skip
    data = b"".join(stream)
    expected = [split_frame(p) for p in stream]
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            assert feed_chunks([data[:i], data[i:j], data[j:]]) == expected, (i, j)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(LEVELS).flatmap(
        lambda lvl: st.tuples(st.just(lvl), st.lists(packets(lvl), min_size=1, max_size=6))
    ),
    st.data(),
)
def test_random_packets_random_chunks(case: tuple[int, list[Packet]], data: st.DataObject) -> None:
    level, sent = case
    encoded = [encode_packet(p, level) for p in sent]
    chunks = data.draw(chunked(b"".join(encoded)))
    buffer = PacketBuffer()
    received: list[Packet] = []
    for chunk in chunks:
        for first, buf, start, end in buffer.feed(chunk):
            received.append(decode_packet(first, buf, start, end, level))
    assert received == sent
    assert len(buffer) == 0


@pytest.fixture(scope="module")
def big_publish() -> tuple[Publish, bytes]:
    payload = bytes(range(256)) * 8192  # 2 MiB: the remaining length takes four bytes
    packet = Publish("big/payload", payload, 1, packet_id=42)
    data = encode_packet(packet, MQTT_3_1_1)
    # 2 + 11 (topic) + 2 (packet id) + 2,097,152 = 2,097,167 = 0x20000F:
    # 0x0F | 0x80, 0x00 | 0x80, 0x00 | 0x80, 0x01.
    assert data[:5] == bytes.fromhex("32 8f 80 80 01")
    return packet, data


@pytest.mark.parametrize("chunk", [None, 1 << 20, 65_536, 4096, 1000])
def test_two_megabyte_payload(big_publish: tuple[Publish, bytes], chunk: int | None) -> None:
    packet, data = big_publish
    trailer = bytes.fromhex("c0 00")  # a PINGREQ right behind it
    stream = data + trailer
    step = chunk or len(stream)
    buffer = PacketBuffer()
    frames = []
    for i in range(0, len(stream), step):
        frames += buffer.feed(stream[i : i + step])
        if i + step < len(data):
            assert frames == []
    assert len(frames) == 2
    assert decode_packet(*frames[0], MQTT_3_1_1) == packet
    assert decode_packet(*frames[1], MQTT_3_1_1) == PingReq()
    assert len(buffer) == 0


def test_big_payload_split_right_after_the_header(big_publish: tuple[Publish, bytes]) -> None:
    packet, data = big_publish
    buffer = PacketBuffer()
    assert buffer.feed(data[:5]) == []
    assert buffer.feed(data[5:-1]) == []
    assert len(buffer) == len(data) - 1
    (frame,) = buffer.feed(data[-1:])
    assert decode_packet(*frame, MQTT_3_1_1) == packet


def test_max_packet_size_limits_large_packets_before_their_body(
    big_publish: tuple[Publish, bytes],
) -> None:
    _, data = big_publish
    buffer = PacketBuffer(max_packet_size=1 << 20)
    assert buffer.feed(data[:1]) == []  # the remaining length has not arrived yet
    with pytest.raises(ProtocolError) as info:
        buffer.feed(data[1:5])  # header complete, no body byte
    assert info.value.reason_code == 0x95


def test_clear_forgets_a_partial_packet() -> None:
    buffer = PacketBuffer()
    assert buffer.feed(bytes.fromhex("30 0a 00")) == []
    assert len(buffer) == 3
    buffer.clear()
    assert len(buffer) == 0
    assert bodies(buffer.feed(bytes.fromhex("d0 00"))) == [(0xD0, b"")]


def test_decode_accepts_bytearray_and_memoryview() -> None:
    raw = bytes.fromhex("40 02 00 01")
    assert decode(bytearray(raw)) == decode(memoryview(raw)) == decode(raw)
