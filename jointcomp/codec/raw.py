"""Raw: fixed-width bit packing of (symbol - min), the fallback every array can use.

params = {"min": minimum value, "bits": field width 0..64}; data = n fields of `bits` bits,
MSB first, zero-padded to a byte. A repeated value costs 0 bytes of data (bits = 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .alphabet import Prepared, offsets_to_values, to_u64
from .base import (
    CodecError,
    Encoded,
    as_symbols,
    check_data,
    check_dtype,
    check_n,
    check_params,
    dtype_range,
)
from .bitio import pack_uniform, padding_is_zero, unpack_uniform
from .coder import Coder

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
RAW_SCHEMA = {"min": (-(1 << 63), (1 << 64) - 1), "bits": (0, 64)}


def raw_payload_bytes(n: int, bits: int) -> int:
    """Bytes of ``n`` fields of ``bits`` bits, zero-padded to a byte (a raw payload's length)."""
    return (n * bits + 7) // 8


class RawCoder(Coder):
    name = "raw"

    def encode(self, symbols: Any) -> Encoded:
        # Raw does not need the dense alphabet: skip the histogram / sort.
        return self._encode_flat(as_symbols(symbols))

    def encode_prepared(self, prep: Prepared) -> Encoded:
        return self._encode_flat(prep.flat)

    def _encode_flat(self, flat: np.ndarray) -> Encoded:
        if flat.size == 0:
            return Encoded(self.name, b"", {"min": 0, "bits": 0}, 0, {"bits": 0})
        vmin, vmax = int(flat.min()), int(flat.max())
        bits = (vmax - vmin).bit_length()
        params = {"min": vmin, "bits": bits}
        if bits == 0:
            return Encoded(self.name, b"", params, 0, {"bits": 0})
        offs = to_u64(flat) - _U64(vmin & _MASK64)
        return Encoded(self.name, pack_uniform(offs, bits), params, 0, {"bits": bits})

    def decode(self, data: bytes, params: dict, n: int, dtype: Any) -> np.ndarray:
        data = check_data(data)
        p = check_params(params, RAW_SCHEMA)
        n = check_n(n)
        dt = check_dtype(dtype)
        lo, hi = dtype_range(dt)
        vmin, bits = p["min"], p["bits"]
        if n and not lo <= vmin <= hi:
            raise CodecError(f"raw: minimum {vmin} outside {dt} range")
        need = raw_payload_bytes(n, bits)
        if len(data) != need:
            raise CodecError(f"raw: {len(data)} bytes of payload, {n} x {bits} bits need {need}")
        if n == 0:
            return np.zeros(0, dtype=dt)
        if bits == 0:
            return np.full(n, vmin, dtype=dt)
        if not padding_is_zero(data, n * bits):
            raise CodecError("raw: padding bits not zero")
        offs = unpack_uniform(data, n, bits)
        top = int(offs.max())
        if vmin + top > hi:
            raise CodecError(f"raw: value {vmin + top} outside {dt} range")
        return offsets_to_values(offs, vmin, dt)
