"""CP by ALS: exact recovery, MTTKRP against the dense Khatri–Rao definition, reconstruction."""

from __future__ import annotations

import pytest
import tensorly as tl
import torch

from jointcomp.tensor import cp_als, cp_to_full, khatri_rao, mttkrp
from jointcomp.tensor._common import rel_error


def planted_cp(shape, rank, seed=0):
    g = torch.Generator().manual_seed(seed)
    factors = [torch.randn(n, rank, generator=g, dtype=torch.float64) for n in shape]
    return cp_to_full(torch.ones(rank, dtype=torch.float64), factors)


@pytest.mark.parametrize("shape,rank", [((7, 8, 9), 3), ((6, 5, 3, 3), 3), ((12, 10, 3, 3), 5)])
def test_cp_als_recovers_exact_rank_r(shape, rank):
    T = planted_cp(shape, rank, seed=sum(shape))
    weights, factors = cp_als(T, rank, n_iter=1000, tol=1e-14)
    assert weights.shape == (rank,)
    assert [f.shape for f in factors] == [(n, rank) for n in shape]
    assert rel_error(T, cp_to_full(weights, factors)) < 1e-6
    # Column normalization: unit 2-norm columns, magnitudes in the weights.
    for f in factors:
        torch.testing.assert_close(
            torch.linalg.vector_norm(f, dim=0), torch.ones(rank, dtype=torch.float64)
        )


def test_cp_als_float32_and_deterministic():
    T = planted_cp((6, 7, 5), 2, seed=3).float()
    w1, f1 = cp_als(T, 2, seed=7, init="random")
    w2, f2 = cp_als(T, 2, seed=7, init="random")
    assert w1.dtype == torch.float32 and all(f.dtype == torch.float32 for f in f1)
    assert torch.equal(w1, w2) and all(torch.equal(a, b) for a, b in zip(f1, f2))
    assert rel_error(T, cp_to_full(w1, f1)) < 1e-4


def test_cp_als_rank_above_mode_size_is_allowed():
    # CP rank may exceed every mode size (e.g. rank 6 for a 4×4×3 tensor); init pads with noise.
    T = torch.randn(4, 4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    errs = [rel_error(T, cp_to_full(*cp_als(T, r, n_iter=300))) for r in (1, 3, 6)]
    assert errs[0] > errs[1] > errs[2]


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_mttkrp_matches_dense_definition(mode):
    g = torch.Generator().manual_seed(mode)
    shape = (5, 7, 3, 4)
    T = torch.randn(*shape, generator=g, dtype=torch.float64)
    factors = [torch.randn(n, 3, generator=g, dtype=torch.float64) for n in shape]
    unfold = T.movedim(mode, 0).reshape(shape[mode], -1)
    kr = khatri_rao([f for k, f in enumerate(factors) if k != mode])
    torch.testing.assert_close(mttkrp(T, factors, mode), unfold @ kr)


def test_cp_to_full_matches_tensorly():
    g = torch.Generator().manual_seed(9)
    w = torch.rand(4, generator=g, dtype=torch.float64)
    factors = [torch.randn(n, 4, generator=g, dtype=torch.float64) for n in (3, 9, 2, 5)]
    with tl.backend_context("numpy"):
        ref = tl.cp_to_tensor((w.numpy(), [f.numpy() for f in factors]))
    torch.testing.assert_close(cp_to_full(w, factors), torch.from_numpy(ref))


def test_cp_errors():
    with pytest.raises(ValueError, match="rank must be >= 1"):
        cp_als(torch.randn(3, 4, 5), 0)
    with pytest.raises(ValueError, match="at least 2 modes"):
        cp_als(torch.randn(5), 2)
    with pytest.raises(ValueError, match="init"):
        cp_als(torch.randn(3, 4), 2, init="nope")
