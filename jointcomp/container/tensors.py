"""Tensor table entries: one tensor ⇄ (a small JSON entry, its payload bytes).

Floats that stay float are stored raw (little-endian, in their own dtype or a narrower storage
dtype the recipe asks for); integer tensors and the bit patterns of sparse float tensors go
through ``jointcomp.codec``. A float32 tensor whose every value is 2^(k/steps) (quantizer scales
a ``scale_grid`` put there) may be stored as its integer codes k (storage ``"l<steps>"``, e.g.
``"l64"``), exactly. Decoding validates the entry before allocating anything.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import FormatError
from ..tensor import log_grid

# file dtype code -> (torch dtype, little-endian numpy dtype of the same bits)
DTYPES: dict[str, tuple[torch.dtype, str]] = {
    "f32": (torch.float32, "<f4"),
    "f16": (torch.float16, "<f2"),
    "bf16": (torch.bfloat16, "<i2"),  # numpy has no bfloat16: carry its 16 bits as int16
    "f64": (torch.float64, "<f8"),
    "i8": (torch.int8, "i1"),
    "u8": (torch.uint8, "u1"),
    "i16": (torch.int16, "<i2"),
    "i32": (torch.int32, "<i4"),
    "i64": (torch.int64, "<i8"),
    "b": (torch.bool, "u1"),
}
CODE_OF: dict[torch.dtype, str] = {t: code for code, (t, _) in DTYPES.items()}
FLOAT_CODES = {"f32", "f16", "bf16", "f64"}
BIT_VIEW = {"f32": torch.int32, "f16": torch.int16, "bf16": torch.int16, "f64": torch.int64}
PLAIN = "plain"  # the tensor's own little-endian bytes, no coder
MAX_DIMS = 8
MAX_ELEMENTS = 1 << 31  # per tensor; a file naming more is refused before allocation
LOG_PREFIX = "l"  # storage "l64": float32 values stored as their codes on a 64-step log grid


def log_steps(store: str) -> int | None:
    """The grid of a log-code storage dtype ("l64" → 64), None for any other storage."""
    if not store.startswith(LOG_PREFIX) or not store[1:].isdigit():
        return None
    steps = int(store[1:])
    return steps if steps in log_grid.STEPS and store == f"{LOG_PREFIX}{steps}" else None


def dtype_code(dtype: torch.dtype) -> str:
    if dtype not in CODE_OF:
        raise FormatError(f"tensor dtype {dtype} cannot be stored in a .jcz file")
    return CODE_OF[dtype]


def _raw_bytes(t: torch.Tensor, code: str) -> bytes:
    t = t.detach().to("cpu").contiguous()
    if code == "bf16":
        t = t.view(torch.int16)
    return t.numpy().astype(DTYPES[code][1], copy=False).tobytes()


def _integer_view(t: torch.Tensor, code: str) -> np.ndarray:
    """The integers a coder sees: the values of integer tensors, the bit patterns of floats."""
    t = t.detach().to("cpu").contiguous()
    if code in FLOAT_CODES:
        t = t.view(BIT_VIEW[code])
    elif code == "b":
        t = t.to(torch.uint8)
    return t.numpy().reshape(-1)


def encode_tensor(
    name: str,
    tensor: torch.Tensor,
    *,
    codec_name: str = "plain",
    storage: str | None = None,
    codec_options: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    """Encode one tensor. Returns (table entry, payload, stats for reports).

    ``codec_name`` "plain" stores the bytes as they are; any other name is passed to
    ``jointcomp.codec.encode`` over the tensor's integers (for floats: their bit patterns, so the
    round trip is exact). ``storage`` narrows a float tensor's stored dtype (e.g. "f16").
    """
    code = dtype_code(tensor.dtype)
    entry: dict[str, Any] = {"n": name, "s": list(tensor.shape), "d": code}
    stored = tensor
    if storage and log_steps(storage):
        return _encode_log(entry, tensor, log_steps(storage), codec_name, codec_options)
    if storage and storage != code:
        if code not in FLOAT_CODES or storage not in FLOAT_CODES:
            raise ValueError(f"{name}: cannot store a {code} tensor as {storage}")
        stored = tensor.to(DTYPES[storage][0])
        entry["st"] = storage
    store_code = entry.get("st", code)
    stats: dict[str, Any] = {}
    if codec_name == PLAIN:
        entry["c"] = PLAIN
        payload = _raw_bytes(stored, store_code)
    else:
        from .. import codec

        symbols = _integer_view(stored, store_code)
        enc = codec.encode(symbols, codec_name, **(codec_options or {}))
        entry["c"] = enc.codec
        if enc.params:
            entry["p"] = enc.params
        payload = enc.data
        stats = {"side_bytes": enc.side_bytes, **enc.stats}
    entry["b"] = len(payload)
    return entry, payload, stats


def _encode_log(
    entry: dict[str, Any],
    tensor: torch.Tensor,
    steps: int,
    codec_name: str,
    codec_options: dict[str, Any] | None,
) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    """A float32 tensor as its codes on the log grid of ``steps`` (exact, or ValueError)."""
    name = entry["n"]
    if codec_name == PLAIN:
        raise ValueError(f"{name}: log-grid codes go through a coder, not plain")
    found = log_grid.exact_codes(tensor, steps)
    if found is None:
        raise ValueError(f"{name}: not every value lies on the log grid of {steps} steps")
    codes, coarsest = found
    codes = (codes.astype(np.int64) * (steps // coarsest)).astype(np.int32)
    from .. import codec

    enc = codec.encode(codes.reshape(-1), codec_name, **(codec_options or {}))
    entry.update(st=f"{LOG_PREFIX}{steps}", c=enc.codec)
    if enc.params:
        entry["p"] = enc.params
    entry["b"] = len(enc.data)
    return entry, enc.data, {"side_bytes": enc.side_bytes, **enc.stats}


def check_entry(entry: Any, index: int) -> tuple[str, list[int], str, str, int]:
    """Validate a table entry's fields; returns (name, shape, dtype, storage dtype, bytes)."""
    where = f"tensor table entry {index}"
    if not isinstance(entry, dict):
        raise FormatError(f"{where} is not an object")
    name = entry.get("n")
    if not isinstance(name, str) or not name or len(name) > 1024:
        raise FormatError(f"{where}: missing or invalid name")
    where = f"tensor {name!r}"
    shape = entry.get("s")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise FormatError(f"{where}: invalid shape {shape!r}")
    # each dimension too, not only the product: [0, 2**62] holds nothing, yet no module has
    # such a dimension and torch's reshape overflows on it
    if math.prod(shape) > MAX_ELEMENTS or any(d > MAX_ELEMENTS for d in shape):
        raise FormatError(
            f"{where}: shape {shape} has more than {MAX_ELEMENTS} elements or a dimension "
            "that large"
        )
    code = entry.get("d")
    if not isinstance(code, str) or code not in DTYPES:  # a dict or list is unhashable
        raise FormatError(f"{where}: unknown dtype {code!r}")
    store = entry.get("st", code)
    if isinstance(store, str) and log_steps(store):
        if code != "f32" or entry.get("c") == PLAIN:
            raise FormatError(
                f"{where}: log-grid storage {store!r} needs an f32 tensor and a coder"
            )
    elif (
        not isinstance(store, str)
        or store not in DTYPES
        or (store != code and (code not in FLOAT_CODES or store not in FLOAT_CODES))
    ):
        raise FormatError(f"{where}: invalid storage dtype {store!r} for dtype {code}")
    length = entry.get("b")
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise FormatError(f"{where}: invalid payload length {length!r}")
    if not isinstance(entry.get("c"), str):
        raise FormatError(f"{where}: missing codec name")
    if "p" in entry and not isinstance(entry["p"], dict):
        raise FormatError(f"{where}: codec parameters are not an object")
    return name, shape, code, store, length


