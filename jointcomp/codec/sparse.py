"""Sparse arrays: the positions of the nonzeros, then the nonzero values, each coded separately.

Positions are coded as whichever is smaller:
  0 gaps    -- the run of zeros before each nonzero, coded by the best dense coder;
  1 bitmask -- the n-bit nonzero mask, ANS-coded (a 2-symbol model).
Method 2 means the positions are implied (no nonzeros, or no zeros). ``bitmask=False`` always
codes gaps (Deep Compression's relative indices, e.g. Huffman-coded with ``gap_codecs``).
For reporting, stats also give the size of a CSR-style b-bit relative index (Deep Compression,
b = 4, 5, 8: one entry per nonzero plus a filler entry whenever a gap overflows 2**b).

Payload: uvarint n; uvarint nnz; u8 method; [nested positions]; [nested values] (see
choose.pack_inner).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .alphabet import prepare
from .ans import AnsCoder
from .base import CodecError, Encoded, check_data, check_dtype, check_n, check_params
from .bitio import Reader, uvarint
from .choose import best_of, pack_inner, read_inner
from .coder import Coder

GAPS, BITMASK, IMPLIED = 0, 1, 2
CSR_BITS = (4, 5, 8)


def csr_index_cost(gaps: np.ndarray, bits: int) -> tuple[int, int]:
    """(index bytes, filler entries) of a b-bit relative index for the given zero runs."""
    step = 1 << bits
    entries = int(np.sum((gaps + 1 + step - 1) // step))
    return (entries * bits + 7) // 8, entries - int(gaps.size)


class SparseCoder(Coder):
    name = "sparse"

    def __init__(
        self,
        value_codecs: tuple[str, ...] = ("raw", "huffman", "tunstall", "ans", "range"),
        gap_codecs: tuple[str, ...] = ("raw", "huffman", "ans"),
        bitmask: bool = True,
    ) -> None:
        self.value_codecs = value_codecs
        self.gap_codecs = gap_codecs
        self.bitmask = bitmask  # False: positions always as coded gaps (Deep Compression's way)

    def encode_prepared(self, prep) -> Encoded:
        flat, n = prep.flat, prep.n
        if n == 0:
            return Encoded(self.name, b"", {}, 0, {"nnz": 0})
        mask = flat != 0
        pos = np.flatnonzero(mask)
        nnz = int(pos.size)
        stats: dict[str, Any] = {"nnz": nnz}
        head = uvarint(n) + uvarint(nnz)
        side = 0  # nested headers and tables; the header is added below
        if nnz in (0, n):
            head += bytes([IMPLIED])
            positions = b""
            stats["positions_method"] = "implied"
        else:
            gaps = np.diff(pos, prepend=-1) - 1
            g_enc, _ = best_of(prepare(gaps), self.gap_codecs)
            g_bytes = pack_inner(g_enc)
            m_enc = AnsCoder().encode_prepared(prepare(mask.view(np.uint8)))
            m_bytes = pack_inner(m_enc)
            use_gaps = len(g_bytes) <= len(m_bytes) or not self.bitmask
            head += bytes([GAPS if use_gaps else BITMASK])
            positions = g_bytes if use_gaps else m_bytes
            chosen = g_enc if use_gaps else m_enc
            side += len(positions) - len(chosen.data) + chosen.side_bytes
            stats.update(
                positions_method="gaps" if use_gaps else "bitmask",
                positions_gap_bytes=len(g_bytes),
                positions_gap_codec=g_enc.codec,
                positions_bitmask_bytes=len(m_bytes),
            )
            for b in CSR_BITS:
                stats[f"csr{b}_index_bytes"], stats[f"csr{b}_fillers"] = csr_index_cost(gaps, b)
        values = b""
        if nnz:
            v_enc, _ = best_of(prepare(flat[pos]), self.value_codecs)
            values = pack_inner(v_enc)
            side += len(values) - len(v_enc.data) + v_enc.side_bytes
            stats.update(values_codec=v_enc.codec, values_bytes=len(values))
        return Encoded(self.name, head + positions + values, {}, side + len(head), stats)

    def decode(self, data: bytes, params: dict, n: int, dtype: Any) -> np.ndarray:
        data = check_data(data)
        check_params(params, {})
        n = check_n(n)
        dt = check_dtype(dtype)
        if n == 0:
            if data:
                raise CodecError(f"sparse: {len(data)} bytes of payload for 0 symbols")
            return np.zeros(0, dtype=dt)
        r = Reader(data, "sparse")
        stored = r.uvarint("symbol count")
        if stored != n:
            raise r.fail(f"payload holds {stored} symbols, caller expects {n}")
        nnz = r.uvarint("nonzero count", hi=n)
        method = r.u8("positions method")
        if (method == IMPLIED) != (nnz in (0, n)) or method not in (GAPS, BITMASK, IMPLIED):
            raise r.fail(f"positions method {method} invalid for {nnz} of {n} nonzeros")
        out = np.zeros(n, dtype=dt)
        if nnz == 0:
            r.expect_end()
            return out
        if method == GAPS:
            gaps = read_inner(r, nnz, np.dtype(np.int64), "sparse gaps")
            if int(gaps.min()) < 0 or float(gaps.sum(dtype=np.float64)) > n - nnz + 0.5:
                raise r.fail("sparse gaps fall outside the array")
            pos = np.cumsum(gaps + 1) - 1
            if int(pos[-1]) >= n:
                raise r.fail("sparse gaps fall outside the array")
        elif method == BITMASK:
            mask = read_inner(r, n, np.dtype(np.uint8), "sparse bitmask")
            if int(mask.max()) > 1 or int(np.count_nonzero(mask)) != nnz:
                raise r.fail("sparse bitmask disagrees with the nonzero count")
            pos = np.flatnonzero(mask)
        else:
            pos = slice(None)
        vals = read_inner(r, nnz, dt, "sparse values")
        if not np.all(vals != 0):
            raise r.fail("sparse values contain a zero")
        r.expect_end()
        out[pos] = vals
        return out
