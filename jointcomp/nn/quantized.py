"""Quantized tensors as torch parametrizations: any parameter of any module (a conv weight, a TT
core, a sparse residual, a T-Basis coefficient) can be replaced by integers × scale or by indices
into a codebook. The integers live in integer buffers, so ``encode`` codes them as they are and
never re-quantizes floats; ``load`` rebuilds the identical float values with the same operations.

    from torch.nn.utils import parametrize
    attach(conv, "weight", IntQuantized.from_ints(q, scale, zero_point, bits=4, signed=True))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..registry import register_module


class _EvalCache:
    """Dequantized values reused while nothing can change them: no autograd, same tensors and
    versions. Recomputing would give the same bits; caching only saves the time (a quantized
    layer would otherwise dequantize its whole weight on every forward)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: torch.Tensor | None = None

    def get(
        self, tensors: tuple[torch.Tensor, ...], compute: Callable[[], torch.Tensor]
    ) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.key = self.value = None
            return compute()
        key = (
            torch.is_inference_mode_enabled(),
            *((id(t), t._version, t.data_ptr()) for t in tensors),
        )
        if key != self.key:
            self.value = compute()
            self.key = key
        return self.value  # type: ignore[return-value]


def int_dtype_for(bits: int, signed: bool) -> torch.dtype:
    """The narrowest torch integer dtype holding ``bits``-bit values (sign included)."""
    if bits <= 8:
        return torch.int8 if signed else torch.uint8
    if bits <= 16 and signed:
        return torch.int16
    if bits <= 31:
        return torch.int32
    return torch.int64


