"""Uniform quantizers, quantized CP-ALS and error-compensated quantized TT-SVD."""

from __future__ import annotations

import re

import pytest
import torch

from jointcomp.tensor import (
    calibrate_scale,
    cp_als,
    cp_to_full,
    dequantize,
    fake_quantize,
    int_range,
    qcp_to_full,
    qtt_to_full,
    quantize_uniform,
    quantized_cp_als,
    quantized_tt_matrix,
    quantized_tt_svd,
    round_cp_factors,
    round_tt_cores,
    tt_matrix_to_full,
    tt_svd,
    tt_to_full,
)
from jointcomp.tensor._common import rel_error
from jointcomp.tensor.qtt import dequantize_cores

BITS = (2, 3, 4, 6, 8)


def test_int_range_matches_brevitas_conventions():
    assert int_range(8, True, False) == (-128, 127)
    assert int_range(8, True, True) == (-127, 127)
    assert int_range(8, False, False) == (0, 255)
    assert int_range(8, False, True) == (0, 254)
    assert int_range(2, True, True) == (-1, 1)
    with pytest.raises(ValueError, match="single value"):
        int_range(1, True, True)
    with pytest.raises(ValueError, match="bits must be <= 16"):
        int_range(17, True, False)


def test_int_range_against_brevitas():
    ops = pytest.importorskip("brevitas.function.ops")
    for bits in (2, 3, 4, 8):
        for signed in (True, False):
            for narrow in (True, False):
                b = torch.tensor(float(bits))
                expect = (int(ops.min_int(signed, narrow, b)), int(ops.max_int(signed, narrow, b)))
                assert int_range(bits, signed, narrow) == expect


def test_quantize_roundtrip_and_clamping():
    scale = 0.5
    x = torch.tensor([-100.0, -1.0, -0.26, 0.0, 0.24, 0.25, 0.75, 63.5, 100.0])
    q = quantize_uniform(x, 8, scale, 0, signed=True, narrow_range=True)
    assert q.dtype == torch.int32
    # round half to even: 0.25/0.5 = 0.5 → 0, 0.75/0.5 = 1.5 → 2; clamp to ±127
    assert q.tolist() == [-127, -2, -1, 0, 0, 0, 2, 127, 127]
    grid = torch.arange(-127, 128, dtype=torch.float32) * scale
    assert torch.equal(fake_quantize(grid, 8, scale), grid)  # grid points are fixed points


def test_calibrate_symmetric_per_channel():
    x = torch.tensor([[0.5, -2.0, 1.0], [0.1, 0.2, -0.3], [0.0, 0.0, 0.0]])
    scale, zero = calibrate_scale(x, 4, symmetric=True, axis=0)
    assert scale.dtype == torch.float32 and zero.dtype == torch.int32
    torch.testing.assert_close(scale, torch.tensor([2.0 / 7, 0.3 / 7, 1.0]))
    assert not zero.any()
    q = quantize_uniform(x, 4, scale, zero, axis=0)
    assert q.abs().amax(1).tolist() == [7, 7, 0]
    err = (dequantize(q, scale, zero, axis=0) - x).abs()
    assert bool((err <= scale[:, None] / 2 + 1e-7).all())


def test_calibrate_asymmetric_min_max():
    x = torch.linspace(-1.0, 3.0, 101)
    scale, zero = calibrate_scale(x, 8, symmetric=False, narrow_range=False)
    assert float(scale) == pytest.approx(4 / 255)
    assert int(zero) == 64  # round(0 − (−1)/scale) = round(63.75)
    q = quantize_uniform(x, 8, scale, zero, signed=False, narrow_range=False)
    assert int(q.min()) >= 0 and int(q.max()) <= 255
    err = (dequantize(q, scale, zero) - x).abs().max()
    assert float(err) <= float(scale) / 2 + 1e-6
    assert float(dequantize(torch.tensor(int(zero)), scale, zero)) == 0.0  # 0 is exact


def test_calibrate_asymmetric_own_range_is_finer_away_from_zero():
    """include_zero False: the grid spans [min, max] only (a folded output scale's values sit
    far from 0), its zero point off the codes; a constant slice still codes exactly."""
    x = torch.stack([torch.linspace(0.09, 0.19, 40), torch.full((40,), 0.5)])
    scale, zero = calibrate_scale(x, 5, symmetric=False, axis=0, include_zero=False)
    wide, _ = calibrate_scale(x, 5, symmetric=False, axis=0)
    assert float(scale[0]) == pytest.approx(0.1 / 30, rel=1e-5)  # narrow: codes 0..30
    assert float(scale[0]) < 0.6 * float(wide[0])
    assert int(zero[0]) < 0  # 0 is below the grid
    q = quantize_uniform(x, 5, scale, zero, signed=False, narrow_range=True, axis=0)
    assert int(q.min()) >= 0 and int(q.max()) <= 30
    err = (dequantize(q, scale, zero, axis=0) - x).abs()
    assert float(err[0].max()) <= float(scale[0]) / 2 + 1e-6
    assert float(err[1].max()) < 1e-6  # the constant row: reaches 0 as before, exact


