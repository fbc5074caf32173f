"""Formats: for one layer shape, what each decomposition's ranks mean, what they cost (params,
MACs), which ranks a rule picks, and how to build the factorized module from a weight.

All formats work per group for grouped convs, except TT (groups = 1 only). A Linear is treated
as a 1×1 conv for the maths. A format that cannot apply raises ``Unsupported`` with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..tensor import cp_als, pad_to_factorable, svd_factors, tt_matrix, tucker2
from ._conv import ConvSpec
from .cp import CPConv2d, cp_rank_limit
from .execution import FactorizedModule
from .ranks import RankRule, fraction_rank, measure_rank
from .svd import SVDConv2d, SVDLinear
from .tt import TTConv2d, TTLinear
from .tucker import TuckerConv2d

FORMATS = ("svd", "svd_spatial", "tucker2", "cp", "tt")


class Unsupported(ValueError):
    """This format does not apply to this layer (the message says why)."""


@dataclass(frozen=True)
class Geometry:
    """Per-sample activation sizes of a layer (from a forward pass), for MAC counts: conv input
    and output H×W, or a Linear's rows per sample (tokens)."""

    in_hw: tuple[int, int] = (1, 1)
    out_hw: tuple[int, int] = (1, 1)

    @property
    def positions(self) -> int:
        return self.out_hw[0] * self.out_hw[1]


def layer_spec(module: nn.Module) -> ConvSpec:
    """A Conv2d's spec, or a Linear's as a 1×1 conv."""
    if isinstance(module, nn.Conv2d):
        return ConvSpec.of(module)
    if isinstance(module, nn.Linear):
        return ConvSpec.make(
            module.in_features, module.out_features, 1, bias=module.bias is not None
        )
    raise Unsupported(f"{type(module).__name__} is neither Linear nor Conv2d")


def dense_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def dense_macs(spec: ConvSpec, geom: Geometry) -> int:
    o, cin, kh, kw = spec.weight_shape
    return geom.positions * o * cin * kh * kw


