"""Tucker-2 conv (Kim et al. 2016): 1×1 conv C → r_in, kh×kw core conv r_in → r_out (the
original stride, padding, dilation), 1×1 conv r_out → O. Grouped convs are factorized per group:
every sub-conv keeps the groups and the ranks are per group."""

from __future__ import annotations

from typing import Any

import torch

from ..registry import registered_module
from ._conv import ConvSpec, conv, conv2d_op
from .execution import FactorizedModule
from .svd import check_rank


@registered_module("TuckerConv2d")
class TuckerConv2d(FactorizedModule):
    """W[o, i] = Σ_ab U_out[o, a] core[a, b] U_in[i, b] per group; ``ranks`` = [r_out, r_in]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        ranks: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
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
        if not isinstance(ranks, (list, tuple)) or len(ranks) != 2:
            raise ValueError(f"TuckerConv2d: ranks must be [r_out, r_in], got {ranks!r}")
        g = groups
        r_out = check_rank(ranks[0], out_channels // g, "TuckerConv2d r_out")
        r_in = check_rank(ranks[1], in_channels // g, "TuckerConv2d r_in")
        self.spec, self.ranks = spec, [r_out, r_in]
        self.first = conv(in_channels, g * r_in, groups=g)
        self.core = conv(
            g * r_in,
            g * r_out,
            kernel_size=spec.kernel_size,
            stride=spec.stride,
            padding=spec.padding,
            dilation=spec.dilation,
            groups=g,
            padding_mode=padding_mode,
        )
        self.last = conv(g * r_out, out_channels, groups=g, bias=bias)

    def jc_config(self) -> dict[str, Any]:
        return {**self.spec.config(), "ranks": list(self.ranks), "execution": self.execution}

    @property
    def dense_bias(self) -> torch.Tensor | None:
        return self.last.bias

    def reconstruct_weight(self) -> torch.Tensor:
        o, cin, kh, kw = self.spec.weight_shape
        g, (r_out, r_in) = self.spec.groups, self.ranks
        u_in = self.first.weight.reshape(g, r_in, cin)
        core = self.core.weight.reshape(g, r_out, r_in, kh, kw)
        u_out = self.last.weight.reshape(g, o // g, r_out)
        return torch.einsum("goa,gabyx,gbi->goiyx", u_out, core, u_in).reshape(o, cin, kh, kw)

    def dense_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return conv2d_op(x, weight, bias, self.spec)

    def forward_factorized(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.core(self.first(x)))
