"""Truncated SVD and Tucker-2: exact recovery, conventions and error messages."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import tensorly as tl
import torch
from tensorly.decomposition import partial_tucker

from jointcomp.tensor import (
    singular_values,
    svd_factors,
    svd_to_full,
    truncated_svd,
    tucker2,
    tucker2_to_full,
)
from jointcomp.tensor._common import rel_error


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def low_rank(m: int, n: int, r: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = gen(seed)
    a = torch.randn(m, r, generator=g, dtype=torch.float64)
    return (a @ torch.randn(r, n, generator=g, dtype=torch.float64)).to(dtype)


def test_package_imports_nothing_else_from_jointcomp():
    src = Path(__file__).parents[1] / "jointcomp" / "tensor"
    for path in src.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+jointcomp", text, re.M), path.name
        assert not re.search(
            r"^\s*(from torch import nn|import torch\.nn|from torch\.nn)", text, re.M
        )
        assert not re.search(r"class \w+\([^)]*Module", text), path.name


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_truncated_svd_recovers_exact_low_rank(dtype, tol):
    W = low_rank(40, 30, 5, dtype=dtype)
    U, S, Vh = truncated_svd(W, 5)
    assert U.shape == (40, 5) and S.shape == (5,) and Vh.shape == (5, 30)
    assert U.dtype == S.dtype == Vh.dtype == dtype
    assert rel_error(W, svd_to_full(U, S, Vh)) < tol
    assert bool((S[:-1] >= S[1:]).all())


def test_truncated_svd_is_eckart_young_optimal():
    W = torch.randn(20, 25, generator=gen(1), dtype=torch.float64)
    s = torch.linalg.svdvals(W)
    U, S, Vh = truncated_svd(W, 7)
    err2 = float((W - svd_to_full(U, S, Vh)).square().sum())
    assert err2 == pytest.approx(float(s[7:].square().sum()), rel=1e-10)


def test_truncated_svd_sign_convention_is_deterministic():
    W = torch.randn(12, 50, generator=gen(2))
    U, _, _ = truncated_svd(W, 4)
    idx = U.abs().argmax(0)
    assert bool((U[idx, torch.arange(4)] > 0).all())
    U2, _, _ = truncated_svd(W, 4)
    assert torch.equal(U, U2)


def test_svd_factors_are_balanced():
    W = low_rank(30, 18, 4)
    A, B = svd_factors(W, 4)
    assert A.shape == (30, 4) and B.shape == (4, 18)
    assert rel_error(W, A @ B) < 1e-12
    # sqrt(S) on both sides: matching column / row norms.
    torch.testing.assert_close(
        torch.linalg.vector_norm(A, dim=0), torch.linalg.vector_norm(B, dim=1)
    )


def test_svd_rank_errors():
    W = torch.randn(32, 64)
    with pytest.raises(
        ValueError, match=re.escape("rank 40 exceeds min(out, in)=32 for a 32×64 matrix")
    ):
        truncated_svd(W, 40)
    with pytest.raises(ValueError, match="rank must be >= 1"):
        svd_factors(W, 0)
    with pytest.raises(ValueError, match="2-D"):
        truncated_svd(torch.randn(3, 4, 5), 2)
    with pytest.raises(ValueError, match="NaN"):
        truncated_svd(torch.full((3, 3), float("nan")), 1)


def test_singular_values_of_conv_kernel_use_o_by_rest_view():
    K = torch.randn(8, 4, 3, 3, generator=gen(3))
    torch.testing.assert_close(singular_values(K), torch.linalg.svdvals(K.double().reshape(8, 36)))


def planted_tucker(shape, ranks, seed=0):
    g = gen(seed)
    O, I, kh, kw = shape
    core = torch.randn(ranks[0], ranks[1], kh, kw, generator=g, dtype=torch.float64)
    u_out = torch.randn(O, ranks[0], generator=g, dtype=torch.float64)
    u_in = torch.randn(I, ranks[1], generator=g, dtype=torch.float64)
    return tucker2_to_full(core, u_out, u_in)


def test_tucker2_recovers_exact_tucker_kernel():
    W = planted_tucker((16, 12, 3, 3), (5, 4))
    core, U_out, U_in = tucker2(W, (5, 4))
    assert core.shape == (5, 4, 3, 3) and U_out.shape == (16, 5) and U_in.shape == (12, 4)
    assert rel_error(W, tucker2_to_full(core, U_out, U_in)) < 1e-10
    torch.testing.assert_close(U_out.T @ U_out, torch.eye(5, dtype=torch.float64))
    torch.testing.assert_close(U_in.T @ U_in, torch.eye(4, dtype=torch.float64))


def test_tucker2_float32_in_float32_out():
    W = planted_tucker((10, 8, 3, 3), (3, 3), seed=1).float()
    core, U_out, U_in = tucker2(W, (3, 3))
    assert core.dtype == U_out.dtype == U_in.dtype == torch.float32
    assert rel_error(W, tucker2_to_full(core, U_out, U_in)) < 1e-5


def test_tucker2_on_matrix_is_svd():
    W = torch.randn(20, 15, generator=gen(4), dtype=torch.float64)
    core, U_out, U_in = tucker2(W, (6, 6))
    assert core.shape == (6, 6)
    s = torch.linalg.svdvals(W)
    err2 = float((W - tucker2_to_full(core, U_out, U_in)).square().sum())
    assert err2 == pytest.approx(float(s[6:].square().sum()), rel=1e-8)


def test_hooi_never_worse_than_hosvd_and_matches_tensorly():
    W = torch.randn(24, 20, 3, 3, generator=gen(5), dtype=torch.float64)
    errs = [rel_error(W, tucker2_to_full(*tucker2(W, (6, 5), n_iter=n))) for n in (0, 1, 5, 25)]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(errs))
    assert errs[-1] < errs[0]
    with tl.backend_context("numpy"):
        (c, f), _ = partial_tucker(W.numpy(), (6, 5), modes=[0, 1], n_iter_max=25, tol=0)
    ref = tucker2_to_full(torch.from_numpy(c), torch.from_numpy(f[0]), torch.from_numpy(f[1]))
    # Same algorithm (HOSVD + HOOI); a local optimum may differ only marginally.
    assert errs[-1] == pytest.approx(rel_error(W, ref), rel=1e-3)


def test_tucker2_rank_errors():
    W = torch.randn(8, 6, 3, 3)
    with pytest.raises(ValueError, match="r_out 9 exceeds out_channels=8 for a 8×6×3×3 kernel"):
        tucker2(W, (9, 2))
    with pytest.raises(ValueError, match="r_in 7 exceeds in_channels=6"):
        tucker2(W, (2, 7))
    with pytest.raises(ValueError, match="pair"):
        tucker2(W, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2-D or 4-D"):
        tucker2(torch.randn(4, 4, 3), (2, 2))
