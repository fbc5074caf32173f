"""Allocation under a budget, shared by every stage that has one (decompose's ranks under a
params/MACs budget, quantize's bits under a byte budget): each layer or tensor has a ladder of
settings by increasing cost with the validation loss measured (or interpolated) at each; a
greedy takes, one step at a time, the step down with the smallest loss increase per unit of cost
saved until the total fits (the AIMET recipe).

The greedy starts with every entry at its largest setting; the last move is one step, so the
total ends at most one step below the target.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from .config import Strict


class SensitivityBatches(Strict):
    """How a budget measures sensitivities: the loss on a few fixed validation batches."""

    batches: int = Field(2, ge=1, description="validation batches for the sensitivities")
    batch_size: int = Field(128, ge=1)


@dataclass
class Ladder:
    """One layer's options: ``costs`` ascending (last = dense), ``losses`` measured or
    interpolated at each option (last = the unmodified model's loss)."""

    name: str
    costs: list[int]
    losses: list[float]


def interpolate_losses(costs: list[int], measured: dict[int, float], base: float) -> list[float]:
    """Losses at every ladder index from those measured at some (linear in cost between them),
    made monotone: a smaller setting never has a lower loss than a larger one, nor the base."""
    idx = sorted(measured)
    xs = np.array([costs[i] for i in idx], dtype=float)
    ys = np.array([measured[i] for i in idx], dtype=float)
    out = np.interp(np.array(costs, dtype=float), xs, ys).tolist()
    out[-1] = base
    for i in range(len(out) - 2, -1, -1):
        out[i] = max(out[i], out[i + 1])
    return out


def sample_indices(n: int, levels: int) -> list[int]:
    """About ``levels`` indices into a ladder of n options, denser at the small end (where loss
    changes fastest), always including the smallest and largest."""
    if n <= levels:
        return list(range(n))
    picks = np.unique(np.round(np.geomspace(1, n, levels)).astype(int) - 1)
    return sorted(set(picks.tolist()) | {0, n - 1})


def allocate(ladders: list[Ladder], target: float) -> tuple[dict[str, int], float]:
    """Ladder index per layer whose total cost is ≤ ``target`` (greedy, one step at a time).
    Returns (indices, total). ValueError when even the smallest settings exceed the target."""
    pos = {lad.name: len(lad.costs) - 1 for lad in ladders}
    by_name = {lad.name: lad for lad in ladders}
    total = float(sum(lad.costs[-1] for lad in ladders))
    smallest = float(sum(lad.costs[0] for lad in ladders))
    if smallest > target:
        raise ValueError(f"the smallest ranks still cost {smallest:,.0f} > target {target:,.0f}")
    heap: list[tuple[float, int, str, int]] = []

    def push(name: str) -> None:
        lad, p = by_name[name], pos[name]
        if p == 0:
            return
        saved = lad.costs[p] - lad.costs[p - 1]
        worse = max(0.0, lad.losses[p - 1] - lad.losses[p])
        # ties (no loss change) go to the bigger saving
        heapq.heappush(heap, (worse / max(saved, 1), -saved, name, p))

    for name in pos:
        push(name)
    while total > target and heap:
        _, _, name, p = heapq.heappop(heap)
        if pos[name] != p:
            continue
        lad = by_name[name]
        total -= lad.costs[p] - lad.costs[p - 1]
        pos[name] = p - 1
        push(name)
    return pos, total
