"""``include_zero: false``: an asymmetric grid over the values' own [min, max] for tensors
rounded after training. Folded output scales sit far from 0, so the same bits round them
finer; the zero point lies off the codes, and the file still decodes bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from jointcomp.container import open_artifact, save
from jointcomp.errors import ModelError
from jointcomp.nn.quantized import quantized_tensors
from jointcomp.quant import QuantSpec
from jointcomp.quant.qat import weight_quant

from .test_tbasis_equalize import _uneven_model
from .test_tbasis_layers import KW


def _quantize(tmp_path: Path, include_zero: bool | None, **extra) -> tuple[torch.nn.Module, dict]:
    from jointcomp.stages.quantize import QuantizeParams, QuantizeStage

    from .quantize_util import stage_ctx

    scale = {"bits": 4, "granularity": "tensor", "symmetric": False}
    if include_zero is not None:
        scale["include_zero"] = include_zero
    params = QuantizeParams(
        bits={"factors": 8, "weights": 8, "norms": 4, "biases": 8},
        layers={"*.out_scale": scale, **extra},
        fold_bn="after",
        finetune={"epochs": 1, "max_batches": 1, "lr": 1e-6},
    )
    ctx = stage_ctx(tmp_path)
    model = QuantizeStage(params).apply(_uneven_model(), ctx)
    return model, ctx.record["summary"]


def _scale_error(model: torch.nn.Module, float_scales: dict[str, torch.Tensor]) -> float:
    q = quantized_tensors(model)
    return max(
        float((q[f"{p}.out_scale"].dequantize() - s).abs().max() / s.abs().max())
        for p, s in float_scales.items()
    )


def test_folded_scales_round_finer_on_their_own_range(tmp_path: Path) -> None:
    captured: dict[str, dict[str, torch.Tensor]] = {}
    from jointcomp.stages.quantize import QuantizeStage

    original = QuantizeStage._round_extras

    def spy(self, model, ctx, extras, summary):
        key = "offset" if any(not s.include_zero for _, s in extras) else "zero"
        captured[key] = {
            p: model.get_submodule(p).out_scale.detach().clone() for p in ("block2.0", "block3.0")
        }
        original(self, model, ctx, extras, summary)

    QuantizeStage._round_extras = spy  # type: ignore[method-assign]
    try:
        wide, _ = _quantize(tmp_path / "zero", None)
        own, _ = _quantize(tmp_path / "own", False)
    finally:
        QuantizeStage._round_extras = original  # type: ignore[method-assign]
    q = quantized_tensors(own)["block2.0.out_scale"]
    assert float(q.zero_point) < 0 and int(q.int_repr.min()) == 0  # 0 lies below the grid
    assert _scale_error(own, captured["offset"]) < 0.75 * _scale_error(wide, captured["zero"])
    # the file keeps the off-grid zero point exactly
    save(tmp_path / "m.jcz", own, "zoo:small_cnn", KW)
    loaded = open_artifact(tmp_path / "m.jcz").model
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(own.eval()(x), loaded(x))


def test_trained_tensors_refuse_an_off_zero_grid(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="include_zero"):
        weight_quant(QuantSpec(4, "tensor", symmetric=False, include_zero=False))
    with pytest.raises(ModelError, match="include_zero false .* trained by qat"):
        _quantize(tmp_path, None, **{"block1.*": {"symmetric": False, "include_zero": False}})
