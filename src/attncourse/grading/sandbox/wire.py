"""The plain-data format of the trust boundary.

Everything that crosses between the trusted grader and the sandbox is a *message*: a JSON
header plus raw byte buffers. Values inside a message are trees of plain data:

    None, bool, int, float, str
    {"t": "tensor", "dtype": "float64", "shape": [2, 3], "buffer": 0, "kind": "Tensor"}
    {"t": "tuple" | "list", "items": [...]}
    {"t": "dict", "items": [[key, value], ...]}        (keys are strings)
    {"t": "object", "type": "ndarray", "text": "array([...])"}

A tensor's numbers travel as raw little-endian bytes in a buffer and are rebuilt with
``torch.frombuffer`` after the size is checked against dtype and shape: nothing is ever
unpickled, and what comes out of :func:`decode` is made only of built-in types, plain
``torch.Tensor`` objects the decoder created itself, and :class:`Foreign` (the description
of an object the sandbox could not send, which compares and prints as text only).

Frames on the pipe: an 8-byte big-endian length and the JSON header (UTF-8), then for each
buffer the header names, an 8-byte length and the bytes. Sizes are bounded on reading, so a
hostile peer can make a read fail, but never make it allocate without limit.
"""

from __future__ import annotations

import json
import math
import os
import select
import struct
import time
from dataclasses import dataclass
from typing import Any

import torch

# dtypes that may cross the boundary, by the name used on the wire.
DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "complex128": torch.complex128,
    "complex64": torch.complex64,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}

MAX_DEPTH = 32  # nesting of tuples, lists and dicts
MAX_ITEMS = 100_000  # items in one container
MAX_TEXT = 200_000  # characters of one string
MAX_HEADER = 64 * 2**20  # bytes of a JSON header
MAX_MESSAGE = 512 * 2**20  # bytes of a whole message, buffers included
FOREIGN_TEXT = 300  # characters kept of the text of an object that is not plain data


class WireError(Exception):
    """A message that is not valid plain data, or a peer that broke the framing."""


@dataclass(frozen=True)
class Foreign:
    """An object the sandbox returned that is not plain data: only its type name and a
    short text survive the boundary."""

    type_name: str
    text: str

    def __repr__(self) -> str:
        return self.text


# ---------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------


def encode(value: Any, buffers: list[bytes], depth: int = 0) -> Any:
    """The JSON-able tree of ``value``; tensors' bytes are appended to ``buffers``.

    Runs on either side. Objects that are not plain data become ``{"t": "object"}``.
    """
    if depth > MAX_DEPTH:
        return _foreign(value, "nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value if not isinstance(value, str) else value[:MAX_TEXT]
    if type(value) is int or type(value) is float:  # noqa: E721 - subclasses are foreign
        return value
    if isinstance(value, torch.Tensor):
        return _encode_tensor(value, buffers)
    if type(value) in (tuple, list):
        items = [encode(v, buffers, depth + 1) for v in value[:MAX_ITEMS]]
        return {"t": type(value).__name__, "items": items}
    if type(value) is dict and all(type(k) is str for k in value):
        items = [[k, encode(v, buffers, depth + 1)] for k, v in list(value.items())[:MAX_ITEMS]]
        return {"t": "dict", "items": items}
    return _foreign(value)


def _foreign(value: Any, reason: str = "") -> dict:
    try:
        text = reason or repr(value)
    except Exception as exc:  # noqa: BLE001 - a hostile __repr__ may raise anything
        text = f"<{type(exc).__name__} in repr>"
    try:
        type_name = type(value).__name__
    except Exception:  # noqa: BLE001
        type_name = "object"
    return {"t": "object", "type": str(type_name)[:100], "text": str(text)[:FOREIGN_TEXT]}


def _encode_tensor(tensor: torch.Tensor, buffers: list[bytes]) -> dict:
    """A tensor as plain data: its device's name, and its numbers as raw bytes.

    Works on tensor subclasses too (their numbers are read through the base class, with
    torch functions disabled), so what crosses is data, never the subclass.
    """
    with torch._C.DisableTorchFunctionSubclass():
        plain = torch.Tensor.detach(tensor)
        kind = type(tensor).__name__
        device = str(plain.device)
        if plain.dtype not in DTYPE_NAMES:
            return _foreign(tensor, f"a tensor of dtype {plain.dtype}")
        if plain.is_sparse or plain.layout != torch.strided:
            plain = plain.to_dense()
        plain = plain.cpu().contiguous()
        data = plain.reshape(-1).view(torch.uint8).numpy().tobytes() if plain.numel() else b""
    buffers.append(data)
    return {
        "t": "tensor",
        "dtype": DTYPE_NAMES[plain.dtype],
        "shape": list(plain.shape),
        "buffer": len(buffers) - 1,
        "kind": kind,
        "device": device,
    }


def decode(tree: Any, buffers: list[bytes], depth: int = 0) -> Any:
    """Rebuild a value from ``encode``'s tree; raise WireError on anything else."""
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if tree is None or type(tree) in (bool, int, float):
        return tree
    if type(tree) is str:
        if len(tree) > MAX_TEXT:
            raise WireError("string too long")
        return tree
    if type(tree) is not dict:
        raise WireError(f"unexpected {type(tree).__name__} in a value")
    kind = tree.get("t")
    if kind == "tensor":
        return _decode_tensor(tree, buffers)
    if kind in ("tuple", "list"):
        items = _items(tree)
        decoded = [decode(v, buffers, depth + 1) for v in items]
        return tuple(decoded) if kind == "tuple" else decoded
    if kind == "dict":
        result = {}
        for pair in _items(tree):
            if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str:
                raise WireError("malformed dict item")
            result[pair[0]] = decode(pair[1], buffers, depth + 1)
        return result
    if kind == "object":
        return Foreign(_text(tree.get("type"), 100), _text(tree.get("text"), FOREIGN_TEXT))
    raise WireError(f"unknown value kind {kind!r}")


def _items(tree: dict) -> list:
    items = tree.get("items")
    if type(items) is not list or len(items) > MAX_ITEMS:
        raise WireError("malformed container")
    return items


def _text(value: Any, limit: int) -> str:
    if type(value) is not str:
        raise WireError("expected a string")
    return value[:limit]


def _decode_tensor(tree: dict, buffers: list[bytes]) -> torch.Tensor:
    dtype = DTYPES.get(tree.get("dtype"))  # type: ignore[arg-type]
    shape = tree.get("shape")
    index = tree.get("buffer")
    if dtype is None:
        raise WireError(f"dtype {tree.get('dtype')!r} may not cross the boundary")
    if type(shape) is not list or len(shape) > 16 or not all(type(s) is int and s >= 0 for s in shape):
        raise WireError("malformed tensor shape")
    if type(index) is not int or not 0 <= index < len(buffers):
        raise WireError("tensor buffer out of range")
    data = buffers[index]
    itemsize = torch.empty((), dtype=dtype).element_size()
    numel = math.prod(shape)
    if numel * itemsize != len(data):
        raise WireError(f"tensor of shape {shape} and dtype {tree['dtype']} needs {numel * itemsize} bytes, got {len(data)}")
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    flat = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype)
    return flat.reshape(shape).clone()


