"""Shared types of the codec library: the error, the result record, input and params checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Upper bound on the symbol count a decoder accepts; the container applies its own, tighter limits.
MAX_SYMBOLS = 1 << 40


class CodecError(ValueError):
    """Coded input is malformed, truncated, inconsistent or out of range; the message names why."""


class Infeasible(ValueError):
    """This coder cannot represent this array with its settings (e.g. too many symbols)."""


@dataclass(frozen=True)
class Encoded:
    """One coded integer array: the concrete codec, its payload and the few params it needs."""

    codec: str
    data: bytes
    params: dict = field(default_factory=dict)
    side_bytes: int = 0
    stats: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return len(self.data)


def as_symbols(symbols: Any) -> np.ndarray:
    """Flatten (C order) an integer array; reject floats, bools and objects early."""
    arr = np.asarray(symbols)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"codec input must be an integer array, got dtype {arr.dtype}")
    return arr.reshape(-1)


def check_dtype(dtype: Any) -> np.dtype:
    """Parse the caller's dtype; only integer dtypes are coded."""
    try:
        dt = np.dtype(dtype)
    except Exception as exc:
        raise CodecError(f"unknown dtype {dtype!r}") from exc
    if dt.kind not in "iu":
        raise CodecError(f"dtype {dt} is not an integer dtype")
    return dt


def check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise CodecError(f"symbol count must be an integer, got {type(n).__name__}")
    n = int(n)
    if n < 0 or n > MAX_SYMBOLS:
        raise CodecError(f"symbol count {n} outside [0, {MAX_SYMBOLS}]")
    return n


def check_data(data: Any) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise CodecError(f"payload must be bytes, got {type(data).__name__}")


def check_params(params: Any, schema: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Params from a file: exactly the keys of `schema`, each an int within its (lo, hi) range."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise CodecError(f"params must be a dict, got {type(params).__name__}")
    extra = set(params) - set(schema)
    if extra:
        raise CodecError(f"unexpected params {sorted(map(str, extra))}")
    out = {}
    for key, (lo, hi) in schema.items():
        if key not in params:
            raise CodecError(f"missing param {key!r}")
        val = params[key]
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)):
            raise CodecError(f"param {key!r} must be an integer, got {type(val).__name__}")
        val = int(val)
        if not lo <= val <= hi:
            raise CodecError(f"param {key!r}={val} outside [{lo}, {hi}]")
        out[key] = val
    return out


def dtype_range(dt: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dt)
    return int(info.min), int(info.max)
