"""Rank rules: how a recipe says which rank to keep, and the measure that turns a matrix into a
rank under each rule.

A rule is an int (that rank), a float in (0, 1] (that fraction of the layer's full rank),
``energy:x`` (keep a fraction x of Σs²), ``effective`` (Roy & Vetterli's effective rank),
``vbmf`` (empirical variational Bayes, Nakajima et al.) or ``indicator:x`` (the smallest rank
whose spectral-norm indicator s_r/s_0 is ≤ x; the truncation that follows ``regularize``).
Formats with several ranks (Tucker-2, TT) also take a list of ints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..tensor import effective_rank, energy_rank, rank_for_indicator, vbmf_rank

MEASURES = ("energy", "effective", "vbmf", "indicator")


@dataclass(frozen=True)
class RankRule:
    """kind: 'int' | 'list' | 'fraction' | one of MEASURES; value: its number(s) if any."""

    kind: str
    value: Any = None

    def __str__(self) -> str:
        if self.kind in ("int", "fraction", "list"):
            return str(self.value)
        return self.kind if self.value is None else f"{self.kind}:{self.value}"


def parse_rank(spec: Any) -> RankRule:
    """Parse a recipe's rank; ValueError naming what is allowed."""
    if isinstance(spec, bool):
        raise ValueError(f"rank must be an int, a fraction or a measure, got {spec!r}")
    if isinstance(spec, int):
        if spec < 1:
            raise ValueError(f"an integer rank must be >= 1, got {spec}")
        return RankRule("int", spec)
    if isinstance(spec, float):
        if not 0.0 < spec <= 1.0:
            raise ValueError(f"a fractional rank must lie in (0, 1], got {spec}")
        return RankRule("fraction", spec)
    if isinstance(spec, (list, tuple)):
        if not spec or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in spec
        ):
            raise ValueError(f"a rank list must hold positive ints, got {spec!r}")
        return RankRule("list", tuple(spec))
    if isinstance(spec, str):
        name, _, arg = spec.partition(":")
        if name in ("effective", "vbmf"):
            if arg:
                raise ValueError(f"rank {spec!r}: '{name}' takes no argument")
            return RankRule(name)
        if name in ("energy", "indicator"):
            try:
                x = float(arg)
            except ValueError:
                raise ValueError(f"rank {spec!r}: expected '{name}:X' with X a number") from None
            lo_ok = x > 0 if name == "energy" else x >= 0
            if not (lo_ok and x <= 1):
                raise ValueError(
                    f"rank {spec!r}: X must lie in {'(0' if name == 'energy' else '[0'}, 1]"
                )
            return RankRule(name, x)
    raise ValueError(
        f"rank {spec!r}: expected an int, a fraction in (0, 1], a list of ints, 'energy:X', "
        "'effective', 'vbmf' or 'indicator:X'"
    )


def measure_rank(matrix: torch.Tensor, rule: RankRule) -> int:
    """The rank ``rule`` (a measure) picks for ``matrix`` (≥ 1)."""
    m = matrix.detach().to(torch.float64)
    if rule.kind == "vbmf":
        return max(1, vbmf_rank(m))
    s = torch.linalg.svdvals(m)
    if rule.kind == "energy":
        return energy_rank(s, rule.value)
    if rule.kind == "effective":
        return effective_rank(s)[1]
    if rule.kind == "indicator":
        return rank_for_indicator(s, rule.value)
    raise ValueError(f"{rule.kind!r} is not a rank measure")


def fraction_rank(fraction: float, full: int) -> int:
    """round(fraction · full), at least 1 and at most full."""
    return min(full, max(1, math.floor(fraction * full + 0.5)))
