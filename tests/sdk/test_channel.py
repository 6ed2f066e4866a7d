"""The channel between a candidate and its judge: what a well-formed message carries, and every way a hostile
candidate can malform one ending as a ProtocolViolation, never as code run or memory exhausted."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest

from kubevolve.sdk import channel
from kubevolve.sdk.channel import LENGTH, ProtocolViolation, Reader, decode, encode


def frame(data: bytes) -> bytes:
    return LENGTH.pack(len(data)) + data


def header(value: object, arrays: int = 0) -> bytes:
    return frame(json.dumps({"value": value, "arrays": arrays}).encode())


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_json_data_and_arrays_make_the_round_trip():
    value = {
        "centers": np.arange(52, dtype=np.float64).reshape(26, 2),
        "mask": np.array([True, False]),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
        "nested": [{"n": np.int64(3), "x": np.float32(0.5)}, None, "text", float("nan")],
    }
    back = decode(encode(value))
    assert np.array_equal(back["centers"], value["centers"]) and back["centers"].dtype == np.float64
    assert back["mask"].tolist() == [True, False]
    assert np.array_equal(back["fortran"], value["fortran"])
    assert back["nested"][0] == {"n": 3, "x": 0.5} and back["nested"][1:3] == [None, "text"]
    assert np.isnan(back["nested"][3])  # NaN crosses; judges check finiteness themselves


def test_messages_arrive_in_pieces_and_back_to_back():
    data = encode({"a": np.ones(1000)}) + encode([1, 2, 3])
    reader = Reader()
    received = [m for i in range(0, len(data), 7) for m in reader.feed(data[i : i + 7])]
    assert np.array_equal(received[0]["a"], np.ones(1000)) and received[1] == [1, 2, 3]
    assert not reader.pending


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (object(), "cannot send a object"),
        ({1: "x"}, "keys sent over the channel must be strings"),
        (np.array([object()]), "arrays of Python objects cannot be sent"),
    ],
)
def test_what_cannot_be_sent_is_named(value, message):
    with pytest.raises(TypeError, match=message):
        encode(value)


def test_deep_nesting_cannot_be_sent():
    value: list = []
    for _ in range(100):
        value = [value]
    with pytest.raises(TypeError, match="nested deeper than 64"):
        encode(value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (LENGTH.pack(1 << 40), "over the limit"),  # a frame declaring a terabyte: refused before reading
        (frame(b"\xff\xfe"), "not valid JSON"),
        (frame(b"[1, 2]"), "exactly 'value' and 'arrays'"),
        (frame(b'{"value": 1, "arrays": 1, "extra": 2}'), "exactly 'value' and 'arrays'"),
        (header(1, arrays=-1), "at most|declares"),
        (header(1, arrays=10**9), "declares"),
        (header(1, arrays=True), "declares"),
        (header({"__ndarray__": 0}), "reference to array 0"),
        (header({"__ndarray__": "0"}, arrays=0), "reference to array"),
        (frame(b"[" * 100_000 + b"]" * 100_000), "not valid JSON"),  # the parser's own recursion limit
    ],
)
def test_malformed_messages_are_protocol_violations(data, message):
    with pytest.raises(ProtocolViolation, match=message):
        list(Reader(max_bytes=1 << 20).feed(data))


def test_a_message_over_the_reader_limit_is_refused_at_its_header():
    data = encode({"big": np.zeros(1 << 16)})
    with pytest.raises(ProtocolViolation, match="over the limit of 4096 bytes"):
        list(Reader(max_bytes=4096).feed(data))


@pytest.mark.parametrize(
    ("array_frame", "message"),
    [
        (b"NOTNPY" + bytes(10), "not an .npy frame"),
        (npy(np.zeros(3))[:6] + bytes([9, 0]) + bytes(4), "unsupported .npy version 9"),
        (npy(np.zeros(3))[:-8], "needs 24 bytes, the frame holds 16"),
        (npy(np.zeros(3)) + b"x", "needs 24 bytes, the frame holds 25"),
        (
            b"\x93NUMPY\x01\x00"
            + struct.pack("<H", 72)
            + b"{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,)}".ljust(72),
            "needs 8000000000000 bytes",  # a huge declared shape allocates nothing
        ),
        (
            b"\x93NUMPY\x01\x00"
            + struct.pack("<H", 60)
            + b"{'descr': '|O', 'fortran_order': False, 'shape': (1,)}".ljust(60),
            "dtype object is not allowed",
        ),
        (
            b"\x93NUMPY\x01\x00" + struct.pack("<H", 40) + b"__import__('os').system('id')".ljust(40),
            "not a literal dict",
        ),
        (
            b"\x93NUMPY\x01\x00"
            + struct.pack("<H", 64)
            + b"{'descr': '<f8', 'fortran_order': 1, 'shape': (1,)}".ljust(64),
            "bad shape",
        ),
    ],
)
def test_malformed_arrays_are_protocol_violations(array_frame, message):
    data = header({"x": {"__ndarray__": 0}}, arrays=1) + frame(array_frame)
    with pytest.raises(ProtocolViolation, match=message):
        list(Reader().feed(data))


def test_only_numbers_bool_and_bytes_dtypes_cross():
    assert decode(encode({"s": np.array([b"ab", b"c"])}))["s"].tolist() == [b"ab", b"c"]
    dt = np.dtype([("a", "<i4"), ("b", "<f8")])  # a structured dtype without objects is still plain data
    assert decode(encode(np.zeros(2, dtype=dt))).dtype == dt
    assert channel.DEFAULT_MAX_BYTES == 64 << 20
