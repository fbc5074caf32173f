"""Bias correction of rounded folded output scales (the fold stage's ``round.bias_correction``):
a channel's mean output stays where training left it when its scale is rounded, so coarse scale
grids cost less."""

from __future__ import annotations

import copy

import pytest
import torch

from jointcomp.quant.bias_correction import correct_bias, output_means

from .quantize_util import run_fold, run_quantize, stage_ctx
from .quantize_util import uneven_tbasis_model as _uneven_model


def test_corrected_bias_keeps_each_channels_mean_output() -> None:
    torch.manual_seed(0)
    z = torch.randn(500, 6) * 2 + torch.linspace(-3, 3, 6)  # W·x per channel, uneven means
    s, b = torch.rand(6) + 0.5, torch.randn(6)
    rounded = torch.round(s * 4) / 4
    rounded[0] = 0.0  # a channel rounded to nothing keeps its old mean through the bias
    mean = (s * z + b).mean(0)
    new = correct_bias(b, s, rounded, mean)
    assert torch.allclose((rounded * z + new).mean(0), mean, atol=1e-5)
    assert not torch.allclose((rounded * z + b).mean(0), mean, atol=1e-2)  # uncorrected drifts
    zero = torch.zeros(6)
    assert torch.equal(correct_bias(b, zero, rounded, mean), b)  # no signal: nothing to move


def test_output_means_are_per_channel_and_need_the_layer_to_run() -> None:
    model = _uneven_model()
    x = torch.randn(8, 1, 8, 8)
    layer = model.get_submodule("block2.0")
    means = output_means(model, {"block2.0": layer}, [(x, None), (x, None)], "cpu")
    with torch.no_grad():
        out = layer(model.block1(x))
    assert torch.allclose(means["block2.0"], out.double().mean((0, 2, 3)), atol=1e-6)
    unused = torch.nn.Conv2d(1, 1, 1)
    with pytest.raises(ValueError, match="never ran"):
        output_means(model, {"extra": unused}, [(x, None)], "cpu")


def _fold_mean_shift(quantized: torch.nn.Module, correction: bool) -> tuple[float, dict]:
    """Fold the batch norms of a quantized T-Basis model and round the folded scales on a
    3-bit grid (biases at 8 bits); the largest shift of the first T-Basis layer's channel mean
    outputs from the unrounded fold's (later layers' inputs move with it), relative to the
    largest mean."""
    layer = "block2.0"
    batches = stage_ctx().calibration(4)
    unrounded, _ = run_fold(copy.deepcopy(quantized))
    before = output_means(unrounded, {layer: unrounded.get_submodule(layer)}, batches, "cpu")
    rounding = {
        "scales": {"bits": 3, "symmetric": False},
        "biases": {"bits": 8},
        "bias_correction": correction,
    }
    model, record = run_fold(copy.deepcopy(quantized), {"round": rounding})
    after = output_means(model, {layer: model.get_submodule(layer)}, batches, "cpu")
    return float((after[layer] - before[layer]).abs().max() / before[layer].abs().max()), record


def test_fold_moves_the_scale_rounding_shift_into_the_bias() -> None:
    quantized, _ = run_quantize(
        _uneven_model(),
        {
            "qat": {"bn_batches": 2, "finetune": {"epochs": 1, "max_batches": 1, "lr": 1e-6}},
            "bits": {"factors": 8, "weights": 8},
        },
    )
    plain, record_plain = _fold_mean_shift(quantized, False)
    corrected, record = _fold_mean_shift(quantized, True)
    assert record["bias_corrected"] == 2 and "bias_corrected" not in record_plain
    assert {r["tensor"] for r in record["rounded"]} == {
        f"block{i}.0.{t}" for i in (2, 3) for t in ("out_scale", "bias")
    }
    assert corrected < 0.25 * plain
