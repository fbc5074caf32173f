"""One int8 kernel for several Linears that read the same input (a transformer's query, key and
value projections).

Each of them alone would quantize the same activations, pick the same float channels and run a
small matrix product; stacked into one kernel the activations are prepared once and the product
is one wider, more efficient call. The activation quantization depends on the input only, so
each Linear's share of the stacked output is what its own kernel of the same kind computes.

The Linears stay separate modules (``SharedInputSlice``), so the model calling them is not
changed: the first one called on an input runs the stacked kernel and keeps the result until
every one has taken its slice of it.
"""

from __future__ import annotations

import torch
from torch import nn

from .int8 import Int8Linear
from .materialize import IntGrid

__all__ = ["SharedInputKernel", "SharedInputSlice", "stack_linears"]


class SharedInputKernel(nn.Module):
    """``kernel`` computing several Linears at once; ``take(i, x)`` is the ``i``-th one's output
    on ``x``, computed once per input for all of them."""

    def __init__(self, kernel: nn.Module, sizes: list[int]) -> None:
        super().__init__()
        self.kernel, self.sizes = kernel, list(sizes)
        self._x: torch.Tensor | None = None
        self._version = -1
        self._parts: tuple[torch.Tensor, ...] = ()
        self._taken: set[int] = set()

    @staticmethod
    def _version_of(x: torch.Tensor) -> int:
        # inference tensors keep no version counter (nor can they change outside inference mode)
        return -1 if x.is_inference() else x._version

    def take(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if self._x is not x or self._version != self._version_of(x) or i in self._taken:
            self._parts = self.kernel(x).split(self.sizes, dim=-1)
            self._x, self._version, self._taken = x, self._version_of(x), set()
        self._taken.add(i)
        part = self._parts[i]
        if len(self._taken) == len(self.sizes):  # all served: hold no tensors between calls
            self._x, self._parts = None, ()
        return part

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernel(x)


class SharedInputSlice(nn.Module):
    """One Linear's place in a :class:`SharedInputKernel` (its ``index``-th output slice)."""

    def __init__(self, shared: SharedInputKernel, index: int) -> None:
        super().__init__()
        self.shared, self.index = shared, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared.take(self.index, x)

    def extra_repr(self) -> str:
        return f"index={self.index}, out_features={self.shared.sizes[self.index]}"


def stack_linears(
    linears: list[nn.Linear], grids: list[IntGrid]
) -> tuple[nn.Linear, IntGrid] | None:
    """One Linear (weights stacked by output row, biases too, zeros where one has none) and the
    one integer grid of its weight, with one scale and zero point per output row; None when the
    grids do not stack (scales along another axis than the output rows).

    >>> import torch
    >>> a, b = torch.nn.Linear(4, 2), torch.nn.Linear(4, 3, bias=False)
    >>> g = lambda rows: IntGrid(torch.ones(rows, 4, dtype=torch.int8), torch.tensor(0.5),
    ...                          torch.tensor(0.0), 4, True, False, None)
    >>> big, grid = stack_linears([a, b], [g(2), g(3)])
    >>> tuple(big.weight.shape), tuple(grid.scale.shape), big.bias[2:].tolist()
    ((5, 4), (5, 1), [0.0, 0.0, 0.0])
    """
    scales, zeros = [], []
    for linear, grid in zip(linears, grids, strict=True):
        scale, zero = grid.per_channel()
        rows = linear.out_features
        if grid.axis not in (None, 0, -2) and max(scale.numel(), zero.numel()) > 1:
            return None
        if scale.numel() not in (1, rows) or zero.numel() not in (1, rows):
            return None
        scales.append(scale.expand(rows))
        zeros.append(zero.expand(rows))
    weight = torch.cat([linear.weight.detach() for linear in linears])
    has_bias = any(linear.bias is not None for linear in linears)
    big = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias)
    big = big.to(dtype=weight.dtype).eval().requires_grad_(False)
    big.weight.copy_(weight)
    if has_bias:
        big.bias.copy_(
            torch.cat(
                [
                    linear.bias.detach()
                    if linear.bias is not None
                    else weight.new_zeros(linear.out_features)
                    for linear in linears
                ]
            )
        )
    grid = IntGrid(
        ints=torch.cat([g.ints for g in grids]),
        scale=torch.cat(scales).unsqueeze(1),
        zero_point=torch.cat(zeros).unsqueeze(1),
        bits=max(g.bits for g in grids),
        signed=grids[0].signed,
        narrow_range=grids[0].narrow_range,
        axis=0,
    )
    return big, grid


def float_channels(module: nn.Module) -> int:
    """Input channels ``module``'s int8 kernels leave to float (counted once per kernel)."""
    seen: set[int] = set()
    total = 0
    for m in module.modules():
        if isinstance(m, Int8Linear) and m.outlier_cols is not None and id(m) not in seen:
            seen.add(id(m))
            total += len(m.outlier_cols)
    return total
