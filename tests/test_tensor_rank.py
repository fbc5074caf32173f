"""Rank measures and EVBMF rank selection."""

from __future__ import annotations

import math

import pytest
import torch

from jointcomp.tensor import (
    effective_rank,
    energy_rank,
    evbmf,
    rank_for_indicator,
    spectral_norm_indicator,
    tucker2_to_full,
    tucker2_vbmf_ranks,
    vbmf_rank,
)


def test_energy_rank_known_spectra():
    s = torch.tensor([4.0, 3.0])  # energies 16, 9 of 25
    assert energy_rank(s, 0.64) == 1
    assert energy_rank(s, 0.65) == 2
    assert energy_rank(s, 1.0) == 2
    assert energy_rank(torch.tensor([3.0, 4.0]), 0.64) == 1  # order does not matter
    assert energy_rank(torch.tensor([1.0, 0.0, 0.0]), 1.0) == 1
    assert energy_rank(torch.ones(10), 0.5) == 5
    with pytest.raises(ValueError, match="energy"):
        energy_rank(s, 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        energy_rank(torch.tensor([1.0, -1.0]), 0.5)


def test_effective_rank_known_spectra():
    value, r = effective_rank(torch.ones(7))
    assert value == pytest.approx(7.0) and r == 7
    value, r = effective_rank(torch.tensor([5.0, 0.0, 0.0]))
    assert value == pytest.approx(1.0) and r == 1
    # p = (1/2, 1/4, 1/4): H = 1.5 log 2, exp(H) = 2^1.5
    value, r = effective_rank(torch.tensor([2.0, 1.0, 1.0]))
    assert value == pytest.approx(2**1.5) and r == 3
    assert effective_rank(torch.zeros(3)) == (1.0, 1)


def test_spectral_norm_indicator_and_rank():
    s = torch.tensor([10.0, 5.0, 2.0, 0.5, 0.1])
    assert spectral_norm_indicator(s, 1) == pytest.approx(0.5)
    assert spectral_norm_indicator(s, 3) == pytest.approx(0.05)
    assert spectral_norm_indicator(s, 5) == 0.0
    assert rank_for_indicator(s, 0.5) == 1
    assert rank_for_indicator(s, 0.1) == 3
    assert rank_for_indicator(s, 0.2) == 2
    assert rank_for_indicator(s, 0.0) == 5
    for thr in (0.3, 0.06, 0.011):
        r = rank_for_indicator(s, thr)
        assert spectral_norm_indicator(s, r) <= thr < spectral_norm_indicator(s, r - 1)


@pytest.mark.parametrize(
    "m,n,r,noise", [(100, 80, 7, 0.1), (64, 576, 10, 0.5), (30, 300, 3, 0.3), (120, 60, 12, 1.0)]
)
def test_vbmf_recovers_true_rank_of_noisy_low_rank(m, n, r, noise):
    g = torch.Generator().manual_seed(m + n)
    X = torch.randn(m, r, generator=g) @ torch.randn(r, n, generator=g)
    X = X + noise * torch.randn(m, n, generator=g)
    rank, sigma2, est = evbmf(X)
    assert rank == r
    assert vbmf_rank(X.T) == r
    assert sigma2 == pytest.approx(noise**2, rel=0.1)
    assert est.shape == (r,) and bool((est > 0).all())


def test_vbmf_pure_noise_has_rank_zero():
    X = torch.randn(50, 70, generator=torch.Generator().manual_seed(0))
    assert vbmf_rank(X) == 0


def test_tucker2_vbmf_ranks_finds_planted_ranks():
    g = torch.Generator().manual_seed(11)
    core = 3 * torch.randn(12, 9, 3, 3, generator=g, dtype=torch.float64)
    u_out = torch.linalg.qr(torch.randn(64, 12, generator=g, dtype=torch.float64))[0]
    u_in = torch.linalg.qr(torch.randn(48, 9, generator=g, dtype=torch.float64))[0]
    W = tucker2_to_full(core, u_out, u_in)
    W = W + 0.02 * torch.randn(W.shape, generator=g, dtype=torch.float64)
    assert tucker2_vbmf_ranks(W) == (12, 9)
    # Pure noise: VBMF says 0, clamped to a usable rank of 1.
    assert tucker2_vbmf_ranks(torch.randn(16, 16, 3, 3, generator=g)) == (1, 1)
    assert math.isfinite(evbmf(W.reshape(64, -1))[1])
