"""What each named layer sees in one forward pass: its input (for timing it) and its activation
sizes (for its MACs)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..batches import run_model
from .formats import Geometry


@torch.no_grad()
def trace_layers(
    model: nn.Module, names: list[str], example: Any
) -> tuple[dict[str, Geometry], dict[str, torch.Tensor]]:
    """One eval forward pass on ``example`` (batch 1 model inputs: a tensor, or a tuple/dict of
    them): each named layer's geometry and its first input. Layers the pass does not reach are
    absent from both dicts."""
    modules = dict(model.named_modules())
    geoms: dict[str, Geometry] = {}
    inputs: dict[str, torch.Tensor] = {}
    handles = []

    def hook(name: str):
        def fn(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if name in geoms or not args or not isinstance(output, torch.Tensor):
                return
            x = args[0]
            inputs[name] = x.detach().clone()
            if output.dim() == 4:
                geoms[name] = Geometry(tuple(x.shape[-2:]), tuple(output.shape[-2:]))
            else:  # Linear: rows per sample (tokens) as the positions
                rows = max(1, output.numel() // max(1, output.shape[0] * output.shape[-1]))
                geoms[name] = Geometry((1, 1), (rows, 1))

        return fn

    for name in names:
        handles.append(modules[name].register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        run_model(model, example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return geoms, inputs
