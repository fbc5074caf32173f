"""Stage ``prune``: filter/channel pruning with torch-pruning (channels physically removed, head
counts of attention blocks kept consistent), or unstructured magnitude pruning with
torch.nn.utils.prune (whose zeros stay fixed through later fine-tuning and are stored as sparse
positions in the file).

Record: ``excluded`` (layers left alone), ``params_before/after``, ``nonzero_after``, ``steps``
(per pruning step: params or density, fine-tune loss), and for ``target: params`` the
``channel_ratio`` found; unstructured: ``layers`` (density per layer).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..batches import inputs_of, labels_of, run_model, to_device
from ..config import Scope, StageConfig, Strict, first_match
from ..context import Context, Step
from ..errors import DataError, ModelError
from ..nn.modules import classifier_names, first_tensor
from ..nn.sparsity import mark_fixed_zeros
from ..tasks import ClassifyTask
from ..training import FinetuneSpec

Importance = Literal["l1", "l2", "taylor", "bn_scale", "fpgm"]


class LayerPrune(Strict):
    """Overrides for the layers a pattern matches."""

    ratio: float = Field(ge=0, lt=1, description="fraction of this layer to remove")


class PruneConfig(StageConfig):
    """How much to prune and how to rank what goes."""

    stage = "prune"

    ratio: float = Field(0.5, ge=0, lt=1, description="fraction to remove (see target)")
    target: Literal["channels", "params"] = Field(
        "channels",
        description="structured: 'channels' removes this fraction of each layer's channels "
        "(torch-pruning's ratio); 'params' searches the channel ratio that removes this fraction "
        "of the model's parameters",
    )
    structured: bool = True
    importance: Importance = "l1"
    scope: Scope = Field(
        default_factory=Scope,
        description="the layers to prune (structured: the output layer is left out unless "
        "exclude_classifier is false)",
    )
    overrides: dict[str, LayerPrune] = Field(
        default_factory=dict,
        description="per-layer ratios by name pattern, e.g. {conv1: {ratio: 0.3}}; the first "
        "matching pattern wins",
    )
    global_ranking: bool = Field(False, description="rank channels/weights across layers")
    max_layer_ratio: float = Field(
        0.9, gt=0, le=1, description="cap per layer under global ranking"
    )
    heads: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="structured: remove this fraction of each attention block's heads, whole "
        "(q, k and v together, the block's head count updated; transformers' BERT-style "
        "query/key/value or a fused qkv), keeping each head's size; null: heads stay, and ratio "
        "trims the same dimensions from every head",
    )
    iterative_steps: int = Field(1, ge=1)
    round_to: int | None = Field(None, ge=1, description="keep channel counts multiples of this")
    calibration_batches: int = Field(4, ge=1, description="batches for taylor importance")
    finetune: FinetuneSpec = Field(
        default_factory=FinetuneSpec, description="fine-tuning after each pruning step"
    )

    @model_validator(mode="after")
    def _check(self) -> PruneConfig:
        if not self.structured and self.importance not in ("l1",):
            raise ValueError(
                "unstructured pruning ranks weights by magnitude: importance must be l1"
            )
        if not self.structured and self.heads is not None:
            raise ValueError("heads: removing attention heads is structured pruning")
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


@dataclass(frozen=True)
class Attention:
    """An attention block: its query/key/value projections (one fused ``qkv`` Linear, or
    ``query``, ``key`` and ``value`` Linears as in transformers' BERT-style self-attention) and
    the attribute holding its head count."""

    module: nn.Module
    projections: tuple[nn.Linear, ...]
    heads_attr: str

    @property
    def width(self) -> int:
        """Channels of all heads together (q's, k's or v's)."""
        out = self.projections[0].out_features
        return out // 3 if len(self.projections) == 1 else out


def attention_blocks(model: nn.Module) -> list[Attention]:
    """The model's attention blocks: a ``qkv`` Linear beside an int ``num_heads`` (timm, the
    zoo's ViT), or ``query``/``key``/``value`` Linears beside an int ``num_attention_heads``
    (transformers' BERT family)."""
    blocks = []
    for module in model.modules():
        qkv = getattr(module, "qkv", None)
        if isinstance(qkv, nn.Linear) and isinstance(getattr(module, "num_heads", None), int):
            blocks.append(Attention(module, (qkv,), "num_heads"))
            continue
        parts = tuple(getattr(module, n, None) for n in ("query", "key", "value"))
        heads = getattr(module, "num_attention_heads", None)
        if all(isinstance(p, nn.Linear) for p in parts) and isinstance(heads, int):
            blocks.append(Attention(module, parts, "num_attention_heads"))  # type: ignore[arg-type]
    return blocks


def attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """The head count of every q/k/v projection, so torch-pruning removes head channels
    consistently across q, k and v (whole heads, or the same dimensions of every head)."""
    return {
        p: getattr(block.module, block.heads_attr)
        for block in attention_blocks(model)
        for p in block.projections
    }


def _update_attention(blocks: list[Attention], pruner) -> None:
    """After a pruning step, each attention block's head count and sizes as torch-pruning left
    its projections, so its forward splits the heads right (transformers' BERT reshapes by
    ``attention_head_size``, timm's attention by ``head_dim``). The scaling of the attention
    logits is kept: it is part of what the model learned."""
    for block in blocks:
        heads = pruner.num_heads.get(block.projections[0], getattr(block.module, block.heads_attr))
        module, width = block.module, block.width
        setattr(module, block.heads_attr, heads)
        for attr, value in (
            ("attention_head_size", width // heads),
            ("all_head_size", width),
            ("head_dim", width // heads),
        ):
            if isinstance(getattr(module, attr, None), int):
                setattr(module, attr, value)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def excluded_layers(model: nn.Module, config: PruneConfig, context: Context) -> set[str]:
    """The prunable layers the stage leaves alone: out of scope, or the output layer."""
    excluded = {n for n, _ in _prunable(model) if not config.scope.selects(n)}
    exclude_classifier = config.scope.exclude_classifier
    if exclude_classifier is None:
        exclude_classifier = config.structured
    if exclude_classifier:
        excluded |= set(classifier_names(model, context.example()))
    return excluded


def prune(model: nn.Module, config: PruneConfig, context: Context) -> Step:
    """Prune ``model`` (in place where torch-pruning allows) as ``config`` says, fine-tuning after
    each step when ``context`` can."""
    excluded = excluded_layers(model, config, context)
    before = _count(model)
    record: dict = {"excluded": sorted(excluded)}
    if config.structured:
        model = _structured(model, config, context, excluded, record)
    else:
        _unstructured(model, config, context, excluded, record)
    after = _count(model)
    nonzero = sum(int((q != 0).sum()) for q in model.parameters())
    record.update(params_before=before, params_after=after, nonzero_after=nonzero)
    context.log(f"{before:,} → {after:,} parameters ({nonzero:,} nonzero)")
    return Step(model, record)


# --- structured ----------------------------------------------------------------------------


def _pruner(
    model: nn.Module,
    config: PruneConfig,
    context: Context,
    excluded: set[str],
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
    }[config.importance]()
    if config.importance == "bn_scale" and not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
    ):
        raise ModelError("prune: importance bn_scale needs BatchNorm layers; this model has none")
    ratio_dict = {}
    for name, module in _prunable(model):
        override = first_match(name, config.overrides)
        if override is not None and name not in excluded:
            ratio_dict[module] = override.ratio
    heads = {}
    if config.heads is not None:
        heads = {"prune_num_heads": True, "prune_head_dims": False}
        heads["head_pruning_ratio"] = config.heads
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tp.pruner.BasePruner(
            model,
            context.example(),
            importance=importance,
            global_pruning=config.global_ranking,
            pruning_ratio=ratio,
            pruning_ratio_dict=ratio_dict or None,
            max_pruning_ratio=config.max_layer_ratio,
            iterative_steps=steps,
            ignored_layers=[names[n] for n in excluded],
            round_to=config.round_to,
            num_heads=attention_heads(model),
            output_transform=_first_output,
            **heads,
        )


def _first_output(output: object) -> torch.Tensor:
    """What torch-pruning traces the dependency graph back from: the model's output tensor, or
    its first one (a ModelOutput's last_hidden_state or logits, a tuple's first item)."""
    found = first_tensor(output)
    if found is None:
        raise ModelError("prune: the model's output holds no tensor to trace from")
    return found


def _score(model: nn.Module, config: PruneConfig, context: Context) -> None:
    """Taylor importance needs gradients of the task's loss on a few batches (labeled for
    classification; against the original model's outputs for distillation)."""
    if config.importance != "taylor":
        return
    task, reference = context.task, context.reference
    if task.needs_reference and reference is None:
        raise DataError("prune: importance taylor under task distill needs the original model")
    model.zero_grad()
    model.train()
    for batch in context.calibration(config.calibration_batches):
        x, y = to_device(inputs_of(batch), context.device), labels_of(batch)
        if y is None and task.needs_labels:
            raise DataError("prune: importance taylor needs labeled batches (inputs, labels)")
        y = None if y is None else y.to(context.device)
        ref = None
        if task.needs_reference:
            with torch.no_grad():
                ref = task.select(run_model(reference.eval(), x))
        if isinstance(task, ClassifyTask):
            F.cross_entropy(task.select(run_model(model, x)), y).backward()
        else:
            task.loss(task.select(run_model(model, x)), y, ref).backward()
    model.eval()


def _channel_ratio_for_params(
    model: nn.Module, config: PruneConfig, context: Context, excluded: set[str]
) -> float:
    """Bisect the channel ratio whose one-shot pruning removes ``config.ratio`` of params."""
    before = _count(model)
    lo, hi = 0.0, min(0.95, config.max_layer_ratio)
    for _ in range(12):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(model)
        _score(trial, config, context)
        _pruner(trial, config, context, excluded, mid, 1).step()
        removed = 1 - _count(trial) / before
        lo, hi = (mid, hi) if removed < config.ratio else (lo, mid)
    return hi


def _structured(
    model: nn.Module, config: PruneConfig, context: Context, excluded: set[str], record: dict
) -> nn.Module:
    model.to(context.device).eval()
    ratio = config.ratio
    if config.target == "params":
        ratio = _channel_ratio_for_params(model, config, context, excluded)
        record["channel_ratio"] = round(ratio, 4)
        context.log(f"channel ratio {ratio:.3f} removes ≈{config.ratio:.0%} of parameters")
    pruner = _pruner(model, config, context, excluded, ratio, config.iterative_steps)
    blocks = attention_blocks(model)
    steps = []
    for step in range(config.iterative_steps):
        _score(model, config, context)
        pruner.step()
        _update_attention(blocks, pruner)
        model.zero_grad(set_to_none=True)
        fit = context.train(
            model,
            config.finetune,
            description=f"prune {step + 1}/{config.iterative_steps}",
            seed_offset=step,
        )
        steps.append({"params": _count(model), "loss": fit.loss if fit else None})
    record["steps"] = steps
    return model


# --- unstructured --------------------------------------------------------------------------


def _unstructured(
    model: nn.Module, config: PruneConfig, context: Context, excluded: set[str], record: dict
) -> None:
    targets = [(n, m) for n, m in _prunable(model) if n not in excluded]
    if not targets:
        raise ModelError("prune: every prunable layer is excluded; nothing to prune")
    mark_fixed_zeros(model, [f"{n}.weight" for n, _ in targets])
    # torch's prune re-registers the weight after the bias; the file's manifest compares
    # state-dict order with the builder's, so each layer's parameter order is restored
    orders = {n: list(m._parameters) for n, m in targets}
    steps = []
    for step in range(1, config.iterative_steps + 1):
        fraction = step / config.iterative_steps
        if config.global_ranking and not config.overrides:
            torch_prune.global_unstructured(
                [(m, "weight") for _, m in targets],
                pruning_method=torch_prune.L1Unstructured,
                amount=config.ratio * fraction,
            )
        else:
            for name, module in targets:
                override = first_match(name, config.overrides)
                r = config.ratio if override is None else override.ratio
                torch_prune.l1_unstructured(module, "weight", amount=r * fraction)
        for name, module in targets:
            torch_prune.remove(module, "weight")  # bake the zeros; their pattern stays fixed
            for key in orders[name]:
                module._parameters[key] = module._parameters.pop(key)
        fit = context.train(
            model,
            config.finetune,
            description=f"prune {step}/{config.iterative_steps}",
            seed_offset=step,
        )
        density = sum(int((m.weight != 0).sum()) for _, m in targets) / sum(
            m.weight.numel() for _, m in targets
        )
        steps.append({"density": round(density, 5), "loss": fit.loss if fit else None})
    record["steps"] = steps
    record["layers"] = {n: round(float((m.weight != 0).float().mean()), 5) for n, m in targets}
