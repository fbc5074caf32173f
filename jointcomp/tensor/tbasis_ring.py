"""Tensor rings of R×n×R cores drawn from a shared basis: the cores (coefficients × basis, with
the rank adaptation), the TT-matrix they close into, and TT cores embedded as a ring."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def ring_cores(
    basis: torch.Tensor, coef: torch.Tensor, rank_scale: torch.Tensor | None = None
) -> torch.Tensor:
    """Cores [d, R, n, R] from a basis [B, R, n, R], coefficients [d, B] and the rank
    adaptation [d, R] (scales each core's first rank axis; None = no scaling)."""
    if basis.dim() != 4 or basis.shape[1] != basis.shape[3]:
        raise ValueError(f"basis must be [B, R, n, R], got shape {tuple(basis.shape)}")
    b, r, n, _ = basis.shape
    if coef.dim() != 2 or coef.shape[1] != b:
        raise ValueError(f"coefficients must be [d, {b}], got shape {tuple(coef.shape)}")
    cores = (coef @ basis.reshape(b, -1)).reshape(-1, r, n, r)
    if rank_scale is not None:
        if tuple(rank_scale.shape) != (coef.shape[0], r):
            raise ValueError(
                f"rank_scale must be [{coef.shape[0]}, {r}], got shape {tuple(rank_scale.shape)}"
            )
        cores = cores * rank_scale[:, :, None, None]
    return cores


def _chain(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """Contract [R, o, i, R'] cores along their shared ranks, leaving both ends open:
    [R, ∏o, ∏i, R_last]."""
    t = cores[0]
    for core in cores[1:]:
        a, m, nn_, _ = t.shape
        _, o, i, c = core.shape
        t = torch.einsum("aMNb,bmnc->aMmNnc", t, core).reshape(a, m * o, nn_ * i, c)
    return t


def ring_matrix(
    cores: torch.Tensor | Sequence[torch.Tensor],
    out_modes: Sequence[int],
    in_modes: Sequence[int],
) -> torch.Tensor:
    """The [∏out_modes, ∏in_modes] matrix of a ring of cores [R, n, R] (core k uses its first
    out_k·in_k mode slices as [out_k, in_k], row-major). Two halves are contracted separately
    and closed by one matrix product, so the R² ring index never meets the full matrix."""
    d = len(out_modes)
    if len(in_modes) != d or len(cores) != d or d == 0:
        raise ValueError(
            f"need one core per mode pair: {len(cores)} cores, out_modes {list(out_modes)}, "
            f"in_modes {list(in_modes)}"
        )
    mats = []
    for k, (core, o, i) in enumerate(zip(cores, out_modes, in_modes)):
        if core.dim() != 3 or core.shape[1] < o * i:
            raise ValueError(f"core {k} of shape {tuple(core.shape)} cannot hold modes {o}×{i}")
        mats.append(core[:, : o * i, :].reshape(core.shape[0], o, i, core.shape[2]))
    if d == 1:
        return torch.einsum("aMNa->MN", mats[0])
    # split where the two halves' sizes balance
    sizes = [o * i for o, i in zip(out_modes, in_modes)]
    total = math.prod(sizes)
    h, acc = 1, sizes[0]
    while h < d - 1 and acc * sizes[h] <= math.sqrt(total):
        acc *= sizes[h]
        h += 1
    left, right = _chain(mats[:h]), _chain(mats[h:])
    full = torch.einsum("aMNb,bPQa->MPNQ", left, right)
    return full.reshape(left.shape[1] * right.shape[1], left.shape[2] * right.shape[2])


def tbasis_matrix(
    basis: torch.Tensor,
    coef: torch.Tensor,
    rank_scale: torch.Tensor | None,
    out_modes: Sequence[int],
    in_modes: Sequence[int],
) -> torch.Tensor:
    """A layer's padded TT-matrix from the basis and its coefficient rows."""
    return ring_matrix(ring_cores(basis, coef, rank_scale), out_modes, in_modes)


def tt_to_ring(tt_cores: Sequence[torch.Tensor], rank: int, mode: int) -> torch.Tensor:
    """TT-matrix cores [r, o, i, r'] (ranks ≤ ``rank``, o·i ≤ ``mode``) as ring cores
    [d, R, n, R]: zero-padded, the first core in row 0 and the last in column 0, so the ring's
    trace equals the TT's product."""
    d = len(tt_cores)
    out = tt_cores[0].new_zeros(d, rank, mode, rank)
    for k, c in enumerate(tt_cores):
        r, o, i, s = c.shape
        if r > rank or s > rank or o * i > mode:
            raise ValueError(
                f"TT core {k} of shape {tuple(c.shape)} does not fit rank {rank}, mode {mode}"
            )
        out[k, :r, : o * i, :s] = c.reshape(r, o * i, s)
    return out


def balance_cores(cores: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Rescale TT cores to equal Frobenius norms (the product is unchanged): TT-SVD leaves the
    whole norm in the last core, which would make cores of different layers incomparable."""
    norms = [float(torch.linalg.vector_norm(c)) for c in cores]
    if min(norms) == 0.0:
        return list(cores)
    geo = math.exp(sum(math.log(n) for n in norms) / len(norms))
    return [c * (geo / n) for c, n in zip(cores, norms)]
