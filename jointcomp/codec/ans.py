"""ANS (stack) and range (queue) coding through constriction, under a stored frequency table.

Body layout (after the alphabet section): frequency table (freqtable.py), then the coder's
compressed 32-bit words, little-endian. Both sides build the model with
constriction.stream.model.Categorical(freqs / sum(freqs), perfect=False) from the same integers,
so the decoder's model is bit-identical to the encoder's.
"""

from __future__ import annotations

import constriction
import numpy as np

from .alphabet import Alphabet, Prepared
from .base import Infeasible
from .bitio import Reader
from .coder import DenseCoder
from .freqtable import MAX_PRECISION, make_table, read_table
from .sidecode import ans_model


def _words(r: Reader, name: str) -> np.ndarray:
    raw = r.rest()
    if len(raw) % 4:
        raise r.fail(f"{name} stream of {len(raw)} bytes is not whole 32-bit words")
    return np.frombuffer(raw, dtype="<u4").astype(np.uint32)


class _TableCoder:
    """Shared part: the frequency table and the precision option."""

    def __init__(self, precision: int = MAX_PRECISION) -> None:
        if not 2 <= precision <= MAX_PRECISION:
            raise ValueError(f"precision must be in [2, {MAX_PRECISION}]")
        self.precision = precision

    def _table(self, prep: Prepared):
        if prep.alphabet_size > (1 << self.precision) // 2:
            raise Infeasible(f"{prep.alphabet_size} symbols do not fit precision {self.precision}")
        freqs, table = make_table(prep.counts, self.precision)
        return ans_model(freqs), table, freqs


def _xent_bits(counts: np.ndarray, freqs: np.ndarray) -> float:
    return float(np.dot(counts, np.log2(freqs.sum() / freqs)))


class AnsCoder(_TableCoder, DenseCoder):
    name = "ans"

    def encode_body(self, prep: Prepared) -> tuple[bytes, int, dict]:
        model, table, freqs = self._table(prep)
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(prep.dense.astype(np.int32), model)
        words = coder.get_compressed().astype("<u4").tobytes()
        stats = {"table_bytes": len(table), "model_bits": _xent_bits(prep.counts, freqs)}
        return table + words, len(table), stats

    def decode_body(self, r: Reader, n: int, alpha: Alphabet) -> np.ndarray:
        freqs, _ = read_table(r, alpha.size)
        words = _words(r, "ans")
        try:
            coder = constriction.stream.stack.AnsCoder(words)
            dense = coder.decode(ans_model(freqs), n)
            empty = coder.is_empty()
        except Exception as exc:  # constriction's errors must not leak
            raise r.fail(f"ans stream rejected: {exc}") from exc
        if not empty:
            raise r.fail("ans stream has data left after the last symbol")
        return alpha.take(dense)


class RangeCoder(_TableCoder, DenseCoder):
    name = "range"

    def encode_body(self, prep: Prepared) -> tuple[bytes, int, dict]:
        model, table, freqs = self._table(prep)
        coder = constriction.stream.queue.RangeEncoder()
        coder.encode(prep.dense.astype(np.int32), model)
        words = coder.get_compressed().astype("<u4").tobytes()
        stats = {"table_bytes": len(table), "model_bits": _xent_bits(prep.counts, freqs)}
        return table + words, len(table), stats

    def decode_body(self, r: Reader, n: int, alpha: Alphabet) -> np.ndarray:
        freqs, _ = read_table(r, alpha.size)
        words = _words(r, "range")
        model = ans_model(freqs)
        try:
            dense = constriction.stream.queue.RangeDecoder(words).decode(model, n)
            # The range decoder cannot tell where its data ends (a missing or an extra last
            # word may still decode), so the payload must be exactly what encoding yields.
            check = constriction.stream.queue.RangeEncoder()
            check.encode(dense, model)
            same = np.array_equal(check.get_compressed(), words)
        except Exception as exc:
            raise r.fail(f"range stream rejected: {exc}") from exc
        if not same:
            raise r.fail("range stream is not the encoding of the symbols it decodes to")
        return alpha.take(dense)
