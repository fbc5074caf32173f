"""Differentiable spectrum regularizers."""

from __future__ import annotations

import math

import pytest
import torch

from jointcomp.tensor import (
    effective_rank_penalty,
    gini_penalty,
    hoyer_penalty,
    nuclear_penalty,
    weight_matrix,
)

PENALTIES = [
    effective_rank_penalty,
    nuclear_penalty,
    hoyer_penalty,
    lambda w: hoyer_penalty(w, squared=True),
    gini_penalty,
]


def test_known_values_on_diagonal_matrix():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0], dtype=torch.float64)  # Ou et al., Fig. 6
    W = torch.diag(x)
    assert float(nuclear_penalty(W)) == pytest.approx(20.0)
    assert float(hoyer_penalty(W)) == pytest.approx(20 / math.sqrt(130))
    assert float(hoyer_penalty(W, squared=True)) == pytest.approx(400 / 130)
    # Gini = 1 − 2·Σ (x_i/20)(5 − i + ½)/5 = 1 − 2·0.3 = 0.4  →  penalty 0.6
    assert float(gini_penalty(W)) == pytest.approx(0.6)
    p = x / 20
    assert float(effective_rank_penalty(W)) == pytest.approx(math.exp(-(p * p.log()).sum()))


def test_extremes():
    flat = torch.eye(6, dtype=torch.float64)
    rank1 = torch.zeros(6, 6, dtype=torch.float64)
    rank1[0, 0] = 3.0
    assert float(effective_rank_penalty(flat)) == pytest.approx(6.0)
    assert float(effective_rank_penalty(rank1)) == pytest.approx(1.0)
    assert float(gini_penalty(flat)) == pytest.approx(1.0)
    assert float(gini_penalty(rank1)) == pytest.approx(1 / 6)
    assert float(hoyer_penalty(flat)) == pytest.approx(math.sqrt(6))
    assert float(hoyer_penalty(rank1)) == pytest.approx(1.0)


@pytest.mark.parametrize("fn", PENALTIES)
def test_gradcheck(fn):
    W = torch.randn(5, 4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.autograd.gradcheck(fn, (W.requires_grad_(),))


@pytest.mark.parametrize("fn", PENALTIES)
def test_gradient_finite_at_exactly_low_rank_float32(fn):
    g = torch.Generator().manual_seed(1)
    W = (torch.randn(8, 2, generator=g) @ torch.randn(2, 6, generator=g)).requires_grad_()
    fn(W).backward()
    assert W.grad is not None and bool(torch.isfinite(W.grad).all())


@pytest.mark.parametrize("fn", PENALTIES)
def test_low_rank_scores_lower_than_random(fn):
    g = torch.Generator().manual_seed(2)
    random = torch.randn(16, 8, 3, 3, generator=g)
    low = (torch.randn(16, 2, generator=g) @ torch.randn(2, 72, generator=g)).reshape(16, 8, 3, 3)
    low = low + 1e-3 * torch.randn(low.shape, generator=g)
    low = low * (random.norm() / low.norm())  # same Frobenius norm: only the shape differs
    assert float(fn(low)) < float(fn(random))


def test_gradient_descent_on_penalty_concentrates_the_spectrum():
    W = torch.randn(10, 10, generator=torch.Generator().manual_seed(3), requires_grad=True)
    opt = torch.optim.SGD([W], lr=0.5)
    before = float(effective_rank_penalty(W).detach())
    for _ in range(50):
        opt.zero_grad()
        effective_rank_penalty(W).backward()
        opt.step()
    assert float(effective_rank_penalty(W).detach()) < 0.6 * before


def test_conv_reshape_and_errors():
    K = torch.randn(8, 4, 3, 3)
    assert weight_matrix(K).shape == (8, 36)
    torch.testing.assert_close(nuclear_penalty(K), nuclear_penalty(K.reshape(8, 36)))
    with pytest.raises(ValueError, match="at least 2 dims"):
        nuclear_penalty(torch.randn(5))