def decode_tensor(entry: dict[str, Any], payload: memoryview, index: int) -> torch.Tensor:
    """Rebuild the tensor of a validated entry from its payload bytes (the file's SHA-256
    already checked). Raises FormatError."""
    name, shape, code, store, length = check_entry(entry, index)
    if len(payload) != length:
        raise FormatError(f"tensor {name!r}: payload is {len(payload)} bytes, expected {length}")
    n = math.prod(shape)
    if entry["c"] == PLAIN:
        np_dtype = np.dtype(DTYPES[store][1])
        if length != n * np_dtype.itemsize:
            raise FormatError(
                f"tensor {name!r}: plain payload is {length} bytes, shape {shape} of {store} "
                f"needs {n * np_dtype.itemsize}"
            )
        array = np.frombuffer(payload, dtype=np_dtype).astype(np_dtype.newbyteorder("="))
    else:
        from .. import codec

        np_dtype = _symbol_dtype(store)
        try:
            array = codec.decode(entry["c"], bytes(payload), entry.get("p", {}), n, np_dtype)
        except codec.CodecError as exc:
            raise FormatError(f"tensor {name!r}: {exc}") from None
        if array.shape != (n,):
            raise FormatError(f"tensor {name!r}: decoded {array.shape} values, expected ({n},)")
        array = array.astype(np_dtype, copy=False)
    steps = log_steps(store)
    if steps is not None:
        try:
            values = log_grid.values_of(array, steps)
        except ValueError as exc:
            raise FormatError(f"tensor {name!r}: {exc}") from None
        return torch.from_numpy(values).reshape(shape)
    tensor = _from_numpy(array, store).reshape(shape)
    if store != code:
        tensor = tensor.to(DTYPES[code][0])
    return tensor


def _symbol_dtype(code: str) -> np.dtype:
    """The integer dtype a coder produced for a tensor stored as ``code``."""
    if log_steps(code) is not None:
        return np.dtype(np.int32)
    if code in FLOAT_CODES:
        return np.dtype(torch.empty(0, dtype=BIT_VIEW[code]).numpy().dtype)
    if code == "b":
        return np.dtype(np.uint8)
    return np.dtype(DTYPES[code][1]).newbyteorder("=")


def _from_numpy(array: np.ndarray, code: str) -> torch.Tensor:
    """A torch tensor of dtype ``code`` from native-order numpy values or bit patterns."""
    torch_dtype = DTYPES[code][0]
    if code == "b":
        if array.size and int(array.max()) > 1:
            raise FormatError("boolean tensor holds values other than 0 and 1")
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.uint8)).to(torch.bool)
    if code in FLOAT_CODES and array.dtype.kind in "iu":
        return torch.from_numpy(np.ascontiguousarray(array)).view(torch_dtype)
    return torch.from_numpy(np.ascontiguousarray(array)).to(torch_dtype)
