"""Tensor-train decomposition: TT-SVD of a tensor and the TT-matrix format of a weight matrix.

Cores are [r_{k−1}, n_k, r_k] (TT) or [r_{k−1}, m_k, n_k, r_k] (TT-matrix), r₀ = r_d = 1.
Written here (tensorly's ``tensor_train`` takes ranks only): this version also supports an
error bound ``eps`` and a rank cap, checks ranks, and shares its rank logic with ``qtt.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._common import as_f64, check_positive_int, shape_str
from .svd import thin_svd


def normalize_tt_ranks(ranks: Sequence[int], d: int) -> list[int]:
    """Accept d−1 inner ranks or d+1 ranks with r₀ = r_d = 1; return the d+1 form."""
    ranks = [int(r) for r in ranks]
    if len(ranks) == d - 1:
        ranks = [1, *ranks, 1]
    if len(ranks) != d + 1 or ranks[0] != 1 or ranks[-1] != 1:
        raise ValueError(
            f"ranks must list the {d - 1} inner TT ranks (or {d + 1} with 1 at both ends), "
            f"got {ranks}"
        )
    for r in ranks[1:-1]:
        check_positive_int(r, "TT rank")
    return ranks


def check_tt_ranks(ranks: list[int], shape: Sequence[int]) -> None:
    """Each inner rank must be reachable from both sides: r_k ≤ min(r_{k−1}n_k, n_{k+1}r_{k+1})."""
    for k in range(1, len(shape)):
        left, right = ranks[k - 1] * shape[k - 1], shape[k] * ranks[k + 1]
        if ranks[k] > min(left, right):
            raise ValueError(
                f"TT rank r_{k}={ranks[k]} exceeds min(r_{k - 1}·n_{k}, n_{k + 1}·r_{k + 1})="
                f"{min(left, right)} for shape {shape_str(tuple(shape))} with ranks {ranks}"
            )


def rank_plan(
    shape: Sequence[int],
    max_rank: int | None,
    ranks: Sequence[int] | None,
    eps: float | None,
) -> tuple[list[int] | None, int | None, float | None]:
    """Validate the (max_rank | ranks, eps) combination; returns (fixed ranks, cap, eps)."""
    d = len(shape)
    if ranks is not None and (max_rank is not None or eps is not None):
        raise ValueError("give either ranks, or max_rank and/or eps, not both")
    if ranks is not None:
        fixed = normalize_tt_ranks(ranks, d)
        check_tt_ranks(fixed, shape)
        return fixed, None, None
    if max_rank is not None:
        check_positive_int(max_rank, "max_rank")
    if eps is not None and not (0.0 <= eps < 1.0):
        raise ValueError(f"eps must be in [0, 1), got {eps}")
    return None, max_rank, eps


def choose_rank(
    s: torch.Tensor, k: int, fixed: list[int] | None, cap: int | None, delta2: float
) -> int:
    """Rank kept at TT-SVD step k (1-based cut) given the singular values s of the unfolding."""
    if fixed is not None:
        return fixed[k]
    # Smallest r whose discarded tail Σ_{i≥r} s_i² ≤ δ² (Oseledets' δ-truncation).
    tail = torch.flip(torch.cumsum(torch.flip(s.square(), [0]), 0), [0])  # tail[i] = Σ_{j≥i}
    ok = (tail <= delta2).nonzero()
    r = int(ok[0]) if len(ok) else len(s)
    r = max(r, 1)
    return min(r, cap) if cap is not None else r


def tt_svd(
    T: torch.Tensor,
    max_rank: int | None = None,
    ranks: Sequence[int] | None = None,
    eps: float | None = None,
) -> list[torch.Tensor]:
    """TT-SVD (Oseledets 2011): sequential truncated SVDs of the unfoldings.

    Rank choice: ``ranks`` (d−1 inner ranks, exact), or ``eps`` (relative Frobenius error
    bound: ‖T − TT‖ ≤ eps‖T‖) capped by ``max_rank``; with neither, ranks are exact (no loss).
    Returns d cores [r_{k−1}, n_k, r_k] in T's floating dtype.
    """
    t, dtype = as_f64(T, "T")
    shape = list(t.shape)
    d = len(shape)
    if d < 1 or t.numel() == 0:
        raise ValueError(f"cannot decompose a tensor of shape {tuple(t.shape)}")
    fixed, cap, eps = rank_plan(shape, max_rank, ranks, eps)
    delta2 = (eps or 0.0) ** 2 / max(d - 1, 1) * float(t.square().sum())
    cores = []
    r_prev = 1
    c = t
    for k in range(1, d):
        c = c.reshape(r_prev * shape[k - 1], -1)
        u, s, vh = thin_svd(c)
        r = min(choose_rank(s, k, fixed, cap, delta2), len(s))
        cores.append(u[:, :r].reshape(r_prev, shape[k - 1], r))
        c = s[:r, None] * vh[:r]
        r_prev = r
    cores.append(c.reshape(r_prev, shape[-1], 1))
    return [core.to(dtype) for core in cores]


def tt_to_full(cores: list[torch.Tensor]) -> torch.Tensor:
    """Contract TT cores [r_{k−1}, n_k, r_k] back into the full tensor."""
    if not cores:
        raise ValueError("need at least one core")
    full = cores[0].reshape(cores[0].shape[1], -1)
    shape = [cores[0].shape[1]]
    for core in cores[1:]:
        if core.dim() != 3 or core.shape[0] != full.shape[1]:
            raise ValueError(
                f"core of shape {tuple(core.shape)} does not chain after rank {full.shape[1]}"
            )
        full = full @ core.reshape(core.shape[0], -1)
        shape.append(core.shape[1])
        full = full.reshape(-1, core.shape[2])
    return full.reshape(shape)


def _check_modes(n: int, modes: Sequence[int], what: str) -> list[int]:
    modes = [int(m) for m in modes]
    if any(m < 1 for m in modes) or math.prod(modes) != n:
        raise ValueError(
            f"{what} {modes} must be positive with product {n}, got product {math.prod(modes)}"
        )
    return modes


def matrix_to_tt_tensor(
    W: torch.Tensor, out_modes: Sequence[int], in_modes: Sequence[int]
) -> torch.Tensor:
    """Reorder W [M, N] into the d-way tensor [m₁n₁, …, m_dn_d] whose TT is W's TT-matrix."""
    if W.dim() != 2:
        raise ValueError(f"W must be 2-D [out, in], got shape {tuple(W.shape)}")
    out_modes = _check_modes(W.shape[0], out_modes, "out_modes")
    in_modes = _check_modes(W.shape[1], in_modes, "in_modes")
    d = len(out_modes)
    if len(in_modes) != d:
        raise ValueError(f"out_modes {out_modes} and in_modes {in_modes} must have the same length")
    # [m₁…m_d, n₁…n_d] → [m₁, n₁, m₂, n₂, …] → [m₁n₁, …, m_dn_d]
    t = W.reshape(*out_modes, *in_modes)
    t = t.permute([p for k in range(d) for p in (k, d + k)])
    return t.reshape([m * n for m, n in zip(out_modes, in_modes)])


