"""Tensor-train layers (Novikov et al. 2015; Garipov et al. 2016) holding TT-matrix cores
[r_{k−1}, m_k, n_k, r_k] as Parameters and applying them core by core (the dense matrix is never
formed in factorized mode).

Feature sizes that factor badly are padded: the modes' products may exceed in/out features; the
input is zero-padded and the output sliced. TTConv2d treats the kernel as the matrix
[O, C·kh·kw] (im2col order: channel slowest), with the channel modes first and one last core
whose input mode is the kh·kw kernel window and whose output mode is 1; groups are not
supported (grouped convs are skipped by the stage).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import registered_module
from ._conv import ConvSpec, conv2d_op, im2col
from .execution import FactorizedModule


def _modes(values: Any, name: str, what: str) -> list[int]:
    if (
        not isinstance(values, (list, tuple))
        or not values
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)
    ):
        raise ValueError(
            f"{what}: {name} must be a non-empty list of positive ints, got {values!r}"
        )
    return [int(v) for v in values]


def check_tt_shape(
    in_modes: Any, out_modes: Any, ranks: Any, in_size: int, out_size: int, what: str
) -> tuple[list[int], list[int], list[int]]:
    """Validate modes (products cover the sizes) and ranks (d+1 entries, 1 at both ends)."""
    in_modes = _modes(in_modes, "in_modes", what)
    out_modes = _modes(out_modes, "out_modes", what)
    if len(in_modes) != len(out_modes):
        raise ValueError(f"{what}: in_modes {in_modes} and out_modes {out_modes} differ in length")
    if math.prod(in_modes) < in_size:
        raise ValueError(f"{what}: in_modes {in_modes} multiply to less than {in_size}")
    if math.prod(out_modes) < out_size:
        raise ValueError(f"{what}: out_modes {out_modes} multiply to less than {out_size}")
    d = len(in_modes)
    ranks = _modes(ranks, "ranks", what)
    if len(ranks) != d + 1 or ranks[0] != 1 or ranks[-1] != 1:
        raise ValueError(
            f"{what}: ranks must have {d + 1} entries with 1 at both ends, got {ranks}"
        )
    return in_modes, out_modes, ranks


def tt_apply(x: torch.Tensor, cores: list[torch.Tensor] | nn.ParameterList) -> torch.Tensor:
    """x [N, ∏n_k] times the TT-matrix's transpose: [N, ∏m_k], one core at a time.

    The running tensor is [N·m₁…m_{k−1}, r_{k−1}, n_k, n_{k+1}…n_d]: each step contracts the rank
    and the k-th input mode and emits the k-th output mode (row-major, m₁ slowest).
    """
    n_rows = x.shape[0]
    in_modes = [int(c.shape[2]) for c in cores]
    rest = math.prod(in_modes)
    t = x.reshape(n_rows, 1, in_modes[0], rest // in_modes[0])
    for k, core in enumerate(cores):
        r, m, n, s = core.shape
        rest //= n
        a = t.shape[0]
        # [a, r, n, rest] → [a·rest, r·n] @ [r·n, m·s] → [a, m, s, rest]
        y = t.permute(0, 3, 1, 2).reshape(a * rest, r * n)
        y = y @ core.permute(0, 2, 1, 3).reshape(r * n, m * s)
        y = y.reshape(a, rest, m, s).permute(0, 2, 3, 1)
        nxt = in_modes[k + 1] if k + 1 < len(in_modes) else 1
        t = y.reshape(a * m, s, nxt, rest // nxt)
    return t.reshape(n_rows, -1)


def tt_apply_macs(in_modes: list[int], out_modes: list[int], ranks: list[int]) -> int:
    """MACs per row of ``tt_apply`` with the cores in this order."""
    total = 0
    for k, (m, n) in enumerate(zip(out_modes, in_modes)):
        total += (
            math.prod(out_modes[:k])
            * math.prod(in_modes[k + 1 :])
            * ranks[k]
            * n
            * m
            * (ranks[k + 1])
        )
    return total


def tt_matvec(x: torch.Tensor, cores: list[torch.Tensor] | nn.ParameterList) -> torch.Tensor:
    """``tt_apply`` in whichever core order costs fewer MACs: reversed, the cores are transposed
    in their rank axes and the row/column digits of W run the other way, so x's modes are
    reversed on the way in and the output's on the way out."""
    in_modes = [int(c.shape[2]) for c in cores]
    out_modes = [int(c.shape[1]) for c in cores]
    ranks = [int(c.shape[0]) for c in cores] + [1]
    forward = tt_apply_macs(in_modes, out_modes, ranks)
    backward = tt_apply_macs(in_modes[::-1], out_modes[::-1], ranks[::-1])
    if forward <= backward:
        return tt_apply(x, cores)
    d, n = len(in_modes), x.shape[0]
    xr = x.reshape(n, *in_modes).permute(0, *range(d, 0, -1)).reshape(n, -1)
    y = tt_apply(xr, [c.permute(3, 1, 2, 0) for c in reversed(list(cores))])
    return y.reshape(n, *out_modes[::-1]).permute(0, *range(d, 0, -1)).reshape(n, -1)


