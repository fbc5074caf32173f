"""Stage ``prune``: filter/channel pruning with torch-pruning, or unstructured magnitude pruning
with torch.nn.utils.prune (whose zeros stay fixed through later fine-tuning and are stored as
sparse positions in the file)."""

from __future__ import annotations

import copy
import warnings
from typing import Literal

import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..errors import ModelError
from ..recipe import FinetuneSpec
from .base import Stage, StageContext, StageParams, classifier_names, first_match, match_any

Importance = Literal["l1", "l2", "taylor", "bn_scale", "fpgm"]


class PruneParams(StageParams):
    ratio: float = Field(0.5, ge=0, lt=1, description="fraction to remove (see target)")
    target: Literal["channels", "params"] = Field(
        "channels",
        description="structured: 'channels' removes this fraction of each layer's channels "
        "(torch-pruning's ratio); 'params' searches the channel ratio that removes this fraction "
        "of the model's parameters",
    )
    structured: bool = True
    importance: Importance = "l1"
    layers: dict[str, float] = Field(
        default_factory=dict, description="per-layer ratios by name pattern, e.g. {'conv1': 0.3}"
    )
    global_ranking: bool = Field(False, description="rank channels/weights across layers")
    max_layer_ratio: float = Field(
        0.9, gt=0, le=1, description="cap per layer under global ranking"
    )
    ignore: list[str] = Field(default_factory=list, description="layer name patterns left alone")
    ignore_classifier: bool | None = Field(
        None, description="leave the output layer alone (default: yes when structured)"
    )
    iterative_steps: int = Field(1, ge=1)
    round_to: int | None = Field(None, ge=1, description="keep channel counts multiples of this")
    calibration_batches: int = Field(4, ge=1, description="batches for taylor importance")
    finetune: FinetuneSpec = Field(
        default_factory=FinetuneSpec, description="fine-tuning after each pruning step"
    )

    @model_validator(mode="after")
    def _check(self) -> PruneParams:
        for pattern, r in self.layers.items():
            if not 0 <= r < 1:
                raise ValueError(f"layers.{pattern}: a ratio must lie in [0, 1)")
        if not self.structured and self.importance not in ("l1",):
            raise ValueError(
                "unstructured pruning ranks weights by magnitude: importance must be l1"
            )
        if not self.structured and self.target != "channels":
            raise ValueError(
                "target: params applies to structured pruning; for unstructured, ratio "
                "already is the fraction of weights removed"
            )
        return self


def _prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear))
    ]


def attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """qkv projections of attention blocks (a ``qkv`` Linear beside an int ``num_heads``), so
    torch-pruning removes whole head dimensions consistently across q, k and v."""
    heads = {}
    for module in model.modules():
        qkv = getattr(module, "qkv", None)
        if isinstance(qkv, nn.Linear) and isinstance(getattr(module, "num_heads", None), int):
            heads[qkv] = module.num_heads
    return heads


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class PruneStage(Stage):
    name = "prune"
    Params = PruneParams

    def apply(self, model: nn.Module, ctx: StageContext) -> nn.Module:
        p: PruneParams = self.params  # type: ignore[assignment]
        ignore_classifier = p.structured if p.ignore_classifier is None else p.ignore_classifier
        ignored = {n for n, _ in _prunable(model) if match_any(n, p.ignore)}
        if ignore_classifier:
            ignored |= set(classifier_names(model, ctx.data.num_classes))
        before = _count(model)
        ctx.record["ignored"] = sorted(ignored)
        if p.structured:
            model = self._structured(model, ctx, p, ignored)
        else:
            self._unstructured(model, ctx, p, ignored)
        after = _count(model)
        nonzero = sum(int((q != 0).sum()) for q in model.parameters())
        ctx.record.update(params_before=before, params_after=after, nonzero_after=nonzero)
        ctx.log(f"{before:,} → {after:,} parameters ({nonzero:,} nonzero)")
        return model

    # --- structured ------------------------------------------------------------------------

    def _pruner(
        self,
        model: nn.Module,
        ctx: StageContext,
        p: PruneParams,
        ignored: set[str],
        ratio: float,
        steps: int,
    ):
        import torch_pruning as tp

        names = dict(model.named_modules())
        importance = {
            "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
            "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
            "taylor": tp.importance.GroupTaylorImportance,
            "bn_scale": tp.importance.BNScaleImportance,
            "fpgm": tp.importance.FPGMImportance,
        }[p.importance]()
        if p.importance == "bn_scale" and not any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        ):
            raise ModelError(
                "prune: importance bn_scale needs BatchNorm layers; this model has none"
            )
        ratio_dict = {}
        for name, module in _prunable(model):
            r = first_match(name, p.layers)
            if r is not None and name not in ignored:
                ratio_dict[module] = r
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tp.pruner.BasePruner(
                model,
                ctx.example_inputs(1),
                importance=importance,
                global_pruning=p.global_ranking,
                pruning_ratio=ratio,
                pruning_ratio_dict=ratio_dict or None,
                max_pruning_ratio=p.max_layer_ratio,
                iterative_steps=steps,
                ignored_layers=[names[n] for n in ignored],
                round_to=p.round_to,
                num_heads=attention_heads(model),
            )

    def _score(self, model: nn.Module, ctx: StageContext, p: PruneParams) -> None:
        """Taylor importance needs gradients of the loss on a few batches."""
        if p.importance != "taylor":
            return
        model.zero_grad()
        model.train()
        for x, y in ctx.calibration_batches(p.calibration_batches):
            F.cross_entropy(model(x.to(ctx.device)), y.to(ctx.device)).backward()
        model.eval()

    def _channel_ratio_for_params(self, model, ctx, p, ignored) -> float:
        """Bisect the channel ratio whose one-shot pruning removes ``p.ratio`` of parameters."""
        before = _count(model)
        lo, hi = 0.0, min(0.95, p.max_layer_ratio)
        for _ in range(12):
            mid = (lo + hi) / 2
            trial = copy.deepcopy(model)
            self._score(trial, ctx, p)
            self._pruner(trial, ctx, p, ignored, mid, 1).step()
            removed = 1 - _count(trial) / before
            lo, hi = (mid, hi) if removed < p.ratio else (lo, mid)
        return hi

    def _structured(
        self, model: nn.Module, ctx: StageContext, p: PruneParams, ignored: set[str]
    ) -> nn.Module:
        model.to(ctx.device).eval()
        ratio = p.ratio
        if p.target == "params":
            ratio = self._channel_ratio_for_params(model, ctx, p, ignored)
            ctx.record["channel_ratio"] = round(ratio, 4)
            ctx.log(f"channel ratio {ratio:.3f} removes ≈{p.ratio:.0%} of parameters")
        pruner = self._pruner(model, ctx, p, ignored, ratio, p.iterative_steps)
        steps = []
        for step in range(p.iterative_steps):
            self._score(model, ctx, p)
            pruner.step()
            model.zero_grad(set_to_none=True)
            fit = ctx.finetune(
                model,
                p.finetune,
                description=f"prune {step + 1}/{p.iterative_steps}",
                seed_offset=step,
            )
            steps.append({"params": _count(model), "loss": fit.loss})
        ctx.record["steps"] = steps
        return model

    # --- unstructured ----------------------------------------------------------------------

    def _unstructured(
        self, model: nn.Module, ctx: StageContext, p: PruneParams, ignored: set[str]
    ) -> None:
        targets = [(n, m) for n, m in _prunable(model) if n not in ignored]
        if not targets:
            raise ModelError("prune: every prunable layer is ignored; nothing to prune")
        pruned_names = [f"{n}.weight" for n, _ in targets]
        ctx.mark_sparse(pruned_names)
        # torch's prune re-registers the weight after the bias; the file's manifest compares
        # state-dict order with the builder's, so each layer's parameter order is restored
        orders = {n: list(m._parameters) for n, m in targets}
        steps = []
        for step in range(1, p.iterative_steps + 1):
            fraction = step / p.iterative_steps
            if p.global_ranking and not p.layers:
                torch_prune.global_unstructured(
                    [(m, "weight") for _, m in targets],
                    pruning_method=torch_prune.L1Unstructured,
                    amount=p.ratio * fraction,
                )
            else:
                for name, module in targets:
                    r = first_match(name, p.layers)
                    r = p.ratio if r is None else r
                    torch_prune.l1_unstructured(module, "weight", amount=r * fraction)
            for name, module in targets:
                torch_prune.remove(module, "weight")  # bake the zeros; masks live in ctx.meta
                for key in orders[name]:
                    module._parameters[key] = module._parameters.pop(key)
            fit = ctx.finetune(
                model, p.finetune, description=f"prune {step}/{p.iterative_steps}", seed_offset=step
            )
            density = sum(int((m.weight != 0).sum()) for _, m in targets) / sum(
                m.weight.numel() for _, m in targets
            )
            steps.append({"density": round(density, 5), "loss": fit.loss})
        ctx.record["steps"] = steps
        ctx.record["layers"] = {
            n: round(float((m.weight != 0).float().mean()), 5) for n, m in targets
        }
