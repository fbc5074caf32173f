"""Quantized CP-ALS: CP whose factors live on a b-bit integer grid during the fit itself.

Every ALS factor update is projected onto the grid, so the remaining factors are fitted
against the quantized ones (rather than quantizing a float CP at the end). Representation:

    T ≈ Σ_r w_r ∘_k (scale_k · Q_k[:, r]),   Q_k int32 in [−(2^(b−1) − 1), 2^(b−1) − 1]

Each column is rescaled to max-abs 1 before rounding, its magnitude moved into the float
weight w_r (rank floats), so every column uses the whole grid; the per-factor scale is then
1 / qmax. After each update the weights are refitted by least squares given the quantized
factors. The best iterate seen (lowest error, the rounded warm start included) is returned.

Measured (12×10×8×6 tensors of exact CP rank 5, 5 seeds), mean relative error at 2/3/4/6/8
bits: round-after 1.658/0.472/0.194/0.043/0.0101, this 0.762/0.328/0.147/0.033/0.0079. Nearly
all of the gain comes from the max-abs column normalization + weight refit (the warm start
alone, ``n_iter=0``: 0.766/0.329/0.148/0.033/0.0080); the quantized ALS sweeps add < 1%.
"""

from __future__ import annotations

import torch

from ._common import as_f64
from .cp import check_cp_args, cp_als, cp_to_full, hadamard_grams, mttkrp
from .quant import calibrate_scale, dequantize, int_range, quantize_uniform


def _project(a: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Column max-abs normalize, then round with a per-factor symmetric scale.

    Returns (column magnitudes, int codes, scale)."""
    mags = a.abs().amax(0)
    mags = torch.where(mags > 0, mags, torch.ones_like(mags))
    normed = a / mags
    scale, _ = calibrate_scale(normed, bits, symmetric=True)
    return mags, quantize_uniform(normed, bits, scale), scale


def _refit_weights(
    m_last: torch.Tensor, q_last: torch.Tensor, grams: list[torch.Tensor]
) -> torch.Tensor:
    """Least-squares weights given fixed factors: (⊛ QₖᵀQₖ) w = [⟨T, rank-one_r⟩]_r."""
    b = (m_last * q_last).sum(0)
    return torch.linalg.pinv(hadamard_grams(grams), hermitian=True) @ b


def _error(norm2: float, w: torch.Tensor, b: torch.Tensor, grams: list[torch.Tensor]) -> float:
    val = norm2 - 2 * float(w @ b) + float(w @ hadamard_grams(grams) @ w)
    return max(val, 0.0) ** 0.5 / max(norm2, 1e-300) ** 0.5


def quantized_cp_als(
    T: torch.Tensor,
    rank: int,
    bits: int,
    n_iter: int = 50,
    tol: float = 1e-7,
    seed: int = 0,
    init: str = "svd",
    float_iter: int = 100,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Quantized CP-ALS warm-started from a float ``cp_als`` (``float_iter`` sweeps).

    Returns (weights [r] in T's dtype, int32 factors [n_k, r], float32 0-D scales), decode
    with ``qcp_to_full``. ``bits`` ≥ 2 (2 bits is the ternary grid {−1, 0, 1}).
    """
    t, dtype = as_f64(T, "T")
    check_cp_args(t, rank, init)
    _, qmax = int_range(bits, signed=True, narrow_range=True)
    _, factors = cp_als(t, rank, n_iter=float_iter, seed=seed, init=init)
    deq: list[torch.Tensor] = []
    ints: list[torch.Tensor] = []
    scales: list[torch.Tensor] = []
    for f in factors:
        _, q, s = _project(f, bits)  # magnitudes go into the weights, refitted just below
        ints.append(q)
        scales.append(s)
        deq.append(dequantize(q, s, dtype=torch.float64))
    grams = [q.T @ q for q in deq]
    norm2 = float(t.square().sum())
    last = t.dim() - 1
    m = mttkrp(t, deq, last)
    weights = _refit_weights(m, deq[last], grams)
    best_err = _error(norm2, weights, (m * deq[last]).sum(0), grams)
    best = (weights.clone(), list(ints), list(scales))
    prev = best_err
    for _ in range(n_iter):
        for mode in range(t.dim()):
            m = mttkrp(t, deq, mode)
            # Unconstrained LS update (weights absorbed), then projection onto the grid.
            a = m @ torch.linalg.pinv(hadamard_grams(grams, skip=mode), hermitian=True)
            _, q, s = _project(a, bits)
            ints[mode], scales[mode] = q, s
            deq[mode] = dequantize(q, s, dtype=torch.float64)
            grams[mode] = deq[mode].T @ deq[mode]
            weights = _refit_weights(m, deq[mode], grams)
            err = _error(norm2, weights, (m * deq[mode]).sum(0), grams)
            if err < best_err:
                best_err, best = err, (weights.clone(), list(ints), list(scales))
        if prev - best_err < tol:
            break
        prev = best_err
    weights, ints, scales = best
    assert all(int(q.abs().max()) <= qmax for q in ints)
    return weights.to(dtype), ints, scales


def qcp_to_full(
    weights: torch.Tensor, int_factors: list[torch.Tensor], scales: list[torch.Tensor]
) -> torch.Tensor:
    """Rebuild the tensor from quantized CP factors (in the weights' dtype)."""
    factors = [dequantize(q, s, dtype=weights.dtype) for q, s in zip(int_factors, scales)]
    return cp_to_full(weights, factors)


def round_cp_factors(
    weights: torch.Tensor, factors: list[torch.Tensor], bits: int
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Decompose-then-round baseline: round each float factor with its own max-abs scale."""
    ints, scales = [], []
    for f in factors:
        s, _ = calibrate_scale(f, bits, symmetric=True)
        ints.append(quantize_uniform(f, bits, s))
        scales.append(s)
    return weights, ints, scales