def tensor_kind(tree: Any) -> str | None:
    """The class name the sandbox gave for a tensor in ``tree`` (``"Tensor"`` for a plain
    one), or None when ``tree`` is not a tensor."""
    return tree.get("kind") if type(tree) is dict and tree.get("t") == "tensor" else None


# ---------------------------------------------------------------------------------------
# Messages on a pipe
# ---------------------------------------------------------------------------------------


def pack(header: dict, buffers: list[bytes] = ()) -> bytes:
    """One frame: the header (with the number of buffers) and the buffers."""
    header = {**header, "buffers": len(buffers)}
    head = json.dumps(header, allow_nan=True, separators=(",", ":")).encode("utf-8")
    parts = [struct.pack(">Q", len(head)), head]
    for data in buffers:
        parts += [struct.pack(">Q", len(data)), bytes(data)]
    return b"".join(parts)


def write_message(fd: int, header: dict, buffers: list[bytes] = ()) -> None:
    data = memoryview(pack(header, buffers))
    while data:
        written = os.write(fd, data)
        data = data[written:]


class Reader:
    """Reads frames from a pipe with a deadline; never trusts the sizes it is given."""

    def __init__(self, fd: int, max_message: int = MAX_MESSAGE):
        self.fd = fd
        self.max_message = max_message

    def _read_exact(self, n: int, deadline: float | None) -> bytes:
        chunks, left = [], n
        while left:
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise TimeoutError
                ready, _, _ = select.select([self.fd], [], [], wait)
                if not ready:
                    raise TimeoutError
            chunk = os.read(self.fd, min(left, 1 << 20))
            if not chunk:
                raise EOFError("the other side closed the pipe")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def read(self, deadline: float | None = None) -> tuple[dict, list[bytes]]:
        """The next (header, buffers); TimeoutError, EOFError or WireError otherwise."""
        (size,) = struct.unpack(">Q", self._read_exact(8, deadline))
        if size > min(MAX_HEADER, self.max_message):
            raise WireError(f"header of {size} bytes is too large")
        try:
            header = json.loads(self._read_exact(size, deadline).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WireError(f"malformed header: {exc}") from None
        if type(header) is not dict:
            raise WireError("a header must be a JSON object")
        count = header.get("buffers", 0)
        if type(count) is not int or not 0 <= count <= MAX_ITEMS:
            raise WireError("malformed buffer count")
        total, buffers = size, []
        for _ in range(count):
            (length,) = struct.unpack(">Q", self._read_exact(8, deadline))
            total += length
            if total > self.max_message:
                raise WireError(f"message larger than {self.max_message} bytes")
            buffers.append(self._read_exact(length, deadline))
        return header, buffers
