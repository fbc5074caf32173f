"""Rank selection by empirical variational Bayesian matrix factorization (EVBMF).

The global analytic EVB solution of Nakajima et al. (JMLR 2013, "Global analytic solution of
fully-observed variational Bayesian matrix factorization"; noise-variance estimation and the
threshold as in Nakajima et al. 2012/2015, "Perfect dimensionality recovery by VB PCA"): for
V [L, M], L ≤ M, α = L/M, component h survives iff its singular value

    γ_h > γ_EVB = σ · sqrt(M · x̲),   x̲ = (1 + τ̲)(1 + α/τ̲),

where τ̲ is the zero of Φ(τ) + Φ(τ/α), Φ(z) = log(z + 1)/z − 1/2 (≈ 2.5129·√α; solved exactly
here), and the noise variance σ² minimises the free energy
Σ_h ψ(γ_h²/(Mσ²)) with ψ(x) = x − log x + [x > x̲]·(log(τ+1) + α log(τ/α + 1) − τ),
τ(x) = ½(x − 1 − α + sqrt((x − 1 − α)² − 4α)), over [σ̲², σ̄²] (bounds from the same papers).
Kim et al. (ICLR 2016) apply it to the mode-0/1 unfoldings of a conv kernel to get Tucker-2
ranks (``tucker2_vbmf_ranks``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from ._common import as_f64, check_ndim
from .svd import svdvals


def _tau_underbar(alpha: float) -> float:
    """Zero of the decreasing function Φ(τ) + Φ(τ/α) by bisection (Φ(z) = log1p(z)/z − ½)."""

    def xi(t: float) -> float:
        return math.log1p(t) / t + math.log1p(t / alpha) / (t / alpha) - 1.0

    lo, hi = 1e-9, 10.0
    while xi(hi) > 0:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if xi(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _neg_free_energy(sigma2, gamma2: np.ndarray, m: int, alpha: float, xu: float):
    """The σ²-dependent part of 2F/M (constants in γ dropped so zero singular values are fine).

    ``sigma2`` may be a scalar or a 1-D grid (evaluated for every entry at once)."""
    s2 = np.atleast_1d(np.asarray(sigma2, dtype=np.float64))[:, None]
    x = gamma2[None, :] / (m * s2)
    x_big = np.where(x > xu, x, xu + 1.0)  # ψ1 is only needed (and real) above x̲
    d = x_big - (1 + alpha)
    tau = 0.5 * (d + np.sqrt(np.maximum(d * d - 4 * alpha, 0.0)))
    psi1 = np.log(tau + 1) + alpha * np.log(tau / alpha + 1) - tau
    obj = x.sum(1) + gamma2.shape[0] * np.log(s2[:, 0]) + np.where(x > xu, psi1, 0.0).sum(1)
    return obj if np.ndim(sigma2) else float(obj[0])


def evbmf(M: torch.Tensor) -> tuple[int, float, torch.Tensor]:
    """EVBMF of a matrix: (rank, estimated noise variance σ², EVB singular-value estimates).

    The estimates are γ̂_h = (γ_h/2)(1 − (L+M)σ²/γ_h² + sqrt((1 − (L+M)σ²/γ_h²)² − 4LMσ⁴/γ_h⁴))
    for the retained components (length = rank, float64).
    """
    v, _ = as_f64(M, "M")
    check_ndim(v, 2, "M")
    if v.shape[0] > v.shape[1]:
        v = v.T
    L, m = v.shape
    gamma = svdvals(v).cpu().numpy()
    gamma2 = gamma**2
    total = float(gamma2.sum())
    if total == 0.0:
        return 0, 0.0, torch.zeros(0, dtype=torch.float64)
    alpha = L / m
    tau_u = _tau_underbar(alpha)
    xu = (1 + tau_u) * (1 + alpha / tau_u)
    # σ² bounds: σ̄² = Σγ²/(LM); σ̲² = max(γ²_{H̄+1}/(M x̲), mean_{h>H̄} γ_h² / M), H̄ = ⌈L/(1+α)⌉ − 1.
    h_bar = min(math.ceil(L / (1 + alpha)) - 1, L - 1)
    upper = total / (L * m)
    lower = max(gamma2[h_bar] / (m * xu), float(np.mean(gamma2[h_bar:])) / m)
    lower = max(min(lower, upper), upper * 1e-12)
    # The objective is piecewise (one kink per γ crossing the threshold): grid, then refine.
    grid = np.geomspace(lower, upper, 400)
    vals = _neg_free_energy(grid, gamma2, m, alpha, xu)
    i = int(np.argmin(vals))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    sigma2 = grid[i]
    if b > a:
        res = minimize_scalar(
            _neg_free_energy, bounds=(a, b), args=(gamma2, m, alpha, xu), method="bounded"
        )
        if res.fun <= vals[i]:
            sigma2 = float(res.x)
    threshold = math.sqrt(m * sigma2 * xu)
    keep = gamma[gamma > threshold]
    g2 = keep**2
    t = 1 - (L + m) * sigma2 / g2
    est = keep / 2 * (t + np.sqrt(np.maximum(t * t - 4 * L * m * sigma2**2 / g2**2, 0.0)))
    return len(keep), float(sigma2), torch.from_numpy(est.copy())


def vbmf_rank(M: torch.Tensor) -> int:
    """Rank chosen by EVBMF (may be 0 for pure noise)."""
    return evbmf(M)[0]


def tucker2_vbmf_ranks(W: torch.Tensor) -> tuple[int, int]:
    """(r_out, r_in) for Tucker-2 of a conv kernel [O, I, kh, kw]: EVBMF on the mode-0
    unfolding [O, I·kh·kw] and the mode-1 unfolding [I, O·kh·kw] (Kim et al. 2016), ≥ 1 each."""
    w, _ = as_f64(W, "W")
    check_ndim(w, (2, 4), "W")
    r_out = vbmf_rank(w.reshape(w.shape[0], -1))
    r_in = vbmf_rank(w.transpose(0, 1).reshape(w.shape[1], -1))
    return max(r_out, 1), max(r_in, 1)
