"""Stage ``share``: weight sharing through shared tensor-ring cores (T-Basis, Obukhov et al.,
ICML 2020). Every selected Conv2d/Linear becomes a ring of cores drawn from one basis of
``basis`` cores of ``rank``×``mode``×``rank``; each core costs ``basis`` coefficients plus
``rank`` scalings (the paper's rank adaptation). Dimensions are padded until they factor into
modes that fit ``mode``; the padding is recorded per layer.

The basis and coefficients are fitted to the trained weights (``jointcomp.tensor.tbasis``:
TT-SVD of every layer, a packed or PCA start, L-BFGS on each layer's error in the metric of
its inputs on ``fit_batches`` training batches, i.e. on the error of its outputs), the batch
norms re-estimate their statistics (``bn_batches``), then the network is fine-tuned end to
end, distilling from the original. ``fold_bn`` then folds the batch norms after shared layers
into the layers (or leave them in for quantization-aware training and fold them afterwards
with the ``fold`` stage), and ``equalize`` moves each table row's and layer's magnitude where
one integer grid per table quantizes every layer alike (the network computes the same
function). With ``coupled``, layers of identical layout (e.g. the blocks of one ResNet stage)
also share their first ``coupled_cores`` cores.

Record: ``layers`` (per layer: shape, padded shape, padding, cores, modes, coefficient count,
relative error of the fit), ``fit``, ``equalized`` and ``summary`` (basis, coefficient and other
parameters, their fp32 bytes, and the fraction of the original parameters with and without the
basis).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from ..config import Scope, StageConfig
from ..context import Context, Step
from ..errors import ModelError
from ..nn.bnfold import fold_batchnorms
from ..nn.modules import count_params, set_module
from ..nn.tbasis import TBasis, TBasisCoefficients, TBasisConv2d, TBasisLinear
from ..nn.tbasis_equalize import equalize_tbasis
from ..tensor.tbasis import ModePlan, fit_tbasis, pad_weight, plan_modes
from ..training import FinetuneSpec, recalibrate_batchnorm
from .share_inputs import input_metrics


class ShareConfig(StageConfig):
    """The shared basis (B cores of R×n×R) and which layers draw from it."""

    stage = "share"

    basis: int = Field(16, ge=1, le=4096, description="B: number of basis cores")
    rank: int = Field(16, ge=1, le=512, description="R: the ring rank of every core")
    mode: int = Field(9, ge=2, le=256, description="n: the mode size of every core")
    scope: Scope = Field(default_factory=Scope, description="the Conv2d/Linear layers to share")
    coupled: bool = Field(
        False, description="layers of identical layout also share their leading cores"
    )
    coupled_cores: int = Field(
        2, ge=1, description="coupled: how many leading cores a group shares (at most d − 1)"
    )
    max_pad: float = Field(
        0.25, ge=0, le=4, description="padding allowed per dimension to reach factorable sizes"
    )
    init: Literal["packed", "pca"] = Field(
        "packed",
        description="start of the fit: packed (every layer's TT-SVD at a rank r written into "
        "its own block slots of the basis, so the rings start equal to the TTs) or pca (the "
        "top singular vectors of all TT-SVD cores at rank R, least-squares coefficients)",
    )
    fit_steps: int = Field(
        400,
        ge=0,
        description="L-BFGS steps refining basis, coefficients and rank scalings on every "
        "layer's error (in its input metric with fit_batches, else on its weights)",
    )
    fit_batches: int = Field(
        4,
        ge=0,
        description="training batches whose layer inputs weigh the fit: each layer's error is "
        "that of its outputs on those inputs, not of its weights (0: fit the weights)",
    )
    fit_ridge: float = Field(
        0.05,
        ge=0,
        description="fit_batches: share of the mean input energy added to every direction, so "
        "directions the batches never excite still count",
    )
    bn_batches: int = Field(
        16,
        ge=0,
        description="training batches that re-estimate the batch norms' statistics after the "
        "fit, before fine-tuning (0: keep the original network's)",
    )
    finetune: FinetuneSpec = Field(
        default_factory=FinetuneSpec, description="end-to-end training after the fit"
    )
    fold_bn: bool = Field(
        False,
        description="after fine-tuning, fold each batch norm that directly follows a shared "
        "layer into the layer's per-channel output scale and bias (no running statistics in "
        "the file; the batch norm becomes Identity)",
    )
    equalize: bool = Field(
        True,
        description="last, move each coefficient row's magnitude into its rank scaling and "
        "each layer's into the batch norm or output scale after it, so that one integer grid "
        "per table quantizes every layer alike (the network computes the same function)",
    )


class _Candidate:
    """One layer to share: its module, layout, padded weight and mask."""

    def __init__(self, name: str, module: nn.Module, plan: ModePlan) -> None:
        self.name, self.module, self.plan = name, module, plan
        weight = module.weight.detach().to("cpu", torch.float64)
        self.matrix, self.mask = pad_weight(weight, plan)
        self.rows: list[int] = []

    @property
    def kernel(self) -> tuple[int, ...]:
        return tuple(self.module.kernel_size) if isinstance(self.module, nn.Conv2d) else ()

    def group_key(self) -> tuple[Any, ...]:
        return (type(self.module), self.plan.out_modes, self.plan.in_modes, self.kernel)


def share(model: nn.Module, config: ShareConfig, context: Context) -> Step:
    """Replace the layers ``config.scope`` selects by T-Basis layers on one shared basis (in
    place), fitted to the trained weights, then fine-tune."""
    p = config
    start = time.perf_counter()
    model = model.to(context.device).eval()
    params_before = count_params(model)
    candidates, skipped = _plan(model, p)
    if not candidates:
        raise ModelError(
            "share: no layer to share (every Conv2d/Linear is out of scope or saves nothing): "
            f"{skipped}"
        )
    n_rows = _assign_rows(candidates, p)
    metrics = None
    if p.fit_batches:
        metrics = input_metrics(
            model,
            [c.name for c in candidates],
            [c.plan for c in candidates],
            context.calibration(p.fit_batches),
            context.device,
            ridge=p.fit_ridge,
            seed=context.seed,
        )
    fit = fit_tbasis(
        [c.matrix for c in candidates],
        [(c.plan.out_modes, c.plan.in_modes) for c in candidates],
        [c.rows for c in candidates],
        basis_size=p.basis,
        rank=p.rank,
        mode=p.mode,
        masks=[c.mask for c in candidates],
        init=p.init,
        steps=p.fit_steps,
        seed=context.seed,
        input_metrics=metrics,
    )
    basis = TBasis(p.basis, p.rank, p.mode)
    table = TBasisCoefficients(n_rows, p.basis, p.rank)
    with torch.no_grad():
        basis.basis.copy_(fit.basis)
        table.coef.copy_(fit.coef)
        table.rank_scale.copy_(fit.rank_scale)
    basis.to(context.device)
    table.to(context.device)
    rows = []
    for j, c in enumerate(candidates):
        layer = _layer(c, p, n_rows)
        layer.share(basis, table)
        set_module(model, c.name, layer.to(context.device))
        rows.append(
            {
                "name": c.name,
                "shape": list(c.module.weight.shape),
                "padded": [c.plan.out_padded, c.plan.in_padded, *c.kernel],
                "padding": c.plan.padding,
                "cores": c.plan.cores,
                "modes": [f"{o}x{i}" for o, i in zip(c.plan.out_modes, c.plan.in_modes)],
                "mode_fill": round(c.plan.mode_fill(p.mode), 3),
                "rows": c.rows,
                "params_before": c.module.weight.numel(),
                "coefficients": layer.coefficient_params(),
                "rel_error_tt": round(fit.rel_error_tt[j], 4),
                "rel_error_init": round(fit.rel_error[j], 4),
            }
        )
    record: dict[str, Any] = {"layers": rows, "skipped": skipped}
    record["fit"] = {
        "init": fit.init,
        "block": fit.block,
        "layers_placed": fit.placed,
        "steps": p.fit_steps,
        "metric": "inputs" if metrics is not None else "weights",
        "mean_rel_error_tt": _mean(fit.rel_error_tt),
        "mean_rel_error_start": _mean(fit.rel_error_start),
        "mean_rel_error": _mean(fit.rel_error),
        "seconds": round(time.perf_counter() - start, 2),
    }
    if p.bn_batches:
        recalibrate_batchnorm(model, context.calibration(p.bn_batches), context.device)
    record["metric_fit"] = context.score(model)
    context.log(
        f"{len(candidates)} layers on one basis of {p.basis}×[{p.rank},{p.mode},{p.rank}] "
        f"(mean rel. error: TT-SVD {record['fit']['mean_rel_error_tt']:.3f}, fitted "
        f"{record['fit']['mean_rel_error']:.3f})"
    )
    result = context.train(model, p.finetune, description="share")
    record["finetune_loss"] = result.loss if result else None
    if p.fold_bn:
        shared = {c.name for c in candidates}
        folded, not_folded = fold_batchnorms(model, lambda name: name in shared)
        record["bn_folded"] = folded
        record["bn_not_folded"] = not_folded
        context.log(f"folded {len(folded)} batch norm(s) into shared layers")
    if p.equalize:
        record["equalized"] = equalize_tbasis(model)
    record["summary"] = _summary(model, basis, table, params_before)
    return Step(model, record)


# --- planning ------------------------------------------------------------------------------


def _plan(model: nn.Module, p: ShareConfig) -> tuple[list[_Candidate], list[dict]]:
    candidates, skipped = [], []
    for name, module in model.named_modules():
        if type(module) not in (nn.Conv2d, nn.Linear):
            continue
        reason = p.scope.why_not(name)
        if reason == "not matched by scope.include":
            continue
        if reason is not None:
            skipped.append({"name": name, "reason": reason})
            continue
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            skipped.append({"name": name, "reason": f"grouped conv (groups={module.groups})"})
            continue
        kernel = tuple(module.kernel_size) if isinstance(module, nn.Conv2d) else ()
        out_size, in_size = module.weight.shape[:2]
        try:
            plan = plan_modes(out_size, in_size, p.mode, kernel, max_pad_fraction=p.max_pad)
        except ValueError as exc:
            raise ModelError(f"share: layer {name}: {exc}") from None
        cost = plan.cores * (p.basis + p.rank)
        if cost >= module.weight.numel():
            skipped.append(
                {
                    "name": name,
                    "reason": f"{plan.cores} cores × {p.basis + p.rank} coefficients = "
                    f"{cost:,} ≥ its {module.weight.numel():,} weights",
                }
            )
            continue
        candidates.append(_Candidate(name, module, plan))
    return candidates, skipped


def _assign_rows(candidates: list[_Candidate], p: ShareConfig) -> int:
    """Table rows per core: own rows, or (coupled) the leading rows of each group of
    identically laid-out layers in common."""
    groups: dict[tuple[Any, ...], list[_Candidate]] = {}
    for c in candidates:
        groups.setdefault(c.group_key() if p.coupled else (c.name,), []).append(c)
    n = 0
    for members in groups.values():
        d = members[0].plan.cores
        shared = min(p.coupled_cores, d - 1) if len(members) > 1 else 0
        common = list(range(n, n + shared))
        n += shared
        for c in members:
            c.rows = common + list(range(n, n + d - shared))
            n += d - shared
    return n


def _layer(c: _Candidate, p: ShareConfig, n_rows: int) -> nn.Module:
    m = c.module
    common = {
        "out_modes": list(c.plan.out_modes),
        "in_modes": list(c.plan.in_modes),
        "basis_size": p.basis,
        "rank": p.rank,
        "mode": p.mode,
        "rows": c.rows,
        "table_rows": n_rows,
        "bias": m.bias is not None,
    }
    if isinstance(m, nn.Linear):
        layer: nn.Module = TBasisLinear(m.in_features, m.out_features, **common)
    else:
        layer = TBasisConv2d(
            m.in_channels,
            m.out_channels,
            list(m.kernel_size),
            stride=list(m.stride),
            padding=m.padding if isinstance(m.padding, str) else list(m.padding),
            dilation=list(m.dilation),
            padding_mode=m.padding_mode,
            **common,
        )
    if m.bias is not None:
        with torch.no_grad():
            layer.bias.copy_(m.bias)
    return layer


def _summary(
    model: nn.Module, basis: TBasis, table: TBasisCoefficients, params_before: int
) -> dict[str, Any]:
    """Parameters (and fp32 bytes) of the basis, the coefficient table and the rest."""
    n_basis = basis.basis.numel()
    n_coef = table.coef.numel() + table.rank_scale.numel()
    total = count_params(model)
    rest = total - n_basis - n_coef
    return {
        "params_before": params_before,
        "params_after": total,
        "basis_params": n_basis,
        "coefficient_params": n_coef,
        "rest_params": rest,
        "padding_entries": sum(
            m.plan.padding for m in model.modules() if isinstance(m, (TBasisConv2d, TBasisLinear))
        ),
        "fraction": round(total / params_before, 5),
        "fraction_without_basis": round((total - n_basis) / params_before, 5),
        "basis_bytes_f32": 4 * n_basis,
        "coefficient_bytes_f32": 4 * n_coef,
        "rest_bytes_f32": 4 * rest,
    }


def _mean(values: list[float]) -> float:
    return round(sum(values) / max(1, len(values)), 4)