class IntQuantized(nn.Module):
    """value = (int_repr − zero_point) × scale, exactly as brevitas dequantizes: integer buffer,
    float scale and zero point broadcast along ``axis`` (None: per tensor)."""

    def __init__(
        self,
        shape: list[int],
        bits: int,
        signed: bool = True,
        narrow_range: bool = False,
        axis: int | None = None,
        scale_shape: list[int] | None = None,
        zero_point_shape: list[int] | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= bits <= 32:
            raise ValueError(f"bits must lie in 1..32, got {bits}")
        self.shape = list(shape)
        self.bits = bits
        self.signed = signed
        self.narrow_range = narrow_range
        self.axis = axis
        self.scale_shape = list(scale_shape if scale_shape is not None else [])
        self.zero_point_shape = list(zero_point_shape if zero_point_shape is not None else [])
        self.register_buffer("int_repr", torch.zeros(self.shape, dtype=int_dtype_for(bits, signed)))
        self.register_buffer("scale", torch.ones(self.scale_shape))
        self.register_buffer("zero_point", torch.zeros(self.zero_point_shape))
        self._cache = _EvalCache()

    @classmethod
    def from_ints(
        cls,
        ints: torch.Tensor,
        scale: torch.Tensor,
        zero_point: torch.Tensor | float = 0.0,
        *,
        bits: int,
        signed: bool = True,
        narrow_range: bool = False,
        axis: int | None = None,
    ) -> IntQuantized:
        """Wrap integers (any integer or integer-valued float tensor) with their scale."""
        scale = torch.as_tensor(scale, dtype=torch.float32).detach().clone()
        zero_point = torch.as_tensor(zero_point, dtype=torch.float32).detach().clone()
        module = cls(
            list(ints.shape),
            bits,
            signed,
            narrow_range,
            axis,
            list(scale.shape),
            list(zero_point.shape),
        )
        rounded = torch.round(ints.detach().to(torch.float64))
        lo, hi = module.int_range()
        if rounded.numel() and (rounded.min() < lo or rounded.max() > hi):
            raise ValueError(f"integers fall outside the {bits}-bit range [{lo}, {hi}]")
        module.int_repr.copy_(rounded.to(module.int_repr.dtype))
        module.scale.copy_(scale)
        module.zero_point.copy_(zero_point)
        return module

    def int_range(self) -> tuple[int, int]:
        if self.signed:
            lo, hi = -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
            return (lo + 1 if self.narrow_range else lo), hi
        return 0, (1 << self.bits) - 1 - (1 if self.narrow_range else 0)

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        del original  # the value is entirely in the integers
        return self._cache.get((self.int_repr, self.scale, self.zero_point), self.dequantize)

    def dequantize(self) -> torch.Tensor:
        return (self.int_repr.to(self.scale.dtype) - self.zero_point) * self.scale

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        # nothing of the float original is kept: an empty placeholder satisfies parametrize
        return torch.empty(0, dtype=value.dtype, device=value.device)

    def jc_config(self) -> dict[str, Any]:
        # constructor defaults are left out: the header carries one of these per quantized tensor
        config: dict[str, Any] = {"shape": self.shape, "bits": self.bits}
        if not self.signed:
            config["signed"] = False
        if self.narrow_range:
            config["narrow_range"] = True
        if self.axis is not None:
            config["axis"] = self.axis
        if self.scale_shape:
            config["scale_shape"] = self.scale_shape
        if self.zero_point_shape:
            config["zero_point_shape"] = self.zero_point_shape
        return config


class Codebook(nn.Module):
    """value = centroids[indices] (Deep Compression's weight sharing). Centroids are a Parameter:
    fine-tuning them sums the gradients of every weight that shares a centroid. With
    ``zero_index`` set, that index is pinned to exactly 0 (pruned weights stay pruned)."""

    def __init__(self, shape: list[int], size: int, zero_index: int | None = None) -> None:
        super().__init__()
        if not 1 <= size <= 1 << 16:
            raise ValueError(f"codebook size must lie in 1..65536, got {size}")
        if zero_index is not None and not 0 <= zero_index < size:
            raise ValueError(f"zero_index {zero_index} outside a codebook of {size}")
        self.shape = list(shape)
        self.size = size
        self.zero_index = zero_index
        dtype = torch.uint8 if size <= 256 else torch.int16 if size <= 1 << 15 else torch.int32
        self.register_buffer("indices", torch.zeros(self.shape, dtype=dtype))
        self.centroids = nn.Parameter(torch.zeros(size))
        self._cache = _EvalCache()

    @classmethod
    def from_assignment(
        cls, indices: torch.Tensor, centroids: torch.Tensor, zero_index: int | None = None
    ) -> Codebook:
        module = cls(list(indices.shape), int(centroids.numel()), zero_index)
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= module.size):
            raise ValueError("codebook indices fall outside the codebook")
        module.indices.copy_(indices.to(module.indices.dtype))
        with torch.no_grad():
            module.centroids.copy_(centroids.to(torch.float32))
            if zero_index is not None:
                module.centroids[zero_index] = 0.0
        return module

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        del original
        return self._cache.get((self.indices, self.centroids), self.lookup)

    def lookup(self) -> torch.Tensor:
        centroids = self.centroids
        if self.zero_index is not None:
            keep = torch.ones_like(centroids)
            keep[self.zero_index] = 0.0
            centroids = centroids * keep  # the zero centroid gets no gradient and stays 0
        return centroids[self.indices.long()]

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return torch.empty(0, dtype=value.dtype, device=value.device)

    def jc_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"shape": self.shape, "size": self.size}
        if self.zero_index is not None:
            config["zero_index"] = self.zero_index
        return config


def attach(module: nn.Module, tensor_name: str, parametrization: nn.Module) -> nn.Module:
    """Replace ``module.<tensor_name>`` by ``parametrization`` (its value no longer depends on
    the float original, which is dropped)."""
    parametrize.register_parametrization(module, tensor_name, parametrization, unsafe=True)
    return module


def quantized_tensors(model: nn.Module) -> dict[str, nn.Module]:
    """``{"layer.weight": IntQuantized | Codebook}`` for every quantized tensor of ``model``."""
    found = {}
    for path, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for tensor_name, plist in module.parametrizations.items():
            for p in plist:
                if isinstance(p, (IntQuantized, Codebook)):
                    found[f"{path}.{tensor_name}" if path else tensor_name] = p
    return found


register_module("IntQuantized", IntQuantized, lambda m: m.jc_config(), parametrization=True)
register_module("Codebook", Codebook, lambda m: m.jc_config(), parametrization=True)
