"""Stage ``decompose``: replace Linear/Conv2d layers by low-rank (optionally low-rank + sparse)
factorized layers, fine-tune with distillation, then pick each layer's faster execution.

Ranks come per layer pattern (an int, a fraction, ``energy:x``, ``effective``, ``vbmf``,
``indicator:x``) or from a global budget (a fraction of the decomposable layers' params or MACs)
allocated greedily by measured validation-loss increase per unit saved.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from torch import nn

from ..errors import ModelError
from ..nn import FactorizedModule, LowRankPlusSparse, Unsupported, decompose_at, make_format
from ..nn.formats import Format, Geometry, dense_macs
from ..nn.ranks import parse_rank
from ..recipe import FinetuneSpec, Strict
from ..train import evaluate_loss, first_batches
from .base import Stage, StageContext, StageParams, classifier_names, first_match, match_any
from .budget import Ladder, allocate, interpolate_losses, sample_indices
from .layerops import set_module, trace_layers

FormatName = Literal["svd", "svd_spatial", "tucker2", "cp", "tt"]


class LayerSpec(Strict):
    """How to decompose the layers a pattern matches."""

    format: FormatName | None = Field(
        None,
        description="svd | svd_spatial | tucker2 | cp | tt; default tucker2 for k×k "
        "convs, svd for Linear and 1×1 convs",
    )
    rank: int | float | str | list[int] | None = Field(
        None,
        description="int, fraction of full rank, energy:X, effective, vbmf, indicator:X, "
        "or a list (tucker2 [r_out, r_in], tt inner ranks); unused under a budget",
    )
    sparse: float = Field(0.0, ge=0, lt=1, description="density of the sparse residual S")
    tt_cores: int = Field(3, ge=2, description="number of TT cores (format tt)")

    @field_validator("rank")
    @classmethod
    def _rank(cls, v: Any) -> Any:
        if v is not None:
            parse_rank(v)
        return v


class BudgetSpec(Strict):
    """A global budget: keep this fraction of the decomposable layers' params or MACs."""

    params: float | None = Field(None, gt=0, lt=1)
    macs: float | None = Field(None, gt=0, lt=1)
    batches: int = Field(2, ge=1, description="validation batches for the sensitivities")
    batch_size: int = Field(128, ge=1)
    levels: int = Field(8, ge=2, description="rank settings measured per layer (rest interpolated)")

    @model_validator(mode="after")
    def _one(self) -> BudgetSpec:
        if (self.params is None) == (self.macs is None):
            raise ValueError("give exactly one of params or macs")
        return self


class DecomposeParams(StageParams):
    layers: dict[str, LayerSpec] = Field(
        default_factory=lambda: {"*": LayerSpec()},
        description="name pattern → {format, rank, sparse}; the first matching pattern wins",
    )
    skip: list[str] = Field(default_factory=list, description="layer name patterns left dense")
    skip_classifier: bool = Field(False, description="leave the output layer dense")
    budget: BudgetSpec | None = None
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

    @model_validator(mode="after")
    def _ranks(self) -> DecomposeParams:
        if self.budget is None:
            missing = [p for p, spec in self.layers.items() if spec.rank is None]
            if missing:
                raise ValueError(f"layers {missing}: give a rank, or a budget for all layers")
        return self


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


