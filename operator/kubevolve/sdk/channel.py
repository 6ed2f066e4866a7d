"""The one channel between a candidate and its judge: messages of plain data, read with limits and parsed
strictly, so that whatever a hostile candidate writes is at worst a malformed message, never code.

A message is a JSON object (UTF-8; NaN and Infinity allowed, as Python writes them: a judge checks that
numbers are finite, as it checks everything else) followed by the numpy arrays it references. Each
part is a frame: an 8-byte little-endian length, then that many bytes. The JSON part says how many arrays
follow (`"arrays": n`) and stands for array i with the object `{"__ndarray__": i}`; each array frame is an
`.npy` file. Nothing is unpickled: an array frame is parsed by hand (magic, header, exact byte count), with no
object dtype, before numpy sees its data. Every limit is checked on a frame's declared length, before any of
its bytes are read or buffered.

Only the standard library (and kubevolve.errors) is imported here, and numpy only when a message holds arrays: the candidate's side
imports this module into a process where a task may not use numpy at all.
"""

from __future__ import annotations

import ast
import json
import struct
from collections.abc import Iterator
from typing import Any

from kubevolve.errors import KubevolveError

LENGTH = struct.Struct("<Q")
ARRAY_KEY = "__ndarray__"
DEFAULT_MAX_BYTES = 64 << 20  # one message, all frames together
MAX_ARRAYS = 4096
MAX_HEADER_BYTES = 4096  # an .npy header is a short dict literal
NPY_MAGIC = b"\x93NUMPY"


class ProtocolViolation(KubevolveError, ValueError):
    """What came over the channel is not a well-formed message within the limits: a candidate's fault."""


# --- writing (either side) -----------------------------------------------------------------------------------


def _plain(value: Any, arrays: list[Any], depth: int = 0) -> Any:
    if depth > 64:
        raise TypeError("data nested deeper than 64 levels cannot be sent")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"dict keys sent over the channel must be strings, got {key!r}")
        return {key: _plain(item, arrays, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item, arrays, depth + 1) for item in value]
    kind = type(value).__module__.split(".")[0]
    if kind == "numpy":
        if getattr(value, "ndim", None) == 0 and not hasattr(value, "__array_interface__"):
            return _plain(value.item(), arrays, depth)  # a numpy scalar
        if type(value).__name__ == "ndarray":
            if value.dtype.hasobject:
                raise TypeError(
                    "numpy arrays of Python objects cannot be sent (only numeric, bool and bytes)"
                )
            arrays.append(value)
            return {ARRAY_KEY: len(arrays) - 1}
        if hasattr(value, "item"):
            return _plain(value.item(), arrays, depth)
    if kind == "torch" and hasattr(value, "detach"):
        raise TypeError("send torch tensors as numpy arrays (tensor.detach().cpu().numpy())")
    raise TypeError(
        f"cannot send a {type(value).__name__} over the channel (JSON data and numpy arrays only)"
    )


def encode(value: Any) -> bytes:
    """The frames of one message carrying `value` (JSON data with numpy arrays anywhere inside)."""
    arrays: list[Any] = []
    body = {"value": _plain(value, arrays), "arrays": len(arrays)}
    header = json.dumps(body, separators=(",", ":")).encode()
    parts = [LENGTH.pack(len(header)), header]
    if arrays:
        import io

        import numpy as np

        for array in arrays:
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            data = buffer.getvalue()
            parts += [LENGTH.pack(len(data)), data]
    return b"".join(parts)


# --- reading (the judge reads the candidate's; the candidate reads the judge's) -------------------------------


