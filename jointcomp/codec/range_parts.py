"""Range coding with one frequency table per part: the flat array cut into `parts` equal runs.

For arrays whose leading slices differ in distribution, e.g. a quantized T-Basis basis of shape
(16, 16, 9, 16) with a quantization scale per leading index: parts=16 gives each slice its own
table. Body layout (after the alphabet section, whose dense alphabet all parts share):
uvarint parts, then one frequency table (freqtable.py) per part over the whole alphabet, then a
single constriction queue RangeEncoder stream (u32 little-endian words) in which part i's
symbols are coded under part i's model.
"""

from __future__ import annotations

import constriction
import numpy as np

from .alphabet import Alphabet, Prepared
from .ans import _TableCoder, _words, _xent_bits
from .base import Encoded, Infeasible
from .bitio import Reader, uvarint
from .coder import DenseCoder
from .freqtable import MAX_PRECISION, make_table, read_table
from .sidecode import ans_model


def _parts_problem(n: int, parts: int, alphabet: int) -> str | None:
    """Why `parts` cannot split n symbols over `alphabet` values, or None when it can."""
    if parts < 2:
        return f"parts={parts}: one table is plain range coding"
    if n % parts or n // parts < 2:
        return f"{n} symbols do not split into {parts} equal parts of >= 2"
    if alphabet > n // parts:
        # Bounds the decoder's tables to n entries in all; such tables could not pay anyway.
        return f"{alphabet} symbols exceed the {n // parts} of each part"
    return None


class RangePartsCoder(_TableCoder, DenseCoder):
    name = "range_parts"

    def __init__(self, parts: int = 1, precision: int = MAX_PRECISION) -> None:
        super().__init__(precision)
        if isinstance(parts, bool) or not isinstance(parts, (int, np.integer)) or parts < 1:
            raise ValueError(f"parts must be a positive integer, got {parts!r}")
        self.parts = int(parts)

    def encode_prepared(self, prep: Prepared) -> Encoded:
        # Checked before DenseCoder's empty/constant shortcuts, so that auto's default
        # (parts=1) is skipped for every array, not only for those with two or more symbols.
        why = _parts_problem(prep.n, self.parts, prep.alphabet_size)
        if why:
            raise Infeasible(why)
        return super().encode_prepared(prep)

    def encode_body(self, prep: Prepared) -> tuple[bytes, int, dict]:
        a, k = prep.alphabet_size, self.parts
        if a > (1 << self.precision) // 2:
            raise Infeasible(f"{a} symbols do not fit precision {self.precision}")
        dense = prep.dense.astype(np.int32).reshape(k, -1)
        # Per-part histograms over the shared alphabet; make_table gives absent symbols freq 1.
        offset = (np.arange(k, dtype=np.int64) * a)[:, None]
        counts = np.bincount((dense + offset).ravel(), minlength=k * a).reshape(k, a)
        tables = [uvarint(k)]
        coder = constriction.stream.queue.RangeEncoder()
        bits = 0.0
        for i in range(k):
            freqs, table = make_table(counts[i], self.precision)
            coder.encode(dense[i], ans_model(freqs))
            tables.append(table)
            bits += _xent_bits(counts[i], freqs)
        side = b"".join(tables)
        words = coder.get_compressed().astype("<u4").tobytes()
        stats = {"parts": k, "table_bytes": len(side), "model_bits": bits}
        return side + words, len(side), stats

    def decode_body(self, r: Reader, n: int, alpha: Alphabet) -> np.ndarray:
        k = r.uvarint("range_parts parts", hi=n)
        why = _parts_problem(n, k, alpha.size)
        if why:
            raise r.fail(why)
        # A table takes >= 1 byte, so this loop stops within the payload's length.
        models = [ans_model(read_table(r, alpha.size)[0]) for _ in range(k)]
        words = _words(r, "range_parts")
        m = n // k
        try:
            decoder = constriction.stream.queue.RangeDecoder(words)
            dense = np.concatenate([decoder.decode(model, m) for model in models])
            # As for range: the decoder cannot tell where its data ends, so the payload must
            # be exactly what encoding the decoded symbols yields.
            check = constriction.stream.queue.RangeEncoder()
            for i, model in enumerate(models):
                check.encode(dense[i * m : (i + 1) * m], model)
            same = np.array_equal(check.get_compressed(), words)
        except Exception as exc:  # constriction's errors must not leak
            raise r.fail(f"range_parts stream rejected: {exc}") from exc
        if not same:
            raise r.fail("range_parts stream is not the encoding of the symbols it decodes to")
        return alpha.take(dense)
