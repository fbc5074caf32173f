"""The dense alphabet: map the symbols actually present to 0..A-1 and store that list compactly.

Symbols of any integer dtype become uint64 offsets from the minimum (two's-complement wrap makes
this exact even for full int64/uint64 spans). The present offsets are stored as one of:
  0 contiguous  -- every value in [min, min+A-1] is present (no extra bytes)
  1 bitmap      -- span varint + a bitmap over [min, max]
  2 gaps        -- A-1 varints of (gap - 1) between successive present offsets
whichever is smallest. The section starts with the symbol count n (a uvarint), so a caller
passing the wrong n gets a CodecError instead of a silently cut or padded array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import dtype_range
from .bitio import Reader, uvarint, uvarints, zigzag

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
MODE_CONTIGUOUS, MODE_BITMAP, MODE_GAPS = 0, 1, 2


def to_u64(x: np.ndarray) -> np.ndarray:
    """Integer array -> uint64 with two's-complement wrap for signed dtypes."""
    if x.dtype.kind == "i":
        return x.astype(np.int64, copy=False).view(_U64)
    return x.astype(_U64, copy=False)


@dataclass
class Prepared:
    """One symbol array analysed once and shared by every coder (auto tries them all)."""

    dtype: np.dtype
    n: int
    vmin: int  # minimum symbol value (Python int)
    present: np.ndarray  # sorted uint64 offsets from vmin of the symbols present (length A)
    counts: np.ndarray  # int64 count of each dense symbol
    dense: np.ndarray  # intp dense index of every symbol, 0..A-1
    flat: np.ndarray  # the symbols themselves (1-D, original dtype)

    @property
    def alphabet_size(self) -> int:
        return int(self.present.size)

    @property
    def span(self) -> int:
        return int(self.present[-1]) if self.present.size else 0


def prepare(flat: np.ndarray) -> Prepared:
    n = int(flat.size)
    if n == 0:
        z = np.zeros(0, dtype=np.int64)
        return Prepared(flat.dtype, 0, 0, np.zeros(0, dtype=_U64), z, z.astype(np.intp), flat)
    vmin = int(flat.min())
    vmax = int(flat.max())
    span = vmax - vmin
    offs = to_u64(flat) - _U64(vmin & _MASK64)
    if span <= 4 * n + 1024:
        # Small span: a histogram over the span is cheaper than sorting.
        hist = np.bincount(offs.astype(np.intp), minlength=span + 1)
        present = np.flatnonzero(hist)
        lut = np.zeros(span + 1, dtype=np.intp)
        lut[present] = np.arange(present.size)
        return Prepared(flat.dtype, n, vmin, present.astype(_U64), hist[present], lut[offs], flat)
    present, inv, counts = np.unique(offs, return_inverse=True, return_counts=True)
    return Prepared(flat.dtype, n, vmin, present, counts.astype(np.int64), inv.reshape(-1), flat)


def write_alphabet(prep: Prepared) -> bytes:
    a = prep.alphabet_size
    count = uvarint(prep.n)
    head = uvarint(zigzag(prep.vmin)) + uvarint(a)
    if a <= 1 or prep.span == a - 1:
        return count + bytes([MODE_CONTIGUOUS]) + head
    span = prep.span
    gaps = uvarints(np.diff(prep.present) - _U64(1))
    bitmap_len = (span + 1 + 7) // 8
    if bitmap_len + 10 < len(gaps):
        bits = np.zeros(span + 1, dtype=bool)
        bits[prep.present.astype(np.intp)] = True
        bm = np.packbits(bits, bitorder="little").tobytes()
        return count + bytes([MODE_BITMAP]) + head + uvarint(span) + bm
    return count + bytes([MODE_GAPS]) + head + gaps


@dataclass
class Alphabet:
    """What a decoder knows after reading the alphabet section."""

    size: int
    values: np.ndarray  # the present symbol values, already in the output dtype
    contiguous: bool  # values == vmin + arange(size)

    def take(self, dense: np.ndarray) -> np.ndarray:
        """Symbols of dense indices (each < size)."""
        if self.contiguous:
            # One add in the output dtype (wrapping arithmetic gives the exact in-range
            # values) costs far less than a gather.
            dt = self.values.dtype
            native = dt.newbyteorder("=")
            out = np.add(dense, self.values[:1].astype(native), dtype=native, casting="unsafe")
            return out if dt == native else out.astype(dt)
        return self.values[dense]


def read_alphabet(r: Reader, n: int, dt: np.dtype) -> Alphabet:
    stored = r.uvarint("symbol count")
    if stored != n:
        raise r.fail(f"payload holds {stored} symbols, caller expects {n}")
    mode = r.u8("alphabet mode")
    if mode not in (MODE_CONTIGUOUS, MODE_BITMAP, MODE_GAPS):
        raise r.fail(f"unknown alphabet mode {mode}")
    lo, hi = dtype_range(dt)
    vmin = r.svarint("alphabet minimum")
    a = r.uvarint("alphabet size")
    if a < 1 or a > n:
        raise r.fail(f"alphabet size {a} impossible for {n} symbols")
    if vmin < lo or vmin > hi:
        raise r.fail(f"alphabet minimum {vmin} outside {dt} range")
    if mode == MODE_CONTIGUOUS:
        if vmin + a - 1 > hi:
            raise r.fail(f"alphabet [{vmin}, {vmin + a - 1}] outside {dt} range")
        present = np.arange(a, dtype=_U64)
    elif mode == MODE_BITMAP:
        span = r.uvarint("alphabet span")
        if vmin + span > hi:
            raise r.fail(f"alphabet span {span} reaches outside {dt} range")
        bm = r.take((span + 1 + 7) // 8, "alphabet bitmap")
        bits = np.unpackbits(np.frombuffer(bm, dtype=np.uint8), bitorder="little")
        if bits[span + 1 :].any():
            raise r.fail("alphabet bitmap has bits past its span")
        present = np.flatnonzero(bits[: span + 1]).astype(_U64)
        if present.size != a or present[0] != 0 or int(present[-1]) != span:
            raise r.fail("alphabet bitmap disagrees with its size or span")
    else:
        gaps = r.uvarints(a - 1, "alphabet gaps")
        present = np.zeros(a, dtype=_U64)
        np.cumsum(gaps + _U64(1), out=present[1:])
        # gap+1 wraps to 0 or the sum wraps past 2**64 exactly when the order breaks
        if np.any(present[1:] <= present[:-1]):
            raise r.fail("alphabet gaps overflow")
        if vmin + int(present[-1]) > hi:
            raise r.fail(f"alphabet reaches outside {dt} range")
    return Alphabet(a, offsets_to_values(present, vmin, dt), mode == MODE_CONTIGUOUS)


def offsets_to_values(offsets: np.ndarray, vmin: int, dt: np.dtype) -> np.ndarray:
    """uint64 offsets (range already checked) + vmin, as dtype dt."""
    raw = offsets + _U64(vmin & _MASK64)
    if dt.kind == "i":
        return raw.view(np.int64).astype(dt)
    return raw.astype(dt)
