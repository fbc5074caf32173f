"""Post-training quantization: round to nearest on a grid whose scale is calibrated on the
tensor itself (max-abs / min-max, or the clipping that minimizes the mean squared error)."""

from __future__ import annotations

from typing import Literal

import torch

from ..nn.quantized import IntQuantized
from ..tensor.quant import asymmetric_range, calibrate_scale, int_range, quantize_uniform
from .spec import QuantSpec

Calibration = Literal["absmax", "mse"]
CLIP_RATIOS = torch.linspace(1.0, 0.3, 36, dtype=torch.float64)  # candidates for mse clipping


def broadcast_shape(x: torch.Tensor, axis: int | None) -> list[int]:
    """The shape a per-channel scale takes to broadcast against ``x`` ([] per tensor)."""
    if axis is None:
        return []
    shape = [1] * x.dim()
    shape[axis] = x.shape[axis]
    return shape


def _rows(x: torch.Tensor, axis: int | None) -> torch.Tensor:
    x64 = x.detach().to(torch.float64)
    return x64.reshape(1, -1) if axis is None else x64.movedim(axis, 0).reshape(x.shape[axis], -1)


def _mse_scale(
    x: torch.Tensor, spec: QuantSpec, axis: int | None, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the clipped range (a fraction of max-abs / min-max) with the least squared
    rounding error over the row's entries (only those in ``mask`` when given)."""
    qmin, qmax = int_range(spec.bits, spec.symmetric, spec.narrow_range)
    rows = _rows(x, axis)
    weight = torch.ones_like(rows) if mask is None else _rows(mask.to(torch.float64), axis)
    if spec.symmetric:
        hi = rows.abs().amax(1)
        lo = torch.zeros_like(hi)
    else:
        lo, hi = asymmetric_range(rows, spec.include_zero)
    best_err = torch.full_like(hi, float("inf"))
    best_scale = torch.ones_like(hi)
    best_zero = torch.zeros_like(hi)
    for ratio in CLIP_RATIOS:
        if spec.symmetric:
            scale = (hi * ratio / qmax).to(torch.float32).double()
            zero = torch.zeros_like(scale)
        elif spec.include_zero:
            scale = ((hi - lo) * ratio / (qmax - qmin)).to(torch.float32).double()
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            zero = torch.round(qmin - lo * ratio / scale).clamp(qmin, qmax)
        else:  # clipped around the middle of the values' own range
            scale = ((hi - lo) * ratio / (qmax - qmin)).to(torch.float32).double()
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            zero = torch.round(qmin - (lo + (hi - lo) * (1 - ratio) / 2) / scale)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.round(rows / scale[:, None] + zero[:, None]).clamp(qmin, qmax)
        err = (((q - zero[:, None]) * scale[:, None] - rows) ** 2 * weight).sum(1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        best_zero = torch.where(better, zero, best_zero)
    return best_scale.to(torch.float32), best_zero.to(torch.int32)


def calibrate(
    x: torch.Tensor,
    spec: QuantSpec,
    axis: int | None,
    calibration: Calibration = "absmax",
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 scale, int32 zero point), 0-D or 1-D along ``axis``."""
    if calibration == "mse":
        scale, zero = _mse_scale(x, spec, axis, mask)
        return (scale.reshape(()), zero.reshape(())) if axis is None else (scale, zero)
    if calibration != "absmax":
        raise ValueError(f"calibration must be absmax or mse, got {calibration!r}")
    return calibrate_scale(x, spec.bits, spec.symmetric, axis, spec.narrow_range, spec.include_zero)


def ptq_tensor(
    x: torch.Tensor,
    spec: QuantSpec,
    axis: int | None,
    calibration: Calibration = "absmax",
    fixed_zeros: bool = False,
) -> IntQuantized:
    """``x`` rounded to nearest on its calibrated grid, as an IntQuantized parametrization.
    With ``fixed_zeros`` the grid is symmetric and the scale fitted to the nonzeros only, so
    every zero stays exactly 0."""
    if x.numel() == 0:
        raise ValueError("cannot quantize an empty tensor")
    if fixed_zeros:
        spec = spec.for_fixed_zeros()
    mask = (x != 0) if fixed_zeros else None
    scale, zero = calibrate(x, spec, axis, calibration, mask)
    q = quantize_uniform(x, spec.bits, scale, zero, spec.symmetric, spec.narrow_range, axis)
    if mask is not None:
        q = q * mask
    return int_quantized(q, scale, zero, spec, axis, broadcast_shape(x, axis))


def int_quantized(
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    spec: QuantSpec,
    axis: int | None,
    shape: list[int],
) -> IntQuantized:
    """Integer ``codes`` on the grid ``calibrate`` gave (``scale``, ``zero`` 0-D or 1-D along
    ``axis``; ``shape``: ``broadcast_shape``) as an IntQuantized parametrization."""
    # a symmetric grid's zero point is 0 everywhere: one scalar, as brevitas stores it
    zero_point = torch.zeros(()) if spec.symmetric else zero.to(torch.float32).reshape(shape)
    return IntQuantized.from_ints(
        codes,
        scale.reshape(shape),
        zero_point,
        bits=spec.bits,
        signed=spec.symmetric,
        narrow_range=spec.narrow_range,
        axis=axis,
    )
