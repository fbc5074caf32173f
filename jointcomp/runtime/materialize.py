"""Plain float modules from a decoded file's module: every quantized parametrization replaced by
the float tensor it computes, with the integers behind it kept aside for integer kernels and
exporters.

The exact module (``jointcomp.load``) dequantizes through parametrizations so that it can be
compressed further and re-encoded bit for bit. A deployed module needs none of that: its weights
are plain tensors, and where a tensor came from a uniform integer grid, an int8 kernel or an
ONNX ``DequantizeLinear`` can use the integers themselves.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..nn.execution import FactorizedModule
from ..nn.quantized import Codebook, IntQuantized

__all__ = ["IntGrid", "materialize"]


@dataclass(frozen=True)
class IntGrid:
    """The uniform integer grid a materialized tensor came from:
    ``value = (ints − zero_point) × scale``, scale and zero point broadcast along ``axis``
    (None: one for the whole tensor) exactly as the exact module computes it."""

    ints: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    bits: int
    signed: bool
    narrow_range: bool
    axis: int | None

    def per_channel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point as 1-D tensors along ``axis`` (length 1 when per tensor)."""
        return self.scale.reshape(-1).float(), self.zero_point.reshape(-1).float()

    def fits_int8(self) -> bool:
        """True when the integers, zero point included, are exactly representable as int8
        with an integer zero point (what int8 kernels and ONNX ``DequantizeLinear`` take)."""
        if self.bits > 8:
            return False
        zp = self.zero_point.reshape(-1)
        if not torch.equal(zp, torch.round(zp)):
            return False
        ints = self.ints.to(torch.int64)
        lo, hi = (int(ints.min()), int(ints.max())) if ints.numel() else (0, 0)
        return lo >= -128 and hi <= 127 and bool(((zp >= -128) & (zp <= 127)).all())


def _grid(p: IntQuantized) -> IntGrid:
    return IntGrid(
        ints=p.int_repr.detach().clone(),
        scale=p.scale.detach().clone(),
        zero_point=p.zero_point.detach().clone(),
        bits=p.bits,
        signed=p.signed,
        narrow_range=p.narrow_range,
        axis=p.axis,
    )


def _copy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)`` without the factorized layers' caches. A parametrized module's
    deep copy copies its ``__dict__`` as it is, bypassing ``FactorizedModule.__getstate__``,
    and a cached CSR matrix (a low-rank + sparse layer's residual) cannot be deep-copied. The
    caches are put back: ``model`` ends as it began."""
    stashed = [(m, m._caches) for m in model.modules() if isinstance(m, FactorizedModule)]
    try:
        for m, _ in stashed:
            m._caches = {}
        return copy.deepcopy(model)
    finally:
        for m, caches in stashed:
            m._caches = caches


@torch.no_grad()
def materialize(model: nn.Module) -> tuple[nn.Module, dict[str, IntGrid | None]]:
    """A copy of ``model`` (in eval mode) whose parametrized tensors are plain parameters holding
    exactly the values the original computes, and ``{"layer.weight": IntGrid | None}`` for every
    tensor that was quantized (None for a k-means codebook, which lies on no uniform grid).

    The copy computes the same outputs as ``model`` (same tensors, same ops); shared modules stay
    shared. ``model`` itself is left as it is.

    >>> import torch, jointcomp
    >>> from jointcomp.nn.quantized import IntQuantized, attach
    >>> layer = torch.nn.Linear(4, 2)
    >>> grid = IntQuantized.from_ints(torch.ones(2, 4), torch.tensor(0.5), bits=4)
    >>> _ = attach(layer, "weight", grid)
    >>> plain, grids = materialize(layer)
    >>> plain.weight.tolist(), grids["weight"].bits
    ([[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]], 4)
    """
    plain = _copy(model).eval()
    grids: dict[str, IntGrid | None] = {}
    for path, module in list(plain.named_modules()):
        if not parametrize.is_parametrized(module):
            continue
        values: dict[str, tuple[torch.Tensor, bool]] = {}
        for tensor_name, chain in module.parametrizations.items():
            key = f"{path}.{tensor_name}" if path else tensor_name
            if len(chain) == 1 and isinstance(chain[0], IntQuantized):
                grids[key] = _grid(chain[0])
            elif any(isinstance(p, (IntQuantized, Codebook)) for p in chain):
                grids[key] = None
            is_parameter = isinstance(chain.original, nn.Parameter)
            values[tensor_name] = (getattr(module, tensor_name).detach().clone(), is_parameter)
        # Undo the parametrization by hand: torch's remove_parametrizations deletes the property
        # from the generated class, which a deep copy shares with ``model``, breaking it.
        module.__class__ = module.__class__.__bases__[0]
        del module._modules["parametrizations"]
        for tensor_name, (value, is_parameter) in values.items():
            if is_parameter:
                module._parameters[tensor_name] = nn.Parameter(value, requires_grad=False)
            else:
                module._buffers[tensor_name] = value
    for p in plain.parameters():
        p.requires_grad_(False)
    return plain, grids
