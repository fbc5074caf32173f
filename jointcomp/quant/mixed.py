"""Mixed precision under a byte budget: per tensor, the bit width, chosen so the coded size of
all quantized tensors meets the budget with the least loss.

Each tensor's options (bit widths) are measured alone: its coded size (``size.coded_bytes``) and
the validation loss of the model with only that tensor quantized (a small fixed batch set).
A greedy then lowers, one step at a time, the tensor whose next step down costs the least loss
per byte saved (the allocation the decompose stage uses for ranks), until the total fits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..allocate import Ladder, allocate
from .size import coded_bytes
from .spec import QuantSpec
from .targets import Target

Quantizer = Callable[[Target, QuantSpec, torch.Tensor], nn.Module]
Loss = Callable[[nn.Module], float]  # the model's validation loss (the budget's sensitivity)


@dataclass
class Option:
    bits: int
    bytes: int
    loss: float


@torch.no_grad()
def measure_options(
    model: nn.Module,
    target: Target,
    spec: QuantSpec,
    bit_options: list[int],
    quantizer: Quantizer,
    loss: Loss,
) -> list[Option]:
    """Size and loss of ``target`` at every bit width (the rest of the model left float)."""
    param = target.module(model)._parameters[target.tensor]
    keep = param.detach().clone()
    out = []
    try:
        for bits in bit_options:
            p = quantizer(target, spec.with_bits(bits), keep)
            param.copy_(p(keep).to(param.device, param.dtype))
            out.append(Option(bits, coded_bytes(p), loss(model)))
            param.copy_(keep)
    finally:
        param.copy_(keep)
    return out


def _ladder(options: list[Option]) -> list[Option]:
    """Options by increasing size, dropping any that costs more than a smaller-loss one below
    it; losses made monotone (a smaller option never has a lower loss)."""
    ordered = sorted(options, key=lambda o: (o.bytes, -o.bits))
    kept: list[Option] = []
    for o in ordered:
        if kept and o.bytes == kept[-1].bytes:
            if o.loss < kept[-1].loss:
                kept[-1] = o
            continue
        kept.append(o)
    losses = [o.loss for o in kept]
    for i in range(len(losses) - 2, -1, -1):
        losses[i] = max(losses[i], losses[i + 1])
    return [Option(o.bits, o.bytes, loss) for o, loss in zip(kept, losses)]


def allocate_bits(
    measured: dict[str, list[Option]], budget_bytes: float
) -> tuple[dict[str, Option], float]:
    """The option per tensor meeting ``budget_bytes`` in total (ValueError when even the
    smallest options exceed it). Returns (choice per tensor name, total bytes)."""
    ladders = {name: _ladder(opts) for name, opts in measured.items()}
    pos, total = allocate(
        [
            Ladder(name, [o.bytes for o in lad], [o.loss for o in lad])
            for name, lad in ladders.items()
        ],
        budget_bytes,
    )
    return {name: ladders[name][i] for name, i in pos.items()}, total


def choose_bits(
    model: nn.Module,
    targets: list[tuple[Target, QuantSpec]],
    bit_options: list[int],
    budget_bytes: int,
    quantizer: Quantizer,
    loss: Loss,
    fixed: list[tuple[Target, QuantSpec]] = (),
) -> tuple[dict[str, int], dict[str, Any]]:
    """Bits per target name so the quantized tensors' coded size meets ``budget_bytes``;
    ``fixed`` targets keep their bits but count against the budget. Returns (bits per name,
    a record of the allocation)."""
    fixed_bytes = 0
    for target, spec in fixed:
        value = target.value(model).detach()
        fixed_bytes += coded_bytes(quantizer(target, spec, value))
    base = loss(model)
    measured = {
        t.name: measure_options(model, t, spec, bit_options, quantizer, loss) for t, spec in targets
    }
    try:
        chosen, total = allocate_bits(measured, budget_bytes - fixed_bytes)
    except ValueError:
        smallest = fixed_bytes + sum(min(o.bytes for o in opts) for opts in measured.values())
        raise ValueError(
            f"budget of {budget_bytes:,} bytes cannot be met: the smallest bit widths "
            f"({min(bit_options)}) still take {smallest:,} bytes"
        ) from None
    record = {
        "bytes": budget_bytes,
        "fixed_bytes": fixed_bytes,
        "achieved_bytes": int(total + fixed_bytes),
        "base_loss": round(base, 5),
        "loss_sum": round(sum(c.loss - base for c in chosen.values()), 5),
        "options": {
            name: [[o.bits, o.bytes, round(o.loss, 5)] for o in opts]
            for name, opts in measured.items()
        },
    }
    return {name: c.bits for name, c in chosen.items()}, record
