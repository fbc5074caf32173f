"""Int8 Linear kernels (torch's fbgemm / x86 dynamic quantized Linear) holding a file's own
integers.

A quantized Linear of at most 8 bits already stores its weight as integers × scale; the kernel
takes those integers as they are (``torch._make_per_channel_quantized_tensor``), never a
re-quantization of the float weight. Activations are quantized per call to uint8 from their
range (that, and int32 accumulation, is where the result leaves the exact module's).

torch's kernel takes one activation range for the whole input. In a transformer a single token
(often [CLS] or [SEP]) can reach 30 where the rest stay within ±4, so one range wastes most of
the 256 levels on every other token. ``per_token`` scales each row (token) to its own largest
magnitude before the kernel and back after it — per-token quantization on torch's per-tensor
kernel, for one reduction and two elementwise passes; on MiniLM it cuts each layer's error
about threefold.

Some input channels are large in every token (BERT's hidden states carry a few such features).
Scaled per token, they still set each row's range. As in LLM.int8(), ``outlier_channels``
picks them from an example's activations and the kernel leaves them out: they are multiplied in
float by the same (dequantized) weight columns and added to the int8 result.
"""

from __future__ import annotations

import warnings

import torch
import torch.ao.nn.quantized.dynamic as nnqd
from torch import nn

from .materialize import IntGrid

__all__ = ["Int8Linear", "int8_linear", "outlier_channels"]

# fbgemm multiplies uint8 activations by int8 weights in pairs summed into int16 (vpmaddubsw):
# 2 · 255 · |w| stays below 2^15 when |w| ≤ 64, so narrower grids need no reduced range.
_FULL_RANGE_LIMIT = 64
_TINY = torch.finfo(torch.float32).tiny


