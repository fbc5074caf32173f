"""Bias correction of rounded folded output scales: a channel's mean output stays where
training left it when its scale is rounded, so coarse scale grids cost less."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from jointcomp.quant.bias_correction import correct_bias, output_means

from .test_tbasis_equalize import _uneven_model


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


def _folded_mean_error(tmp_path, correction: bool | None) -> tuple[float, dict]:
    """QAT with the batch norms, fold, round the folded scales on a 3-bit grid (biases at 8
    bits); the largest shift of the first T-Basis layer's channel mean outputs from before the
    rounding (later layers' inputs move with it), relative to the largest mean."""
    from jointcomp.stages.quantize import QuantizeParams, QuantizeStage

    from .quantize_util import stage_ctx

    params = QuantizeParams(
        bits={"factors": 8, "weights": 8, "norms": 3, "biases": 8},
        layers={"*.out_scale": {"bits": 3, "granularity": "tensor", "symmetric": False}},
        fold_bn="after",
        bias_correction=correction,
        finetune={"epochs": 1, "max_batches": 1, "lr": 1e-6},
    )
    ctx = stage_ctx(tmp_path)
    stage = QuantizeStage(params)
    seen: dict[str, torch.Tensor] = {}
    original = stage._round_extras

    def spy(model, ctx_, extras, summary):  # the means just before and after the rounding
        layers = {p: model.get_submodule(p) for p in ("block2.0",)}
        batches = ctx_.calibration_batches(4)
        seen.update(
            {f"before:{k}": v for k, v in output_means(model, layers, batches, "cpu").items()}
        )
        original(model, ctx_, extras, summary)
        seen.update(
            {f"after:{k}": v for k, v in output_means(model, layers, batches, "cpu").items()}
        )

    stage._round_extras = spy  # type: ignore[method-assign]
    stage.apply(_uneven_model(), ctx)
    err = max(
        float(
            (seen[f"after:{k}"] - seen[f"before:{k}"]).abs().max() / seen[f"before:{k}"].abs().max()
        )
        for k in ("block2.0",)
    )
    return err, ctx.record["summary"]


def test_quantize_moves_the_scale_rounding_shift_into_the_bias(tmp_path) -> None:
    plain, summary_plain = _folded_mean_error(tmp_path / "plain", None)
    corrected, summary = _folded_mean_error(tmp_path / "corrected", True)
    assert summary["bias_corrected"] == 2 and "bias_corrected" not in summary_plain
    assert corrected < 0.25 * plain


def test_bias_correction_needs_scales_rounded_after_training() -> None:
    from jointcomp.stages.quantize import QuantizeParams

    with pytest.raises(ValidationError, match="bias_correction"):
        QuantizeParams(fold_bn="after", fold_rounding="qat", bias_correction=True)
    with pytest.raises(ValidationError, match="bias_correction"):
        QuantizeParams(fold_bn=True, bias_correction=True)