def _parse_array(frame: bytes, index: int) -> Any:
    """An .npy frame to an array, strictly: version 1-3 header, no objects, exactly the declared bytes."""
    import numpy as np

    where = f"array {index}"
    if frame[:6] != NPY_MAGIC or len(frame) < 10:
        raise ProtocolViolation(f"{where} is not an .npy frame")
    major = frame[6]
    if major == 1:
        header_len, start = struct.unpack("<H", frame[8:10])[0], 10
    elif major in (2, 3) and len(frame) >= 12:
        header_len, start = struct.unpack("<I", frame[8:12])[0], 12
    else:
        raise ProtocolViolation(f"{where}: unsupported .npy version {major}")
    if header_len > MAX_HEADER_BYTES or start + header_len > len(frame):
        raise ProtocolViolation(f"{where}: .npy header of {header_len} bytes is too long or truncated")
    try:
        text = frame[start : start + header_len].decode("latin1" if major < 3 else "utf8")
        header = ast.literal_eval(text)
    except (UnicodeDecodeError, ValueError, SyntaxError, MemoryError, RecursionError):
        raise ProtocolViolation(f"{where}: the .npy header is not a literal dict") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ProtocolViolation(f"{where}: the .npy header must hold exactly descr, fortran_order and shape")
    shape, fortran = header["shape"], header["fortran_order"]
    if (
        not isinstance(shape, tuple)
        or len(shape) > 32
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        or not isinstance(fortran, bool)
    ):
        raise ProtocolViolation(f"{where}: bad shape {shape!r} or fortran_order {fortran!r}")
    try:
        dtype = np.lib.format.descr_to_dtype(header["descr"])
    except (TypeError, ValueError):
        raise ProtocolViolation(f"{where}: unknown dtype {header['descr']!r}") from None
    if dtype.hasobject or dtype.kind not in "biufcSUV" or dtype.itemsize == 0:
        raise ProtocolViolation(f"{where}: dtype {dtype} is not allowed (numbers, bool and bytes only)")
    count = 1
    for n in shape:
        count *= n
    data = memoryview(frame)[start + header_len :]
    if count * dtype.itemsize != len(data):
        raise ProtocolViolation(
            f"{where}: shape {shape} of {dtype} needs {count * dtype.itemsize} bytes, the frame holds {len(data)}"
        )
    try:  # an empty array may still declare dimensions numpy cannot hold
        array = np.frombuffer(data, dtype=dtype, count=count).copy()
        return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)
    except (ValueError, OverflowError, MemoryError) as err:
        raise ProtocolViolation(f"{where}: shape {shape} cannot be made: {err}"[:300]) from None


def _restore(value: Any, arrays: list[Any]) -> Any:
    if isinstance(value, list):
        return [_restore(item, arrays) for item in value]
    if isinstance(value, dict):
        if set(value) == {ARRAY_KEY}:
            index = value[ARRAY_KEY]
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(arrays):
                raise ProtocolViolation(f"reference to array {index!r}, which the message does not hold")
            return arrays[index]
        return {key: _restore(item, arrays) for key, item in value.items()}
    return value


def _parse_header(header: bytes) -> dict[str, Any]:
    try:
        body = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError, MemoryError) as err:
        raise ProtocolViolation(f"the message is not valid JSON: {type(err).__name__}: {err}"[:300]) from None
    if not isinstance(body, dict) or set(body) != {"value", "arrays"}:
        raise ProtocolViolation("a message must be a JSON object with exactly 'value' and 'arrays'")
    count = body["arrays"]
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_ARRAYS:
        raise ProtocolViolation(f"a message may hold 0 to {MAX_ARRAYS} arrays, this one declares {count!r}")
    return body


def _complete(body: dict[str, Any], frames: list[bytes]) -> Any:
    arrays = [_parse_array(frame, i) for i, frame in enumerate(frames)]
    try:
        return _restore(body["value"], arrays)
    except RecursionError:
        raise ProtocolViolation("the message is nested too deeply") from None


def decode(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """The value of the one whole message in `data` (what `encode` wrote)."""
    reader = Reader(max_bytes)
    messages = list(reader.feed(data))
    if len(messages) != 1 or reader.pending:
        raise ProtocolViolation(
            f"expected one whole message, got {len(messages)} and {len(reader._buffer)} bytes more"
        )
    return messages[0]


class Reader:
    """Reassembles messages from bytes as they arrive (the judge reads with select), enforcing the limits on
    each frame's declared length before buffering it. `feed` yields the messages completed so far."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._body: dict[str, Any] | None = None
        self._frames: list[bytes] = []
        self._used = 0

    def _take(self) -> bytes | None:
        if len(self._buffer) < LENGTH.size:
            return None
        (length,) = LENGTH.unpack_from(self._buffer)
        if self._used + LENGTH.size + length > self.max_bytes:
            raise ProtocolViolation(
                f"a message over the limit of {self.max_bytes} bytes (a frame declares {length} bytes)"
            )
        if len(self._buffer) < LENGTH.size + length:
            return None
        frame = bytes(self._buffer[LENGTH.size : LENGTH.size + length])
        del self._buffer[: LENGTH.size + length]
        self._used += LENGTH.size + length
        return frame

    def feed(self, data: bytes) -> Iterator[Any]:
        self._buffer += data
        while True:
            if self._body is not None and len(self._frames) == self._body["arrays"]:
                body, frames = self._body, self._frames
                self._body, self._frames, self._used = None, [], 0
                yield _complete(body, frames)
                continue
            frame = self._take()
            if frame is None:
                return
            if self._body is None:
                self._body = _parse_header(frame)
            else:
                self._frames.append(frame)

    @property
    def pending(self) -> bool:
        """Part of a message has arrived (the rest may never come)."""
        return bool(self._buffer) or self._body is not None
