"""Quantizer scales on a log grid: once a tensor is quantized, its float scales move to the
nearest 2^(k/steps) (``QuantSpec.scale_grid``), integers unchanged, so the file stores them as
small integer codes instead of f16 or f32 floats. A 150-row T-Basis coefficient
table's scales then cost 62 bytes instead of 300; the values move by at most 2^(1/(2·steps))−1
(0.54% at 64 steps), and the stage's accuracy after is measured with them moved."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..nn.quantized import IntQuantized, quantized_tensors
from ..tensor.log_grid import snap
from .spec import QuantSpec
from .targets import Target


@torch.no_grad()
def snap_scales(
    model: nn.Module, plan: list[tuple[Target, QuantSpec]], summary: dict[str, Any]
) -> None:
    """Move the scales of every planned tensor whose spec has a ``scale_grid`` (once per
    quantizer: a shared table is planned once per layer) and record how far they moved."""
    quantized = quantized_tensors(model)
    done: set[int] = set()
    snapped, worst = 0, 0.0
    for target, spec in plan:
        q = quantized.get(target.name)
        if spec.scale_grid is None or not isinstance(q, IntQuantized) or id(q) in done:
            continue
        done.add(id(q))
        moved = snap(q.scale, spec.scale_grid)
        worst = max(worst, float((moved.double() / q.scale.double() - 1).abs().max()))
        q.scale.copy_(moved)
        snapped += 1
    if snapped:
        summary["scales_on_grid"] = {"tensors": snapped, "max_relative_change": round(worst, 6)}
