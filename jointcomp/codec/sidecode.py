"""Side tables: integer-frequency quantization and a tiny coder for arrays of small integers.

Code-length and frequency tables are sequences of small integers (< 256). They are stored as
the smaller of fixed-width bits or an ANS stream under an 8-bit frequency table (constriction),
so a 65,536-entry table decodes in one vectorized call.
"""

from __future__ import annotations

import constriction
import numpy as np

from .bitio import Reader, pack_uniform, unpack_uniform, uvarint

_META_TOTAL = 256
SMALL_LIMIT = 256  # values coded by this module are < SMALL_LIMIT


def quantize_counts(counts: np.ndarray, total: int) -> np.ndarray:
    """Integer frequencies summing to `total`, >= 1 wherever counts > 0 (largest remainder)."""
    c = np.asarray(counts, dtype=np.float64)
    present = c > 0
    if int(present.sum()) > total:
        raise ValueError(f"{int(present.sum())} symbols do not fit a total of {total}")
    t = c / c.sum() * total
    f = np.where(present, np.maximum(np.floor(t), 1), 0).astype(np.int64)
    diff = total - int(f.sum())
    if diff > 0:
        order = np.argsort(-(t - f), kind="stable")
        f[order[:diff]] += 1
    while diff < 0:
        # Clamping rare symbols to 1 overshot: take it back from the largest frequencies.
        order = np.argsort(-f, kind="stable")
        take = order[:-diff][f[order[:-diff]] > 1]
        f[take] -= 1
        diff = total - int(f.sum())
    return f


def ans_model(freqs: np.ndarray):
    """The constriction model both sides build from the same integer frequencies."""
    probs = np.asarray(freqs, dtype=np.float64) / float(np.sum(freqs))
    return constriction.stream.model.Categorical(probs, perfect=False)


def encode_small(values: np.ndarray) -> bytes:
    """Code non-negative ints < 256; the decoder must be told the count."""
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    if v.size == 0:
        return bytes([0, 0])
    vmax = int(v.max())
    assert int(v.min()) >= 0 and vmax < SMALL_LIMIT
    width = vmax.bit_length()
    fixed = bytes([0, width]) + pack_uniform(v, width)
    m = vmax + 1
    if v.size < 32 or not 2 <= m <= 255:  # the ANS form stores m in one byte
        return fixed
    freqs = quantize_counts(np.bincount(v, minlength=m), _META_TOTAL)
    if freqs.max() >= _META_TOTAL:
        return fixed
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(v.astype(np.int32), ans_model(freqs))
    words = coder.get_compressed().astype("<u4").tobytes()
    ans = bytes([1, m]) + freqs.astype(np.uint8).tobytes() + uvarint(len(words) // 4) + words
    return ans if len(ans) < len(fixed) else fixed


def decode_small(r: Reader, count: int, name: str) -> np.ndarray:
    """Inverse of encode_small; returns int64 values < 256."""
    mode = r.u8(f"{name} mode")
    if mode == 0:
        width = r.u8(f"{name} width")
        if width > 8:
            raise r.fail(f"{name} width {width} > 8")
        raw = r.take((count * width + 7) // 8, name)
        return unpack_uniform(raw, count, width).astype(np.int64)
    if mode != 1:
        raise r.fail(f"unknown {name} mode {mode}")
    m = r.u8(f"{name} alphabet")
    if m < 2:
        raise r.fail(f"{name} alphabet {m} < 2")
    freqs = np.frombuffer(r.take(m, f"{name} frequencies"), dtype=np.uint8).astype(np.int64)
    if int(freqs.sum()) != _META_TOTAL:
        raise r.fail(f"{name} frequencies sum to {int(freqs.sum())}, not {_META_TOTAL}")
    nwords = r.uvarint(f"{name} word count", hi=r.remaining // 4)
    words = np.frombuffer(r.take(4 * nwords, f"{name} words"), dtype="<u4").astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        out = coder.decode(ans_model(freqs), count)
        empty = coder.is_empty()
    except Exception as exc:  # constriction raises ValueError and others; never leak them
        raise r.fail(f"{name} stream rejected: {exc}") from exc
    if not empty:
        raise r.fail(f"{name} stream has unread data")
    return out.astype(np.int64)
