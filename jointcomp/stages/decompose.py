"""Stage ``decompose``: replace Linear/Conv2d layers by low-rank (optionally low-rank + sparse)
factorized layers, fine-tune, then pick each layer's faster execution.

Ranks come per layer (an int, a fraction, ``energy:x``, ``effective``, ``vbmf``,
``indicator:x``, set for all layers or per pattern in ``overrides``) or from a global budget (a
fraction of the decomposable layers' params or MACs) allocated greedily by measured
validation-loss increase per unit saved (``jointcomp.allocate``).

With ``embeddings``, embedding tables become low-rank factorized tables E ≈ A·B (ALBERT's
factorized embedding parametrization, ``jointcomp.nn.LowRankEmbedding``) from their truncated
SVD, at a rank given as for a layer.

Record: ``layers`` (per layer: format, ranks, params and MACs before/after, execution and its
timings), ``embeddings`` (per factorized table: rank, params before/after, relative error),
``skipped`` (with reasons), ``budget`` (the allocation), ``finetune_loss``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from ..allocate import Ladder, SensitivityBatches, allocate, interpolate_losses, sample_indices
from ..batches import to_device
from ..config import Scope, StageConfig, Strict, first_match
from ..context import Context, Step
from ..errors import ModelError
from ..nn import (
    FactorizedModule,
    LowRankEmbedding,
    LowRankPlusSparse,
    Unsupported,
    decompose_at,
    make_format,
    rel_error,
)
from ..nn.formats import Format, Geometry, dense_macs
from ..nn.layer_trace import trace_layers
from ..nn.modules import classifier_names, set_module
from ..nn.ranks import fraction_rank, measure_rank, parse_rank
from ..nn.sparsity import mark_fixed_zeros
from ..training import FinetuneSpec

FormatName = Literal["svd", "svd_spatial", "tucker2", "cp", "tt"]
RankSpec = int | float | str | list[int] | None


def _check_rank(v: Any) -> Any:
    if v is not None:
        parse_rank(v)
    return v


class LayerDecompose(Strict):
    """Overrides for the layers a pattern matches (unset keys inherit the stage's)."""

    format: FormatName | None = None
    rank: RankSpec = None
    sparse: float | None = Field(None, ge=0, lt=1)
    tt_cores: int | None = Field(None, ge=2)

    @field_validator("rank")
    @classmethod
    def _rank(cls, v: Any) -> Any:
        return _check_rank(v)


class DecomposeBudget(SensitivityBatches):
    """A global budget: keep this fraction of the decomposable layers' params or MACs."""

    params: float | None = Field(None, gt=0, lt=1)
    macs: float | None = Field(None, gt=0, lt=1)
    levels: int = Field(8, ge=2, description="rank settings measured per layer (rest interpolated)")

    @model_validator(mode="after")
    def _one(self) -> DecomposeBudget:
        if (self.params is None) == (self.macs is None):
            raise ValueError("give exactly one of params or macs")
        return self


class EmbeddingDecompose(Strict):
    """Low-rank factorized embedding tables (ALBERT): each nn.Embedding in scope becomes
    E ≈ A·B, a [tokens, rank] table and a [rank, width] projection (``LowRankEmbedding``),
    from the table's truncated SVD."""

    rank: int | float | str = Field(
        description="int, fraction of full rank (min(tokens, width)), energy:X, effective, "
        "vbmf or indicator:X"
    )
    scope: Scope = Field(
        default_factory=Scope, description="the embedding tables to factorize (by name)"
    )
    overrides: dict[str, int | float | str] = Field(
        default_factory=dict,
        description="per-table rank by name pattern (what a target's plan sets); the first "
        "matching pattern wins",
    )

    @field_validator("rank")
    @classmethod
    def _rank(cls, v: Any) -> Any:
        return _check_rank(v)

    @field_validator("overrides")
    @classmethod
    def _ranks(cls, v: dict[str, Any]) -> dict[str, Any]:
        for rank in v.values():
            _check_rank(rank)
        return v

    def rank_of(self, name: str) -> int | float | str:
        """Table ``name``'s rank: its first matching override, else ``rank``."""
        found = first_match(name, self.overrides)
        return self.rank if found is None else found


class DecomposeConfig(StageConfig):
    """Which layers to factorize, in which format, at which rank."""

    stage = "decompose"

    scope: Scope = Field(default_factory=Scope, description="the layers to decompose")
    format: FormatName | None = Field(
        None,
        description="svd | svd_spatial | tucker2 | cp | tt; default tucker2 for k×k convs, "
        "svd for Linear and 1×1 convs",
    )
    rank: RankSpec = Field(
        None,
        description="int, fraction of full rank, energy:X, effective, vbmf, indicator:X, or a "
        "list (tucker2 [r_out, r_in], tt inner ranks); unused under a budget",
    )
    sparse: float = Field(0.0, ge=0, lt=1, description="density of the sparse residual S")
    tt_cores: int = Field(3, ge=2, description="number of TT cores (format tt)")
    overrides: dict[str, LayerDecompose] = Field(
        default_factory=dict,
        description="per-layer format/rank/sparse by name pattern; the first matching pattern wins",
    )
    budget: DecomposeBudget | None = None
    embeddings: EmbeddingDecompose | None = Field(
        None,
        description="also factorize embedding tables (E ≈ A·B); the Linear/Conv2d layers are "
        "decomposed only when a rank or budget is given for them",
    )
    min_saving: float = Field(
        0.0, ge=0, lt=1, description="skip a layer unless it saves at least this fraction"
    )
    execution: Literal["auto", "factorized", "dense"] = Field(
        "auto", description="auto: time both on one example after fine-tuning, keep the faster"
    )
    timing_threads: int = Field(1, ge=1, description="torch threads while timing (as the audit)")
    timing_seconds: float = Field(0.05, gt=0, description="timing per execution and round")
    sparse_rounds: int = Field(3, ge=1, description="alternations of the low-rank + sparse split")
    cp_iters: int = Field(100, ge=1, description="CP-ALS sweeps")
    finetune: FinetuneSpec = Field(default_factory=FinetuneSpec)

    @field_validator("rank")
    @classmethod
    def _rank(cls, v: Any) -> Any:
        return _check_rank(v)

    @model_validator(mode="after")
    def _ranks(self) -> DecomposeConfig:
        if not self.layers_asked and self.embeddings is None:
            raise ValueError("give a rank (for all layers or in overrides), or a budget")
        return self

    @property
    def layers_asked(self) -> bool:
        """Whether Linear/Conv2d layers are to be decomposed (a rank or budget for them)."""
        overridden = any(o.rank is not None for o in self.overrides.values())
        return self.budget is not None or self.rank is not None or overridden

    def layer(self, name: str) -> LayerDecompose:
        """The settings of layer ``name``: the stage's, updated by its first matching override."""
        own = LayerDecompose(
            format=self.format, rank=self.rank, sparse=self.sparse, tt_cores=self.tt_cores
        )
        override = first_match(name, self.overrides)
        if override is None:
            return own
        return own.model_copy(update=override.model_dump(exclude_none=True))


def _no_saving_reason(module: nn.Module, fmt_name: str) -> str:
    if isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels:
        k = "×".join(map(str, module.kernel_size))
        return (
            f"depthwise conv: each group's kernel is {module.out_channels // module.groups}"
            f"×1×{k}; no {fmt_name} rank holds fewer numbers"
        )
    return f"no {fmt_name} rank holds fewer numbers than the dense layer"


def _default_format(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d) and tuple(module.kernel_size) != (1, 1):
        return "tucker2"
    return "svd"


Plan = tuple[nn.Module, Format, LayerDecompose, Geometry]


def decompose(model: nn.Module, config: DecomposeConfig, context: Context) -> Step:
    """Factorize the layers ``config`` selects (in place), fine-tune, choose executions."""
    model = model.to(context.device).eval()
    record: dict[str, Any] = {}
    tables = _factorize_embeddings(model, config, context) if config.embeddings else []
    plans, skipped = _plan(model, config, context) if config.layers_asked else ({}, [])
    if config.budget is not None:
        chosen = _allocate(model, config, context, plans, skipped, record)
    else:
        chosen = {}
        for name, (module, fmt, spec, _) in plans.items():
            try:
                chosen[name] = fmt.resolve(
                    module.weight.detach().cpu().float(), parse_rank(spec.rank)
                )
            except ValueError as exc:
                raise ModelError(f"decompose: layer {name} ({fmt.name}): {exc}") from None
    infos = _replace(model, config, plans, chosen, skipped)
    if infos or tables:
        fit = context.train(model, config.finetune, description="decompose")
        record["finetune_loss"] = fit.loss if fit else None
    _choose_execution(model, config, context, infos)
    before = sum(i["params_before"] for i in infos + tables)
    after = sum(i["params_after"] for i in infos + tables)
    record.update(
        layers=infos, embeddings=tables, skipped=skipped, params_before=before, params_after=after
    )
    context.log(
        f"{len(infos)} layers and {len(tables)} embedding tables decomposed ({before:,} → "
        f"{after:,} params), {len(skipped)} skipped"
    )
    return Step(model, record)


# --- embedding tables ----------------------------------------------------------------------


def _factorize_embeddings(
    model: nn.Module, config: DecomposeConfig, context: Context
) -> list[dict[str, Any]]:
    """Replace each nn.Embedding in scope by its truncated-SVD LowRankEmbedding (when that
    holds fewer numbers); one record row per table."""
    spec = config.embeddings
    assert spec is not None
    rows = []
    tables = [(n, m) for n, m in model.named_modules() if type(m) is nn.Embedding]
    for name, table in tables:
        if not spec.scope.selects(name):
            continue
        rule = parse_rank(spec.rank_of(name))
        weight = table.weight.detach().cpu().float()
        full = min(weight.shape)
        if rule.kind == "int":
            rank = min(rule.value, full)
        elif rule.kind == "fraction":
            rank = fraction_rank(rule.value, full)
        else:
            rank = measure_rank(weight, rule)
        tokens, width = weight.shape
        if rank * (tokens + width) >= tokens * width:
            context.log(f"embedding {name}: rank {rank} holds no fewer numbers; left whole")
            continue
        new = LowRankEmbedding.from_embedding(table, rank)
        with torch.no_grad():
            error = rel_error(table.weight.detach(), new.reconstruct_weight())
        set_module(model, name, new)
        rows.append(
            {
                "name": name,
                "format": "svd",
                "ranks": [rank],
                "params_before": table.weight.numel(),
                "params_after": new.factor_params(),
                "rel_error": round(error, 6),
            }
        )
    return rows


# --- planning ------------------------------------------------------------------------------


def _plan(
    model: nn.Module, config: DecomposeConfig, context: Context
) -> tuple[dict[str, Plan], list[dict[str, str]]]:
    """Candidates (name → module, format, settings, geometry) and the skipped with reasons."""
    example = context.example()
    classifier = set(classifier_names(model, example)) if config.scope.exclude_classifier else set()
    layers = [(n, m) for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d)]
    geoms, _ = trace_layers(model, [n for n, _ in layers], example)
    plans: dict[str, Plan] = {}
    skipped: list[dict[str, str]] = []
    for name, module in layers:
        reason = config.scope.why_not(name)
        if reason == "not matched by scope.include":
            continue  # not asked for: not listed
        spec = config.layer(name)
        if reason is None and name in classifier:
            reason = "classifier (scope.exclude_classifier)"
        elif reason is None and name not in geoms:
            reason = "not reached by a forward pass on an example input"
        elif reason is None and spec.rank is None and config.budget is None:
            reason = "no rank for this layer (set rank, an override's rank, or a budget)"
        if reason is None:
            fmt_name = spec.format or _default_format(module)
            try:
                fmt = make_format(
                    module,
                    fmt_name,
                    {"tt_cores": spec.tt_cores, "cp_iters": config.cp_iters, "seed": context.seed},
                )
                if not fmt.ladder():
                    reason = _no_saving_reason(module, fmt_name)
            except Unsupported as exc:
                reason = str(exc)
        if reason is not None:
            skipped.append({"name": name, "reason": reason})
            continue
        plans[name] = (module, fmt, spec, geoms[name])
    return plans, skipped


