"""The coder contract and the shared frame of the alphabet-based coders.

An alphabet coder's payload always starts with the alphabet section (alphabet.py); an array of
one repeated value stops there. An empty array has an empty payload.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from .alphabet import Alphabet, Prepared, prepare, read_alphabet, write_alphabet
from .base import CodecError, Encoded, as_symbols, check_data, check_dtype, check_n, check_params
from .bitio import Reader


def default_block_size(n: int) -> int:
    """Symbols per independently decodable block: ~8*sqrt(n), a power of two in [256, 65536].

    Block count (side info, ~2-3 bytes each) and the number of vectorized steps per decode
    (= block size) both grow like sqrt(n), which balances the two.
    """
    want = 8.0 * math.sqrt(max(n, 1))
    return int(min(1 << 16, max(256, 1 << math.ceil(math.log2(want)))))


def max_block_size(n: int) -> int:
    """The largest block a lockstep decoder (huffman) accepts: 4x the default. Such a decoder
    takes one numpy step per symbol of a block, so a block of n symbols would take n Python
    steps; this bounds them by ~32·sqrt(n), at most 2**18."""
    return 4 * default_block_size(n)


class Coder(ABC):
    """Base of every concrete coder: encode(symbols) -> Encoded, decode(...) -> 1-D array."""

    name: ClassVar[str] = ""

    def encode(self, symbols: Any) -> Encoded:
        flat = as_symbols(symbols)
        return self.encode_prepared(prepare(flat))

    @abstractmethod
    def encode_prepared(self, prep: Prepared) -> Encoded:
        """Encode an array already analysed by alphabet.prepare (auto shares one analysis)."""

    @abstractmethod
    def decode(self, data: bytes, params: dict, n: int, dtype: Any) -> np.ndarray:
        """Exactly n symbols of dtype (1-D); CodecError for anything malformed."""


class DenseCoder(Coder):
    """Coders over the dense alphabet 0..A-1: alphabet section, then the coder's body."""

    def encode_prepared(self, prep: Prepared) -> Encoded:
        if prep.n == 0:
            return Encoded(self.name, b"", {}, 0, {"alphabet": 0})
        alpha = write_alphabet(prep)
        if prep.alphabet_size == 1:
            return Encoded(self.name, alpha, {}, len(alpha), {"alphabet": 1})
        body, side, stats = self.encode_body(prep)
        stats = {"alphabet": prep.alphabet_size, "alphabet_bytes": len(alpha), **stats}
        return Encoded(self.name, alpha + body, {}, len(alpha) + side, stats)

    def decode(self, data: bytes, params: dict, n: int, dtype: Any) -> np.ndarray:
        data = check_data(data)
        check_params(params, {})
        n = check_n(n)
        dt = check_dtype(dtype)
        if n == 0:
            if data:
                raise CodecError(f"{self.name}: {len(data)} bytes of payload for 0 symbols")
            return np.zeros(0, dtype=dt)
        r = Reader(data, self.name)
        alpha = read_alphabet(r, n, dt)
        if alpha.size == 1:
            r.expect_end()
            return np.full(n, alpha.values[0], dtype=dt)
        out = self.decode_body(r, n, alpha)
        r.expect_end()
        return out

    @abstractmethod
    def encode_body(self, prep: Prepared) -> tuple[bytes, int, dict]:
        """Body bytes, how many of them are side information, and reporting stats."""

    @abstractmethod
    def decode_body(self, r: Reader, n: int, alpha: Alphabet) -> np.ndarray:
        """The n decoded symbols (as alpha.values[dense index]); consume the whole body."""


def read_blocks(r: Reader, n: int, name: str, hi: int | None = None) -> tuple[int, int]:
    """Block size varint (1..min(n, hi)); returns (block_size, number of blocks)."""
    bs = r.uvarint(f"{name} block size", hi=n if hi is None else min(n, hi))
    if bs < 1:
        raise r.fail(f"{name} block size 0")
    return bs, -(-n // bs)
