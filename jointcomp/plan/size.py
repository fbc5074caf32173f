"""Coded bytes of a layer's options. Each bit width is measured once per layer on the tensors
the quantize stage would quantize there (their integers on the grid the stage's method starts
from: an entropy estimate of the codes, as the coder reaches it within a few percent, or their
raw width where that is smaller, plus the scales); other keep ratios and ranks scale the stored
values by their count."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..nn import make_format
from ..nn.formats import Geometry, dense_macs, layer_spec
from ..nn.ranks import fraction_rank, parse_rank
from ..quant import QuantSpec, ptq_tensor

FLOAT_BYTES = 4
TABLE_BYTES = 16  # a coded stream's own header (its coder's parameters), about


def code_bytes(codes: torch.Tensor, bits: int | None = None) -> float:
    """Bytes the integers ``codes`` take at their empirical (order-0) entropy, plus a frequency
    table of 2 bytes per distinct value; with ``bits``, at most their raw ``bits``-bit packing
    (the ``auto`` coder stores a small or flat tensor raw rather than pay for a table).

    >>> code_bytes(torch.tensor([0, 0, 1, 1]))
    20.5
    >>> code_bytes(torch.tensor([0, 0, 1, 1]), bits=2)
    1.0
    """
    values = codes.detach().cpu().numpy().ravel()
    if values.size == 0:
        return 0.0
    _, counts = np.unique(values, return_counts=True)
    p = counts / values.size
    bits_total = float(-(p * np.log2(p)).sum()) * values.size
    coded = bits_total / 8 + 2 * counts.size + TABLE_BYTES
    if bits is not None:
        coded = min(coded, float(math.ceil(values.size * bits / 8)))
    return coded


def position_bytes(count: int, density: float) -> float:
    """Bytes of the positions of a ``density`` fraction of nonzeros among ``count`` values at
    their (binary) entropy, as the file codes a sparse tensor's zero pattern.

    >>> round(position_bytes(400_000, 0.01))
    4040
    """
    if not 0 < density < 1:
        return 0.0
    h = -(density * math.log2(density) + (1 - density) * math.log2(1 - density))
    return count * h / 8


def quantized_bytes(
    tensor: torch.Tensor,
    spec: QuantSpec,
    axis: int | None,
    calibration: str,
    fixed_zeros: bool,
    size_calibration: str | None = None,
) -> tuple[float, torch.Tensor]:
    """(estimated coded bytes, the dequantized values) of ``tensor`` on ``spec``'s grid.
    ``calibration`` gives the values (what the loss sees); ``size_calibration`` (default: the
    same) the grid whose integers are sized: the grid the quantize stage's method exports
    (QAT's statistics scaling starts from the max-abs grid, which at few bits rounds far more
    values to zero than the least-MSE grid, so its file is much smaller). With ``fixed_zeros``
    only the nonzeros' codes are sized, plus their positions."""
    x = tensor.detach()
    p = ptq_tensor(x, spec, axis, calibration, fixed_zeros)
    sized = p
    if size_calibration is not None and size_calibration != calibration:
        sized = ptq_tensor(x, spec, axis, size_calibration, fixed_zeros)
    codes = sized.int_repr
    if fixed_zeros:  # the nonzeros' codes, then their positions
        mask = x != 0
        codes = codes[mask]
        est = code_bytes(codes, sized.bits) + position_bytes(x.numel(), float(mask.float().mean()))
    else:
        est = code_bytes(codes, sized.bits)
    est += FLOAT_BYTES * sized.scale.numel()
    with torch.no_grad():
        return est, p(x)


def sliced(module: nn.Module, keep_out: float, keep_in: float) -> nn.Module:
    """An empty layer (meta device) of ``module``'s kind with the kept channel counts."""
    out = max(1, round(keep_out * module.weight.shape[0]))
    if isinstance(module, nn.Linear):
        return nn.Linear(max(1, round(keep_in * module.in_features)), out, device="meta")
    inputs = max(1, round(keep_in * module.in_channels))
    return nn.Conv2d(
        inputs, out, module.kernel_size, module.stride, module.padding, module.dilation,
        device="meta",
    )  # fmt: skip


def stored_values(
    module: nn.Module, keep_out: float, keep_in: float, rank: float | None, fmt_name: str | None
) -> tuple[int, int]:
    """(values the layer stores, the dense count) at these keep ratios and rank (an embedding
    table: its truncated-SVD factors, at ``fmt_name`` "table")."""
    if isinstance(module, nn.Embedding):
        dense = module.weight.numel()
        if rank is None:
            return dense, dense
        tokens, width = module.weight.shape
        r = fraction_rank(rank, min(tokens, width))
        return min(dense, r * (tokens + width)), dense
    layer = sliced(module, keep_out, keep_in)
    dense = layer.weight.numel()
    if rank is None or fmt_name is None:
        return dense, dense
    fmt = make_format(layer, fmt_name, {})
    ranks = fmt.resolve(torch.empty(layer.weight.shape), parse_rank(rank))
    return min(dense, fmt.params(ranks)), dense


def layer_macs(
    module: nn.Module,
    keep_out: float,
    keep_in: float,
    rank: float | None,
    fmt_name: str | None,
    geom: Geometry,
    sparse: float = 0.0,
) -> int:
    """Multiply-accumulates per sample of the layer at these keep ratios and rank (its
    factors', plus one per position and nonzero of a sparse residual) at activation sizes
    ``geom``.

    >>> from jointcomp.nn.formats import Geometry
    >>> layer_macs(nn.Linear(100, 50), 0.5, 1.0, None, None, Geometry())
    2500
    >>> layer_macs(nn.Linear(100, 50), 1.0, 1.0, 0.1, "svd", Geometry())
    750
    """
    layer = sliced(module, keep_out, keep_in)
    if rank is None or fmt_name is None:
        return dense_macs(layer_spec(layer), geom)
    fmt = make_format(layer, fmt_name, {})
    ranks = fmt.resolve(torch.empty(layer.weight.shape), parse_rank(rank))
    residual = round(sparse * layer.weight.numel()) * geom.positions
    return int(fmt.factor_macs(ranks, geom) + residual)
