"""Hostile data that is well formed as bytes but breaks the parsers behind the channel and the metrics check:
each must end as the parser's own refusal (ProtocolViolation, MetricsError), which the judge and the engine
record as the candidate's failure, never as a stray ValueError or OverflowError out of numpy or float()."""

from __future__ import annotations

import json
import struct

import pytest

from kubevolve.loop.engineer.metric_check import MetricsError, validate_metrics
from kubevolve.sdk.channel import LENGTH, ProtocolViolation, Reader, decode


def frame(data: bytes) -> bytes:
    return LENGTH.pack(len(data)) + data


def npy_header_only(descr: str, shape: tuple[int, ...]) -> bytes:
    """An .npy frame with no data: what a shape of zero bytes needs."""
    text = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    text += b" " * ((-len(text) - 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def message_with(array_frame: bytes) -> bytes:
    body = json.dumps({"value": {"radii": {"__ndarray__": 0}}, "arrays": 1}).encode()
    return frame(body) + frame(array_frame)


@pytest.mark.parametrize(
    ("descr", "shape"),
    [
        ("|S0", (10**12,)),  # zero bytes per item: any count "fits" in no data
        ("|V0", (10**30,)),  # and a count numpy cannot even hold
        ("<f8", (0, 10**30)),  # an empty array with a dimension past numpy's maximum
        ("<f8", (0, 2**62, 2**62)),  # an empty array "too big" to make
    ],
)
def test_an_array_of_zero_bytes_with_an_impossible_shape_is_a_protocol_violation(descr, shape):
    data = message_with(npy_header_only(descr, shape))
    with pytest.raises(ProtocolViolation):
        decode(data)
    with pytest.raises(ProtocolViolation):
        list(Reader().feed(data))


@pytest.mark.parametrize("value", [10**400, -(10**400)], ids=["huge", "-huge"])
def test_a_metric_too_large_for_a_float_is_bad_metrics(value):
    """A judge that passes on a number the candidate sent (JSON integers have no size limit) or a legacy
    evaluator the candidate patched: float() overflows, and the engine, which catches MetricsError only,
    would lose the whole evaluation instead of recording bad metrics."""
    with pytest.raises(MetricsError, match="not finite|too large"):
        validate_metrics({"sum_radii": 1.0, "other": value}, "sum_radii")
