"""Low-rank + sparse split W ≈ L + S (Hawkins et al. 2021), for any low-rank format.

Alternating projections: L ← lowrank(W − S), S ← top-k(W − L) by magnitude. The S step is the
exact optimum for fixed L; the L step is exact only for truncated SVD, so for Tucker/CP/TT a
round whose total error would rise is rejected and the loop stops. Hence the error sequence is
non-increasing for every ``lowrank_fn``.

A ``lowrank_fn`` maps a residual tensor to (components, reconstruction); the factories below
build one for each format in this package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ._common import as_f64
from .cp import cp_als, cp_to_full
from .svd import svd_factors
from .tt import tt_matrix, tt_matrix_to_full, tt_svd, tt_to_full
from .tucker import tucker2, tucker2_to_full

LowRankFn = Callable[[torch.Tensor], tuple[Any, torch.Tensor]]


def topk_sparse(x: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest-magnitude entries of x, zero elsewhere."""
    out = torch.zeros_like(x)
    if k > 0:
        idx = torch.topk(x.abs().flatten(), k, sorted=False).indices
        out.view(-1)[idx] = x.flatten()[idx]
    return out


def lowrank_sparse(
    W: torch.Tensor,
    lowrank_fn: LowRankFn,
    density: float,
    n_rounds: int = 3,
    return_errors: bool = False,
) -> tuple[Any, torch.Tensor] | tuple[Any, torch.Tensor, list[float]]:
    """Split W into a low-rank part (as ``lowrank_fn``'s components) and a sparse residual S.

    S holds the k = round(density · numel) largest entries of |W − L| (dense tensor, zeros
    elsewhere, W's dtype). ``n_rounds`` bounds the number of L updates. With
    ``return_errors`` also returns ‖W − L − S‖_F / ‖W‖_F after each accepted round.
    """
    w64, dtype = as_f64(W, "W")
    if not (0.0 <= density <= 1.0):
        raise ValueError(f"density must be in [0, 1], got {density}")
    if n_rounds < 1:
        raise ValueError(f"n_rounds must be >= 1, got {n_rounds}")
    k = round(density * w64.numel())
    norm = max(float(torch.linalg.vector_norm(w64)), 1e-300)
    work = W.detach().to(dtype)

    def one_round(s: torch.Tensor | None) -> tuple[Any, torch.Tensor, float]:
        comps, rec = lowrank_fn((work - s.to(dtype)) if s is not None else work)
        rec64 = rec.detach().to(torch.float64)
        if rec64.shape != w64.shape:
            raise ValueError(
                f"lowrank_fn returned a reconstruction of shape {tuple(rec64.shape)}, "
                f"expected {tuple(w64.shape)}"
            )
        s_new = topk_sparse(w64 - rec64, k)
        err = float(torch.linalg.vector_norm(w64 - rec64 - s_new)) / norm
        return comps, s_new, err

    comps, s, err = one_round(None)
    errors = [err]
    for _ in range(n_rounds - 1):
        c2, s2, e2 = one_round(s)
        if e2 > err:  # a non-optimal low-rank step made things worse: keep the previous split
            break
        comps, s, err = c2, s2, e2
        errors.append(err)
    if return_errors:
        return comps, s.to(dtype), errors
    return comps, s.to(dtype)


def svd_lowrank(rank: int) -> LowRankFn:
    """(A, B) with A @ B the best rank-``rank`` approximation."""

    def fn(x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        a, b = svd_factors(x, rank)
        return (a, b), a @ b

    return fn


def tucker2_lowrank(ranks: tuple[int, int], n_iter: int = 10) -> LowRankFn:
    """(core, U_out, U_in) of a conv kernel's Tucker-2."""

    def fn(x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        comps = tucker2(x, ranks, n_iter=n_iter)
        return comps, tucker2_to_full(*comps)

    return fn


def cp_lowrank(rank: int, n_iter: int = 100, seed: int = 0) -> LowRankFn:
    """(weights, factors) of a CP by ALS."""

    def fn(x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        w, f = cp_als(x, rank, n_iter=n_iter, seed=seed)
        return (w, f), cp_to_full(w, f)

    return fn


def tt_lowrank(max_rank: int | None = None, ranks: Sequence[int] | None = None) -> LowRankFn:
    """TT cores of a tensor (rank cap or exact inner ranks)."""

    def fn(x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        cores = tt_svd(x, max_rank=max_rank, ranks=ranks)
        return cores, tt_to_full(cores)

    return fn


def tt_matrix_lowrank(
    out_modes: Sequence[int], in_modes: Sequence[int], ranks: int | Sequence[int]
) -> LowRankFn:
    """TT-matrix cores of a weight matrix [∏out_modes, ∏in_modes]."""

    def fn(x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        cores = tt_matrix(x, out_modes, in_modes, ranks)
        return cores, tt_matrix_to_full(cores)

    return fn
