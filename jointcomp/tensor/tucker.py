"""Tucker-2 of a conv kernel [O, I, kh, kw]: compress the two channel modes, keep the spatial ones.

W ≈ core ×₀ U_out ×₁ U_in, i.e. W[o, i, y, x] = Σ_{a,b} U_out[o, a] U_in[i, b] core[a, b, y, x];
as layers: 1×1 conv (I → r_in, weight U_inᵀ), kh×kw conv (core), 1×1 conv (r_out → O, U_out).

Written here rather than with ``tensorly.decomposition.partial_tucker``: same HOSVD + HOOI
algorithm and the same error (checked in the tests), but updating each factor from the eigh
of an O×O Gram matrix is faster than tensorly's SVD of the unfolding. Measured, float64,
10 sweeps, 2 CPU cores: 256×256×3×3 at ranks (64, 64) 0.38 s vs 0.88 s; 512×512×3×3 at
(128, 128) 1.6 s vs 8.0 s. It also needs no tensorly backend switch.
"""

from __future__ import annotations

import torch

from ._common import as_f64, check_ndim, check_positive_int, shape_str
from .svd import sign_fix


def _leading_left_vectors(y: torch.Tensor, r: int) -> torch.Tensor:
    """Top-r left singular vectors of y [m, n] via eigh of the m×m Gram matrix.

    Unlike an SVD this always yields r ≤ m vectors, even when n < r (the extra vectors then
    span an arbitrary part of the null space, which the core will weight with zeros).
    """
    gram = y @ y.T
    _, vecs = torch.linalg.eigh(gram)
    u = vecs[:, -r:].flip(1)
    return u * sign_fix(u)


def _check_ranks(ranks: tuple[int, int], shape: torch.Size) -> tuple[int, int]:
    if not isinstance(ranks, (tuple, list)) or len(ranks) != 2:
        raise ValueError(f"ranks must be a pair (r_out, r_in), got {ranks!r}")
    r_out = check_positive_int(ranks[0], "r_out")
    r_in = check_positive_int(ranks[1], "r_in")
    o, i = int(shape[0]), int(shape[1])
    if r_out > o:
        raise ValueError(f"r_out {r_out} exceeds out_channels={o} for a {shape_str(shape)} kernel")
    if r_in > i:
        raise ValueError(f"r_in {r_in} exceeds in_channels={i} for a {shape_str(shape)} kernel")
    return r_out, r_in


def tucker2(
    W: torch.Tensor,
    ranks: tuple[int, int],
    n_iter: int = 10,
    tol: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tucker-2 of a conv kernel by HOSVD start and HOOI refinement.

    Args:
        W: [O, I, kh, kw] (a 2-D [O, I] matrix is treated as kh = kw = 1).
        ranks: (r_out, r_in) with r_out ≤ O and r_in ≤ I.
        n_iter: maximum HOOI sweeps (0 = plain truncated HOSVD). HOOI gains little after a
            few sweeps (256×256×3×3 random kernel at (64, 64): relative error 0.9215 HOSVD,
            0.8991 / 0.8940 / 0.8933 / 0.8928 after 1 / 5 / 10 / 25 sweeps).
        tol: stop when the relative error improves by less than this in one sweep.

    Returns:
        core [r_out, r_in, kh, kw] ([r_out, r_in] for a 2-D W), U_out [O, r_out] and
        U_in [I, r_in], both with orthonormal columns.
    """
    w64, dtype = as_f64(W, "W")
    check_ndim(w64, (2, 4), "W")
    if w64.dim() == 2:
        w64 = w64[:, :, None, None]
    r_out, r_in = _check_ranks(ranks, w64.shape)
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    o, i = w64.shape[:2]

    # HOSVD: leading subspaces of the mode-0 and mode-1 unfoldings.
    u_out = _leading_left_vectors(w64.reshape(o, -1), r_out)
    u_in = _leading_left_vectors(w64.transpose(0, 1).reshape(i, -1), r_in)
    norm2 = float(w64.square().sum())
    prev = float("inf")
    for _ in range(n_iter):
        # Each mode's update is the exact optimum given the other (HOOI), so error never rises.
        y = torch.einsum("oihw,ib->obhw", w64, u_in)
        u_out = _leading_left_vectors(y.reshape(o, -1), r_out)
        y = torch.einsum("oihw,oa->aihw", w64, u_out)
        u_in = _leading_left_vectors(y.transpose(0, 1).reshape(i, -1), r_in)
        core = torch.einsum("aihw,ib->abhw", y, u_in)
        # Orthonormal factors: ‖W − Ŵ‖² = ‖W‖² − ‖core‖².
        err = max(norm2 - float(core.square().sum()), 0.0) ** 0.5 / max(norm2, 1e-300) ** 0.5
        if prev - err < tol:
            break
        prev = err
    core = torch.einsum("oihw,oa,ib->abhw", w64, u_out, u_in)
    if W.dim() == 2:
        core = core[:, :, 0, 0]
    return core.to(dtype), u_out.to(dtype), u_in.to(dtype)


def tucker2_to_full(core: torch.Tensor, U_out: torch.Tensor, U_in: torch.Tensor) -> torch.Tensor:
    """Rebuild [O, I, kh, kw] (or [O, I] from a 2-D core) from a Tucker-2 decomposition."""
    check_ndim(core, (2, 4), "core")
    if core.dim() == 2:
        return U_out @ core @ U_in.T
    return torch.einsum("abhw,oa,ib->oihw", core, U_out, U_in)