def test_quant_argument_errors():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="positive"):
        quantize_uniform(x, 8, 0.0)
    with pytest.raises(ValueError, match=re.escape("1-D of length 4 (x.shape[1])")):
        quantize_uniform(x, 8, torch.ones(3), axis=1)
    with pytest.raises(ValueError, match="scalar"):
        quantize_uniform(x, 8, torch.ones(3))


def planted_cp(shape, rank, seed):
    g = torch.Generator().manual_seed(seed)
    fs = [torch.randn(n, rank, generator=g, dtype=torch.float64) for n in shape]
    return cp_to_full(torch.ones(rank, dtype=torch.float64), fs)


@pytest.mark.parametrize("bits", BITS)
def test_quantized_cp_als_no_worse_than_round_after(bits):
    ratios = []
    for seed in range(3):
        T = planted_cp((12, 10, 8, 6), 5, seed)
        weights, ints, scales = quantized_cp_als(T, 5, bits, n_iter=30)
        qmax = int_range(bits, True, True)[1]
        assert all(q.dtype == torch.int32 and int(q.abs().max()) <= qmax for q in ints)
        q_err = rel_error(T, qcp_to_full(weights, ints, scales))
        w, f = cp_als(T, 5)
        r_err = rel_error(T, qcp_to_full(*round_cp_factors(w, f, bits)))
        assert q_err <= 1.02 * r_err, (seed, q_err, r_err)
        ratios.append(q_err / r_err)
    assert sum(ratios) / len(ratios) < 1.0


def test_quantized_cp_als_8bit_is_accurate():
    T = planted_cp((10, 9, 8), 3, seed=5).float()
    weights, ints, scales = quantized_cp_als(T, 3, 8)
    assert weights.dtype == torch.float32
    assert rel_error(T, qcp_to_full(weights, ints, scales)) < 0.02


def planted_tt(shape, ranks, seed):
    g = torch.Generator().manual_seed(seed)
    cores = [
        torch.randn(ranks[k], n, ranks[k + 1], generator=g, dtype=torch.float64)
        for k, n in enumerate(shape)
    ]
    return tt_to_full(cores)


@pytest.mark.parametrize("bits", BITS)
def test_quantized_tt_svd_no_worse_than_round_after(bits):
    shape, ranks = (6, 7, 8, 5, 4), [1, 3, 4, 4, 3, 1]
    ratios = []
    for seed in range(6):
        T = planted_tt(shape, ranks, seed)
        ints, scales = quantized_tt_svd(T, bits, ranks=ranks)
        assert [tuple(q.shape) for q in ints] == [
            (ranks[k], n, ranks[k + 1]) for k, n in enumerate(shape)
        ]
        q_err = rel_error(T, qtt_to_full(ints, scales, torch.float64))
        r_err = rel_error(
            T, qtt_to_full(*round_tt_cores(tt_svd(T, ranks=ranks), bits), torch.float64)
        )
        # Single cases may lose a little (the out-of-span part of a core's rounding error
        # cannot be compensated); on average compensation must win.
        assert q_err <= 1.06 * r_err, (seed, q_err, r_err)
        ratios.append(q_err / r_err)
    assert sum(ratios) / len(ratios) < 1.0


def test_quantized_tt_matrix_shapes_and_accuracy():
    g = torch.Generator().manual_seed(0)
    cores = [torch.randn(1, 4, 5, 3, generator=g), torch.randn(3, 6, 6, 1, generator=g)]
    W = tt_matrix_to_full(cores)  # exactly TT-rank 3
    ints, scales = quantized_tt_matrix(W, [4, 6], [5, 6], bits=8, ranks=3)
    assert [tuple(q.shape) for q in ints] == [(1, 4, 5, 3), (3, 6, 6, 1)]
    assert all(q.dtype == torch.int32 and int(q.abs().max()) <= 127 for q in ints)
    assert rel_error(W, tt_matrix_to_full(dequantize_cores(ints, scales))) < 0.02
