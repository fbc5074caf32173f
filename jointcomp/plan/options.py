"""Each layer's candidate settings: keep ratios (prune), rank fractions (decompose; None =
dense) and bit widths (quantize; None = float), as the stages still to run allow. A layer's
options are their product; one option = one (keep, rank, bits)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from torch import nn


@dataclass
class LayerSpace:
    """What the planner may decide for layer ``name``: ``keeps`` (1.0 first), ``ranks`` (None
    = dense first), ``bits`` (None = float when no quantize stage covers it), the ``format``
    and residual density its decomposition would use, and ``producer``: the layer whose
    pruned output channels are this layer's input channels (so its size shrinks with them)."""

    name: str
    module: nn.Module
    keeps: list[float] = field(default_factory=lambda: [1.0])
    ranks: list[float | None] = field(default_factory=lambda: [None])
    bits: list[int | None] = field(default_factory=lambda: [None])
    format: str | None = None
    sparse: float = 0.0
    producer: str | None = None

    def options(self) -> list[tuple[float, float | None, int | None]]:
        """Every (keep, rank, bits) combination, in a fixed order.

        >>> from torch import nn
        >>> LayerSpace("fc", nn.Linear(4, 4), keeps=[1.0, 0.5], bits=[4, 8]).options()
        [(1.0, None, 4), (1.0, None, 8), (0.5, None, 4), (0.5, None, 8)]
        """
        return list(itertools.product(self.keeps, self.ranks, self.bits))


def describe(keep: float, rank: float | None, bits: int | None) -> str:
    """One option in words.

    >>> describe(0.5, 0.25, 4)
    'keep 50% · rank 25% · 4-bit'
    """
    parts = [f"keep {keep:.0%}" if keep < 1 else "all channels"]
    parts.append("dense" if rank is None else f"rank {rank:.0%}")
    parts.append("float" if bits is None else f"{bits}-bit")
    return " · ".join(parts)
