"""Empirical zeroth-order entropy of an integer array."""

from __future__ import annotations

from typing import Any

import numpy as np

from .alphabet import prepare
from .base import as_symbols


def entropy_bits(symbols: Any) -> float:
    """H0 in bits per symbol: -sum p log2 p over the symbol histogram (0.0 when empty)."""
    prep = prepare(as_symbols(symbols))
    if prep.n == 0:
        return 0.0
    p = prep.counts / float(prep.n)
    return float(-(p * np.log2(p)).sum())
