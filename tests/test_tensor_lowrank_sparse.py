"""Low-rank + sparse split: planted recovery and monotone error for every low-rank format."""

from __future__ import annotations

import itertools

import pytest
import torch

from jointcomp.tensor import (
    cp_lowrank,
    lowrank_sparse,
    svd_lowrank,
    svd_to_full,
    topk_sparse,
    truncated_svd,
    tt_lowrank,
    tt_matrix_lowrank,
    tucker2_lowrank,
)
from jointcomp.tensor._common import rel_error


def planted(m=64, n=48, r=3, density=0.02, seed=0):
    g = torch.Generator().manual_seed(seed)
    L0 = torch.randn(m, r, generator=g) @ torch.randn(r, n, generator=g)
    k = round(density * m * n)
    S0 = torch.zeros(m * n)
    idx = torch.randperm(m * n, generator=g)[:k]
    S0[idx] = torch.randn(k, generator=g).sign() * (5 + 5 * torch.rand(k, generator=g))
    return L0, S0.reshape(m, n), k


def test_topk_sparse_keeps_largest_magnitudes():
    x = torch.tensor([[1.0, -5.0], [3.0, 0.5]])
    assert torch.equal(topk_sparse(x, 2), torch.tensor([[0.0, -5.0], [3.0, 0.0]]))
    assert torch.equal(topk_sparse(x, 0), torch.zeros(2, 2))


def test_lrs_recovers_planted_matrix_far_better_than_pure_low_rank():
    L0, S0, k = planted()
    W = L0 + S0
    (A, B), S, errs = lowrank_sparse(
        W, svd_lowrank(3), density=0.02, n_rounds=20, return_errors=True
    )
    assert int((S != 0).sum()) == k
    lrs_err = rel_error(W, A @ B + S)
    assert rel_error(L0, A @ B) < 1e-4
    # Equal parameters: rank 3 + k sparse (value + index each) vs pure rank ⌊that / (m + n)⌋.
    budget = 3 * (64 + 48) + 2 * k
    r_pure = budget // (64 + 48)
    pure_err = rel_error(W, svd_to_full(*truncated_svd(W, r_pure)))
    assert lrs_err < 1e-3 * pure_err
    assert errs[-1] == pytest.approx(lrs_err, abs=1e-6)  # float32 rounding of A @ B + S


@pytest.mark.parametrize(
    "name,shape,fn",
    [
        ("svd", (40, 30), svd_lowrank(4)),
        ("tucker2", (16, 12, 3, 3), tucker2_lowrank((4, 4))),
        ("cp", (16, 12, 3, 3), cp_lowrank(5, n_iter=50)),
        ("tt", (16, 12, 3, 3), tt_lowrank(max_rank=4)),
        ("tt_matrix", (24, 20), tt_matrix_lowrank([4, 6], [4, 5], 3)),
    ],
)
def test_error_is_monotone_over_rounds(name, shape, fn):
    W = torch.randn(*shape, generator=torch.Generator().manual_seed(len(name)))
    _, S, errs = lowrank_sparse(W, fn, density=0.05, n_rounds=5, return_errors=True)
    assert all(b <= a for a, b in itertools.pairwise(errs)), (name, errs)
    assert S.dtype == W.dtype and S.shape == W.shape
    assert int((S != 0).sum()) == round(0.05 * W.numel())
    # Better than the low-rank part alone (S = 0 is one of the candidates the S step beats).
    _comps, rec = fn(W)
    assert errs[-1] < rel_error(W, rec)


def test_lrs_density_extremes_and_errors():
    W = torch.randn(10, 8, generator=torch.Generator().manual_seed(1))
    (A, B), S = lowrank_sparse(W, svd_lowrank(2), density=0.0)
    assert not S.any()
    (A, B), S = lowrank_sparse(W, svd_lowrank(2), density=1.0)
    assert rel_error(W, A @ B + S) < 1e-6
    with pytest.raises(ValueError, match="density"):
        lowrank_sparse(W, svd_lowrank(2), density=1.5)
    with pytest.raises(ValueError, match="n_rounds"):
        lowrank_sparse(W, svd_lowrank(2), density=0.1, n_rounds=0)
    with pytest.raises(ValueError, match="reconstruction of shape"):
        lowrank_sparse(W, lambda x: (None, x[:2]), density=0.1)
