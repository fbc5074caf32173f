"""``include_zero: false``: an asymmetric grid over the values' own [min, max] for tensors
rounded after training — the fold stage's rounded output scales (``round.scales``) and the
quantize stage's biases and norms. Values far from 0 round finer on the same bits; the zero
point lies off the codes, and the file still decodes bit for bit."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import jointcomp
from jointcomp.errors import ModelError
from jointcomp.nn.quantized import quantized_tensors
from jointcomp.quant import QuantSpec
from jointcomp.quant.qat import weight_quant

from .quantize_util import KWARGS, run_fold, run_quantize, small_cnn, uneven_tbasis_model

LAYERS = ("block2.0", "block3.0")


def _qat(model: torch.nn.Module, **params) -> torch.nn.Module:
    qat = {"bn_batches": 2, "finetune": {"epochs": 1, "max_batches": 1, "lr": 1e-6}}
    return run_quantize(model, {"qat": qat, "bits": {"factors": 8, "weights": 8}, **params})[0]


def _scale_error(model: torch.nn.Module, float_scales: dict[str, torch.Tensor]) -> float:
    q = quantized_tensors(model)
    return max(
        float((q[f"{p}.out_scale"].dequantize() - s).abs().max() / s.abs().max())
        for p, s in float_scales.items()
    )


def test_folded_scales_round_finer_on_their_own_range(tmp_path: Path) -> None:
    quantized = _qat(uneven_tbasis_model())
    unrounded, _ = run_fold(copy.deepcopy(quantized))
    float_scales = {p: unrounded.get_submodule(p).out_scale.detach() for p in LAYERS}
    models = {}
    for include_zero in (True, False):
        scales = {"bits": 4, "symmetric": False, "include_zero": include_zero}
        models[include_zero], _ = run_fold(copy.deepcopy(quantized), {"round": {"scales": scales}})
    wide, own = models[True], models[False]
    q = quantized_tensors(own)["block2.0.out_scale"]
    assert float(q.zero_point) < 0 and int(q.int_repr.min()) == 0  # 0 lies below the grid
    assert float(quantized_tensors(wide)["block2.0.out_scale"].zero_point) == 0
    for p in LAYERS:  # a finer step on the same 4 bits
        steps = [float(quantized_tensors(m)[f"{p}.out_scale"].scale) for m in (own, wide)]
        assert steps[0] < steps[1]
    assert _scale_error(own, float_scales) < 0.85 * _scale_error(wide, float_scales)
    # the file keeps the off-grid zero point exactly
    jointcomp.save(own, tmp_path / "m.jcz", builder="zoo:small_cnn", kwargs=KWARGS)
    loaded = jointcomp.load(tmp_path / "m.jcz")
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(own.eval()(x), loaded(x))


def test_norms_rounded_after_training_use_their_own_range() -> None:
    grids = {}
    for include_zero in (True, False):
        model = small_cnn()
        with torch.no_grad():
            model.block1[1].weight.uniform_(2.0, 3.0)  # far from 0
        want = model.block1[1].weight.detach().clone()
        override = {"symmetric": False, "include_zero": include_zero}
        model, _ = run_quantize(
            model, {"ptq": {}, "bits": {"norms": 4}, "overrides": {"block1.1": override}}
        )
        q = quantized_tensors(model)["block1.1.weight"]
        grids[include_zero] = (q, float((q.dequantize() - want).abs().max()))
    (own, own_err), (wide, wide_err) = grids[False], grids[True]
    assert float(own.zero_point) < 0 and float(wide.zero_point) == 0
    assert own_err < 0.5 * wide_err


def test_trained_tensors_refuse_an_off_zero_grid() -> None:
    with pytest.raises(ValueError, match="include_zero"):
        weight_quant(QuantSpec(4, "tensor", symmetric=False, include_zero=False))
    with pytest.raises(ModelError, match="include_zero false .* trained by qat"):
        _qat(
            uneven_tbasis_model(),
            overrides={"block1.*": {"symmetric": False, "include_zero": False}},
        )