class Int8Linear(nnqd.Linear):
    """torch's dynamic int8 Linear, quantizing activations per row (``per_token``) or per
    tensor, to the full uint8 range when the weights leave room for it (``reduce_range``
    False; the default 7-bit range doubles the activation rounding error)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        reduce_range: bool = True,
        per_token: bool = True,
    ) -> None:
        super().__init__(in_features, out_features, dtype=torch.qint8)
        self.reduce_range = reduce_range
        self.per_token = per_token
        # per token, the bias is added after the rows are scaled back (the kernel holds none)
        self.register_buffer("row_bias", None)
        # input channels run in float: their indices and weight columns, [k] and [k, out]
        self.register_buffer("outlier_cols", None)
        self.register_buffer("outlier_weight", None)
        self.register_buffer("outlier_keep", None)  # 1 for the kernel's channels, 0 for those

    def set_outliers(self, cols: torch.Tensor, weight: torch.Tensor) -> None:
        """Run input channels ``cols`` in float with ``weight``'s columns (the dequantized
        weight, [out, in]) instead of through the kernel."""
        cols = cols.to(torch.int64).flatten()
        if not len(cols):
            self.outlier_cols = self.outlier_weight = self.outlier_keep = None
            return
        self.outlier_cols = cols
        self.outlier_keep = torch.ones(self.in_features).index_fill_(0, cols, 0.0)
        self.outlier_weight = weight.detach().float()[:, cols].t().contiguous()

    def set_weight_bias(self, w: torch.Tensor, b: torch.Tensor | None) -> None:
        if self.per_token:
            super().set_weight_bias(w, None)
            self.row_bias = None if b is None else b.detach().float().clone()
        else:
            super().set_weight_bias(w, b)

    def bias(self) -> torch.Tensor | None:  # type: ignore[override]
        return self.row_bias if self.per_token else super().bias()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Every full pass over the activations costs about as much as a tenth of the kernel, so
        # this makes as few as it can: one copy when channels go to float (the per-token
        # scaling then works in place on it), two reductions, one pass back over the output.
        cols, packed = self.outlier_cols, self._packed_params._packed_params
        owned = cols is not None
        if owned:
            side = x.index_select(-1, cols)
            x = x * self.outlier_keep  # one pass (index_fill copies, then fills)
        if not self.per_token:
            y = torch.ops.quantized.linear_dynamic(x, packed, self.reduce_range)
        else:
            r = torch.maximum(x.amax(dim=-1, keepdim=True), x.amin(dim=-1, keepdim=True).neg_())
            inv = r.clamp_min_(_TINY).reciprocal()  # one division per row, then products
            x = x.mul_(inv) if owned else x * inv
            y = torch.ops.quantized.linear_dynamic(x, packed, self.reduce_range)
            if self.row_bias is None:
                y.mul_(r)
            else:
                torch.addcmul(self.row_bias, y, r, out=y)
        if owned:
            flat = y.view(-1, y.shape[-1])  # y is a new tensor: add the float part in place
            flat.addmm_(side.reshape(-1, side.shape[-1]), self.outlier_weight)
        return y

    def extra_repr(self) -> str:
        k = 0 if self.outlier_cols is None else len(self.outlier_cols)
        return (
            f"{super().extra_repr()}, reduce_range={self.reduce_range}, "
            f"per_token={self.per_token}, float_channels={k}"
        )


def outlier_channels(x: torch.Tensor, ratio: float, limit: float = 1 / 32) -> torch.Tensor:
    """Indices of the input channels of activations ``x`` ([..., channels]) whose largest
    magnitude exceeds ``ratio`` × the median channel's, largest first, at most ``limit`` of
    the channels (at least one may be kept).

    >>> x = torch.ones(5, 64)
    >>> x[:, 7] = 30.0
    >>> outlier_channels(x, 4.0).tolist()
    [7]
    """
    peak = x.detach().abs().reshape(-1, x.shape[-1]).amax(dim=0)
    over = torch.nonzero(peak > ratio * peak.median()).flatten()
    over = over[peak[over].argsort(descending=True)]
    return over[: max(1, int(limit * x.shape[-1]))]


def int8_linear(linear: nn.Linear, grid: IntGrid, *, per_token: bool = True) -> Int8Linear | None:
    """An int8 kernel computing ``linear`` from ``grid``'s integers (activations quantized per
    token or per tensor), or None when the grid does not fit one: more than 8 bits, non-integer
    zero points, or scales along another axis than the output channels (the kernel takes one
    scale per output row or one for all).

    >>> import torch
    >>> from jointcomp.runtime.materialize import IntGrid
    >>> ints = torch.randint(-8, 8, (3, 4), dtype=torch.int8)
    >>> grid = IntGrid(ints, torch.full((3, 1), 0.1), torch.zeros(3, 1), 4, True, False, 0)
    >>> kernel = int8_linear(torch.nn.Linear(4, 3), grid)
    >>> kernel.weight().int_repr().equal(ints)
    True
    """
    if not grid.fits_int8() or tuple(grid.ints.shape) != tuple(linear.weight.shape):
        return None
    scale, zero_point = grid.per_channel()
    ints = grid.ints.to(torch.int64)
    rows = max(scale.numel(), zero_point.numel())
    per_tensor = rows == 1
    if not per_tensor:
        if grid.axis not in (0, -2) or rows != linear.out_features:
            return None
        scale, zero_point = scale.expand(rows), zero_point.expand(rows)  # one may be shared
    if not bool(torch.isfinite(scale).all()) or bool((scale < 0).any()):
        return None
    dead = scale == 0
    if bool(dead.any()):
        # a row of scale 0 (pruned to zero) is refused by the kernel: it holds zeros whatever its
        # integers, so the integers become the zero point and the scale any positive number
        ints = ints.clone()
        zp = zero_point.to(torch.int64)
        if per_tensor:
            ints.fill_(int(zp[0]))
        else:
            ints[dead] = zp[dead].unsqueeze(1).expand(-1, ints.shape[1])
        scale = torch.where(dead, torch.ones_like(scale), scale)
    int8 = ints.to(torch.int8)
    with warnings.catch_warnings():
        # torch warns that quantized tensors are deprecated on every one it makes; that says
        # nothing about these kernels' results
        warnings.filterwarnings("ignore", message=".*quantized.*deprecated.*")
        if per_tensor:
            weight = torch._make_per_tensor_quantized_tensor(
                int8, float(scale[0]), int(zero_point[0])
            )
        else:
            weight = torch._make_per_channel_quantized_tensor(
                int8, scale.double(), zero_point.to(torch.int64), 0
            )
        limit = int(ints.abs().max()) if ints.numel() else 0
        kernel = Int8Linear(
            linear.in_features,
            linear.out_features,
            reduce_range=limit > _FULL_RANGE_LIMIT,
            per_token=per_token,
        )
        bias = None if linear.bias is None else linear.bias.detach().float()
        kernel.set_weight_bias(weight, bias)
    return kernel
