"""Differentiable low-rank regularizers on a weight's singular values (Ou et al. 2023, §II-C).

All take a weight and return a 0-D tensor that supports autograd (gradients flow through
``torch.linalg.svdvals``, whose backward U·diag(ḡ)·Vᵀ is well defined even for repeated
singular values). Lower = more concentrated spectrum (closer to low rank) for every measure.

Reshape: a weight with more than two dims, e.g. a conv kernel [O, I, kh, kw], is viewed as the
matrix [O, I·kh·kw] (``W.reshape(O, -1)``): one row per output filter, the same matrix whose
truncated SVD splits the conv into a kh×kw conv with r filters and a 1×1 conv.
"""

from __future__ import annotations

import torch

# Floor for p log p: keeps the entropy's gradient finite at singular values that are exactly 0.
_P_FLOOR = 1e-12


def weight_matrix(W: torch.Tensor) -> torch.Tensor:
    """[O, ...] → [O, prod(rest)]; a 2-D weight is returned unchanged."""
    if W.dim() < 2:
        raise ValueError(f"need a weight with at least 2 dims, got shape {tuple(W.shape)}")
    return W.reshape(W.shape[0], -1)


def _svals(W: torch.Tensor) -> torch.Tensor:
    m = weight_matrix(W)
    return torch.linalg.svdvals(m.T if m.shape[0] < m.shape[1] else m)


def effective_rank_penalty(W: torch.Tensor) -> torch.Tensor:
    """exp(−Σ p_i log p_i), p = s / ‖s‖₁: the effective rank, in [1, min(m, n)]."""
    s = _svals(W)
    p = s / s.sum().clamp_min(torch.finfo(s.dtype).tiny)
    return torch.exp(-(p * torch.log(p.clamp_min(_P_FLOOR))).sum())


def nuclear_penalty(W: torch.Tensor) -> torch.Tensor:
    """‖W‖_* = Σ s_i (shrinks every singular value, the classic convex surrogate)."""
    return _svals(W).sum()


def hoyer_penalty(W: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """‖s‖₁ / ‖s‖₂ in [1, sqrt(min(m, n))], or its square (Hoyer-square) with ``squared``.

    Scale-invariant: it moves energy between singular values instead of shrinking all of them.
    """
    s = _svals(W)
    ratio = s.sum() / torch.linalg.vector_norm(s).clamp_min(torch.finfo(s.dtype).tiny)
    return ratio.square() if squared else ratio


def gini_penalty(W: torch.Tensor) -> torch.Tensor:
    """1 − Gini(s) with Gini(x) = 1 − 2 Σ_i (x_(i)/‖x‖₁)·(N − i + ½)/N, x sorted ascending
    (Ou et al. eq. 21). Gini is 0 for a flat spectrum and 1 − 1/N for a single non-zero value,
    so the penalty runs from 1/N (rank one) to 1 (flat)."""
    s = torch.flip(_svals(W), [0])  # svdvals are descending; Gini wants ascending
    n = s.numel()
    i = torch.arange(1, n + 1, dtype=s.dtype, device=s.device)
    weights = (n - i + 0.5) / n
    gini = 1 - 2 * ((s / s.sum().clamp_min(torch.finfo(s.dtype).tiny)) * weights).sum()
    return 1 - gini
