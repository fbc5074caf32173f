"""Bias correction of rounded output scales (Nagel et al., ICCV 2019, "Data-Free Quantization
Through Weight Equalization and Bias Correction", §4.2, applied to the scale a folded batch norm
leaves): a layer computes y = s·(Wx) + b per output channel, so rounding s to ŝ shifts the
channel's mean output by (ŝ − s)·E[Wx]. Moving −(ŝ − s)·E[Wx] into b before b is rounded keeps
every channel's mean where training left it; only the channel's gain error remains."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..training import run_with_hooks


@torch.no_grad()
def output_means(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    batches: list,
    device: torch.device | str,
) -> dict[str, torch.Tensor]:
    """Per output channel (dim 1), the mean output of each of ``layers`` (path → submodule of
    ``model``) over ``batches``, in float64; the model runs in eval mode."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(path: str):
        def record(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            flat = output.detach().double().movedim(1, -1).reshape(-1, output.shape[1])
            sums[path] = sums.get(path, 0) + flat.sum(0)
            counts[path] = counts.get(path, 0) + flat.shape[0]

        return record

    run_with_hooks(model, [(m, hook(path)) for path, m in layers.items()], batches, device)
    missing = sorted(set(layers) - set(sums))
    if missing:
        raise ValueError(f"layers {missing[:3]} never ran on the calibration batches")
    return {path: sums[path] / counts[path] for path in layers}


@torch.no_grad()
def correct_bias(
    bias: torch.Tensor, scale: torch.Tensor, rounded: torch.Tensor, mean_output: torch.Tensor
) -> torch.Tensor:
    """The bias of a layer y = s·(Wx) + b after ``scale`` (s, float) is rounded to ``rounded``
    (ŝ), given the layer's mean output per channel with s: E[Wx] = (mean − b)/s, and the new
    bias b − (ŝ − s)·E[Wx] keeps that mean. Channels with s = 0 carry no signal to correct."""
    s, b = scale.double(), bias.double()
    pre = torch.where(s != 0, (mean_output.double() - b) / torch.where(s != 0, s, 1.0), 0.0)
    return (b - (rounded.double() - s) * pre).to(bias.dtype)
