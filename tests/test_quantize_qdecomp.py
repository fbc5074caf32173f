"""Quantized decompositions: fitting CP/TT factors on the grid is no worse than decomposing in
float and rounding afterwards, both as tensor maths and through the stage's ``refit``."""

from __future__ import annotations

import pytest
import torch

from jointcomp.nn import CPConv2d, TTLinear, decompose, rel_error
from jointcomp.nn.quantized import quantized_tensors
from jointcomp.quant import QuantSpec, ptq_tensor, refit_layer
from jointcomp.tensor import (
    cp_als,
    cp_to_full,
    qcp_to_full,
    quantized_cp_als,
    quantized_tt_matrix,
    round_cp_factors,
    round_tt_cores,
    tt_matrix,
    tt_matrix_to_full,
)
from jointcomp.tensor.qtt import dequantize_cores

from .quantize_util import factorized_small_cnn, run_quantize


def _random_cp(shape: tuple[int, ...], rank: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    factors = [torch.randn(n, rank, generator=g, dtype=torch.float64) for n in shape]
    return cp_to_full(torch.ones(rank, dtype=torch.float64), factors)


def _err(ref: torch.Tensor, approx: torch.Tensor) -> float:
    return float((ref - approx).norm() / ref.norm())


@pytest.mark.parametrize("bits", [3, 4, 6])
def test_quantized_als_beats_als_then_round(bits: int) -> None:
    for seed in range(3):
        t = _random_cp((10, 8, 6, 5), 4, seed)
        w, ints, scales = quantized_cp_als(t, 4, bits, seed=seed)
        ours = _err(t, qcp_to_full(w, ints, scales))
        lam, factors = cp_als(t, 4, seed=seed)
        w_r, ints_r, scales_r = round_cp_factors(lam, factors, bits)
        theirs = _err(t, qcp_to_full(w_r, ints_r, scales_r))
        assert ours <= theirs * 1.0001, (seed, ours, theirs)


def test_quantized_tt_beats_tt_then_round() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 30, generator=g, dtype=torch.float64)
    wins = 0
    for bits in (2, 3, 4):
        cores = tt_matrix(w, [4, 6], [5, 6], [3])
        ints, scales = round_tt_cores(cores, bits)
        theirs = _err(w, tt_matrix_to_full(dequantize_cores(ints, scales, torch.float64)))
        q_ints, q_scales = quantized_tt_matrix(w, [4, 6], [5, 6], bits, ranks=[3])
        ours = _err(w, tt_matrix_to_full(dequantize_cores(q_ints, q_scales, torch.float64)))
        wins += ours <= theirs
    assert wins >= 2


def _rounded_error(layer: torch.nn.Module, bits: int) -> float:
    """Error of the layer's weight with every factor rounded on its own (per-tensor grid)."""
    ref = layer.reconstruct_weight().detach()
    keep = {n: p.detach().clone() for n, p in layer.named_parameters()}
    spec = QuantSpec(bits, "tensor", True, True)
    with torch.no_grad():
        for n, p in layer.named_parameters():
            if n != "bias" and not n.endswith(".bias"):
                p.copy_(ptq_tensor(p.detach(), spec, None, "absmax")(p))
        err = rel_error(ref, layer.reconstruct_weight())
        for n, p in layer.named_parameters():
            p.copy_(keep[n])
    return err


@pytest.mark.parametrize("bits", [3, 4])
def test_refit_layers_beat_rounding_their_factors(bits: int) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 12, 3)
    cp, _ = decompose(conv, "cp", 4)
    lin, _ = decompose(torch.nn.Linear(36, 20), "tt", 3, options={"tt_cores": 2})
    for layer in (cp, lin):
        assert isinstance(layer, (CPConv2d, TTLinear))
        ref = layer.reconstruct_weight().detach()
        rounded = _rounded_error(layer, bits)
        quantized = refit_layer(layer, bits)
        for rel, p in quantized.items():
            sub, _, tensor = rel.rpartition(".")
            torch.nn.utils.parametrize.register_parametrization(
                layer.get_submodule(sub) if sub else layer, tensor, p, unsafe=True
            )
        assert all(p.bits == bits for p in quantized.values())
        assert rel_error(ref, layer.reconstruct_weight()) <= rounded


def test_stage_refit_uses_the_quantized_decompositions() -> None:
    model = factorized_small_cnn("svd-tucker-cp")
    model.fc, _ = decompose(torch.nn.Linear(32, 10), "tt", 2, options={"tt_cores": 2})
    model, record = run_quantize(model, {"ptq": {"refit": True}, "bits": {"factors": 4}})
    methods = {r["tensor"]: r["method"] for r in record["layers"]}
    assert methods["block3.0.first.weight"] == "qcp" and methods["fc.cores.0"] == "qtt"
    assert methods["block2.0.core.weight"] == "ptq"  # Tucker has no quantized refit: rounded
    q = quantized_tensors(model)
    assert q["block3.0.first.weight"].scale.numel() == 6  # per-rank CP weights as scales
    assert record["summary"]["refit_skipped"] == []
