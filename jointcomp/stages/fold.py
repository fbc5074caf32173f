"""Stage ``fold``: fold batch norms into the layers before them (``jointcomp.nn.bnfold``: plain,
SVD/Tucker/CP and T-Basis layers alike), so the file holds no running statistics and, before
quantization, the quantizer sees the weights the network really uses.

After quantization a T-Basis layer takes its batch norm into a per-channel output scale and a
bias beside its quantized cores; ``round`` then puts those on integer grids too, rounded to
nearest (optionally with bias correction: the shift that rounding the scales makes in each
channel's mean output moves into the bias before it is rounded, Nagel et al. 2019).

Record: ``folded`` (batch norm, layer, how the pair was found), ``not_folded`` (with reasons),
``rounded`` (tensor, bits) and ``bias_corrected``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ..config import Scope, StageConfig, Strict
from ..context import Context, Step
from ..errors import ModelError
from ..nn.bnfold import fold_batchnorms, output_layer
from ..nn.quantized import attach
from ..quant.bias_correction import correct_bias, output_means
from ..quant.ptq import ptq_tensor
from ..quant.spec import QuantSpec


class RoundGrid(Strict):
    """A per-tensor integer grid for a folded tensor."""

    bits: int = Field(8, ge=2, le=16)
    symmetric: bool = Field(True, description="signed grid around 0; false: an offset grid")
    narrow_range: bool = Field(True, description="drop the most negative code (signed)")
    include_zero: bool = Field(
        True,
        description="offset grids: reach 0 (true) or span only the values' own [min, max], "
        "a finer grid for values far from 0 such as output scales (false)",
    )

    def spec(self) -> QuantSpec:
        return QuantSpec(self.bits, "tensor", self.symmetric, self.narrow_range, self.include_zero)


class FoldRounding(Strict):
    """Round the output scales and biases the fold writes, each on its own grid."""

    scales: RoundGrid | None = Field(
        default_factory=lambda: RoundGrid(bits=8, symmetric=False),
        description="T-Basis output scales (null: leave float)",
    )
    biases: RoundGrid | None = Field(
        default_factory=RoundGrid, description="the biases of folded layers (null: leave float)"
    )
    calibration: Literal["absmax", "mse"] = Field(
        "mse", description="the grid's range: max-abs / min-max, or least-MSE clipping"
    )
    bias_correction: bool = Field(
        False,
        description="round each output scale first and move the shift it makes in its "
        "channels' mean output (measured on calibration batches) into the bias before that is "
        "rounded",
    )
    batches: int = Field(16, ge=1, description="calibration batches for bias_correction")

    @model_validator(mode="after")
    def _correction_needs_scales(self) -> FoldRounding:
        if self.bias_correction and self.scales is None:
            raise ValueError("bias_correction corrects rounded output scales: set scales too")
        return self


class FoldConfig(StageConfig):
    """Fold every batch norm that follows a layer in ``scope`` (by the layer's name)."""

    stage = "fold"

    scope: Scope = Field(default_factory=Scope, description="the layers to fold into")
    round: FoldRounding | None = Field(
        None,
        description="put the output scales and biases the fold writes on integer grids "
        "(after quantize: the folded model stays fully quantized)",
    )


def fold(model: nn.Module, config: FoldConfig, context: Context) -> Step:
    """Fold the batch norms after the layers in ``config.scope`` into them, then round what the
    fold wrote when ``config.round`` says so."""
    model = model.to(context.device).eval()
    folded, not_folded = fold_batchnorms(model, context.selector(config.scope, model))
    record: dict = {"folded": folded, "not_folded": not_folded}
    context.log(f"folded {len(folded)} batch norm(s), {len(not_folded)} left")
    if config.round is not None and folded:
        layers = {f["into"]: model.get_submodule(f["into"]) for f in folded}
        record.update(_round(model, layers, config.round, context))
    return Step(model, record)


def _round(
    model: nn.Module, layers: dict[str, nn.Module], rounding: FoldRounding, context: Context
) -> dict:
    """Round each folded layer's output scale, then its bias (moving the scale's mean shift into
    the bias first with ``bias_correction``)."""
    scaled = {
        name: layer
        for name, layer in layers.items()
        if isinstance(getattr(layer, "out_scale", None), nn.Parameter)
    }
    means = {}
    if rounding.bias_correction and scaled and rounding.scales is not None:
        try:
            means = output_means(
                model, scaled, context.calibration(rounding.batches), context.device
            )
        except ValueError as exc:
            raise ModelError(f"fold: bias correction: {exc}") from None
    rounded = []
    corrected = 0
    if rounding.scales is not None:
        for name, layer in scaled.items():
            before = layer.out_scale.detach()
            _round_tensor(layer, "out_scale", rounding.scales, rounding.calibration)
            rounded.append({"tensor": f"{name}.out_scale", "bits": rounding.scales.bits})
            bias = getattr(layer, "bias", None)
            if name in means and isinstance(bias, nn.Parameter):
                after = layer.out_scale.detach()
                with torch.no_grad():
                    bias.copy_(correct_bias(bias, before, after, means[name].to(before.device)))
                corrected += 1
    if rounding.biases is not None:
        for name, layer in layers.items():
            owner = _bias_owner(layer)
            if isinstance(getattr(owner, "bias", None), nn.Parameter):
                _round_tensor(owner, "bias", rounding.biases, rounding.calibration)
                path = next(
                    f"{name}.{p}" if p else name for p, m in layer.named_modules() if m is owner
                )
                rounded.append({"tensor": f"{path}.bias", "bits": rounding.biases.bits})
    out = {"rounded": rounded}
    if rounding.bias_correction:
        out["bias_corrected"] = corrected
    return out


def _bias_owner(layer: nn.Module) -> nn.Module:
    """The module holding the bias a fold wrote: the layer itself, or the sub-layer that
    produces a factorized layer's outputs."""
    if hasattr(layer, "fold_batchnorm"):
        return layer
    return output_layer(layer)[0]


def _round_tensor(module: nn.Module, name: str, grid: RoundGrid, calibration: str) -> None:
    x = getattr(module, name).detach()
    attach(module, name, ptq_tensor(x, grid.spec(), None, calibration).to(x.device))
