"""jointcomp.tensor.tbasis: mode plans, tensor rings from a shared basis, and the fit."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from jointcomp.tensor.tbasis import (
    balance_cores,
    fit_tbasis,
    pad_weight,
    plan_modes,
    ring_cores,
    ring_matrix,
    tbasis_matrix,
    tt_to_ring,
    unpad_weight,
)
from jointcomp.tensor.tbasis_fit import _packed_start, packing_block
from jointcomp.tensor.tt import tt_matrix, tt_matrix_to_full


def _naive_ring(cores: torch.Tensor, out_modes, in_modes) -> torch.Tensor:
    """W[row, col] = trace(G₁[o₁, i₁] ⋯ G_d[o_d, i_d]), index by index."""
    r = cores.shape[1]
    mats = [c[:, : o * i, :].reshape(r, o, i, r) for c, o, i in zip(cores, out_modes, in_modes)]
    full = torch.zeros(math.prod(out_modes), math.prod(in_modes), dtype=cores.dtype)
    for oi in itertools.product(*[range(o) for o in out_modes]):
        for ii in itertools.product(*[range(i) for i in in_modes]):
            m = torch.eye(r, dtype=cores.dtype)
            for k, mat in enumerate(mats):
                m = m @ mat[:, oi[k], ii[k], :]
            row = sum(oi[k] * math.prod(out_modes[k + 1 :]) for k in range(len(mats)))
            col = sum(ii[k] * math.prod(in_modes[k + 1 :]) for k in range(len(mats)))
            full[row, col] = torch.trace(m)
    return full


@pytest.mark.parametrize(
    "out_modes,in_modes", [((3,), (2,)), ((2, 3), (4, 1)), ((2, 2, 4, 1), (4, 2, 2, 9))]
)
def test_ring_matrix_is_the_trace_of_core_products(out_modes, in_modes) -> None:
    torch.manual_seed(0)
    cores = torch.randn(len(out_modes), 3, 9, 3, dtype=torch.float64)
    got = ring_matrix(cores, out_modes, in_modes)
    assert torch.allclose(got, _naive_ring(cores, out_modes, in_modes), atol=1e-10)


def test_tt_embedded_in_a_ring_keeps_its_matrix() -> None:
    torch.manual_seed(1)
    w = torch.randn(32, 16 * 9, dtype=torch.float64)
    om, im = (2, 4, 4, 1), (4, 2, 2, 9)
    tt = tt_matrix(w, list(om), list(im), ranks=5)
    ring = tt_to_ring(balance_cores(tt), rank=6, mode=9)
    assert ring.shape == (4, 6, 9, 6)
    assert torch.allclose(ring_matrix(ring, om, im), tt_matrix_to_full(tt), atol=1e-10)


def test_layer_from_basis_and_coefficients_equals_its_tt_form() -> None:
    """Cores in the basis' span: the basis + coefficients (+ scaling) rebuild exactly the TT."""
    torch.manual_seed(2)
    om, im = (2, 4, 1), (2, 2, 9)
    w = torch.randn(math.prod(om), math.prod(im), dtype=torch.float64)
    tt = tt_matrix(w, list(om), list(im), ranks=4)
    ring = tt_to_ring(tt, rank=4, mode=9)  # [3, 4, 9, 4]
    mix = torch.randn(3, 3, dtype=torch.float64)  # the basis: invertible mixtures of the cores
    basis = torch.einsum("bk,krns->brns", mix, ring)
    coef = torch.linalg.inv(mix)  # coef @ mix = I
    scale = torch.rand(3, 4, dtype=torch.float64) + 0.5
    cores = ring_cores(basis, coef, None)
    assert torch.allclose(cores, ring, atol=1e-10)
    got = tbasis_matrix(basis, coef, None, om, im)
    assert torch.allclose(got, tt_matrix_to_full(tt), atol=1e-10)
    scaled = ring_cores(basis, coef, scale)
    assert torch.allclose(scaled, ring * scale[:, :, None, None], atol=1e-10)


@pytest.mark.parametrize(
    "out_size,in_size,mode,kernel",
    [
        (16, 16, 9, (3, 3)),
        (64, 32, 9, (3, 3)),
        (32, 16, 9, (1, 1)),
        (10, 64, 9, ()),
        (64, 64, 4, (3, 3)),
        (97, 13, 9, ()),
        (100, 300, 16, (5, 5)),
    ],
)
def test_plans_fit_the_mode_and_cover_the_weight(out_size, in_size, mode, kernel) -> None:
    plan = plan_modes(out_size, in_size, mode, kernel)
    assert all(o * i <= mode for o, i in zip(plan.out_modes, plan.in_modes))
    assert math.prod(plan.out_modes) == plan.out_padded >= out_size
    window = math.prod(kernel) if kernel else 1
    assert math.prod(plan.in_modes) == plan.in_padded * window
    assert out_size <= plan.out_padded <= out_size * 1.25
    assert in_size <= plan.in_padded <= in_size * 1.25
    w = torch.randn(out_size, in_size, *kernel)
    padded, mask = pad_weight(w, plan)
    assert padded.shape == plan.matrix_shape and int(mask.sum()) == w.numel()
    assert torch.equal(unpad_weight(padded, plan, kernel), w)
    assert plan.padding == padded.numel() - w.numel()