class Format:
    """Base: ``ranks`` are always a list of ints (one per factor rank)."""

    name = ""

    def __init__(self, module: nn.Module, options: dict[str, Any] | None = None) -> None:
        self.linear = isinstance(module, nn.Linear)
        self.spec = layer_spec(module)
        self.options = dict(options or {})
        o, cin, kh, kw = self.spec.weight_shape
        self.g, self.o, self.cin, self.kh, self.kw = self.spec.groups, o, cin, kh, kw
        self.bias = self.spec.bias
        self.check()

    # --- per format ----------------------------------------------------------------------

    def check(self) -> None:
        """Raise Unsupported when the format cannot apply."""

    def full(self) -> list[int]:
        """The largest meaningful ranks."""
        raise NotImplementedError

    def resolve(self, weight: torch.Tensor, rule: RankRule) -> list[int]:
        raise NotImplementedError

    def factor_params(self, ranks: list[int]) -> int:
        raise NotImplementedError

    def factor_macs(self, ranks: list[int], geom: Geometry) -> int:
        raise NotImplementedError

    def build(self, weight: torch.Tensor, ranks: list[int]) -> FactorizedModule:
        """The module whose factors decompose ``weight`` (bias left at zero)."""
        raise NotImplementedError

    def ladder(self) -> list[list[int]]:
        """Rank settings in increasing size that all hold fewer numbers than the dense layer."""
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------------

    def params(self, ranks: list[int]) -> int:
        return self.factor_params(ranks) + (self.o if self.bias else 0)

    def dense_params(self) -> int:
        return self.o * self.cin * self.kh * self.kw + (self.o if self.bias else 0)

    def groups_of(self, weight: torch.Tensor) -> torch.Tensor:
        """[O, I/g, kh, kw] (or [O, I]) → [g, O/g, I/g, kh, kw]."""
        return weight.reshape(self.g, self.o // self.g, self.cin, self.kh, self.kw)

    def _one_rank(self, weight: torch.Tensor, rule: RankRule, limit: int, matrices) -> list[int]:
        if rule.kind == "int":
            if rule.value > limit:
                raise ValueError(f"rank {rule.value} is larger than the layer allows ({limit})")
            return [rule.value]
        if rule.kind == "list":
            if len(rule.value) != 1:
                raise ValueError(f"{self.name} takes one rank, got {list(rule.value)}")
            return self._one_rank(weight, RankRule("int", rule.value[0]), limit, matrices)
        if rule.kind == "fraction":
            return [fraction_rank(rule.value, limit)]
        return [min(limit, max(measure_rank(m, rule) for m in matrices(weight)))]


class SVDFormat(Format):
    """Channel SVD: [O/g, I/g·kh·kw] per group."""

    name = "svd"

    def full(self) -> list[int]:
        return [min(self.o // self.g, self.cin * self.kh * self.kw)]

    def matrices(self, weight: torch.Tensor) -> list[torch.Tensor]:
        w = self.groups_of(weight)
        return [w[j].reshape(self.o // self.g, -1) for j in range(self.g)]

    def resolve(self, weight: torch.Tensor, rule: RankRule) -> list[int]:
        return self._one_rank(weight, rule, self.full()[0], self.matrices)

    def factor_params(self, ranks: list[int]) -> int:
        r = ranks[0]
        return self.g * r * self.cin * self.kh * self.kw + self.o * r

    def factor_macs(self, ranks: list[int], geom: Geometry) -> int:
        return geom.positions * self.factor_params(ranks)

    def ladder(self) -> list[list[int]]:
        dense = self.dense_params() - (self.o if self.bias else 0)
        return [[r] for r in range(1, self.full()[0] + 1) if self.factor_params([r]) < dense]

    def build(self, weight: torch.Tensor, ranks: list[int]) -> FactorizedModule:
        r = ranks[0]
        if self.linear:
            m: FactorizedModule = SVDLinear(self.cin, self.o, r, bias=self.bias)
        else:
            m = SVDConv2d(**self.spec.config(), rank=r, form="channel")
        firsts, seconds = [], []
        for mat in self.matrices(weight):
            a, b = svd_factors(mat, r)  # mat ≈ a @ b
            seconds.append(a)
            firsts.append(b)
        with torch.no_grad():
            first = torch.cat(firsts).reshape(m.first.weight.shape)
            m.first.weight.copy_(first)
            m.second.weight.copy_(torch.cat(seconds).reshape(m.second.weight.shape))
        return m


class SpatialSVDFormat(SVDFormat):
    """Spatial SVD: [I/g·kh, O/g·kw] per group → kh×1 conv then 1×kw conv."""

    name = "svd_spatial"

    def check(self) -> None:
        if self.linear:
            raise Unsupported("svd_spatial applies to Conv2d layers")
        if self.kh == 1 or self.kw == 1:
            raise Unsupported(f"svd_spatial needs a kernel at least 2×2, got {self.kh}×{self.kw}")

    def full(self) -> list[int]:
        return [min(self.cin * self.kh, (self.o // self.g) * self.kw)]

    def matrices(self, weight: torch.Tensor) -> list[torch.Tensor]:
        w = self.groups_of(weight)
        return [w[j].permute(1, 2, 0, 3).reshape(self.cin * self.kh, -1) for j in range(self.g)]

    def factor_params(self, ranks: list[int]) -> int:
        r = ranks[0]
        return self.g * r * self.cin * self.kh + self.o * r * self.kw

    def factor_macs(self, ranks: list[int], geom: Geometry) -> int:
        r = ranks[0]
        return (
            geom.out_hw[0] * geom.in_hw[1] * self.g * r * self.cin * self.kh
            + geom.positions * self.o * r * self.kw
        )

    def build(self, weight: torch.Tensor, ranks: list[int]) -> FactorizedModule:
        r = ranks[0]
        m = SVDConv2d(**self.spec.config(), rank=r, form="spatial")
        firsts, seconds = [], []
        for mat in self.matrices(weight):
            a, b = svd_factors(mat, r)  # a [cin·kh, r], b [r, cout·kw]
            firsts.append(a.T.reshape(r, self.cin, self.kh, 1))
            seconds.append(b.reshape(r, self.o // self.g, self.kw).permute(1, 0, 2))
        with torch.no_grad():
            m.first.weight.copy_(torch.cat(firsts))
            m.second.weight.copy_(torch.cat(seconds).reshape(m.second.weight.shape))
        return m


class TuckerFormat(Format):
    """Tucker-2 per group: ranks [r_out, r_in]."""

    name = "tucker2"

    def check(self) -> None:
        if self.linear:
            raise Unsupported("tucker2 applies to Conv2d layers (use svd for Linear)")

    def full(self) -> list[int]:
        return [self.o // self.g, self.cin]

    def resolve(self, weight: torch.Tensor, rule: RankRule) -> list[int]:
        o_full, i_full = self.full()
        if rule.kind == "int":
            rule = RankRule("list", (rule.value, rule.value))
        if rule.kind == "list":
            if len(rule.value) != 2:
                raise ValueError(f"tucker2 takes ranks [r_out, r_in], got {list(rule.value)}")
            r_out, r_in = rule.value
            if r_out > o_full or r_in > i_full:
                raise ValueError(
                    f"ranks [{r_out}, {r_in}] are larger than the layer allows "
                    f"([{o_full}, {i_full}] per group)"
                )
            return [r_out, r_in]
        if rule.kind == "fraction":
            return [fraction_rank(rule.value, o_full), fraction_rank(rule.value, i_full)]
        w = self.groups_of(weight)
        r_out = max(measure_rank(w[j].reshape(o_full, -1), rule) for j in range(self.g))
        r_in = max(
            measure_rank(w[j].transpose(0, 1).reshape(i_full, -1), rule) for j in range(self.g)
        )
        return [min(r_out, o_full), min(r_in, i_full)]

    def factor_params(self, ranks: list[int]) -> int:
        r_out, r_in = ranks
        return self.g * (r_in * self.cin + r_out * r_in * self.kh * self.kw) + self.o * r_out

    def factor_macs(self, ranks: list[int], geom: Geometry) -> int:
        r_out, r_in = ranks
        hi, wi = geom.in_hw
        return hi * wi * self.g * r_in * self.cin + geom.positions * (
            self.g * r_out * r_in * self.kh * self.kw + self.o * r_out
        )

    def ladder(self) -> list[list[int]]:
        o_full, i_full = self.full()
        dense = self.dense_params() - (self.o if self.bias else 0)
        steps = max(o_full, i_full)
        out: list[list[int]] = []
        for s in range(1, steps + 1):  # both ranks grow in proportion, one step of the larger
            ranks = [max(1, round(s * o_full / steps)), max(1, round(s * i_full / steps))]
            if self.factor_params(ranks) < dense and ranks not in out:
                out.append(ranks)
        return out

    def build(self, weight: torch.Tensor, ranks: list[int]) -> FactorizedModule:
        r_out, r_in = ranks
        m = TuckerConv2d(**self.spec.config(), ranks=[r_out, r_in])
        w = self.groups_of(weight)
        firsts, cores, lasts = [], [], []
        for j in range(self.g):
            core, u_out, u_in = tucker2(w[j], (r_out, r_in))
            firsts.append(u_in.T)
            cores.append(core)
            lasts.append(u_out)
        with torch.no_grad():
            m.first.weight.copy_(torch.cat(firsts).reshape(m.first.weight.shape))
            m.core.weight.copy_(torch.cat(cores).reshape(m.core.weight.shape))
            m.last.weight.copy_(torch.cat(lasts).reshape(m.last.weight.shape))
        return m


class CPFormat(Format):
    """CP per group: rank [R]; a 'fraction' is of the rank whose factors match the dense size."""

    name = "cp"

    def check(self) -> None:
        if self.linear:
            raise Unsupported("cp applies to Conv2d layers (use svd for Linear)")

    def full(self) -> list[int]:
        return [cp_rank_limit(self.spec)]

    def resolve(self, weight: torch.Tensor, rule: RankRule) -> list[int]:
        limit = self.full()[0]
        if rule.kind in ("int", "list", "fraction"):
            return self._one_rank(weight, rule, limit, None)
        # Measures apply to the two channel unfoldings (as for Tucker-2); CP takes the larger.
        w = self.groups_of(weight)
        r = max(
            max(
                measure_rank(w[j].reshape(self.o // self.g, -1), rule),
                measure_rank(w[j].transpose(0, 1).reshape(self.cin, -1), rule),
            )
            for j in range(self.g)
        )
        return [min(r, limit)]

    def factor_params(self, ranks: list[int]) -> int:
        r = ranks[0]
        return self.g * r * (self.cin + self.kh + self.kw) + self.o * r

    def factor_macs(self, ranks: list[int], geom: Geometry) -> int:
        r = ranks[0]
        hi, wi = geom.in_hw
        return (
            hi * wi * self.g * r * self.cin
            + geom.out_hw[0] * wi * self.g * r * self.kh
            + geom.positions * (self.g * r * self.kw + self.o * r)
        )

    def ladder(self) -> list[list[int]]:
        dense = self.dense_params() - (self.o if self.bias else 0)
        return [[r] for r in range(1, self.full()[0] + 1) if self.factor_params([r]) < dense]

    def build(self, weight: torch.Tensor, ranks: list[int]) -> FactorizedModule:
        r = ranks[0]
        m = CPConv2d(**self.spec.config(), rank=r)
        w = self.groups_of(weight)
        iters = int(self.options.get("cp_iters", 100))
        firsts, verts, hors, lasts = [], [], [], []
        for j in range(self.g):
            lam, (a_o, a_i, a_h, a_w) = cp_als(
                w[j], r, n_iter=iters, seed=int(self.options.get("seed", 0))
            )
            # Spread |λ| evenly over the four factors so none is tiny or huge when fine-tuned.
            scale = lam.abs().clamp_min(1e-30) ** 0.25
            firsts.append(a_i.T * scale[:, None])
            verts.append(a_h.T * scale[:, None])
            hors.append(a_w.T * scale[:, None])
            lasts.append(a_o * torch.where(lam < 0, -scale, scale))
        with torch.no_grad():
            m.first.weight.copy_(torch.cat(firsts).reshape(m.first.weight.shape))
            m.vertical.weight.copy_(torch.cat(verts).reshape(m.vertical.weight.shape))
            m.horizontal.weight.copy_(torch.cat(hors).reshape(m.horizontal.weight.shape))
            m.last.weight.copy_(torch.cat(lasts).reshape(m.last.weight.shape))
        return m


class TTFormat(Format):
    """TT-matrix: ranks are the d−1 inner TT ranks. ``tt_cores`` (option, default 3) is the
    number of cores (for a conv: channel cores + one kernel-window core)."""

    name = "tt"

    def check(self) -> None:
        if self.g != 1:
            raise Unsupported(f"tt needs groups=1, this conv has groups={self.g}")
        d = int(self.options.get("tt_cores", 3))
        channel_cores = d if self.linear else d - 1
        if channel_cores < 1 or d < 2:
            raise Unsupported(f"tt_cores must be at least 2, got {d}")
        self.in_pad, in_modes = pad_to_factorable(self.cin, channel_cores)
        self.out_pad, out_modes = pad_to_factorable(self.o, channel_cores)
        if self.linear:
            self.in_modes, self.out_modes = in_modes, out_modes
        else:
            self.in_modes = [*in_modes, self.kh * self.kw]
            self.out_modes = [*out_modes, 1]
        sizes = [m * n for m, n in zip(self.out_modes, self.in_modes)]
        self.sizes = sizes
        self.cut_full = [
            min(math.prod(sizes[:k]), math.prod(sizes[k:])) for k in range(1, len(sizes))
        ]

    def full(self) -> list[int]:
        return list(self.cut_full)

    def feasible(self, inner: list[int]) -> list[int]:
        """Clamp inner ranks to what the chain carries: r_k ≤ r_{k−1}·n_k, r_k ≤ n_{k+1}·r_{k+1}."""
        r = [1, *[max(1, min(v, f)) for v, f in zip(inner, self.cut_full)], 1]
        for k in range(1, len(r) - 1):
            r[k] = min(r[k], r[k - 1] * self.sizes[k - 1])
        for k in range(len(r) - 2, 0, -1):
            r[k] = min(r[k], self.sizes[k] * r[k + 1])
        return r[1:-1]

    def padded_matrix(self, weight: torch.Tensor) -> torch.Tensor:
        w = weight.reshape(self.o, self.cin, self.kh * self.kw)
        w = torch.nn.functional.pad(w, (0, 0, 0, self.in_pad - self.cin, 0, self.out_pad - self.o))
        return w.reshape(self.out_pad, -1)

    def unfoldings(self, weight: torch.Tensor) -> list[torch.Tensor]:
        from ..tensor.tt import matrix_to_tt_tensor

        t = matrix_to_tt_tensor(self.padded_matrix(weight), self.out_modes, self.in_modes)
        return [t.reshape(math.prod(self.sizes[:k]), -1) for k in range(1, len(self.sizes))]

    def resolve(self, weight: torch.Tensor, rule: RankRule) -> list[int]:
        n_cuts = len(self.cut_full)
        if rule.kind == "int":
            return self.feasible([rule.value] * n_cuts)
        if rule.kind == "list":
            if len(rule.value) != n_cuts:
                raise ValueError(
                    f"tt with modes {self.out_modes}×{self.in_modes} takes "
                    f"{n_cuts} inner ranks, got {list(rule.value)}"
                )
            ranks = self.feasible(list(rule.value))
            if ranks != list(rule.value):
                raise ValueError(
                    f"tt ranks {list(rule.value)} exceed what the chain allows ({ranks})"
                )
            return ranks
        if rule.kind == "fraction":
            return self.feasible([fraction_rank(rule.value, f) for f in self.cut_full])
        return self.feasible([measure_rank(u, rule) for u in self.unfoldings(weight)])

    def factor_params(self, ranks: list[int]) -> int:
        r = [1, *ranks, 1]
        return sum(r[k] * s * r[k + 1] for k, s in enumerate(self.sizes))

    def factor_macs(self, ranks: list[int], geom: Geometry) -> int:
        r = [1, *ranks, 1]
        total = 0
        for k, (m, n) in enumerate(zip(self.out_modes, self.in_modes)):
            a = math.prod(self.out_modes[:k])
            rest = math.prod(self.in_modes[k + 1 :])
            total += a * rest * r[k] * n * m * r[k + 1]
        return geom.positions * total

    def ladder(self) -> list[list[int]]:
        dense = self.dense_params() - (self.o if self.bias else 0)
        out: list[list[int]] = []
        for cap in range(1, max(self.cut_full) + 1):
            ranks = self.feasible([cap] * len(self.cut_full))
            if self.factor_params(ranks) < dense and ranks not in out:
                out.append(ranks)
        return out

    def build(self, weight: torch.Tensor, ranks: list[int]) -> FactorizedModule:
        r = [1, *ranks, 1]
        if self.linear:
            m: FactorizedModule = TTLinear(
                self.cin, self.o, self.in_modes, self.out_modes, r, bias=self.bias
            )
        else:
            m = TTConv2d(
                **self.spec.config(),
                in_modes=self.in_modes[:-1],
                out_modes=self.out_modes[:-1],
                ranks=r,
            )
        cores = tt_matrix(self.padded_matrix(weight), self.out_modes, self.in_modes, ranks)
        with torch.no_grad():
            for param, core in zip(m.cores, cores):
                param.copy_(core)
            if m.dense_bias is not None:
                m.dense_bias.zero_()
        return m


FORMAT_CLASSES: dict[str, type[Format]] = {
    cls.name: cls for cls in (SVDFormat, SpatialSVDFormat, TuckerFormat, CPFormat, TTFormat)
}


def make_format(module: nn.Module, name: str, options: dict[str, Any] | None = None) -> Format:
    """The format ``name`` for ``module``; Unsupported (a ValueError) when it cannot apply."""
    if name not in FORMAT_CLASSES:
        raise ValueError(f"unknown format {name!r}; allowed: {', '.join(FORMATS)}")
    return FORMAT_CLASSES[name](module, options)
