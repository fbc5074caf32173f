"""Quantization-aware training with brevitas, and the export of its integers.

During training every Conv/Linear whose weight is quantized (plain layers and the sub-layers of
SVD/Tucker/CP layers) is a ``brevitas.nn.QuantConv*/QuantLinear``; bare parameters (TT cores,
sparse residuals) carry a training-time parametrization around a brevitas weight-quant proxy
(``ParamQuantizer``). Gradients pass the rounding straight through. ``export`` then reads
brevitas' own integers, scale and zero point (``quant_weight()``) into ``IntQuantized``
parametrizations on plain modules, so the file holds exactly the grid brevitas trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from brevitas import nn as qnn
from brevitas.nn.mixin.parameter import QuantWeightMixin
from brevitas.quant import (
    Int8WeightPerChannelFloat,
    Int8WeightPerChannelFloatMSE,
    Int8WeightPerTensorFloat,
    Int8WeightPerTensorFloatMSE,
    ShiftedUint8WeightPerChannelFloat,
    ShiftedUint8WeightPerChannelFloatMSE,
    ShiftedUint8WeightPerTensorFloat,
    ShiftedUint8WeightPerTensorFloatMSE,
)
from torch import nn
from torch.nn.utils import parametrize

from ..nn.execution import FactorizedModule
from ..nn.modules import set_module
from ..nn.quantized import IntQuantized, attach
from .rate import laplace_bits
from .spec import QuantSpec
from .targets import Target

Scaling = Literal["stats", "learned", "mse"]

_BASE = {  # (symmetric, per channel, mse) -> brevitas weight quantizer
    (True, True, False): Int8WeightPerChannelFloat,
    (True, False, False): Int8WeightPerTensorFloat,
    (False, True, False): ShiftedUint8WeightPerChannelFloat,
    (False, False, False): ShiftedUint8WeightPerTensorFloat,
    (True, True, True): Int8WeightPerChannelFloatMSE,
    (True, False, True): Int8WeightPerTensorFloatMSE,
    (False, True, True): ShiftedUint8WeightPerChannelFloatMSE,
    (False, False, True): ShiftedUint8WeightPerTensorFloatMSE,
}
QUANT_LAYERS: dict[type, type] = {
    nn.Conv1d: qnn.QuantConv1d,
    nn.Conv2d: qnn.QuantConv2d,
    nn.Linear: qnn.QuantLinear,
}


def weight_quant(spec: QuantSpec, scaling: Scaling = "stats") -> Any:
    """The brevitas weight quantizer (an injector) for ``spec``. ``stats``: scale from the
    weight's max-abs (min-max) recomputed every step; ``learned``: a trained scale initialized
    from those statistics; ``mse``: a trained scale initialized at the least-MSE clipping."""
    if scaling not in ("stats", "learned", "mse"):
        raise ValueError(f"scaling must be stats, learned or mse, got {scaling!r}")
    if not spec.include_zero:
        raise ValueError(
            "include_zero: false is for tensors rounded after training (biases, norms, folded "
            "output scales), not for QAT's quantizers"
        )
    base = _BASE[(spec.symmetric, spec.granularity == "channel", scaling == "mse")]
    options: dict[str, Any] = {"bit_width": spec.bits, "narrow_range": spec.narrow_range}
    if scaling == "learned":
        options["scaling_impl_type"] = "parameter_from_stats"
    return base.let(**options)


class ParamQuantizer(QuantWeightMixin, nn.Module):
    """Training-time parametrization of a bare parameter: brevitas fake-quantizes it (the
    quantizer tracks ``weight``, the very Parameter being parametrized). ``mask`` keeps a fixed
    zero pattern (sparse residuals) exactly zero."""

    def __init__(
        self, param: nn.Parameter, quant: Any, channel_axis: int, mask: torch.Tensor | None = None
    ) -> None:
        nn.Module.__init__(self)
        self.weight = param
        self._channel_axis = channel_axis
        self.out_channels = int(param.shape[channel_axis])  # read by brevitas' shape solver
        QuantWeightMixin.__init__(self, quant)
        self.register_buffer("mask", mask, persistent=False)

    @property
    def output_channel_dim(self) -> int:
        return self._channel_axis

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        del original  # the same tensor as self.weight, which the quantizer tracks
        value = self.quant_weight().value
        return value if self.mask is None else value * self.mask


def int_quantized_from(
    quant_tensor: Any, *, narrow_range: bool, axis: int | None, mask: torch.Tensor | None = None
) -> IntQuantized:
    """brevitas' integers, scale and zero point as an IntQuantized (dequantizing to exactly
    brevitas' ``quant_weight().value``). brevitas' QuantTensor does not carry narrow_range, so
    the caller passes the quantizer's."""
    ints = quant_tensor.int().detach()
    if mask is not None:  # fixed zeros: the code whose value is exactly 0, the zero point
        zero = torch.round(quant_tensor.zero_point.detach()).to(ints.dtype).expand_as(ints)
        ints = torch.where(mask.to(torch.bool), ints, zero)
    return IntQuantized.from_ints(
        ints.cpu(),
        quant_tensor.scale.detach().cpu(),
        quant_tensor.zero_point.detach().cpu(),
        bits=int(quant_tensor.bit_width),
        signed=bool(quant_tensor.signed),
        narrow_range=narrow_range,
        axis=axis,
    )


