"""T-Basis layers (Obukhov et al., ICML 2020): Linear and Conv2d layers whose weights are tensor
rings whose cores all come from one shared basis (see ``jointcomp.tensor.tbasis``).

Two shared modules hold every stored number: ``TBasis`` (the basis [B, R, n, R]) and
``TBasisCoefficients`` (one table of coefficient rows [N, B] and rank scalings [N, R] for all
layers' cores). Every layer holds the *same* two module objects as its children ``basis`` and
``coefficients`` and names its cores' rows in ``rows``; a row used by several layers is a core
they share (coupled tensor trains). The file stores the shared modules once, at their first
path, and rebuilds one object at every path (the manifest's ``shared``), so training updates
one basis and quantizing it puts one parametrization on it.

A layer rebuilds its dense weight from the ring and runs the plain op (cached in eval mode):
with R×n×R cores applying them one by one costs more than the rebuild.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import registered_module
from ..tensor.tbasis import ModePlan, tbasis_matrix, unpad_weight
from ._conv import ConvSpec, conv2d_op
from .execution import FactorizedModule


def _positive(value: Any, name: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what}: {name} must be a positive int, got {value!r}")
    return int(value)


@registered_module("TBasis")
class TBasis(nn.Module):
    """The shared basis: ``size`` cores of shape rank × mode × rank."""

    def __init__(self, size: int, rank: int, mode: int) -> None:
        super().__init__()
        self.size = _positive(size, "size", "TBasis")
        self.rank = _positive(rank, "rank", "TBasis")
        self.mode = _positive(mode, "mode", "TBasis")
        # the paper's init: N(0, 1) clamped to ±3, over √(B·R); fitting overwrites it
        init = torch.randn(size, rank, mode, rank).clamp_(-3, 3) / math.sqrt(size * rank)
        self.basis = nn.Parameter(init)

    def jc_config(self) -> dict[str, Any]:
        return {"size": self.size, "rank": self.rank, "mode": self.mode}

    def extra_repr(self) -> str:
        return f"{self.size} × [{self.rank}, {self.mode}, {self.rank}]"


@registered_module("TBasisCoefficients")
class TBasisCoefficients(nn.Module):
    """The coefficient table of every core of every T-Basis layer: ``coef`` [rows, size] and
    the rank adaptation ``rank_scale`` [rows, rank] (a diagonal scaling of each core's first
    rank axis, initially 1)."""

    def __init__(self, rows: int, size: int, rank: int) -> None:
        super().__init__()
        self.rows = _positive(rows, "rows", "TBasisCoefficients")
        self.size = _positive(size, "size", "TBasisCoefficients")
        self.rank = _positive(rank, "rank", "TBasisCoefficients")
        self.coef = nn.Parameter(torch.randn(rows, size).clamp_(-3, 3))
        self.rank_scale = nn.Parameter(torch.ones(rows, rank))

    def jc_config(self) -> dict[str, Any]:
        return {"rows": self.rows, "size": self.size, "rank": self.rank}

    def extra_repr(self) -> str:
        return f"{self.rows} rows × (coef {self.size} + rank scale {self.rank})"


class _TBasisLayer(FactorizedModule):
    """Shared machinery: the plan, the shared children, the rows, the weight rebuild."""

    what = "TBasis layer"
    # a file implies that each layer holds the previous layer's basis and table
    jc_shared_children = ("basis", "coefficients")

    def _setup(
        self,
        out_size: int,
        in_size: int,
        window: int,
        out_modes: Any,
        in_modes: Any,
        basis_size: int,
        rank: int,
        mode: int,
        rows: Any,
        table_rows: int,
        out_scale: bool,
    ) -> None:
        what = self.what
        if not isinstance(out_modes, (list, tuple)) or not isinstance(in_modes, (list, tuple)):
            raise ValueError(f"{what}: out_modes and in_modes must be lists of ints")
        om = [_positive(v, "out_modes", what) for v in out_modes]
        im = [_positive(v, "in_modes", what) for v in in_modes]
        if not om or len(om) != len(im):
            raise ValueError(f"{what}: out_modes {om} and in_modes {im} must be equally long")
        if any(o * i > mode for o, i in zip(om, im)):
            raise ValueError(f"{what}: a core's modes {list(zip(om, im))} exceed mode {mode}")
        in_total = math.prod(im)
        if math.prod(om) < out_size or in_total % window or in_total // window < in_size:
            raise ValueError(
                f"{what}: modes {om} × {im} do not cover a {out_size}×{in_size} weight "
                f"with a kernel window of {window}"
            )
        if isinstance(rows, int) and not isinstance(rows, bool):
            rows = list(range(rows, rows + len(om)))  # consecutive rows, from this first one
        if not isinstance(rows, (list, tuple)) or len(rows) != len(om):
            raise ValueError(
                f"{what}: rows must list one table row per core ({len(om)}), or be the first "
                "of consecutive ones"
            )
        table_rows = _positive(table_rows, "table_rows", what)
        if any(
            isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < table_rows for r in rows
        ):
            raise ValueError(f"{what}: rows {rows} must be ints in [0, {table_rows})")
        self.plan = ModePlan(
            tuple(om), tuple(im), out_size, in_size, math.prod(om), in_total // window, window
        )
        self.rank, self.mode, self.basis_size = rank, mode, basis_size
        self.row_list = [int(r) for r in rows]
        self.table_rows = table_rows
        # placeholders of the right shapes; the stage (or the file) puts the shared objects here
        self.basis = TBasis(basis_size, rank, mode)
        self.coefficients = TBasisCoefficients(table_rows, basis_size, rank)
        self.register_buffer("row_index", torch.tensor(self.row_list), persistent=False)
        # a per-output-channel scale: where a following batch norm was folded in
        self.out_scale = nn.Parameter(torch.ones(out_size)) if out_scale else None

    def share(self, basis: TBasis, coefficients: TBasisCoefficients) -> None:
        """Use the shared modules (which must match this layer's shapes)."""
        if basis.jc_config() != self.basis.jc_config():
            raise ValueError(f"basis {basis.jc_config()} does not match {self.basis.jc_config()}")
        if coefficients.jc_config() != self.coefficients.jc_config():
            raise ValueError(
                f"coefficient table {coefficients.jc_config()} does not match "
                f"{self.coefficients.jc_config()}"
            )
        self.basis, self.coefficients = basis, coefficients
        self._caches = {}

    def _tbasis_config(self) -> dict[str, Any]:
        return {
            "out_modes": list(self.plan.out_modes),
            "in_modes": list(self.plan.in_modes),
            "basis_size": self.basis_size,
            "rank": self.rank,
            "mode": self.mode,
            "rows": self._rows_config(),
            "table_rows": self.table_rows,
            "out_scale": self.out_scale is not None,
            "execution": self.execution,
        }

    @staticmethod
    def jc_follows(previous: dict[str, Any]) -> dict[str, Any]:
        """What a file's next edit of this type implies: its table rows start
        right after those of the previous layer, as the share stage lays them out."""
        rows, cores = previous.get("rows"), previous.get("out_modes")
        if isinstance(rows, int) and not isinstance(rows, bool) and isinstance(cores, list):
            return {"rows": rows + len(cores)}
        return {}

    def _rows_config(self) -> int | list[int]:
        # consecutive rows (every layer of an uncoupled basis) as their first one: a file's
        # header then spends a few bytes per layer on them instead of ~10
        first = self.row_list[0]
        if self.row_list == list(range(first, first + len(self.row_list))):
            return first
        return list(self.row_list)

    def matrix(self) -> torch.Tensor:
        """The padded TT-matrix [∏out_modes, ∏in_modes]."""
        table = self.coefficients
        return tbasis_matrix(
            self.basis.basis,
            table.coef[self.row_index],
            table.rank_scale[self.row_index],
            self.plan.out_modes,
            self.plan.in_modes,
        )

    def _scaled(self, weight: torch.Tensor) -> torch.Tensor:
        if self.out_scale is None:
            return weight
        return weight * self.out_scale.reshape(-1, *([1] * (weight.dim() - 1)))

    @torch.no_grad()
    def fold_batchnorm(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        """Fold ``bn`` (its eval statistics) that follows this layer into ``out_scale`` and
        ``bias``: y = γ(Wx + b − μ)/σ + β = (W·γ/σ)x + (b − μ)γ/σ + β."""
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError("the batch norm keeps no running statistics")
        if bn.num_features != self.plan.out_size:
            raise ValueError(f"{bn.num_features} features after {self.plan.out_size} outputs")
        var, mean = bn.running_var.double(), bn.running_mean.double()
        gamma = bn.weight.double() if bn.affine else torch.ones_like(var)
        beta = bn.bias.double() if bn.affine else torch.zeros_like(var)
        factor = gamma / torch.sqrt(var + bn.eps)
        device, dtype = self.row_index.device, self.basis.basis.dtype
        scale = self.out_scale.double() if self.out_scale is not None else torch.ones_like(var)
        bias = self.bias.double() if self.bias is not None else torch.zeros_like(var)
        # registered in the constructor's order (out_scale, then bias): the file rebuilds it
        self._parameters.pop("out_scale", None)
        self._parameters.pop("bias", None)
        self.__dict__.pop("bias", None)
        self.out_scale = nn.Parameter((scale * factor).to(device, dtype))
        self.bias = nn.Parameter(((bias - mean) * factor + beta).to(device, dtype))
        self._caches = {}

    def coefficient_params(self) -> int:
        """Coefficients and rank scalings of this layer's cores (shared rows included)."""
        return len(self.row_list) * (self.basis_size + self.rank)

    def forward_factorized(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_op(x, self.reconstruct_weight(), self.dense_bias)

    @property
    def dense_bias(self) -> torch.Tensor | None:
        return self.bias

    def extra_repr(self) -> str:
        pairs = " ".join(f"{o}×{i}" for o, i in zip(self.plan.out_modes, self.plan.in_modes))
        return f"cores [{pairs}], rows {self.row_list}, execution={self.execution}"


@registered_module("TBasisLinear")
class TBasisLinear(_TBasisLayer):
    """A Linear whose [out, in] weight (padded to ∏out_modes × ∏in_modes) is a T-Basis ring."""

    what = "TBasisLinear"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        out_modes: Any,
        in_modes: Any,
        basis_size: int,
        rank: int,
        mode: int,
        rows: Any,
        table_rows: int,
        bias: bool = True,
        out_scale: bool = False,
        execution: str = "dense",
    ) -> None:
        super().__init__(execution)
        self.in_features = _positive(in_features, "in_features", self.what)
        self.out_features = _positive(out_features, "out_features", self.what)
        self._setup(
            out_features,
            in_features,
            1,
            out_modes,
            in_modes,
            basis_size,
            rank,
            mode,
            rows,
            table_rows,
            out_scale,
        )
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def jc_config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            **self._tbasis_config(),
            "bias": self.bias is not None,
        }

    def reconstruct_weight(self) -> torch.Tensor:
        return self._scaled(unpad_weight(self.matrix(), self.plan))

    def dense_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return F.linear(x, weight, bias)


@registered_module("TBasisConv2d")
class TBasisConv2d(_TBasisLayer):
    """A Conv2d (groups = 1) whose kernel [O, C, kh, kw], as the matrix [O, C·kh·kw] padded to
    ∏out_modes × ∏in_modes (channels padded, the kh·kw window last), is a T-Basis ring."""

    what = "TBasisConv2d"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        out_modes: Any,
        in_modes: Any,
        basis_size: int,
        rank: int,
        mode: int,
        rows: Any,
        table_rows: int,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        out_scale: bool = False,
        execution: str = "dense",
    ) -> None:
        super().__init__(execution)
        spec = ConvSpec.make(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
        )
        if groups != 1:
            raise ValueError(f"TBasisConv2d supports groups=1 only, got groups={groups}")
        self.spec = spec
        kh, kw = spec.kernel_size
        self._setup(
            out_channels,
            in_channels,
            kh * kw,
            out_modes,
            in_modes,
            basis_size,
            rank,
            mode,
            rows,
            table_rows,
            out_scale,
        )
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def jc_config(self) -> dict[str, Any]:
        # a folded batch norm adds a bias the spec was built without
        return {**self.spec.config(), **self._tbasis_config(), "bias": self.bias is not None}

    def reconstruct_weight(self) -> torch.Tensor:
        return self._scaled(unpad_weight(self.matrix(), self.plan, self.spec.kernel_size))

    def dense_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return conv2d_op(x, weight, bias, self.spec)


TBASIS_LAYERS = (TBasisLinear, TBasisConv2d)


def shared_modules(model: nn.Module) -> tuple[list[TBasis], list[TBasisCoefficients]]:
    """The distinct basis and coefficient-table objects the model's T-Basis layers use."""
    bases: dict[int, TBasis] = {}
    tables: dict[int, TBasisCoefficients] = {}
    for module in model.modules():
        if isinstance(module, _TBasisLayer):
            bases.setdefault(id(module.basis), module.basis)
            tables.setdefault(id(module.coefficients), module.coefficients)
    return list(bases.values()), list(tables.values())
