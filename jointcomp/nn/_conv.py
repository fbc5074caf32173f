"""Conv2d hyperparameters as plain data, and the dense conv op that honours all of them.

Factorized convs are chains of standard ``nn.Conv2d`` layers; these helpers carry stride,
padding (ints, pairs or 'same'/'valid'), dilation, groups and padding_mode over exactly, also
to the separable (k×1 then 1×k) pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def pair(value: Any, name: str) -> tuple[int, int]:
    """``3`` or ``(3, 3)`` / ``[3, 3]`` as a pair of ints; ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


@dataclass(frozen=True)
class ConvSpec:
    """Everything that defines a Conv2d except its tensors."""

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] | str = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = True
    padding_mode: str = "zeros"

    @classmethod
    def make(
        cls,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
    ) -> ConvSpec:
        """Validated spec (the same checks nn.Conv2d makes, as ValueErrors)."""
        for name, v in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("groups", groups),
        ):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels={in_channels} and out_channels={out_channels} must be divisible "
                f"by groups={groups}"
            )
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding string must be 'same' or 'valid', got {padding!r}")
            pad: tuple[int, int] | str = padding
        else:
            pad = pair(padding, "padding")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        spec = cls(
            in_channels,
            out_channels,
            pair(kernel_size, "kernel_size"),
            pair(stride, "stride"),
            pad,
            pair(dilation, "dilation"),
            groups,
            bool(bias),
            padding_mode,
        )
        if pad == "same" and spec.stride != (1, 1):
            raise ValueError("padding='same' is not supported for strided convolutions")
        return spec

    @classmethod
    def of(cls, conv: nn.Conv2d) -> ConvSpec:
        return cls.make(
            conv.in_channels,
            conv.out_channels,
            tuple(conv.kernel_size),
            tuple(conv.stride),
            conv.padding if isinstance(conv.padding, str) else tuple(conv.padding),
            tuple(conv.dilation),
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
        )

    def config(self) -> dict[str, Any]:
        """Plain-JSON constructor arguments."""
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
            "bias": self.bias,
            "padding_mode": self.padding_mode,
        }

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def reversed_padding(self) -> list[int]:
        """F.pad amounts (left, right, top, bottom), as nn.Conv2d computes them."""
        if isinstance(self.padding, str):
            out = [0, 0, 0, 0]
            if self.padding == "same":
                for axis, (d, k) in enumerate(zip(self.dilation, self.kernel_size)):
                    total = d * (k - 1)
                    i = 1 - axis  # F.pad lists the last dimension first
                    out[2 * i], out[2 * i + 1] = total // 2, total - total // 2
            return out
        ph, pw = self.padding
        return [pw, pw, ph, ph]

    def axis(self, which: int) -> dict[str, Any]:
        """Stride/padding/dilation of a k×1 (which=0) or 1×k (which=1) piece of this conv."""

        def one(v: tuple[int, int], other: int) -> tuple[int, int]:
            return (v[0], other) if which == 0 else (other, v[1])

        pad = self.padding if isinstance(self.padding, str) else one(self.padding, 0)
        return {
            "kernel_size": one(self.kernel_size, 1),
            "stride": one(self.stride, 1),
            "padding": pad,
            "dilation": one(self.dilation, 1),
            "padding_mode": self.padding_mode,
        }


def conv2d_op(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec
) -> torch.Tensor:
    """The dense convolution ``spec`` describes (mirrors nn.Conv2d._conv_forward)."""
    if spec.padding_mode != "zeros":
        x = F.pad(x, spec.reversed_padding(), mode=spec.padding_mode)
        return F.conv2d(x, weight, bias, spec.stride, 0, spec.dilation, spec.groups)
    return F.conv2d(x, weight, bias, spec.stride, spec.padding, spec.dilation, spec.groups)


def im2col(x: torch.Tensor, spec: ConvSpec) -> tuple[torch.Tensor, int, int]:
    """The conv's input patches [B, C·kh·kw, L] (channel slowest, as the kernel [O, C, kh, kw]
    flattens) and the output height and width; honours string padding and padding modes."""
    kh, kw = spec.kernel_size
    if spec.padding_mode != "zeros" or isinstance(spec.padding, str):
        mode = "constant" if spec.padding_mode == "zeros" else spec.padding_mode
        x = F.pad(x, spec.reversed_padding(), mode=mode)
        padding: tuple[int, int] = (0, 0)
    else:
        padding = spec.padding
    h, w = x.shape[-2:]
    hout = (h + 2 * padding[0] - spec.dilation[0] * (kh - 1) - 1) // spec.stride[0] + 1
    wout = (w + 2 * padding[1] - spec.dilation[1] * (kw - 1) - 1) // spec.stride[1] + 1
    cols = F.unfold(x, (kh, kw), dilation=spec.dilation, padding=padding, stride=spec.stride)
    return cols, hout, wout


def conv(
    cin: int,
    cout: int,
    *,
    kernel_size: Any = 1,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    bias: bool = False,
    padding_mode: str = "zeros",
) -> nn.Conv2d:
    """A plain nn.Conv2d (keyword form, bias off unless asked)."""
    return nn.Conv2d(
        cin,
        cout,
        kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=bias,
        padding_mode=padding_mode,
    )
