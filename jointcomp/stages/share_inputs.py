"""The input metric of each layer to share (``share``'s ``fit_batches``): the second moment of
the inputs the trained network feeds the layer on a few training batches, as the square root S
that ``fit_tbasis`` weighs the layer's error with (‖(A − W)·S‖ = the error of its outputs)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..tensor.tbasis import ModePlan
from ..training import run_with_hooks

MAX_ROWS_PER_BATCH = 4096  # patches sampled per batch and layer: enough for a C·k² ≤ 600 moment


def _conv_padding(module: nn.Conv2d) -> tuple[int, int]:
    if isinstance(module.padding, str):  # "valid" or "same" (symmetric is close enough here)
        if module.padding == "valid":
            return (0, 0)
        return tuple(d * (k - 1) // 2 for d, k in zip(module.dilation, module.kernel_size))
    return tuple(module.padding)


def _rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as rows [n, in·window], columns in its weight's (in, kh, kw) order."""
    if isinstance(module, nn.Conv2d):
        cols = F.unfold(
            x,
            module.kernel_size,
            dilation=module.dilation,
            padding=_conv_padding(module),
            stride=module.stride,
        )
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


def square_root_metric(moment: torch.Tensor, ridge: float) -> torch.Tensor:
    """The symmetric square root of ``moment`` + ridge·mean(diag)·I: directions the inputs
    never excite still count a little, so the fit does not let weights grow there freely."""
    c = moment.to(torch.float64)
    c = c + ridge * float(c.diagonal().mean().clamp_min(1e-12)) * torch.eye(len(c), dtype=c.dtype)
    e, v = torch.linalg.eigh(c)
    return (v * e.clamp_min(0).sqrt()) @ v.T


@torch.no_grad()
def input_metrics(
    model: nn.Module,
    names: Sequence[str],
    plans: Sequence[ModePlan],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    *,
    ridge: float = 0.05,
    seed: int = 0,
) -> list[torch.Tensor]:
    """For each named layer, S [in_padded·window, in_padded·window] (zero on the padding's
    columns) from the inputs ``model`` gives it on ``batches`` (eval mode, no training)."""
    gen = torch.Generator().manual_seed(seed)
    modules = [model.get_submodule(n) for n in names]
    moments = [torch.zeros(0)] * len(modules)
    counts = [0] * len(modules)

    def hook(j: int):
        def record(module: nn.Module, args: tuple, _out: torch.Tensor) -> None:
            rows = _rows(module, args[0].detach()).to("cpu", torch.float64)
            if len(rows) > MAX_ROWS_PER_BATCH:
                rows = rows[torch.randperm(len(rows), generator=gen)[:MAX_ROWS_PER_BATCH]]
            m = rows.T @ rows
            moments[j] = m if counts[j] == 0 else moments[j] + m
            counts[j] += len(rows)

        return record

    run_with_hooks(model, [(m, hook(j)) for j, m in enumerate(modules)], batches, device)
    out = []
    for name, plan, moment, n in zip(names, plans, moments, counts):
        if n == 0:
            raise ValueError(f"layer {name} saw no input on the calibration batches")
        own = plan.in_size * plan.window
        cols = plan.in_padded * plan.window
        s = torch.zeros(cols, cols, dtype=torch.float64)
        s[:own, :own] = square_root_metric(moment / n, ridge)
        out.append(s)
    return out
