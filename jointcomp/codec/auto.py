"""auto: per array, the smallest of every coder (side information included)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .alphabet import prepare
from .base import Encoded
from .choose import best_of
from .registry import DENSE_CODERS
from .sparse import SparseCoder

ALL_CODERS = {**DENSE_CODERS, "sparse": SparseCoder}
# range_parts is infeasible (skipped) unless the caller passes range_parts={"parts": k}.
AUTO_CANDIDATES = ("raw", "huffman", "tunstall", "ans", "range", "range_parts", "sparse")
SPARSE_MIN_ZEROS = 0.5  # below this zero fraction sparse coding cannot pay for its positions


def encode_auto(
    flat: np.ndarray,
    candidates: tuple[str, ...] = AUTO_CANDIDATES,
    options: Mapping[str, dict] | None = None,
) -> Encoded:
    """Try the candidates (skipping sparse for dense arrays) and keep the smallest payload.

    The chosen Encoded's stats gain `auto_sizes`: payload bytes of every coder tried.
    """
    unknown = set(candidates) - set(ALL_CODERS)
    if unknown:
        raise ValueError(f"unknown auto candidates {sorted(unknown)}")
    prep = prepare(flat)
    names = list(candidates)
    if "sparse" in names and (
        prep.n == 0 or np.count_nonzero(flat) > (1 - SPARSE_MIN_ZEROS) * prep.n
    ):
        names.remove("sparse")
    if not names:
        names = ["raw"]
    best, sizes = best_of(prep, names, ALL_CODERS, options)
    return Encoded(
        best.codec, best.data, best.params, best.side_bytes, {**best.stats, "auto_sizes": sizes}
    )
