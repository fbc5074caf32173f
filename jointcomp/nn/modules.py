"""Module-tree helpers every stage uses: put a module at a dotted path, find a model's output
layer, and count what a model computes with."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..batches import run_model

PROJECTIONS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    """Put ``module`` at dotted ``path`` inside ``root`` (works inside Sequential/ModuleList)."""
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def first_tensor(output: Any) -> torch.Tensor | None:
    """The first tensor in a model output (a tensor, or a tuple/list/dict holding tensors)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


@torch.no_grad()
def classifier_names(model: nn.Module, example: Any) -> list[str]:
    """The output layer: the last layer to run on ``example`` (a Linear/Conv, or a factorized
    layer as a whole) whose output is shaped like the model's output — for a model output of
    one value per sample, the layer's output width (its channels) is the class count — as a
    one-name list (empty when none fits). A transformer's output ``[batch, tokens, width]``
    comes from its last block's projection of that shape, which is then the output layer."""
    from .execution import FactorizedModule  # the factorized layers import this module

    ran: list[tuple[str, tuple[int, ...]]] = []

    def hook(name: str):
        def record(_module: nn.Module, _args: tuple, out: Any) -> None:
            if isinstance(out, torch.Tensor) and out.dim() >= 2:
                ran.append((name, tuple(out.shape[1:])))

        return record

    handles = [
        m.register_forward_hook(hook(name))
        for name, m in model.named_modules()
        if isinstance(m, (*PROJECTIONS, FactorizedModule))
    ]
    was_training = model.training
    model.eval()
    try:
        out = first_tensor(run_model(model, example))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if out is None or out.dim() < 2:
        return []
    size = tuple(out.shape[1:])
    # a vector per sample: a layer whose channels (dim 1) are that many (a conv classifier may
    # be pooled after); a map or sequence per sample: a layer of exactly that shape
    found = [
        name for name, shape in ran if shape == size or (len(size) == 1 and shape[0] == size[0])
    ]
    return found[-1:]


def logical_tensors(model: nn.Module) -> dict[str, tuple[torch.Tensor, bool]]:
    """``{name: (tensor, is_parameter)}`` of what the model computes with: a quantized or
    codebook tensor counts as its dequantized value, not as its integers and placeholders; a tied
    tensor counts once."""
    out: dict[str, tuple[torch.Tensor, bool]] = {}
    seen: set[int] = set()
    for path, module in model.named_modules():
        if ".parametrizations." in f".{path}.":
            continue  # internals of a parametrization: counted through the value below
        prefix = f"{path}." if path else ""
        params = [(n, t, True) for n, t in module._parameters.items()]
        buffers = [
            (n, t, False)
            for n, t in module._buffers.items()
            if n not in module._non_persistent_buffers_set
        ]
        for name, tensor, is_param in params + buffers:
            if tensor is None or id(tensor) in seen:
                continue
            seen.add(id(tensor))
            out[prefix + name] = (tensor.detach(), is_param)
        if parametrize.is_parametrized(module):
            for name in module.parametrizations:
                out[prefix + name] = (getattr(module, name).detach(), True)
    return out


def count_params(model: nn.Module) -> int:
    """Parameter elements as the model computes with them (shared tensors once)."""
    return sum(t.numel() for t, is_param in logical_tensors(model).values() if is_param)


def count_nonzero(model: nn.Module) -> int:
    return sum(int((t != 0).sum()) for t, p in logical_tensors(model).values() if p)
