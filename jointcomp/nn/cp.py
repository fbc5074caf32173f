"""CP conv (Lebedev et al. 2015): 1×1 conv C → R, depthwise kh×1, depthwise 1×kw (the
original stride/padding/dilation split by axis), 1×1 conv R → O. Grouped convs are factorized
per group (R per group)."""

from __future__ import annotations

from typing import Any

import torch

from ..registry import registered_module
from ._conv import ConvSpec, conv, conv2d_op
from .execution import FactorizedModule
from .svd import check_rank


def cp_rank_limit(spec: ConvSpec) -> int:
    """Largest useful CP rank: the one whose factors hold as many numbers as the dense kernel
    (a bound for sanity, not a bound of the maths: CP ranks can exceed every mode size)."""
    o, cin, kh, kw = spec.weight_shape
    per_rank = o // spec.groups + cin + kh + kw
    return max(1, (o // spec.groups) * cin * kh * kw // per_rank)


@registered_module("CPConv2d")
class CPConv2d(FactorizedModule):
    """W[o, i, y, x] = Σ_r last[o, r] · vertical[r, y] · horizontal[r, x] · first[r, i]."""

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
        self.spec = spec
        self.rank = check_rank(rank, cp_rank_limit(spec), "CPConv2d")
        g, gr = groups, groups * rank
        self.first = conv(in_channels, gr, groups=g)
        self.vertical = conv(gr, gr, groups=gr, **spec.axis(0))
        self.horizontal = conv(gr, gr, groups=gr, **spec.axis(1))
        self.last = conv(gr, out_channels, groups=g, bias=bias)

    def jc_config(self) -> dict[str, Any]:
        return {**self.spec.config(), "rank": self.rank, "execution": self.execution}

    @property
    def dense_bias(self) -> torch.Tensor | None:
        return self.last.bias

    def reconstruct_weight(self) -> torch.Tensor:
        o, cin, kh, kw = self.spec.weight_shape
        g, r = self.spec.groups, self.rank
        first = self.first.weight.reshape(g, r, cin)
        vert = self.vertical.weight.reshape(g, r, kh)
        hor = self.horizontal.weight.reshape(g, r, kw)
        last = self.last.weight.reshape(g, o // g, r)
        return torch.einsum("gor,gri,gry,grx->goiyx", last, first, vert, hor).reshape(
            o, cin, kh, kw
        )

    def dense_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return conv2d_op(x, weight, bias, self.spec)

    def forward_factorized(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.horizontal(self.vertical(self.first(x))))