def _cost(fmt: Format, ranks: list[int] | None, spec: LayerDecompose, geom: Geometry, macs: bool):
    """Params or MACs of one layer at ``ranks`` (None = dense)."""
    if ranks is None:
        return dense_macs(fmt.spec, geom) if macs else fmt.dense_params()
    nnz = round((spec.sparse or 0.0) * fmt.o * fmt.cin * fmt.kh * fmt.kw)
    if macs:
        return fmt.factor_macs(ranks, geom) + nnz * geom.positions
    return fmt.params(ranks) + nnz


# --- budget --------------------------------------------------------------------------------


def _allocate(
    model: nn.Module,
    config: DecomposeConfig,
    context: Context,
    plans: dict[str, Plan],
    skipped: list[dict[str, str]],
    record: dict[str, Any],
) -> dict[str, list[int]]:
    budget = config.budget
    assert budget is not None
    use_macs = budget.macs is not None
    fraction = budget.macs if use_macs else budget.params
    batches = context.validation(budget.batches, budget.batch_size)
    base = context.loss(model, batches)
    ladders, options = [], {}
    for name, (module, fmt, spec, geom) in plans.items():
        dense_cost = _cost(fmt, None, spec, geom, use_macs)
        max_params = (1 - config.min_saving) * fmt.dense_params()
        ranks = [
            r
            for r in fmt.ladder()
            if _cost(fmt, r, spec, geom, use_macs) < dense_cost
            and _cost(fmt, r, spec, geom, False) <= max_params
        ]
        if not ranks:
            ladders.append(Ladder(name, [dense_cost], [base]))
            options[name] = [None]
            continue
        costs = [_cost(fmt, r, spec, geom, use_macs) for r in ranks] + [dense_cost]
        measured = {}
        for i in sample_indices(len(ranks), budget.levels):
            new, _ = decompose_at(
                module, fmt, ranks[i], spec.sparse or 0.0, name=name, sparse_rounds=1
            )
            set_module(model, name, new)
            measured[i] = context.loss(model, batches)
            set_module(model, name, module)
        measured[len(ranks)] = base
        ladders.append(Ladder(name, costs, interpolate_losses(costs, measured, base)))
        options[name] = [*ranks, None]
        context.log(f"sensitivity {name}: {len(measured) - 1} rank settings measured")
    total_dense = sum(lad.costs[-1] for lad in ladders)
    target = fraction * total_dense
    try:
        pos, total = allocate(ladders, target)
    except ValueError as exc:
        smallest = sum(lad.costs[0] for lad in ladders) / max(1, total_dense)
        raise ModelError(
            f"decompose: budget {'macs' if use_macs else 'params'}: {fraction} cannot be met: "
            f"{exc} (the smallest ranks keep {smallest:.3f} of the decomposable layers)"
        ) from None
    chosen = {}
    for lad in ladders:
        ranks = options[lad.name][pos[lad.name]]
        if ranks is None:
            skipped.append({"name": lad.name, "reason": "kept dense by the budget allocation"})
        else:
            chosen[lad.name] = ranks
    record["budget"] = {
        "kind": "macs" if use_macs else "params",
        "fraction": fraction,
        "dense": int(total_dense),
        "target": round(target, 1),
        "achieved": int(total),
        "achieved_fraction": round(total / max(1, total_dense), 5),
        "base_loss": round(base, 5),
    }
    return chosen


