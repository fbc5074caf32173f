"""Mode plans for T-Basis layers: how a weight [out, in, *kernel] becomes a TT-matrix whose
cores all fit one mode size n (``plan_modes``), and the padding that takes (``pad_weight``).

A channel core pairs an out mode o_k with an in mode i_k, o_k·i_k ≤ n (the core uses the first
o_k·i_k of the basis' n mode slices); a conv kernel gets its own cores with out mode 1. Sizes
that factor badly are padded with rows/columns that the reconstruction slices away.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ._common import check_positive_int
from .factorize import factorize_dim


@dataclass(frozen=True)
class ModePlan:
    """The TT-matrix layout of one weight [out, in, *kernel] under mode n.

    ``out_modes``/``in_modes`` list every core's modes (kernel cores have out mode 1);
    ``out_padded``/``in_padded`` are the padded channel sizes (∏ of the channel cores' modes);
    ``window`` is the kernel's kh·kw (1 for a Linear)."""

    out_modes: tuple[int, ...]
    in_modes: tuple[int, ...]
    out_size: int
    in_size: int
    out_padded: int
    in_padded: int
    window: int = 1

    @property
    def cores(self) -> int:
        return len(self.out_modes)

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """The padded TT-matrix [∏out_modes, ∏in_modes] = [out_padded, in_padded·window]."""
        return self.out_padded, self.in_padded * self.window

    @property
    def padding(self) -> int:
        """Matrix entries the padding adds (their values are never used)."""
        rows, cols = self.matrix_shape
        return rows * cols - self.out_size * self.in_size * self.window

    def mode_fill(self, mode: int) -> float:
        """Fraction of the cores' ``mode`` slices the layer uses (the rest it never reads)."""
        return sum(o * i for o, i in zip(self.out_modes, self.in_modes)) / (mode * self.cores)


def _pairs_fit(out_modes: list[int], in_modes: list[int], mode: int) -> list[tuple[int, int]]:
    """Pair the largest out modes with the smallest in modes (minimizes the largest product);
    empty when a product exceeds ``mode``."""
    pairs = list(zip(sorted(out_modes), sorted(in_modes, reverse=True)))
    return pairs if all(o * i <= mode for o, i in pairs) else []


def _window_modes(kernel: Sequence[int], mode: int) -> list[int]:
    """Input modes of the kernel cores: kh·kw in one core when it fits n, else kh and kw."""
    window = math.prod(kernel)
    if window == 1:
        return []
    if window <= mode:
        return [window]
    if all(k <= mode for k in kernel):
        return [k for k in kernel if k > 1]
    raise ValueError(
        f"kernel {'×'.join(map(str, kernel))} does not fit mode {mode}: every kernel side must be "
        f"at most the mode size"
    )


def plan_modes(
    out_size: int,
    in_size: int,
    mode: int,
    kernel: Sequence[int] = (),
    *,
    max_pad_fraction: float = 0.25,
    max_cores: int = 12,
) -> ModePlan:
    """The layout with the fewest cores (then the least padding) whose channel cores pair an
    out mode o_k with an in mode i_k, o_k·i_k ≤ ``mode``, each channel size padded by at most
    ``max_pad_fraction``. Raises ValueError when no layout fits."""
    check_positive_int(out_size, "out_size")
    check_positive_int(in_size, "in_size")
    check_positive_int(mode, "mode")
    if mode < 2:
        raise ValueError(f"mode must be at least 2, got {mode}")
    if not max_pad_fraction >= 0:
        raise ValueError(f"max_pad_fraction must be >= 0, got {max_pad_fraction}")
    win_modes = _window_modes(list(kernel), mode)

    def sizes(n: int) -> range:
        return range(n, math.floor(n * (1 + max_pad_fraction) + 1e-9) + 1)

    for d in range(1, max_cores + 1):
        best: tuple[int, int, list[tuple[int, int]]] | None = None
        for po in sizes(out_size):
            om = factorize_dim(po, d)
            for pi in sizes(in_size):
                pairs = _pairs_fit(om, factorize_dim(pi, d), mode)
                if pairs and (best is None or po * pi < best[0] * best[1]):
                    best = (po, pi, pairs)
        if best is not None:
            po, pi, pairs = best
            pairs = [p for p in pairs if p != (1, 1)]  # a 1×1 core carries nothing
            return ModePlan(
                out_modes=tuple(o for o, _ in pairs) + (1,) * len(win_modes),
                in_modes=tuple(i for _, i in pairs) + tuple(win_modes),
                out_size=out_size,
                in_size=in_size,
                out_padded=po,
                in_padded=pi,
                window=math.prod(kernel) if kernel else 1,
            )
    raise ValueError(
        f"a {out_size}×{in_size} weight does not factor into at most {max_cores} cores of mode "
        f"{mode} with at most {max_pad_fraction:.0%} padding per side; raise the mode or the "
        "padding limit, or skip the layer"
    )


def pad_weight(weight: torch.Tensor, plan: ModePlan) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight [out, in, *kernel] as the padded TT-matrix [out_padded, in_padded·window]
    (zeros in the padding) and its mask (1 on the layer's own entries)."""
    o, i = plan.out_size, plan.in_size
    if weight.shape[0] != o or weight.shape[1] != i or weight[0, 0].numel() != plan.window:
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} does not match the plan's {o}×{i}"
            f"×(window {plan.window})"
        )
    w = weight.reshape(o, i, plan.window)
    padded = w.new_zeros(plan.out_padded, plan.in_padded, plan.window)
    padded[:o, :i] = w
    mask = w.new_zeros(padded.shape)
    mask[:o, :i] = 1
    return padded.reshape(plan.matrix_shape), mask.reshape(plan.matrix_shape)


def unpad_weight(matrix: torch.Tensor, plan: ModePlan, kernel: Sequence[int] = ()) -> torch.Tensor:
    """Inverse of ``pad_weight``: [out_padded, in_padded·window] → [out, in, *kernel]."""
    w = matrix.reshape(plan.out_padded, plan.in_padded, plan.window)
    w = w[: plan.out_size, : plan.in_size]
    return w.reshape(plan.out_size, plan.in_size, *kernel)
