"""TT-SVD, TT-matrix and the choice of TT mode sizes."""

from __future__ import annotations

import math
import re

import pytest
import tensorly as tl
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jointcomp.tensor import (
    factorize_dim,
    pad_to_factorable,
    tt_matrix,
    tt_matrix_to_full,
    tt_svd,
    tt_to_full,
)
from jointcomp.tensor._common import rel_error


def planted_tt(shape, ranks, seed=0):
    g = torch.Generator().manual_seed(seed)
    cores = [
        torch.randn(ranks[k], n, ranks[k + 1], generator=g, dtype=torch.float64)
        for k, n in enumerate(shape)
    ]
    return tt_to_full(cores)


def test_tt_svd_recovers_exact_tt_tensor():
    shape, ranks = (4, 5, 6, 3), [1, 2, 3, 2, 1]
    T = planted_tt(shape, ranks)
    cores = tt_svd(T, ranks=ranks[1:-1])
    assert [tuple(c.shape) for c in cores] == [(1, 4, 2), (2, 5, 3), (3, 6, 2), (2, 3, 1)]
    assert rel_error(T, tt_to_full(cores)) < 1e-12
    # eps finds the same ranks on its own.
    assert [c.shape[2] for c in tt_svd(T, eps=1e-8)] == [2, 3, 2, 1]


def test_tt_svd_without_ranks_is_lossless_and_float32_stays_float32():
    T = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(1))
    cores = tt_svd(T)
    assert all(c.dtype == torch.float32 for c in cores)
    assert rel_error(T, tt_to_full(cores)) < 1e-6


@pytest.mark.parametrize("eps", [0.05, 0.2, 0.5])
def test_tt_svd_eps_bound_holds(eps):
    T = torch.randn(6, 5, 7, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    cores = tt_svd(T, eps=eps)
    assert rel_error(T, tt_to_full(cores)) <= eps
    assert max(c.shape[2] for c in cores) < 35  # it did truncate


def test_tt_svd_max_rank_caps():
    T = torch.randn(4, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    cores = tt_svd(T, max_rank=3)
    assert max(max(c.shape[0], c.shape[2]) for c in cores) == 3


def test_tt_to_full_matches_tensorly():
    T = planted_tt((3, 4, 5), [1, 2, 3, 1], seed=4)
    cores = tt_svd(T, ranks=[2, 3])
    with tl.backend_context("numpy"):
        ref = tl.tt_to_tensor([c.numpy() for c in cores])
    torch.testing.assert_close(tt_to_full(cores), torch.from_numpy(ref))


def test_tt_rank_errors():
    T = torch.randn(4, 4, 4)
    msg = "TT rank r_1=5 exceeds min(r_0·n_1, n_2·r_2)=4 for shape 4×4×4 with ranks [1, 5, 2, 1]"
    with pytest.raises(ValueError, match=re.escape(msg)):
        tt_svd(T, ranks=[5, 2])
    with pytest.raises(ValueError, match="inner TT ranks"):
        tt_svd(T, ranks=[2])
    with pytest.raises(ValueError, match="either ranks"):
        tt_svd(T, ranks=[2, 2], max_rank=3)
    with pytest.raises(ValueError, match="eps"):
        tt_svd(T, eps=1.5)


def planted_tt_matrix(out_modes, in_modes, ranks, seed=0):
    g = torch.Generator().manual_seed(seed)
    cores = [
        torch.randn(ranks[k], m, n, ranks[k + 1], generator=g, dtype=torch.float64)
        for k, (m, n) in enumerate(zip(out_modes, in_modes))
    ]
    return tt_matrix_to_full(cores)


def test_tt_matrix_recovers_exact_tt_matrix():
    out_modes, in_modes, ranks = [4, 3, 2], [2, 5, 3], [1, 3, 2, 1]
    W = planted_tt_matrix(out_modes, in_modes, ranks)
    assert W.shape == (24, 30)
    cores = tt_matrix(W, out_modes, in_modes, ranks=[3, 2])
    assert [tuple(c.shape) for c in cores] == [(1, 4, 2, 3), (3, 3, 5, 2), (2, 2, 3, 1)]
    assert rel_error(W, tt_matrix_to_full(cores)) < 1e-12
    capped = tt_matrix(W, out_modes, in_modes, ranks=3)
    assert rel_error(W, tt_matrix_to_full(capped)) < 1e-12


def test_tt_matrix_layout_matches_tensorly():
    W = torch.randn(12, 20, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    cores = tt_matrix(W, [3, 4], [4, 5])
    with tl.backend_context("numpy"):
        ref = tl.tt_matrix_to_tensor([c.numpy() for c in cores])  # [m1, m2, n1, n2]
    torch.testing.assert_close(torch.from_numpy(ref).reshape(12, 20), W)


def test_tt_matrix_errors():
    W = torch.randn(12, 20)
    with pytest.raises(
        ValueError, match=re.escape("out_modes [3, 5] must be positive with product 12")
    ):
        tt_matrix(W, [3, 5], [4, 5])
    with pytest.raises(ValueError, match="same length"):
        tt_matrix(W, [12], [4, 5])
    with pytest.raises(ValueError, match=re.escape("2-D [out, in]")):
        tt_matrix(torch.randn(2, 3, 4), [2], [12])


def test_factorize_dim_examples():
    assert factorize_dim(784, 2) == [28, 28]
    assert factorize_dim(1000, 3) == [10, 10, 10]
    assert factorize_dim(4096, 4) == [8, 8, 8, 8]
    assert factorize_dim(12, 2) == [3, 4]
    assert factorize_dim(97, 2) == [1, 97]  # a prime cannot be split
    assert factorize_dim(5, 1) == [5]
    with pytest.raises(ValueError):
        factorize_dim(0, 2)


def _brute_min_sum(n: int, d: int) -> int:
    if d == 1:
        return n
    return min(f + _brute_min_sum(n // f, d - 1) for f in range(1, n + 1) if n % f == 0)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), d=st.integers(1, 4))
def test_factorize_dim_properties(n, d):
    modes = factorize_dim(n, d)
    assert len(modes) == d and math.prod(modes) == n
    assert modes == sorted(modes)
    assert sum(modes) == _brute_min_sum(n, d)


def test_pad_to_factorable():
    assert pad_to_factorable(97, 2, 0.1) == (99, [9, 11])
    assert pad_to_factorable(1000, 3, 0.1) == (1000, [10, 10, 10])  # already good: no padding
    assert pad_to_factorable(97, 2, 0.0) == (97, [1, 97])  # padding not allowed
    n, modes = pad_to_factorable(509, 3, 0.05)  # prime
    assert 509 <= n <= 534 and math.prod(modes) == n and max(modes) <= 10
    with pytest.raises(ValueError, match="max_pad_fraction"):
        pad_to_factorable(10, 2, -0.1)
