"""Quantized decompositions as a post-training alternative to rounding: a CP or TT layer's
factors are re-fitted directly on the integer grid to the weight the layer currently computes
(``jointcomp.tensor.qcp.quantized_cp_als``, ``jointcomp.tensor.qtt.quantized_tt_matrix``),
instead of rounding each float factor on its own.

CP: T ≈ Σ_r w_r ∘ (s_k·Q_k[:, r]); the per-rank magnitudes w_r become the per-channel scale of
the first 1×1 conv (one scale per rank), the other factors keep one scale each. TT: one scale
per core. Grids are signed narrow-range (what both algorithms produce).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..nn.cp import CPConv2d
from ..nn.quantized import IntQuantized
from ..nn.tt import TTConv2d, TTLinear
from ..tensor.qcp import quantized_cp_als
from ..tensor.qtt import quantized_tt_matrix

REFITTABLE = (CPConv2d, TTLinear, TTConv2d)


def _iq(
    ints: torch.Tensor, scale: torch.Tensor, bits: int, axis: int | None = None
) -> IntQuantized:
    return IntQuantized.from_ints(
        ints, scale, 0.0, bits=bits, signed=True, narrow_range=True, axis=axis
    )


def refit_cp(layer: CPConv2d, bits: int, seed: int = 0) -> dict[str, IntQuantized]:
    """{sub-layer path: IntQuantized} for the four factor convs of a CP layer (groups = 1)."""
    if layer.spec.groups != 1:
        raise ValueError("quantized CP-ALS refit supports groups=1 only")
    with torch.no_grad():
        weight = layer.reconstruct_weight().detach().cpu().double()
    o, cin, kh, kw = weight.shape
    r = layer.rank
    w, (q_o, q_i, q_h, q_w), (s_o, s_i, s_h, s_w) = quantized_cp_als(weight, r, bits, seed=seed)
    sign = torch.where(w < 0, -1, 1).to(torch.int32)  # the signed narrow grid is symmetric
    first_scale = (s_i.double() * w.abs()).to(torch.float32).reshape(r, 1, 1, 1)
    return {
        "first.weight": _iq((q_i * sign).T.reshape(r, cin, 1, 1), first_scale, bits, axis=0),
        "vertical.weight": _iq(q_h.T.reshape(r, 1, kh, 1), s_h, bits),
        "horizontal.weight": _iq(q_w.T.reshape(r, 1, 1, kw), s_w, bits),
        "last.weight": _iq(q_o.reshape(o, r, 1, 1), s_o, bits),
    }


def _tt_matrix_of(layer: TTLinear | TTConv2d) -> torch.Tensor:
    """The layer's weight as the zero-padded [∏out_modes, ∏in_modes] matrix its cores hold."""
    with torch.no_grad():
        w = layer.reconstruct_weight().detach().cpu().double()
    out_pad, in_pad = math.prod(layer.out_modes), math.prod(layer.in_modes)
    if isinstance(layer, TTConv2d):
        o, c, kh, kw = w.shape
        w = w.reshape(o, c, kh * kw)
        w = F.pad(w, (0, 0, 0, in_pad // (kh * kw) - c, 0, out_pad - o))
        return w.reshape(out_pad, in_pad)
    return F.pad(w, (0, in_pad - w.shape[1], 0, out_pad - w.shape[0]))


def refit_tt(layer: TTLinear | TTConv2d, bits: int) -> dict[str, IntQuantized]:
    """{"cores.k": IntQuantized} from error-compensated quantized TT-SVD at the layer's ranks."""
    matrix = _tt_matrix_of(layer)
    ints, scales = quantized_tt_matrix(
        matrix, layer.out_modes, layer.in_modes, bits, ranks=list(layer.ranks[1:-1])
    )
    out = {}
    for k, (q, s) in enumerate(zip(ints, scales)):
        if tuple(q.shape) != tuple(layer.cores[k].shape):
            raise ValueError(
                f"quantized TT-SVD gave core {k} of shape {tuple(q.shape)}, the "
                f"layer holds {tuple(layer.cores[k].shape)} (rank deficient weight)"
            )
        out[f"cores.{k}"] = _iq(q, s, bits)
    return out


def refit_layer(layer: torch.nn.Module, bits: int, seed: int = 0) -> dict[str, IntQuantized]:
    """Quantized factors of a CP or TT layer; ValueError for any other layer."""
    if isinstance(layer, CPConv2d):
        return refit_cp(layer, bits, seed)
    if isinstance(layer, (TTLinear, TTConv2d)):
        return refit_tt(layer, bits)
    raise ValueError(f"{type(layer).__name__} has no quantized decomposition (CP and TT only)")
