"""Names of the dense coders and the one-byte ids nested payloads (sparse) use for them.

range_parts has no nested id: its parts option is per array, which sparse cannot carry.
"""

from __future__ import annotations

from .ans import AnsCoder, RangeCoder
from .coder import Coder
from .huffman import HuffmanCoder
from .range_parts import RangePartsCoder
from .raw import RawCoder
from .tunstall import TunstallCoder

DENSE_CODERS: dict[str, type[Coder]] = {
    "raw": RawCoder,
    "huffman": HuffmanCoder,
    "tunstall": TunstallCoder,
    "ans": AnsCoder,
    "range": RangeCoder,
    "range_parts": RangePartsCoder,
}
INNER_IDS: dict[str, int] = {"raw": 0, "huffman": 1, "tunstall": 2, "ans": 3, "range": 4}
INNER_NAMES: dict[int, str] = {v: k for k, v in INNER_IDS.items()}