def to_quant_layer(module: nn.Module, quant: Any) -> nn.Module:
    """The brevitas twin of a Conv/Linear with the same hyperparameters and tensors."""
    cls = QUANT_LAYERS.get(type(module))
    if cls is None:
        raise ValueError(f"no brevitas layer for {type(module).__name__}")
    if isinstance(module, nn.Linear):
        q = cls(
            module.in_features,
            module.out_features,
            bias=module.bias is not None,
            weight_quant=quant,
        )
    else:
        q = cls(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=module.groups,
            padding_mode=module.padding_mode,
            bias=module.bias is not None,
            weight_quant=quant,
        )
    q = q.to(device=module.weight.device, dtype=module.weight.dtype)
    with torch.no_grad():
        q.weight.copy_(module.weight)
        if module.bias is not None:
            q.bias.copy_(module.bias)
    q.train(module.training)
    return q


@dataclass
class QATSession:
    """The brevitas form of a model during QAT, and how to turn it back into plain modules."""

    model: nn.Module
    scaling: Scaling = "stats"
    layers: dict[str, tuple[nn.Module, Target, QuantSpec]] = field(default_factory=dict)
    params: dict[str, tuple[Target, QuantSpec]] = field(default_factory=dict)
    executions: dict[str, str] = field(default_factory=dict)

    def prepare(self, targets: list[tuple[Target, QuantSpec]]) -> None:
        """Swap in brevitas quantizers for every (target, spec)."""
        for path, module in self.model.named_modules():
            # dense execution rebuilds the weight from the sub-layers' float weights and would
            # bypass brevitas' quantized forward: train through the factors
            if isinstance(module, FactorizedModule):
                self.executions.setdefault(path, module.execution)  # prepare may run twice
                module.execution = "factorized"
        for target, spec in targets:
            quant = weight_quant(spec, self.scaling)
            # a layer with another tensor already parametrized keeps its class: its weight is
            # quantized like a bare parameter instead of by a brevitas twin of the layer
            swap = target.module_level and not parametrize.is_parametrized(
                target.module(self.model)
            )
            if swap:
                original = target.module(self.model)
                set_module(self.model, target.module_path, to_quant_layer(original, quant))
                self.layers[target.module_path] = (original, target, spec)
            else:
                owner = target.module(self.model)
                param = owner._parameters[target.tensor]
                mask = (param.detach() != 0) if target.fixed_zeros else None
                holder = ParamQuantizer(param, quant, target.channel_axis, mask)
                holder.to(param.device).train(owner.training)
                parametrize.register_parametrization(owner, target.tensor, holder, unsafe=True)
                self.params[target.name] = (target, spec)

    def rate_bits(self) -> torch.Tensor:
        """The estimated coded bits of every quantized tensor (``rate.laplace_bits``),
        differentiable in the latent weights: rate-aware QAT adds it to the loss."""
        total = torch.zeros(())
        for path in self.layers:
            q = self.model.get_submodule(path)
            total = total + laplace_bits(q.weight, q.quant_weight().scale)
        for target, _spec in self.params.values():
            holder: ParamQuantizer = target.module(self.model).parametrizations[target.tensor][0]
            total = total + laplace_bits(holder.weight, holder.quant_weight().scale, holder.mask)
        return total

    @torch.no_grad()
    def export(self) -> None:
        """Replace every brevitas quantizer by an IntQuantized of its integers."""
        self.model.eval()
        for path, (original, target, spec) in self.layers.items():
            q = self.model.get_submodule(path)
            qt = q.quant_weight()
            original.weight.copy_(q.weight)
            if original.bias is not None:
                original.bias.copy_(q.bias)
            original.to(q.weight.device)
            set_module(self.model, path, original)
            axis = 0 if spec.granularity == "channel" else None
            mask = (q.weight != 0) if target.fixed_zeros else None
            p = int_quantized_from(qt, narrow_range=spec.narrow_range, axis=axis, mask=mask)
            attach(original, "weight", p.to(q.weight.device))
        for target, spec in self.params.values():
            owner = target.module(self.model)
            holder: ParamQuantizer = owner.parametrizations[target.tensor][0]
            qt = holder.quant_weight()
            mask = holder.mask
            parametrize.remove_parametrizations(owner, target.tensor, leave_parametrized=False)
            device = owner._parameters[target.tensor].device
            p = int_quantized_from(
                qt, narrow_range=spec.narrow_range, axis=spec.axis(target.channel_axis), mask=mask
            )
            attach(owner, target.tensor, p.to(device))
        for path, execution in self.executions.items():
            self.model.get_submodule(path).execution = execution