class DecomposeStage(Stage):
    name = "decompose"
    Params = DecomposeParams

    def apply(self, model: nn.Module, ctx: StageContext) -> nn.Module:
        p: DecomposeParams = self.params  # type: ignore[assignment]
        model = model.to(ctx.device).eval()
        plans, skipped = self._plan(model, ctx, p)
        if p.budget is not None:
            chosen = self._allocate(model, ctx, p, plans, skipped)
        else:
            chosen = {}
            for name, (module, fmt, spec, _) in plans.items():
                try:
                    chosen[name] = fmt.resolve(
                        module.weight.detach().cpu().float(), parse_rank(spec.rank)
                    )
                except ValueError as exc:
                    raise ModelError(f"decompose: layer {name} ({fmt.name}): {exc}") from None
        infos = self._replace(model, ctx, p, plans, chosen, skipped)
        if infos:
            fit = ctx.finetune(model, p.finetune, description="decompose")
            ctx.record["finetune_loss"] = fit.loss
        self._choose_execution(model, ctx, p, infos)
        ctx.record["layers"] = infos
        ctx.record["skipped"] = skipped
        before = sum(i["params_before"] for i in infos)
        after = sum(i["params_after"] for i in infos)
        ctx.record.update(params_before=before, params_after=after)
        ctx.log(
            f"{len(infos)} layers decomposed ({before:,} → {after:,} params), "
            f"{len(skipped)} skipped"
        )
        return model

    # --- planning ------------------------------------------------------------------------

    def _plan(self, model: nn.Module, ctx: StageContext, p: DecomposeParams):
        """Candidates (name → module, format, spec, geometry) and the skipped with reasons."""
        classifier = (
            set(classifier_names(model, ctx.data.num_classes)) if p.skip_classifier else set()
        )
        layers = [(n, m) for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d)]
        geoms, _ = trace_layers(model, [n for n, _ in layers], ctx.example_inputs(1))
        plans: dict[str, tuple[nn.Module, Format, LayerSpec, Geometry]] = {}
        skipped: list[dict[str, str]] = []
        for name, module in layers:
            spec = first_match(name, p.layers)
            if spec is None:
                continue
            reason = None
            if match_any(name, p.skip):
                reason = "matches a skip pattern"
            elif name in classifier:
                reason = "classifier (skip_classifier)"
            elif name not in geoms:
                reason = "not reached by a forward pass on an example input"
            if reason is None:
                fmt_name = spec.format or _default_format(module)
                try:
                    fmt = make_format(
                        module,
                        fmt_name,
                        {"tt_cores": spec.tt_cores, "cp_iters": p.cp_iters, "seed": ctx.seed},
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

    def _cost(
        self, fmt: Format, ranks: list[int] | None, spec: LayerSpec, geom: Geometry, macs: bool
    ) -> int:
        """Params or MACs of one layer at ``ranks`` (None = dense)."""
        if ranks is None:
            return dense_macs(fmt.spec, geom) if macs else fmt.dense_params()
        nnz = round(spec.sparse * fmt.o * fmt.cin * fmt.kh * fmt.kw)
        if macs:
            return fmt.factor_macs(ranks, geom) + nnz * geom.positions
        return fmt.params(ranks) + nnz

    # --- budget ----------------------------------------------------------------------------

    def _allocate(
        self,
        model: nn.Module,
        ctx: StageContext,
        p: DecomposeParams,
        plans,
        skipped: list[dict[str, str]],
    ) -> dict[str, list[int]]:
        budget = p.budget
        assert budget is not None
        use_macs = budget.macs is not None
        fraction = budget.macs if use_macs else budget.params
        val = ctx.data.val if len(ctx.data.val) else ctx.data.train
        batches = first_batches(val, budget.batch_size, budget.batches)
        base = evaluate_loss(model, batches, ctx.device)
        ladders, options = [], {}
        for name, (module, fmt, spec, geom) in plans.items():
            dense_cost = self._cost(fmt, None, spec, geom, use_macs)
            max_params = (1 - p.min_saving) * fmt.dense_params()
            ranks = [
                r
                for r in fmt.ladder()
                if self._cost(fmt, r, spec, geom, use_macs) < dense_cost
                and self._cost(fmt, r, spec, geom, False) <= max_params
            ]
            if not ranks:
                ladders.append(Ladder(name, [dense_cost], [base]))
                options[name] = [None]
                continue
            costs = [self._cost(fmt, r, spec, geom, use_macs) for r in ranks] + [dense_cost]
            measured = {}
            for i in sample_indices(len(ranks), budget.levels):
                new, _ = decompose_at(
                    module, fmt, ranks[i], spec.sparse, name=name, sparse_rounds=1
                )
                set_module(model, name, new)
                measured[i] = evaluate_loss(model, batches, ctx.device)
                set_module(model, name, module)
            measured[len(ranks)] = base
            ladders.append(Ladder(name, costs, interpolate_losses(costs, measured, base)))
            options[name] = [*ranks, None]
            ctx.log(f"sensitivity {name}: {len(measured) - 1} rank settings measured")
        total_dense = sum(lad.costs[-1] for lad in ladders)
        target = fraction * total_dense
        try:
            pos, total = allocate(ladders, target)
        except ValueError as exc:
            smallest = sum(lad.costs[0] for lad in ladders) / max(1, total_dense)
            raise ModelError(
                f"decompose: budget {'macs' if use_macs else 'params'}: {fraction} "
                f"cannot be met: {exc} (the smallest ranks keep {smallest:.3f} of "
                "the decomposable layers)"
            ) from None
        chosen = {}
        for lad in ladders:
            ranks = options[lad.name][pos[lad.name]]
            if ranks is None:
                skipped.append({"name": lad.name, "reason": "kept dense by the budget allocation"})
            else:
                chosen[lad.name] = ranks
        ctx.record["budget"] = {
            "kind": "macs" if use_macs else "params",
            "fraction": fraction,
            "dense": int(total_dense),
            "target": round(target, 1),
            "achieved": int(total),
            "achieved_fraction": round(total / max(1, total_dense), 5),
            "base_loss": round(base, 5),
        }
        return chosen

    # --- replacement, execution ------------------------------------------------------------

    def _replace(
        self,
        model: nn.Module,
        ctx: StageContext,
        p: DecomposeParams,
        plans,
        chosen: dict[str, list[int]],
        skipped: list[dict[str, str]],
    ) -> list[dict]:
        infos = []
        sparse_names = []
        for name, (module, fmt, spec, geom) in plans.items():
            if name not in chosen:
                continue
            ranks = chosen[name]
            new, info = decompose_at(
                module, fmt, ranks, spec.sparse, name=name, sparse_rounds=p.sparse_rounds
            )
            if info["params_after"] > (1 - p.min_saving) * info["params_before"] or (
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
            info["macs_after"] = self._cost(fmt, ranks, spec, geom, macs=True)
            infos.append(info)
            if isinstance(new, LowRankPlusSparse):
                sparse_names.append(f"{name}.sparse")
        if sparse_names:
            ctx.mark_sparse(sparse_names)  # the encoder codes their positions
        return infos

    def _choose_execution(
        self, model: nn.Module, ctx: StageContext, p: DecomposeParams, infos: list[dict]
    ) -> None:
        modules = dict(model.named_modules())
        if p.execution != "auto":
            for info in infos:
                modules[info["name"]].execution = p.execution
                info["execution"] = p.execution
            return
        # each layer is timed on CPU (where the audit measures latency) with its real input
        cpu_model = model.to("cpu")
        _, inputs = trace_layers(
            cpu_model, [i["name"] for i in infos], ctx.example_inputs(1).to("cpu")
        )
        for info in infos:
            layer: FactorizedModule = modules[info["name"]]
            if info["name"] not in inputs:
                info["execution"] = layer.execution
                continue
            times = layer.choose_execution(
                inputs[info["name"]], threads=p.timing_threads, min_run_time=p.timing_seconds
            )
            info["execution"] = layer.execution
            info["latency_us"] = {k: round(v * 1e3, 2) for k, v in times.items()}
        model.to(ctx.device)
