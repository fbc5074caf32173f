"""Loss deltas per layer and setting, measured one layer at a time on fixed validation batches
(the rest of the model as it is): prune by zeroing the layer's lowest-L1 output channels (what
L1 filter pruning removes, before fine-tuning), decompose by the format's truncated
reconstruction, quantize by rounding the layer's tensors to the grid. Only some settings are
measured (coarse); the rest are interpolated and made monotone (fewer channels, a lower rank,
fewer bits never predict a lower loss)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from ..nn import decompose_at, make_format
from ..nn.ranks import fraction_rank, parse_rank
from ..tensor.svd import svd_factors

Loss = Callable[[nn.Module], float]


def kept_channels(weight: torch.Tensor, keep: float) -> torch.Tensor:
    """Indices (ascending) of the ``keep`` fraction of output channels with the largest L1
    norm, at least one.

    >>> kept_channels(torch.tensor([[1.0], [-3.0], [2.0], [0.5]]), 0.5).tolist()
    [1, 2]
    """
    count = max(1, round(keep * weight.shape[0]))
    norms = weight.detach().abs().reshape(weight.shape[0], -1).sum(1)
    order = torch.argsort(norms, descending=True, stable=True)
    return torch.sort(order[:count]).values


def coarse(values: list, always: int = 3) -> list[int]:
    """Indices to measure of an ordered candidate list: both ends and every other one.

    >>> coarse([1, 2, 3, 4, 5, 6])
    [0, 2, 4, 5]
    """
    if len(values) <= always:
        return list(range(len(values)))
    return sorted(set(range(0, len(values), 2)) | {len(values) - 1})


def interpolate(xs: list[float], measured: dict[int, float]) -> list[float]:
    """Deltas at every candidate ``xs`` (decreasing: the least change first) from those
    measured at some indices, linear in x, then made monotone (non-decreasing along xs)
    and non-negative.

    >>> interpolate([1.0, 0.75, 0.5], {0: 0.0, 2: 0.4})
    [0.0, 0.2, 0.4]
    """
    idx = sorted(measured)
    px = np.array([xs[i] for i in idx], dtype=float)[::-1]
    py = np.array([measured[i] for i in idx], dtype=float)[::-1]
    out = np.interp(np.array(xs, dtype=float), px, py)
    out = np.maximum.accumulate(np.maximum(out, 0.0))
    return [float(v) for v in out]


@contextmanager
def swapped(module: nn.Module, **tensors: torch.Tensor) -> Iterator[None]:
    """``module``'s parameters replaced in value (same shapes) for the block, then restored."""
    saved = {k: getattr(module, k).detach().clone() for k in tensors}
    try:
        with torch.no_grad():
            for k, v in tensors.items():
                getattr(module, k).copy_(v)
        yield
    finally:
        with torch.no_grad():
            for k, v in saved.items():
                getattr(module, k).copy_(v)


def masked(module: nn.Module, keep: float) -> dict[str, torch.Tensor]:
    """The layer's weight (and bias) with all but the kept output channels zeroed."""
    weight = module.weight.detach()
    mask = torch.zeros(weight.shape[0], dtype=torch.bool, device=weight.device)
    mask[kept_channels(weight, keep)] = True
    shape = (-1,) + (1,) * (weight.dim() - 1)
    out = {"weight": weight * mask.reshape(shape)}
    if getattr(module, "bias", None) is not None:
        out["bias"] = module.bias.detach() * mask
    return out


TABLE = "table"  # an embedding table's format: E ≈ A·B by truncated SVD (decompose.embeddings)


def table_rank(module: nn.Module, fraction: float) -> int:
    """The rank decompose's ``embeddings`` gives a table at ``fraction`` of its full rank."""
    return fraction_rank(fraction, min(module.weight.shape))


def low_rank(
    module: nn.Module, fmt_name: str, fraction: float, sparse: float, seed: int
) -> torch.Tensor:
    """The layer's weight as its ``fmt_name`` decomposition at ``fraction`` of full rank
    (plus the sparse residual at density ``sparse``) reconstructs it; an embedding table
    (``TABLE``) as its truncated SVD, the factors ``LowRankEmbedding`` starts from."""
    if fmt_name == TABLE:
        a, b = svd_factors(module.weight.detach().cpu().float(), table_rank(module, fraction))
        return (a @ b).to(module.weight)
    fmt = make_format(module, fmt_name, {"seed": seed})
    ranks = fmt.resolve(module.weight.detach().cpu().float(), parse_rank(fraction))
    new, _ = decompose_at(module, fmt, ranks, sparse, sparse_rounds=1)
    with torch.no_grad():
        return new.reconstruct_weight().to(module.weight.device).reshape(module.weight.shape)


def prune_deltas(model: nn.Module, module: nn.Module, keeps: list[float], loss: Loss, base: float):
    """Loss delta at each keep ratio (1.0 first: 0)."""
    measured = {0: 0.0}
    for i in coarse(keeps)[1:]:
        with swapped(module, **masked(module, keeps[i])):
            measured[i] = loss(model) - base
    return interpolate(keeps, measured)


def rank_deltas(
    model: nn.Module,
    module: nn.Module,
    ranks: list[float | None],
    fmt_name: str,
    sparse: float,
    loss: Loss,
    base: float,
    seed: int,
) -> list[float]:
    """Loss delta at each rank fraction (None = dense first: 0)."""
    if ranks == [None]:
        return [0.0]
    fractions = [1.0] + [float(r) for r in ranks[1:]]
    measured = {0: 0.0}
    for i in coarse(fractions)[1:]:
        weight = low_rank(module, fmt_name, fractions[i], sparse, seed)
        with swapped(module, weight=weight):
            measured[i] = loss(model) - base
    return interpolate(fractions, measured)
