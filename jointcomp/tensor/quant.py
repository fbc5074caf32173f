"""Uniform affine quantization helpers with Brevitas' integer-range conventions.

q = clamp(round(x / scale + zero_point), qmin, qmax), x̂ = (q − zero_point) · scale,
round = round-half-to-even (``torch.round``, as Brevitas' default rounding).
Integer range (as ``brevitas.function.ops.min_int / max_int``):
  signed:   [−2^(b−1), 2^(b−1) − 1], narrow_range → [−2^(b−1) + 1, 2^(b−1) − 1] (symmetric);
  unsigned: [0, 2^b − 1],            narrow_range → [0, 2^b − 2].
Per-channel parameters (``axis`` = k) are 1-D of length x.shape[k].
"""

from __future__ import annotations

import torch

from ._common import check_positive_int

MAX_BITS = 16  # integers are returned as int32; wider grids have no use here


def int_range(bits: int, signed: bool, narrow_range: bool) -> tuple[int, int]:
    """(qmin, qmax) of a b-bit integer grid."""
    check_positive_int(bits, "bits")
    if bits > MAX_BITS:
        raise ValueError(f"bits must be <= {MAX_BITS}, got {bits}")
    if signed:
        qmin, qmax = -(2 ** (bits - 1)) + int(narrow_range), 2 ** (bits - 1) - 1
    else:
        qmin, qmax = 0, 2**bits - 1 - int(narrow_range)
    if qmax <= qmin:
        kind = ("narrow-range " if narrow_range else "") + ("signed" if signed else "unsigned")
        raise ValueError(f"a {bits}-bit {kind} grid has a single value; use more bits")
    return qmin, qmax


def _broadcast(
    p: torch.Tensor | float, x: torch.Tensor, axis: int | None, name: str
) -> torch.Tensor:
    p = torch.as_tensor(p, dtype=torch.float64, device=x.device)
    if axis is None:
        if p.numel() != 1:
            raise ValueError(
                f"{name} must be a scalar when axis is None, got shape {tuple(p.shape)}"
            )
        return p.reshape(())
    if not -x.dim() <= axis < x.dim():
        raise ValueError(f"axis {axis} out of range for a {x.dim()}-D tensor")
    axis = axis % x.dim()
    if p.dim() != 1 or p.numel() != x.shape[axis]:
        raise ValueError(
            f"{name} must be 1-D of length {x.shape[axis]} (x.shape[{axis}]), "
            f"got shape {tuple(p.shape)}"
        )
    shape = [1] * x.dim()
    shape[axis] = -1
    return p.reshape(shape)


def quantize_uniform(
    x: torch.Tensor,
    bits: int,
    scale: torch.Tensor | float,
    zero_point: torch.Tensor | int = 0,
    signed: bool = True,
    narrow_range: bool = True,
    axis: int | None = None,
) -> torch.Tensor:
    """Map x onto the b-bit grid; returns int32 codes in [qmin, qmax]."""
    qmin, qmax = int_range(bits, signed, narrow_range)
    s = _broadcast(scale, x, axis, "scale")
    if bool((s <= 0).any()) or not bool(torch.isfinite(s).all()):
        raise ValueError("scale must be positive and finite")
    z = _broadcast(zero_point, x, axis, "zero_point")
    q = torch.round(x.detach().to(torch.float64) / s + z)
    return q.clamp(qmin, qmax).to(torch.int32)


def dequantize(
    q: torch.Tensor,
    scale: torch.Tensor | float,
    zero_point: torch.Tensor | int = 0,
    axis: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(q − zero_point) · scale, computed in float64 and returned as ``dtype``."""
    s = _broadcast(scale, q, axis, "scale")
    z = _broadcast(zero_point, q, axis, "zero_point")
    return ((q.to(torch.float64) - z) * s).to(dtype)


def asymmetric_range(
    rows: torch.Tensor, include_zero: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``rows`` [n, m], the [lo, hi] an asymmetric grid covers: [min, max]
    stretched to reach 0, or (``include_zero`` False) the row's own [min, max]; a constant row
    has no range of its own and reaches 0 either way."""
    lo, hi = rows.amin(1), rows.amax(1)
    reach = torch.ones_like(lo, dtype=torch.bool) if include_zero else hi == lo
    return torch.where(reach, lo.clamp(max=0.0), lo), torch.where(reach, hi.clamp(min=0.0), hi)


def calibrate_scale(
    x: torch.Tensor,
    bits: int,
    symmetric: bool = True,
    axis: int | None = None,
    narrow_range: bool = True,
    include_zero: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that cover x (per tensor, or per slice along ``axis``).

    symmetric: signed grid, zero_point 0, scale = max|x| / qmax (max-abs).
    otherwise: unsigned grid over [min(x, 0), max(x, 0)] (min-max), integer zero_point; with
    ``include_zero`` False over [min(x), max(x)] (a slice of one value: as with True), whose
    zero point may lie outside [qmin, qmax] (0 is then not on the grid).
    Pass ``signed=symmetric`` and the same narrow_range to ``quantize_uniform``. A slice that is
    all zeros gets scale 1 (any positive scale codes it exactly). Returns (float32 scale,
    int32 zero_point), 0-D or 1-D.
    """
    qmin, qmax = int_range(bits, symmetric, narrow_range)
    x64 = x.detach().to(torch.float64)
    if axis is None:
        flat = x64.reshape(1, -1)
    else:
        if not -x.dim() <= axis < x.dim():
            raise ValueError(f"axis {axis} out of range for a {x.dim()}-D tensor")
        flat = x64.movedim(axis, 0).reshape(x.shape[axis], -1)
    if flat.shape[1] == 0:
        raise ValueError("cannot calibrate on an empty tensor")
    if symmetric:
        lo = torch.zeros(flat.shape[0], dtype=torch.float64, device=flat.device)
        scale = flat.abs().amax(1) / qmax
    else:
        lo, hi = asymmetric_range(flat, include_zero)
        scale = (hi - lo) / (qmax - qmin)
    # float32 is what the scale is stored and dequantized as; 0 (an all-zero slice, or
    # underflow) becomes 1, which codes zeros exactly.
    scale = scale.to(torch.float32)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.zeros_like(lo)
    if not symmetric:
        zero = torch.round(qmin - lo / scale.double())
        if include_zero:
            zero = zero.clamp(qmin, qmax)
    zero = zero.to(torch.int32)
    if axis is None:
        return scale.reshape(()), zero.reshape(())
    return scale, zero


def fake_quantize(
    x: torch.Tensor,
    bits: int,
    scale: torch.Tensor | float,
    zero_point: torch.Tensor | int = 0,
    signed: bool = True,
    narrow_range: bool = True,
    axis: int | None = None,
) -> torch.Tensor:
    """dequantize(quantize_uniform(x, …)) in x's floating dtype (float64 stays float64)."""
    q = quantize_uniform(x, bits, scale, zero_point, signed, narrow_range, axis)
    dtype = x.dtype if x.is_floating_point() else torch.float32
    return dequantize(q, scale, zero_point, axis, dtype=dtype)
