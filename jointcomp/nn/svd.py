"""Rank-r SVD layers: a Linear as two Linears, a Conv2d as two convs.

SVDConv2d has two forms. ``channel`` (Zhang et al.): k×k conv C → r, then 1×1 conv r → O; the
kernel matrix is [O, C·kh·kw]. ``spatial`` (Jaderberg et al. scheme 2): kh×1 conv C → r, then
1×kw conv r → O; the matrix is [C·kh, O·kw]. Grouped convs are factorized per group (the rank
is per group), with every sub-conv keeping the groups.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import registered_module
from ._conv import ConvSpec, conv, conv2d_op
from .execution import FactorizedModule

SVD_FORMS = ("channel", "spatial")


def check_rank(rank: Any, limit: int, what: str) -> int:
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"{what}: rank must be a positive int, got {rank!r}")
    if rank > limit:
        raise ValueError(f"{what}: rank {rank} is larger than the layer allows ({limit})")
    return rank


@registered_module("SVDLinear")
class SVDLinear(FactorizedModule):
    """y = second(first(x)): ``first`` is Linear(in → rank, no bias), ``second`` Linear(rank →
    out). The dense weight is ``second.weight @ first.weight``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        execution: str = "factorized",
    ) -> None:
        super().__init__(execution)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.rank = check_rank(rank, min(in_features, out_features), "SVDLinear")
        self.first = nn.Linear(in_features, rank, bias=False)
        self.second = nn.Linear(rank, out_features, bias=bias)

    def jc_config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "rank": self.rank,
            "bias": self.second.bias is not None,
            "execution": self.execution,
        }

    @property
    def dense_bias(self) -> torch.Tensor | None:
        return self.second.bias

    def reconstruct_weight(self) -> torch.Tensor:
        return self.second.weight @ self.first.weight

    def dense_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return F.linear(x, weight, bias)

    def forward_factorized(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


@registered_module("SVDConv2d")
class SVDConv2d(FactorizedModule):
    """A Conv2d as two convs through ``rank`` channels per group (see the module docstring)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        rank: int,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        form: str = "channel",
        execution: str = "factorized",
    ) -> None:
        super().__init__(execution)
        spec = ConvSpec.make(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
        )
        if form not in SVD_FORMS:
            raise ValueError(f"SVDConv2d: form must be one of {SVD_FORMS}, got {form!r}")
        self.spec, self.form = spec, form
        g, (kh, kw) = groups, spec.kernel_size
        cin, cout = in_channels // g, out_channels // g
        limit = min(cout, cin * kh * kw) if form == "channel" else min(cin * kh, cout * kw)
        self.rank = check_rank(rank, limit, f"SVDConv2d({form})")
        if form == "channel":
            self.first = conv(
                in_channels,
                g * rank,
                kernel_size=spec.kernel_size,
                stride=spec.stride,
                padding=spec.padding,
                dilation=spec.dilation,
                groups=g,
                padding_mode=padding_mode,
            )
            self.second = conv(g * rank, out_channels, groups=g, bias=bias)
        else:
            self.first = conv(in_channels, g * rank, groups=g, **spec.axis(0))
            self.second = conv(g * rank, out_channels, groups=g, bias=bias, **spec.axis(1))

    def jc_config(self) -> dict[str, Any]:
        return {
            **self.spec.config(),
            "rank": self.rank,
            "form": self.form,
            "execution": self.execution,
        }

    @property
    def dense_bias(self) -> torch.Tensor | None:
        return self.second.bias

    def reconstruct_weight(self) -> torch.Tensor:
        o, cin, kh, kw = self.spec.weight_shape
        g, r = self.spec.groups, self.rank
        if self.form == "channel":
            a = self.first.weight.reshape(g, r, cin * kh * kw)
            b = self.second.weight.reshape(g, o // g, r)
            return torch.bmm(b, a).reshape(o, cin, kh, kw)
        v = self.first.weight.reshape(g, r, cin, kh)
        h = self.second.weight.reshape(g, o // g, r, kw)
        return torch.einsum("grih,gorw->goihw", v, h).reshape(o, cin, kh, kw)

    def dense_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return conv2d_op(x, weight, bias, self.spec)

    def forward_factorized(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))
