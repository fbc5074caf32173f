"""Frequency tables for ANS, range and Tunstall: integers summing to 2**precision, stored compactly.

Every frequency except the most frequent symbol's is rounded to `s` significant bits and stored
as its bit length (a small-int sequence, see sidecode) plus s-1 mantissa bits; the most frequent
symbol is marked with bit length 0 and receives the remainder 2**precision - sum(others), so the
table always sums exactly. `s` is chosen per table to minimise table bits + n * cross-entropy.
"""

from __future__ import annotations

import numpy as np

from .bitio import Reader, pack_fields, padding_is_zero, unpack_fields
from .sidecode import decode_small, encode_small, quantize_counts

MAX_PRECISION = 24  # constriction's Categorical quantizes to 24 bits


def bit_length(f: np.ndarray) -> np.ndarray:
    """bit_length of positive int64 values < 2**53 (0 for 0)."""
    return np.frexp(np.asarray(f, dtype=np.float64))[1].astype(np.int64)


def _round_sig(f: np.ndarray, s: int, nearest: bool) -> np.ndarray:
    drop = np.maximum(bit_length(f) - s, 0)
    half = np.where(drop > 0, np.left_shift(1, np.maximum(drop - 1, 0)), 0) if nearest else 0
    return ((f + half) >> drop) << drop


def _zigzag_arr(d: np.ndarray) -> np.ndarray:
    return np.where(d >= 0, 2 * d, -2 * d - 1)


def make_table(counts: np.ndarray, precision: int) -> tuple[np.ndarray, bytes]:
    """Quantize `counts` (A >= 2 entries, >= 1 positive) and serialize; returns (freqs, bytes).

    A zero count (a symbol of the shared alphabet absent from one part, see range_parts) gets
    frequency 1, the least a decodable table allows: it costs the present symbols ~nothing.
    """
    counts = np.asarray(counts, dtype=np.int64)
    a = counts.size
    total = 1 << precision
    if a < 2 or a > total // 2:
        raise ValueError(f"alphabet of {a} symbols does not fit precision {precision}")
    if counts.min() < 0 or counts.max() < 1:
        raise ValueError("counts must be non-negative with at least one positive")
    present = counts > 0
    f0 = np.ones(a, dtype=np.int64)
    f0[present] = quantize_counts(counts[present], total - int(a - present.sum()))
    rem = int(np.argmax(counts))
    others = np.ones(a, dtype=bool)
    others[rem] = False
    best = None
    for s in range(2, precision + 1):
        f = _round_sig(f0, s, nearest=True)
        r = total - int(f[others].sum())
        if r < max(1, int(f0[rem]) // 2):
            f = _round_sig(f0, s, nearest=False)  # rounding down always leaves r >= f0[rem]
            r = total - int(f[others].sum())
        f[rem] = r
        mant_bits = int(np.minimum(bit_length(f[others]) - 1, s - 1).sum())
        cost = float(np.dot(counts, precision - np.log2(f))) + mant_bits
        if best is None or cost < best[0]:
            best = (cost, s, f)
        if s >= int(bit_length(f0[others]).max()):
            break  # more significant bits than any frequency has: nothing changes
    _, s, freqs = best
    return freqs, _serialize(freqs, rem, precision, s)


def _serialize(freqs: np.ndarray, rem: int, precision: int, s: int) -> bytes:
    b = bit_length(freqs)
    b[rem] = 0
    raw = encode_small(b)
    delta = encode_small(_zigzag_arr(np.diff(b, prepend=0)))
    bseq = bytes([0]) + raw if len(raw) <= len(delta) else bytes([1]) + delta
    mw = np.where(b > 0, np.minimum(b - 1, s - 1), 0)
    mant = (freqs >> np.maximum(b - 1 - mw, 0)) & ((np.int64(1) << mw) - 1)
    mant[rem] = 0
    return bytes([precision, s]) + bseq + pack_fields(mant, mw)


def read_table(r: Reader, a: int) -> tuple[np.ndarray, int]:
    """Parse a table for an alphabet of `a` >= 2 symbols; returns (freqs, precision)."""
    precision = r.u8("table precision")
    if not 1 <= precision <= MAX_PRECISION or a > (1 << precision) // 2:
        raise r.fail(f"table precision {precision} invalid for {a} symbols")
    s = r.u8("table significant bits")
    if not 2 <= s <= precision:
        raise r.fail(f"table significant bits {s} outside [2, {precision}]")
    bmode = r.u8("table length mode")
    if bmode not in (0, 1):
        raise r.fail(f"unknown table length mode {bmode}")
    vals = decode_small(r, a, "table bit lengths")
    b = np.cumsum(np.where(vals % 2 == 0, vals >> 1, -((vals + 1) >> 1))) if bmode else vals
    if b.min() < 0 or b.max() > precision:
        raise r.fail(f"table bit length outside [0, {precision}]")
    zero = np.flatnonzero(b == 0)
    if zero.size != 1:
        raise r.fail(f"table marks {zero.size} remainder symbols, expected 1")
    mw = np.where(b > 0, np.minimum(b - 1, s - 1), 0)
    total_bits = int(mw.sum())
    raw = r.take((total_bits + 7) // 8, "table mantissas")
    if not padding_is_zero(raw, total_bits):
        raise r.fail("table mantissa padding not zero")
    mant = unpack_fields(raw, np.cumsum(mw) - mw, mw).astype(np.int64)
    low = np.maximum(b - 1 - mw, 0)  # where the mantissa sits below the leading bit
    freqs = np.where(b > 0, (np.int64(1) << np.maximum(b - 1, 0)) | (mant << low), 0)
    total = 1 << precision
    rest = total - int(freqs.sum())
    if rest < 1:
        raise r.fail("table frequencies exceed the total")
    freqs[zero[0]] = rest
    return freqs, precision
