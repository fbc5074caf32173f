"""Entropy coders over integer symbol arrays; a library of its own (numpy + constriction only).

>>> import numpy as np
>>> from jointcomp.codec import decode, encode
>>> q = np.random.default_rng(0).integers(-3, 4, size=(64, 64)).astype(np.int8)
>>> enc = encode(q, codec="auto")        # Encoded(codec, data, params, side_bytes, stats)
>>> q2 = decode(enc.codec, enc.data, enc.params, q.size, q.dtype).reshape(q.shape)
>>> bool((q2 == q).all()), enc.codec, len(enc.data) < q.size
(True, 'ans', True)

Every payload decodes bit-exactly; decoding untrusted bytes raises CodecError and nothing else.
The byte layout of each coder's payload is documented in docs/CODECS.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .ans import AnsCoder, RangeCoder
from .auto import ALL_CODERS, encode_auto
from .base import CodecError, Encoded, Infeasible, as_symbols
from .entropy import entropy_bits
from .huffman import HuffmanCoder
from .range_parts import RangePartsCoder
from .raw import RawCoder
from .sparse import SparseCoder
from .tunstall import TunstallCoder

CODECS: tuple[str, ...] = ("auto", "raw", "huffman", "tunstall", "ans", "range", "sparse")
# Coders that encode nothing with their default options (range_parts needs parts=k >= 2), so
# they stay out of CODECS, whose every name must encode any array as it is.
OPTION_CODECS: tuple[str, ...] = ("range_parts",)

__all__ = [
    "CODECS",
    "OPTION_CODECS",
    "AnsCoder",
    "CodecError",
    "Encoded",
    "HuffmanCoder",
    "Infeasible",
    "RangeCoder",
    "RangePartsCoder",
    "RawCoder",
    "SparseCoder",
    "TunstallCoder",
    "decode",
    "encode",
    "entropy_bits",
]


def encode(symbols: np.ndarray, codec: str = "auto", **options: Any) -> Encoded:
    """Code an integer array (any dtype/shape, flattened in C order) with `codec`.

    Options go to the coder's constructor (e.g. max_length=12 for huffman, parts=16 for
    range_parts); for "auto" they are `candidates=(...)` and per-coder option dicts, e.g.
    huffman={"max_length": 12} or range_parts={"parts": 16} (without it auto skips range_parts).
    """
    flat = as_symbols(symbols)
    if codec == "auto":
        candidates = options.pop("candidates", None)
        unknown = set(options) - set(ALL_CODERS)
        if unknown:
            raise TypeError(f"unknown auto options {sorted(unknown)}")
        if candidates is None:
            return encode_auto(flat, options=options)
        return encode_auto(flat, tuple(candidates), options=options)
    if codec not in ALL_CODERS:
        raise ValueError(f"unknown codec {codec!r}; choose from {CODECS + OPTION_CODECS}")
    return ALL_CODERS[codec](**options).encode(flat)


def decode(codec: str, data: bytes, params: dict, n: int, dtype: str | np.dtype) -> np.ndarray:
    """Decode exactly n symbols of `dtype` (1-D); any malformed input raises CodecError."""
    if not isinstance(codec, str) or codec not in ALL_CODERS:
        raise CodecError(f"unknown codec {codec!r}; expected one of {CODECS[1:] + OPTION_CODECS}")
    try:
        return ALL_CODERS[codec]().decode(data, params, n, dtype)
    except CodecError:
        raise
    except (ArithmeticError, IndexError, KeyError, TypeError, ValueError, MemoryError) as exc:
        # Last line of defence at the trust boundary; the fuzz tests check it is never reached.
        raise CodecError(f"{codec}: malformed payload ({type(exc).__name__}: {exc})") from exc