def test_plans_without_a_fit_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="does not factor into at most"):
        plan_modes(97, 89, 9, max_pad_fraction=0.0)  # two primes above the mode
    with pytest.raises(ValueError, match="kernel 11×11 does not fit mode 9"):
        plan_modes(16, 16, 9, (11, 11))
    with pytest.raises(ValueError, match="mode must be at least 2"):
        plan_modes(16, 16, 1)


def _layers_from_a_basis(seed: int = 3):
    """Three layers of two layouts built from one random basis; row 0 coupled."""
    torch.manual_seed(seed)
    b_true = torch.randn(4, 3, 9, 3, dtype=torch.float64) / 3
    layouts = [((2, 4, 1), (4, 2, 9)), ((2, 4, 1), (4, 2, 9)), ((2, 2), (3, 4))]
    rows = [[0, 1, 2], [0, 3, 4], [5, 6]]
    coef = torch.randn(7, 4, dtype=torch.float64)
    weights = [
        tbasis_matrix(b_true, coef[torch.tensor(r)], None, om, im)
        for (om, im), r in zip(layouts, rows)
    ]
    return weights, layouts, rows


@pytest.mark.parametrize("init", ["packed", "pca"])
def test_fit_refines_its_start_and_reports_true_errors(init: str) -> None:
    weights, layouts, rows = _layers_from_a_basis()
    fit = fit_tbasis(weights, layouts, rows, basis_size=4, rank=3, mode=9, init=init, steps=150)
    assert fit.basis.shape == (4, 3, 9, 3) and fit.coef.shape == (7, 4)
    assert fit.rank_scale.shape == (7, 3) and fit.init == init
    assert sum(fit.rel_error) < 0.7 * sum(fit.rel_error_start)
    assert max(fit.rel_error) < 0.45
    cores = ring_cores(fit.basis, fit.coef, fit.rank_scale)
    for j, ((om, im), r) in enumerate(zip(layouts, rows)):
        approx = ring_matrix(cores[torch.tensor(r)], om, im)
        err = float((approx - weights[j]).norm() / weights[j].norm())
        assert err == pytest.approx(fit.rel_error[j], rel=1e-4)
    shared = ring_cores(fit.basis, fit.coef[:1], fit.rank_scale[:1])  # the coupled core
    assert torch.equal(cores[0], shared[0])


def test_packed_start_reproduces_every_layers_tt() -> None:
    """Each layer's TT-SVD cores in their own block slots: basis + one-hot coefficients +
    block-selecting rank scalings rebuild every TT exactly (with the noise switched off)."""
    torch.manual_seed(4)
    layouts = [((2, 4, 1), (4, 2, 9)), ((2, 2, 2), (2, 3, 3)), ((3, 3), (3, 3))]
    rows = [[0, 1, 2], [3, 4, 5], [6, 7]]
    weights = [torch.randn(math.prod(o), math.prod(i), dtype=torch.float64) for o, i in layouts]
    block = packing_block(basis_size=2, rank=6, cores=8)
    assert block == 3  # 2 elements × (6 // 3)² = 8 slots hold the 8 cores
    cores = [
        [c.reshape(c.shape[0], -1, c.shape[-1]) for c in tt_matrix(w, list(o), list(i), ranks=3)]
        for w, (o, i) in zip(weights, layouts)
    ]
    gen = torch.Generator().manual_seed(0)
    basis, coef, scale, placed = _packed_start(cores, rows, 8, 2, 6, 9, block, gen, noise=0.0)
    assert placed == 3
    assert sorted(int(c.argmax()) for c in coef).count(0) == 4  # 4 slots in each element
    for (o, i), r, layer_cores in zip(layouts, rows, cores):
        tt = [c.reshape(c.shape[0], oo, ii, c.shape[-1]) for c, oo, ii in zip(layer_cores, o, i)]
        got = tbasis_matrix(basis, coef[torch.tensor(r)], scale[torch.tensor(r)], o, i)
        assert torch.allclose(got, tt_matrix_to_full(tt), atol=1e-10)


def test_packing_blocks_fit_the_slots() -> None:
    assert packing_block(16, 16, 150) == 4  # 16·4² = 256 slots ≥ 150; 16·3² = 144 < 150
    assert packing_block(8, 8, 150) == 2  # only r = 1 holds all; r = 2 holds 128 ≥ 75%
    assert packing_block(4, 4, 150) == 1


def test_fit_rejects_inconsistent_inputs() -> None:
    w = torch.randn(8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="rows for"):
        fit_tbasis([w], [((2, 4), (4, 2))], [[0]], basis_size=2, rank=2, mode=9)
    with pytest.raises(ValueError, match="without gaps"):
        fit_tbasis([w], [((2, 4), (4, 2))], [[0, 2]], basis_size=2, rank=2, mode=9)
    with pytest.raises(ValueError, match="TT-matrix of its modes"):
        fit_tbasis([w], [((2, 2), (4, 2))], [[0, 1]], basis_size=2, rank=2, mode=9)
