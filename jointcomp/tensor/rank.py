"""Rank measures on a vector of singular values (any order; sorted descending internally).

Energy rank keeps a fraction of Σs²; effective rank is Roy & Vetterli's exp-entropy measure
(Ou et al. 2023, eq. 23); the spectral-norm indicator is the ratio of the largest discarded to
the largest singular value (Ou et al. §II-C).
"""

from __future__ import annotations

import math

import torch


def _spectrum(s: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(s).detach().to(torch.float64)
    if s.dim() != 1 or s.numel() == 0:
        raise ValueError(
            f"singular values must be a non-empty 1-D tensor, got shape {tuple(s.shape)}"
        )
    if bool((s < 0).any()) or not bool(torch.isfinite(s).all()):
        raise ValueError("singular values must be finite and non-negative")
    return torch.sort(s, descending=True).values


def energy_rank(s: torch.Tensor, energy: float) -> int:
    """Smallest r with Σ_{i<r} s_i² ≥ energy · Σ s_i² (energy in (0, 1]); 1 for a zero spectrum."""
    if not (0.0 < energy <= 1.0):
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    sq = _spectrum(s).square()
    total = float(sq.sum())
    if total == 0.0:
        return 1
    cum = torch.cumsum(sq, 0) / total
    # The 1e-12 slack keeps energy=1.0 from demanding the float rounding error of the sum.
    return int((cum < energy - 1e-12).sum()) + 1


def effective_rank(s: torch.Tensor) -> tuple[float, int]:
    """exp(H(p)) with p = s / Σs and H the Shannon entropy (0 log 0 = 0).

    Returns the float measure (in [1, len(s)]) and it rounded to the nearest int (≥ 1).
    A zero spectrum has effective rank 1 by convention."""
    s = _spectrum(s)
    total = float(s.sum())
    if total == 0.0:
        return 1.0, 1
    p = s / total
    h = float(-torch.special.xlogy(p, p).sum())
    value = math.exp(h)
    return value, max(1, round(value))


def spectral_norm_indicator(s: torch.Tensor, r: int) -> float:
    """s_r / s_0: largest discarded over largest singular value when keeping r (0 if r ≥ len)."""
    s = _spectrum(s)
    if r < 0:
        raise ValueError(f"r must be >= 0, got {r}")
    if r >= len(s) or float(s[0]) == 0.0:
        return 0.0
    return float(s[r] / s[0])


def rank_for_indicator(s: torch.Tensor, threshold: float) -> int:
    """Smallest r ≥ 1 whose spectral-norm indicator s_r / s_0 is ≤ threshold."""
    if not (0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    s = _spectrum(s)
    if float(s[0]) == 0.0:
        return 1
    ok = ((s[1:] / s[0]) <= threshold).nonzero()
    return int(ok[0]) + 1 if len(ok) else len(s)
