"""Names of the dense coders and the one-byte ids nested payloads (sparse) use for them."""

from __future__ import annotations

from .ans import AnsCoder, RangeCoder
from .coder import Coder
from .huffman import HuffmanCoder
from .raw import RawCoder
from .tunstall import TunstallCoder

DENSE_CODERS: dict[str, type[Coder]] = {
    "raw": RawCoder,
    "huffman": HuffmanCoder,
    "tunstall": TunstallCoder,
    "ans": AnsCoder,
    "range": RangeCoder,
}
INNER_IDS: dict[str, int] = {"raw": 0, "huffman": 1, "tunstall": 2, "ans": 3, "range": 4}
INNER_NAMES: dict[int, str] = {v: k for k, v in INNER_IDS.items()}
