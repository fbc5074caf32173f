"""Low-rank + sparse (Hawkins et al.): W ≈ L + S, L any factorized layer, S a sparse residual
holding the few large entries L misses.

``sparse`` has the dense weight's shape; its zero pattern is fixed during fine-tuning
(``jc_sparse_tensors``: the trainer masks it, the encoder codes its positions). Factorized
execution adds the low-rank branch and S's branch (a CSR matmul at inference); dense execution
runs one op with L + S.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from ..registry import MODULE_TYPES, module_type_of, registered_module
from ._conv import im2col
from .execution import FactorizedModule


@registered_module("LowRankPlusSparse")
class LowRankPlusSparse(FactorizedModule):
    """Wraps a factorized layer (``lowrank``) and adds ``sparse`` to its weight."""

    jc_sparse_tensors = ("sparse",)

    def __init__(self, lowrank: dict[str, Any], execution: str = "factorized") -> None:
        super().__init__(execution)
        if not isinstance(lowrank, dict) or set(lowrank) != {"type", "config"}:
            raise ValueError(
                f"LowRankPlusSparse: lowrank must be {{'type': NAME, 'config': {{...}}}}, got "
                f"{lowrank!r}"
            )
        entry = MODULE_TYPES.get(lowrank["type"])
        if (
            entry is None
            or not issubclass(entry.cls, FactorizedModule)
            or issubclass(entry.cls, LowRankPlusSparse)
        ):
            raise ValueError(f"LowRankPlusSparse: {lowrank['type']!r} is not a factorized layer")
        self.lowrank = entry.build(lowrank["config"])
        with torch.no_grad():
            shape = self.lowrank.reconstruct_weight().shape
        self.sparse = nn.Parameter(torch.zeros(shape))
        self._conv_spec = getattr(self.lowrank, "spec", None)  # None for Linear-like layers

    @classmethod
    def wrap(
        cls, lowrank: FactorizedModule, sparse: torch.Tensor, execution: str = "factorized"
    ) -> LowRankPlusSparse:
        """A wrapper around an existing layer (its tensors are kept) with residual ``sparse``."""
        entry = module_type_of(lowrank)
        if entry is None:
            raise ValueError(f"{type(lowrank).__name__} is not a registered module type")
        out = cls({"type": entry.name, "config": entry.config(lowrank)}, execution)
        out.lowrank = lowrank
        out._conv_spec = getattr(lowrank, "spec", None)
        if tuple(sparse.shape) != tuple(out.sparse.shape):
            raise ValueError(
                f"sparse residual of shape {tuple(sparse.shape)} does not match the "
                f"weight shape {tuple(out.sparse.shape)}"
            )
        out.sparse = nn.Parameter(sparse.detach().clone().to(out.sparse.dtype))
        return out

    def jc_config(self) -> dict[str, Any]:
        entry = module_type_of(self.lowrank)
        assert entry is not None
        return {
            "lowrank": {"type": entry.name, "config": entry.config(self.lowrank)},
            "execution": self.execution,
        }

    @property
    def dense_bias(self) -> torch.Tensor | None:
        return self.lowrank.dense_bias

    @property
    def density(self) -> float:
        return float((self.sparse != 0).float().mean())

    def reconstruct_weight(self) -> torch.Tensor:
        return self.lowrank.reconstruct_weight() + self.sparse

    def dense_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return self.lowrank.dense_op(x, weight, bias)

    def forward_factorized(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowrank.forward_factorized(x) + self.sparse_branch(x)

    def warm_caches(self) -> None:
        super().warm_caches()
        spec = self._conv_spec
        if (
            self.execution == "factorized"
            and self.can_cache()
            and (spec is None or spec.groups == 1)
        ):
            self.cached("csr", self._csr)

    def _csr(self) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            return self.sparse.detach().reshape(self.sparse.shape[0], -1).to_sparse_csr()

    def sparse_branch(self, x: torch.Tensor) -> torch.Tensor:
        """x through S alone. At inference S runs as a CSR matrix (only its nonzeros cost time:
        a matmul for Linear, im2col + matmul for an ungrouped conv); in training, and for grouped
        convs, as the dense op with S so gradients reach it."""
        spec = self._conv_spec
        if not self.can_cache() or (spec is not None and spec.groups != 1):
            return self.lowrank.dense_op(x, self.sparse, None)
        csr = self.cached("csr", self._csr)
        if spec is None:  # a Linear: [.., in] → [.., out]
            flat = x.reshape(-1, x.shape[-1])
            return torch.mm(csr, flat.T.contiguous()).T.reshape(*x.shape[:-1], -1)
        cols, hout, wout = im2col(x, spec)  # [B, C·kh·kw, L]
        b, k = cols.shape[:2]
        y = torch.mm(csr, cols.transpose(0, 1).reshape(k, -1))  # [O, B·L]
        return y.reshape(-1, b, hout * wout).transpose(0, 1).reshape(b, -1, hout, wout)