# --- replacement, execution ----------------------------------------------------------------


def _replace(
    model: nn.Module,
    config: DecomposeConfig,
    plans: dict[str, Plan],
    chosen: dict[str, list[int]],
    skipped: list[dict[str, str]],
) -> list[dict]:
    infos = []
    for name, (module, fmt, spec, geom) in plans.items():
        if name not in chosen:
            continue
        ranks = chosen[name]
        new, info = decompose_at(
            module, fmt, ranks, spec.sparse or 0.0, name=name, sparse_rounds=config.sparse_rounds
        )
        if info["params_after"] > (1 - config.min_saving) * info["params_before"] or (
            info["params_after"] >= info["params_before"]
        ):
            skipped.append(
                {
                    "name": name,
                    "reason": (
                        f"{info['format']} at ranks {ranks} keeps {info['params_after']:,} of "
                        f"{info['params_before']:,} params: no saving worth it"
                    ),
                }
            )
            continue
        set_module(model, name, new)
        info["macs_before"] = dense_macs(fmt.spec, geom)
        info["macs_after"] = _cost(fmt, ranks, spec, geom, macs=True)
        infos.append(info)
        if isinstance(new, LowRankPlusSparse):
            mark_fixed_zeros(model, [f"{name}.sparse"])  # the encoder codes their positions
    return infos


def _choose_execution(
    model: nn.Module, config: DecomposeConfig, context: Context, infos: list[dict]
) -> None:
    modules = dict(model.named_modules())
    if config.execution != "auto":
        for info in infos:
            modules[info["name"]].execution = config.execution
            info["execution"] = config.execution
        return
    # each layer is timed on CPU (where the audit measures latency) with its real input
    cpu_model = model.to("cpu")
    example = to_device(context.example(), "cpu")
    _, inputs = trace_layers(cpu_model, [i["name"] for i in infos], example)
    for info in infos:
        layer: FactorizedModule = modules[info["name"]]
        if info["name"] not in inputs:
            info["execution"] = layer.execution
            continue
        times = layer.choose_execution(
            inputs[info["name"]], threads=config.timing_threads, min_run_time=config.timing_seconds
        )
        info["execution"] = layer.execution
        info["latency_us"] = {k: round(v * 1e3, 2) for k, v in times.items()}
    model.to(context.device)