def tt_dense(cores: list[torch.Tensor] | nn.ParameterList) -> torch.Tensor:
    """The [∏m, ∏n] matrix of TT-matrix cores."""
    full = cores[0].reshape(cores[0].shape[1], cores[0].shape[2], cores[0].shape[3])
    for core in cores[1:]:
        m, n = core.shape[1], core.shape[2]
        full = torch.einsum("MNa,amnb->MmNnb", full, core)
        full = full.reshape(full.shape[0] * m, full.shape[2] * n, core.shape[3])
    return full[:, :, 0]


class _TTBase(FactorizedModule):
    def _make_cores(self, in_modes: list[int], out_modes: list[int], ranks: list[int]) -> None:
        self.in_modes, self.out_modes, self.ranks = in_modes, out_modes, ranks
        self.cores = nn.ParameterList(
            nn.Parameter(torch.empty(ranks[k], out_modes[k], in_modes[k], ranks[k + 1]))
            for k in range(len(in_modes))
        )
        # A unit-variance-preserving default; conversion overwrites it with the TT-SVD.
        fan = math.prod(in_modes)
        std = (1.0 / fan) ** (0.5 / len(in_modes)) / math.prod(ranks) ** (0.5 / len(in_modes))
        for core in self.cores:
            nn.init.normal_(core, std=std)


@registered_module("TTLinear")
class TTLinear(_TTBase):
    """A Linear whose [out, in] weight is a TT-matrix (padded to ∏out_modes × ∏in_modes)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        in_modes: Any,
        out_modes: Any,
        ranks: Any,
        bias: bool = True,
        execution: str = "factorized",
    ) -> None:
        super().__init__(execution)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self._make_cores(
            *check_tt_shape(in_modes, out_modes, ranks, in_features, out_features, "TTLinear")
        )
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def jc_config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "in_modes": list(self.in_modes),
            "out_modes": list(self.out_modes),
            "ranks": list(self.ranks),
            "bias": self.bias is not None,
            "execution": self.execution,
        }

    @property
    def dense_bias(self) -> torch.Tensor | None:
        return self.bias

    def reconstruct_weight(self) -> torch.Tensor:
        return tt_dense(self.cores)[: self.out_features, : self.in_features]

    def dense_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return F.linear(x, weight, bias)

    def forward_factorized(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        pad = math.prod(self.in_modes) - self.in_features
        if pad:
            flat = F.pad(flat, (0, pad))
        y = tt_matvec(flat, self.cores)[:, : self.out_features]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)


@registered_module("TTConv2d")
class TTConv2d(_TTBase):
    """A Conv2d (groups = 1) whose kernel matrix [O, C·kh·kw] is a TT-matrix: ``in_modes`` and
    ``out_modes`` list the channel modes; a last core maps the kh·kw window to output mode 1."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        in_modes: Any,
        out_modes: Any,
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
        if groups != 1:
            raise ValueError(f"TTConv2d supports groups=1 only, got groups={groups}")
        self.spec = spec
        kh, kw = spec.kernel_size
        if not isinstance(in_modes, (list, tuple)) or not isinstance(out_modes, (list, tuple)):
            raise ValueError("TTConv2d: in_modes and out_modes must be lists of channel modes")
        cin, cout, r = check_tt_shape(
            [*in_modes, kh * kw],
            [*out_modes, 1],
            ranks,
            in_channels * kh * kw,
            out_channels,
            "TTConv2d",
        )
        if r[-2] > kh * kw:
            raise ValueError(
                f"TTConv2d: the last inner rank {r[-2]} exceeds the kernel window kh·kw={kh * kw}"
            )
        self._make_cores(cin, cout, r)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def jc_config(self) -> dict[str, Any]:
        return {
            **self.spec.config(),
            "in_modes": list(self.in_modes[:-1]),
            "out_modes": list(self.out_modes[:-1]),
            "ranks": list(self.ranks),
            "execution": self.execution,
        }

    @property
    def dense_bias(self) -> torch.Tensor | None:
        return self.bias

    def reconstruct_weight(self) -> torch.Tensor:
        o, cin, kh, kw = self.spec.weight_shape
        full = tt_dense(self.cores)  # [∏out, ∏cin_modes · kh·kw]
        full = full.reshape(full.shape[0], -1, kh * kw)[:o, :cin]
        return full.reshape(o, cin, kh, kw)

    def dense_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return conv2d_op(x, weight, bias, self.spec)

    def forward_factorized(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        kh, kw = spec.kernel_size
        cols, hout, wout = im2col(x, spec)
        b, c = x.shape[0], spec.in_channels
        cols = cols.reshape(b, c, kh * kw, -1).permute(0, 3, 1, 2)  # [B, L, C, kh·kw]
        pad = math.prod(self.in_modes[:-1]) - c
        if pad:
            cols = F.pad(cols, (0, 0, 0, pad))
        y = tt_matvec(cols.reshape(-1, cols.shape[2] * kh * kw), self.cores)
        y = y[:, : spec.out_channels].reshape(b, hout * wout, spec.out_channels)
        if self.bias is not None:
            y = y + self.bias
        return y.transpose(1, 2).reshape(b, spec.out_channels, hout, wout)
