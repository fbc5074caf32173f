"""Shared input checks and dtype handling for the tensor library (private)."""

from __future__ import annotations

import torch


def as_f64(x: torch.Tensor, name: str = "tensor") -> tuple[torch.Tensor, torch.dtype]:
    """Return ``x`` as float64 (detached) and the floating dtype results should be cast back to.

    Decompositions compute in float64: SVDs and normal equations lose digits fast in float32.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise ValueError(f"{name} must be real, got dtype {x.dtype}")
    out_dtype = x.dtype if x.is_floating_point() else torch.float32
    x64 = x.detach().to(torch.float64)
    if not bool(torch.isfinite(x64).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return x64, out_dtype


def check_ndim(x: torch.Tensor, ndim: int | tuple[int, ...], name: str) -> None:
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if x.dim() not in allowed:
        want = " or ".join(f"{d}-D" for d in allowed)
        raise ValueError(f"{name} must be {want}, got shape {tuple(x.shape)}")


def check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def shape_str(shape: tuple[int, ...] | torch.Size) -> str:
    return "×".join(str(int(s)) for s in shape)


def rel_error(ref: torch.Tensor, approx: torch.Tensor) -> float:
    """‖ref − approx‖_F / ‖ref‖_F in float64 (0 when both are zero)."""
    ref64 = ref.detach().to(torch.float64)
    num = torch.linalg.vector_norm(ref64 - approx.detach().to(torch.float64))
    den = torch.linalg.vector_norm(ref64)
    if float(den) == 0.0:
        return float(num)
    return float(num / den)
