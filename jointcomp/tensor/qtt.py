"""Error-compensated quantized TT-SVD.

Plain TT-SVD passes the remainder C_{k+1} = U_kᵀ C_k to the next step. Here core k is rounded
to the b-bit grid first and the remainder is the least-squares fit against the *rounded* core,
C_{k+1} = Q_k⁺ C_k, so the rounding error of core k is carried into C_{k+1} and the later cores
(fitted to C_{k+1} by SVD) compensate it; only the last core's rounding error is left
uncorrected. Finally the product of the core scales is refitted by least squares (one
scalar; folded into the last core's scale).

Measured on random exactly-TT tensors (4 shapes × 20 seeds × 2/3/4/6/8 bits), the error is on
average 0.62–0.94× that of rounding the TT-SVD cores afterwards (gain largest at 2 bits); 3 of
the 400 single cases were worse, by up to 3.3%, because the part of a core's rounding error
that leaves its column space cannot be compensated. On a truncation-dominated tensor (random
256×256 as TT-matrix, rank 16) both are within 0.1% of each other at 4–8 bits. Rejected
variants: scaling U_k's columns to max-abs 1 before rounding (ill-conditions the left
interface, loses at 6–8 bits); rounding with the left interface's Gram metric (Babai), < 1%.

Cores are int32 on the signed narrow-range grid [−(2^(b−1) − 1), 2^(b−1) − 1], one float32
scale per core: core_k ≈ scale_k · Q_k.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._common import as_f64
from .quant import calibrate_scale, dequantize, int_range, quantize_uniform
from .svd import thin_svd
from .tt import choose_rank, matrix_to_tt_tensor, rank_plan, split_matrix_cores, tt_to_full


def _round_core(core: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    scale, _ = calibrate_scale(core, bits, symmetric=True)
    return quantize_uniform(core, bits, scale), scale


def quantized_tt_svd(
    T: torch.Tensor,
    bits: int,
    max_rank: int | None = None,
    ranks: Sequence[int] | None = None,
    eps: float | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """TT-SVD with every core rounded to ``bits`` bits and its error compensated downstream.

    Rank arguments as in ``tt_svd`` (``eps`` then bounds the truncation part of the error only;
    rounding adds to it). Returns (int32 cores [r_{k−1}, n_k, r_k], float32 0-D scales).
    """
    int_range(bits, signed=True, narrow_range=True)  # validates bits
    t, _ = as_f64(T, "T")
    shape = list(t.shape)
    d = len(shape)
    if d < 1 or t.numel() == 0:
        raise ValueError(f"cannot decompose a tensor of shape {tuple(t.shape)}")
    fixed, cap, eps = rank_plan(shape, max_rank, ranks, eps)
    delta2 = (eps or 0.0) ** 2 / max(d - 1, 1) * float(t.square().sum())
    ints: list[torch.Tensor] = []
    scales: list[torch.Tensor] = []
    r_prev = 1
    c = t
    for k in range(1, d):
        c = c.reshape(r_prev * shape[k - 1], -1)
        u, s, _ = thin_svd(c)
        r = min(choose_rank(s, k, fixed, cap, delta2), len(s))
        q, scale = _round_core(u[:, :r], bits)
        qd = dequantize(q, scale, dtype=torch.float64)
        # Remainder against the rounded core: this is where the rounding error is carried on.
        c = torch.linalg.pinv(qd) @ c
        ints.append(q.reshape(r_prev, shape[k - 1], r))
        scales.append(scale)
        r_prev = r
    q, scale = _round_core(c.reshape(r_prev, shape[-1], 1), bits)
    ints.append(q)
    scales.append(scale)
    _refit_global_scale(t, ints, scales)
    return ints, scales


def _refit_global_scale(
    t: torch.Tensor, ints: list[torch.Tensor], scales: list[torch.Tensor]
) -> None:
    """Only the product of the per-core scales matters (the format is multilinear), so the
    least-squares optimal product c = ⟨T, X⟩ / ‖X‖² is folded into the last core's scale (a
    negative c flips the last core's codes; the narrow signed grid is symmetric). This can
    only lower the error; at 2 bits it also keeps the result from being worse than zero."""
    x = tt_to_full(dequantize_cores(ints, scales, torch.float64))
    xx = float(x.square().sum())
    if xx == 0.0:
        return
    c = float((t * x).sum()) / xx
    if c < 0:
        ints[-1] = -ints[-1]
        c = -c
    if c > 0:
        scales[-1] = (scales[-1].double() * c).to(torch.float32)


def quantized_tt_matrix(
    W: torch.Tensor,
    out_modes: Sequence[int],
    in_modes: Sequence[int],
    bits: int,
    ranks: int | Sequence[int] | None = None,
    eps: float | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``tt_matrix`` counterpart: int32 cores [r_{k−1}, m_k, n_k, r_k] and per-core scales."""
    w, _ = as_f64(W, "W")
    t = matrix_to_tt_tensor(w, out_modes, in_modes)
    if isinstance(ranks, int):
        ints, scales = quantized_tt_svd(t, bits, max_rank=ranks, eps=eps)
    else:
        ints, scales = quantized_tt_svd(t, bits, ranks=ranks, eps=eps)
    return split_matrix_cores(ints, out_modes, in_modes), scales


def dequantize_cores(
    int_cores: list[torch.Tensor], scales: list[torch.Tensor], dtype: torch.dtype = torch.float32
) -> list[torch.Tensor]:
    return [dequantize(q, s, dtype=dtype) for q, s in zip(int_cores, scales)]


def qtt_to_full(
    int_cores: list[torch.Tensor], scales: list[torch.Tensor], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Rebuild the full tensor from quantized TT cores."""
    return tt_to_full(dequantize_cores(int_cores, scales, dtype))


def round_tt_cores(
    cores: list[torch.Tensor], bits: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Decompose-then-round baseline: round each float core with its own max-abs scale."""
    out = [_round_core(c.to(torch.float64), bits) for c in cores]
    return [q for q, _ in out], [s for _, s in out]
