"""Gauge equalization of T-Basis tables before quantization.

A T-Basis core is diag(rank_scale[r])·Σ_b coef[r, b]·basis[b]: a row's magnitude can sit in
its coefficients or in its rank scaling, and a layer's magnitude in any of its cores or in
the batch norm (or ``out_scale``) after it, without changing what the network computes. The
fit leaves these magnitudes wherever it happened to, so one grid per table (what 4-bit
tables afford) quantizes a small row or layer far more coarsely, relatively, than a large
one; with a batch norm after every layer each layer's relative error counts alike. This
moves every coefficient row to max-abs 1 (its magnitude into the rank scaling), then every
rank-scaling row to one common max-abs (the layer's magnitude into ``out_scale`` or into the
following batch norm's statistics; a layer with neither, such as a classifier, keeps its
magnitude spread evenly over its cores, and its level sets the common one) — the per-tensor
counterpart of cross-layer equalization (Nagel et al., ICCV 2019).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .bnfold import batchnorm_pairs
from .tbasis import TBASIS_LAYERS, shared_modules

_TINY = 1e-12  # a row this small is left alone: it has no magnitude to move


def _row_uses(model: nn.Module) -> dict[tuple[int, int], int]:
    uses: dict[tuple[int, int], int] = {}
    for module in model.modules():
        if isinstance(module, TBASIS_LAYERS):
            for r in module.row_list:
                key = (id(module.coefficients), r)
                uses[key] = uses.get(key, 0) + 1
    return uses


@torch.no_grad()
def equalize_tbasis(model: nn.Module) -> dict[str, Any]:
    """Equalize the magnitudes of every T-Basis table in ``model`` (in place; the function
    the model computes is unchanged, up to batch-norm epsilon). Returns what moved where:
    ``rows`` normalized, and per layer where its magnitude went (``out_scale``, the batch
    norm's name, ``cores``) or why it stayed (``coupled``: a row shared with another layer)."""
    _, tables = shared_modules(model)
    for table in tables:
        peak = table.coef.abs().amax(dim=1)
        ok = peak > _TINY
        factor = torch.where(ok, peak, torch.ones_like(peak))
        table.coef.div_(factor[:, None])
        table.rank_scale.mul_(factor[:, None])
    uses = _row_uses(model)
    after = dict(batchnorm_pairs(model)[0])
    moved: dict[str, str] = {}
    plans: list[tuple[str, nn.Module, list[float], str]] = []
    for name, layer in model.named_modules():
        if not isinstance(layer, TBASIS_LAYERS):
            continue
        table = layer.coefficients
        if any(uses[(id(table), r)] > 1 for r in layer.row_list):
            moved[name] = "coupled"
            continue
        peaks = [float(table.rank_scale[r].abs().max()) for r in layer.row_list]
        if min(peaks) <= _TINY:
            moved[name] = "zero"
            continue
        bn = model.get_submodule(after[name]) if name in after else None
        if layer.out_scale is not None:
            sink = "out_scale"
        elif bn is not None and bn.running_mean is not None and bn.running_var is not None:
            sink = after[name]
        else:
            sink = "cores"
        plans.append((name, layer, peaks, sink))
    # a layer with nowhere to put its magnitude keeps it, spread evenly over its cores (the
    # geometric mean of its rows' peaks); every other row is brought to the largest of those
    fixed = [math.prod(p) ** (1.0 / len(p)) for _, _, p, sink in plans if sink == "cores"]
    target = max(fixed, default=1.0)
    for name, layer, peaks, sink in plans:
        table = layer.coefficients
        level = math.prod(peaks) ** (1.0 / len(peaks)) if sink == "cores" else target
        for r, p in zip(layer.row_list, peaks):
            table.rank_scale[r].mul_(level / p)
        gain = level ** len(peaks) / math.prod(peaks)  # the layer's output is now gain × before
        if sink == "out_scale":
            layer.out_scale.div_(gain)
        elif sink != "cores":
            # BN(g·z) with statistics g·μ, g²·σ² is BN(z); in training it uses batch statistics
            bn = model.get_submodule(sink)
            bn.running_mean.mul_(gain)
            bn.running_var.mul_(gain * gain)
            if layer.bias is not None:
                layer.bias.mul_(gain)
        moved[name] = sink
    for layer in model.modules():
        if isinstance(layer, TBASIS_LAYERS):
            layer._caches = {}  # every layer reads the tables just changed
    return {"rows": sum(t.coef.shape[0] for t in tables), "level": target, "layers": moved}
