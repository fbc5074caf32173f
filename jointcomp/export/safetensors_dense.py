"""Dense safetensors: the model's weights as plain float tensors under the names of the
original architecture.

Keys: the materialized module's state dict (quantized tensors as the float values they stand
for, under their plain names: ``fc.weight``, not ``fc.parametrizations.weight.original``), except
that every factorized layer (SVD, Tucker-2, CP, TT, low-rank + sparse, T-Basis, low-rank
embedding tables) is written as the dense layer it replaced: ``PATH.weight`` (its rebuilt
weight) and ``PATH.bias`` (when it has one) instead of its factors' keys. Pruned layers keep
their pruned shapes and folded batch norms are gone, so the file loads with ``strict=True``
into the builder's architecture exactly when the model was neither pruned nor folded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..container import write_atomic
from ..nn.execution import FactorizedModule
from ..runtime import materialize


def outermost_factorized(model: nn.Module) -> list[tuple[str, FactorizedModule]]:
    """The factorized layers of ``model`` not inside another one (a low-rank + sparse layer
    holds a factorized layer of its own)."""
    found: list[tuple[str, FactorizedModule]] = []
    for path, module in model.named_modules():
        if not isinstance(module, FactorizedModule):
            continue
        if any(path.startswith(outer + ".") for outer, _ in found):
            continue
        found.append((path, module))
    return found


@torch.no_grad()
def dense_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s weights as dense float tensors under the original architecture's names (see
    the module docstring); every tensor its own contiguous copy.

    >>> import torch, jointcomp
    >>> model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU())
    >>> config = {"rank": 4, "scope": {"include": ["0"]}}
    >>> model, _ = jointcomp.decompose(model, config, data=[torch.randn(2, 16)])
    >>> sorted(dense_state_dict(model))
    ['0.bias', '0.weight']
    """
    plain, _ = materialize(model)
    layers = outermost_factorized(plain)
    prefixes = tuple(f"{path}." for path, _ in layers)
    state = {
        k: v for k, v in plain.state_dict().items() if not (prefixes and k.startswith(prefixes))
    }
    for path, layer in layers:
        state[f"{path}.weight"] = layer.reconstruct_weight()
        bias = layer.dense_bias
        if bias is not None:
            state[f"{path}.bias"] = bias
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def to_dense_safetensors(
    model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None
) -> dict[str, Any]:
    """Write ``dense_state_dict(model)`` as a .safetensors file at ``path``; returns
    ``tensors`` and ``bytes``."""
    from safetensors.torch import save

    state = dense_state_dict(model)
    data = save(state, metadata={"keys": "original architecture, factorized layers dense",
                                 **(metadata or {})})  # fmt: skip
    write_atomic(path, data)
    return {"tensors": len(state), "bytes": len(data)}