def split_matrix_cores(
    cores: list[torch.Tensor], out_modes: Sequence[int], in_modes: Sequence[int]
) -> list[torch.Tensor]:
    """TT cores [r, m·n, r'] of ``matrix_to_tt_tensor(W)`` → TT-matrix cores [r, m, n, r']."""
    return [
        c.reshape(c.shape[0], int(m), int(n), c.shape[2])
        for c, m, n in zip(cores, out_modes, in_modes)
    ]


def tt_matrix(
    W: torch.Tensor,
    out_modes: Sequence[int],
    in_modes: Sequence[int],
    ranks: int | Sequence[int] | None = None,
    eps: float | None = None,
) -> list[torch.Tensor]:
    """TT-matrix of W [M, N] (M = ∏ out_modes, N = ∏ in_modes, both of length d).

    W[(i₁…i_d), (j₁…j_d)] = G₁[:, i₁, j₁, :] ⋯ G_d[:, i_d, j_d, :] with row/column indices
    row-major (i₁ slowest). ``ranks``: an int caps every rank; a list gives the d−1 inner ranks
    exactly; ``eps`` bounds the relative error; none of them = exact. Returns cores
    [r_{k−1}, m_k, n_k, r_k] in W's floating dtype.
    """
    w, dtype = as_f64(W, "W")
    t = matrix_to_tt_tensor(w, out_modes, in_modes)
    if isinstance(ranks, int):
        cores = tt_svd(t, max_rank=ranks, eps=eps)
    else:
        cores = tt_svd(t, ranks=ranks, eps=eps)
    return [c.to(dtype) for c in split_matrix_cores(cores, out_modes, in_modes)]


def tt_matrix_to_full(cores: list[torch.Tensor]) -> torch.Tensor:
    """Contract TT-matrix cores [r_{k−1}, m_k, n_k, r_k] back into the [∏m, ∏n] matrix."""
    if not cores:
        raise ValueError("need at least one core")
    first = cores[0]
    full = first.reshape(first.shape[1], first.shape[2], first.shape[3])  # [M, N, r]
    for core in cores[1:]:
        if core.dim() != 4 or core.shape[0] != full.shape[2]:
            raise ValueError(
                f"core of shape {tuple(core.shape)} does not chain after rank {full.shape[2]}"
            )
        m, n = core.shape[1], core.shape[2]
        full = torch.einsum("MNa,amnb->MmNnb", full, core)
        full = full.reshape(full.shape[0] * m, full.shape[2] * n, core.shape[3])
    return full[:, :, 0]
