"""The quantization settings of one tensor, resolved from the recipe."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from ..tensor.log_grid import check_steps

Granularity = Literal["channel", "tensor"]


@dataclass(frozen=True)
class QuantSpec:
    """``bits``-bit integers with a scale per output channel (``channel``) or per tensor;
    symmetric: signed grid, zero point 0; asymmetric: unsigned grid with an integer zero point;
    ``narrow_range`` drops the most negative (signed) or the largest (unsigned) code;
    ``include_zero`` (asymmetric): the grid's range reaches 0, so 0 is exact, or (False) spans
    only the values' [min, max], a finer grid for values far from 0 (folded output scales)
    whose zero point may lie outside the codes; ``scale_grid`` (steps per octave): the scales
    are moved to the nearest 2^(k/steps) once quantized, so the file stores them as small
    integer codes (``tensor.log_grid``) instead of floats."""

    bits: int
    granularity: Granularity = "channel"
    symmetric: bool = True
    narrow_range: bool = True
    include_zero: bool = True
    scale_grid: int | None = None

    def __post_init__(self) -> None:
        if (
            not isinstance(self.bits, int)
            or isinstance(self.bits, bool)
            or not 1 <= self.bits <= 16
        ):
            raise ValueError(f"bits must be an int in 1..16, got {self.bits!r}")
        if self.granularity not in ("channel", "tensor"):
            raise ValueError(f"granularity must be channel or tensor, got {self.granularity!r}")
        if self.scale_grid is not None:
            check_steps(self.scale_grid)

    def with_bits(self, bits: int) -> QuantSpec:
        return replace(self, bits=bits)

    def for_fixed_zeros(self) -> QuantSpec:
        """A zero pattern that must survive needs zero point 0, so zeros are integer 0 and the
        coder sees (and codes the positions of) the zeros."""
        return replace(self, symmetric=True)

    def axis(self, channel_axis: int) -> int | None:
        return channel_axis if self.granularity == "channel" else None
