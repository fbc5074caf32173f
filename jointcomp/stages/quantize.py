"""Stage ``quantize``: every factor, sparse residual, weight and embedding table becomes
integers × scale (or indices into a k-means codebook), held as ``IntQuantized`` / ``Codebook``
parametrizations whose integers ``encode`` entropy-codes as they are.

One method, each with only its own options: ``qat`` (brevitas quantizers with straight-through
gradients, fine-tuned, then brevitas' integers exported; optionally rate-aware), ``ptq`` (round
to nearest on calibrated grids; ``refit`` re-fits CP and TT layers on the grid instead; ``gptq``
spreads each Conv/Linear weight column's rounding error over the columns left, through the
inverse Hessian of the layer's calibration inputs: ``jointcomp.quant.gptq``) or ``kmeans``
(Deep Compression's shared codebooks, centroids fine-tuned). Bits per kind of tensor
and per layer pattern; optionally chosen per tensor under a coded-size budget (``bits.budget``,
allocated like decompose's ranks: ``jointcomp.allocate``). Biases and norms are rounded once
training is over. ``fold`` first folds batch norms into the layers before them (as the ``fold``
stage does), so the quantizers see the folded weights.

Record: ``layers`` (one row per quantized tensor: layer, tensor, kind, method, bits, scale
granularity, params, values stored, estimated coded bytes, coded bits per stored value),
``float`` (tensors left float, with the reason) and ``summary`` (the metric before, right after
the quantizers went in, and after; folded batch norms; the budget's allocation; with ``rate``,
the estimated coded bytes before and after training; with ``gptq``, each layer's relative
output error on the calibration inputs under GPTQ and under round-to-nearest, and which of the
two it kept: GPTQ's codes, or round-to-nearest's where they do better).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ..allocate import SensitivityBatches
from ..config import Scope, StageConfig, Strict, first_match, match_any
from ..context import Context, Step
from ..errors import ModelError
from ..nn.bnfold import fold_batchnorms
from ..nn.modules import classifier_names, count_params
from ..nn.quantized import attach, quantized_tensors
from ..nn.sparsity import fixed_zero_names
from ..quant import (
    QuantSpec,
    Target,
    bits_of,
    coded_bytes,
    find_targets,
    kmeans_codebook,
    ptq_tensor,
    refit_layer,
)
from ..quant.gptq import GPTQSettings, gptq_layers
from ..quant.mixed import choose_bits
from ..quant.refit import REFITTABLE
from ..quant.scale_grid import snap_scales
from ..tensor.log_grid import STEPS
from ..training import FinetuneSpec, recalibrate_batchnorm

MAIN_KINDS = ("factors", "sparse_values", "weights", "embeddings")  # by the method; others rounded
AUTO_MIN_PER_CHANNEL = 64  # granularity auto: per-channel scales for channels this long
CODEBOOK_ITERS = 100  # k-means sweeps of the codebooks qat trains beside its grids
Bits = int | None
Granularity = Literal["channel", "tensor", "auto"]
ScaleSteps = Literal[STEPS]  # type: ignore[valid-type]
Quantizer = Callable[[Target, QuantSpec, torch.Tensor], nn.Module]


class QATConfig(Strict):
    """Quantization-aware training: brevitas fake-quantization, fine-tuned with
    straight-through gradients, then brevitas' own integers exported."""

    scaling: Literal["stats", "learned", "mse"] = Field(
        "stats",
        description="scale from weight statistics each step, or a trained scale initialized "
        "from them (learned) or from the least-MSE clipping (mse)",
    )
    rate: float | None = Field(
        None,
        ge=0,
        description="rate-aware training: the loss gains this much per KiB of the quantized "
        "tensors' estimated coded size (a Laplace fit to their integers, jointcomp.quant.rate), "
        "which pulls values toward the middle of their grids so entropy coding stores them in "
        "fewer bits; unset or 0: off",
    )
    bn_batches: int = Field(
        16,
        ge=0,
        description="re-estimate the batch norms' statistics on this many calibration batches "
        "once the quantizers are in, so training starts from the quantized network's "
        "statistics (0: keep the float ones)",
    )
    bn_reestimate: bool = Field(
        False,
        description="re-estimate the batch norms' statistics again after training, on the "
        "final quantized weights (bn_batches batches; Nagel et al., ICML 2022)",
    )
    finetune: FinetuneSpec = Field(default_factory=FinetuneSpec)


class GPTQConfig(Strict):
    """GPTQ (Frantar et al., 2023): each Conv/Linear weight quantized column by column on its
    calibrated grid, every column's rounding error spread over the columns not yet quantized
    through the inverse Hessian of the layer's inputs on calibration batches."""

    batches: int = Field(8, ge=1, description="calibration batches the inputs' Hessians use")
    damp: float = Field(
        0.01, gt=0, le=1, description="ridge added to the Hessian, a fraction of its mean diagonal"
    )
    block: int = Field(128, ge=1, description="columns per lazy block update (speed only)")
    act_order: bool = Field(
        False, description="quantize the columns with the largest input energy first"
    )
    sequential: bool = Field(
        True,
        description="quantize the layers in the order the model runs them, each measured on "
        "the model whose earlier layers are already quantized (one pass over the batches per "
        "group of layers fed the same input); false: every layer measured once on the float "
        "model, one pass",
    )


class PTQConfig(Strict):
    """Post-training quantization: round to nearest on calibrated grids, or GPTQ."""

    refit: bool = Field(
        False,
        description="re-fit CP and TT layers on the grid (quantized CP-ALS / error-compensated "
        "TT-SVD) instead of rounding",
    )
    gptq: GPTQConfig | None = Field(
        None,
        description="compensate rounding error with GPTQ on the Conv/Linear weights (grouped "
        "convs, embeddings, TT cores and sparse residuals are rounded to nearest)",
    )


class KMeansConfig(Strict):
    """Deep Compression's weight sharing: a k-means codebook of 2^bits values per tensor, its
    centroids fine-tuned."""

    iters: int = Field(100, ge=1, description="k-means sweeps")
    finetune: FinetuneSpec = Field(default_factory=FinetuneSpec)


class BitBudget(SensitivityBatches):
    """Pick bits per tensor so the quantized tensors' coded size (their integers through the
    coder ``encode`` uses, plus scales) fits ``bytes``, with the least validation-loss
    increase."""

    bytes: int = Field(ge=1)
    options: list[int] = Field(
        default_factory=lambda: [2, 3, 4, 5, 6, 8], description="bit widths to choose from"
    )
    batch_size: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _options(self) -> BitBudget:
        if not self.options or any(not 1 <= b <= 16 for b in self.options):
            raise ValueError("options must list bit widths in 1..16")
        self.options = sorted(set(self.options))
        return self


class KindBits(Strict):
    """Bits per kind of tensor (null keeps that kind float), or chosen under a budget."""

    factors: Bits = Field(
        8,
        ge=1,
        le=16,
        description="tensors inside factorized layers (SVD/Tucker/CP sub-layers, TT cores, "
        "T-Basis tables)",
    )
    sparse_values: Bits = Field(
        8, ge=1, le=16, description="low-rank + sparse residuals (their zeros stay exactly 0)"
    )
    weights: Bits = Field(8, ge=1, le=16, description="plain conv/linear weights")
    embeddings: Bits = Field(
        8,
        ge=1,
        le=16,
        description="embedding tables (nn.Embedding, nn.EmbeddingBag), quantized by the method "
        "like weights; granularity channel: a scale per row, i.e. per token",
    )
    biases: Bits = Field(
        None, ge=2, le=16, description="biases, rounded per tensor after training (null: float)"
    )
    norms: Bits = Field(
        None,
        ge=2,
        le=16,
        description="normalization layers' affine parameters, rounded per tensor after "
        "training (null: float)",
    )
    budget: BitBudget | None = Field(
        None,
        description="choose the factors', residuals', weights' and embeddings' bits to meet a size",
    )


class LayerQuant(Strict):
    """Overrides for the tensors a name pattern matches (unset keys inherit)."""

    bits: Bits = Field(
        None, ge=1, le=16, description="bits of the layer's weights / factors / embedding table"
    )
    sparse_bits: Bits = Field(None, ge=1, le=16, description="bits of its sparse residual")
    granularity: Granularity | None = None
    symmetric: bool | None = None
    narrow_range: bool | None = None
    include_zero: bool | None = Field(
        None,
        description="offset grids of tensors rounded after training (biases, norms): false "
        "spans only the values' [min, max] instead of reaching 0 (null: reach 0)",
    )
    scale_grid: ScaleSteps | None = Field(
        None,
        description="once quantized, move the scales to the nearest 2^(k/steps) for this many "
        "steps per octave, so the file stores each as a small integer code instead of a "
        "float (for per-row scales of 8 or more values)",
    )
    codebook: bool | None = Field(
        None,
        description="qat: give the matched tensors a k-means codebook of 2^bits values, "
        "fine-tuned with the rest, instead of a uniform grid",
    )


class QuantizeConfig(StageConfig):
    """One method (qat, ptq or kmeans), the bits per kind of tensor, and the grid."""

    stage = "quantize"

    qat: QATConfig | None = Field(None, description="quantization-aware training (the default)")
    ptq: PTQConfig | None = Field(None, description="round to nearest after training")
    kmeans: KMeansConfig | None = Field(None, description="k-means codebooks (Deep Compression)")
    bits: KindBits = Field(default_factory=KindBits, description="bits per kind of tensor")
    granularity: Granularity = Field(
        "channel",
        description="one scale per output channel (per row of an embedding table: per token) "
        f"or per tensor; auto: per channel where channels hold at least {AUTO_MIN_PER_CHANNEL} "
        "values (sparse residuals, biases and norms always per tensor)",
    )
    symmetric: bool = Field(
        True,
        description="signed grid with zero point 0; false: unsigned with an integer zero "
        "point (not for tensors with fixed zeros)",
    )
    narrow_range: bool = Field(True, description="drop the most negative code (signed)")
    calibration: Literal["absmax", "mse"] = Field(
        "mse",
        description="grids rounded to after training (ptq, biases, norms, the budget's "
        "sensitivities): max-abs range or least-MSE clipping",
    )
    scope: Scope = Field(default_factory=Scope, description="the layers to quantize")
    overrides: dict[str, LayerQuant] = Field(
        default_factory=dict,
        description="per-tensor or per-layer settings by name pattern, e.g. {'fc*': {bits: 6}}; "
        "the first matching pattern wins",
    )
    fold: Scope | None = Field(
        None,
        description="first fold the batch norms after the layers in this scope into them (as "
        "the fold stage does), e.g. {} for every layer",
    )

    @property
    def method(self) -> Literal["qat", "ptq", "kmeans"]:
        if self.ptq is not None:
            return "ptq"
        if self.kmeans is not None:
            return "kmeans"
        return "qat"

    @model_validator(mode="after")
    def _check(self) -> QuantizeConfig:
        chosen = [m for m in ("qat", "ptq", "kmeans") if getattr(self, m) is not None]
        if len(chosen) > 1:
            raise ValueError(f"give one method, qat, ptq or kmeans, not {' and '.join(chosen)}")
        if not chosen:
            self.qat = QATConfig()
        codebooks = [k for k, o in self.overrides.items() if o.codebook]
        if codebooks and self.method != "qat":
            raise ValueError(
                f"overrides {codebooks}: codebook trains codebooks beside uniform grids under "
                "qat (method kmeans gives every tensor one)"
            )
        if self.method != "kmeans":
            low = [k for k in MAIN_KINDS if getattr(self.bits, k) == 1]
            low += [p for p, o in self.overrides.items() if 1 in (o.bits, o.sparse_bits)]
            budget = self.bits.budget
            if low or (budget and 1 in budget.options):
                raise ValueError(
                    f"1-bit integer grids hold one value; {self.method} needs at least 2 bits "
                    f"(found in {low or ['bits.budget.options']})"
                )
        return self


# --- settings per tensor -------------------------------------------------------------------


def _override(config: QuantizeConfig, target: Target) -> LayerQuant | None:
    for key in (target.name, target.module_path, target.layer):
        found = first_match(key, config.overrides)
        if found is not None:
            return found
    return None


def spec_for(config: QuantizeConfig, target: Target) -> tuple[QuantSpec | None, bool]:
    """(spec, whether an override fixed its bits); spec None = the tensor stays float."""
    bits = getattr(config.bits, target.kind)
    granularity, symmetric, narrow = config.granularity, config.symmetric, config.narrow_range
    include_zero, scale_grid = True, None
    pinned = False
    o = _override(config, target)
    if o is not None:
        own = o.sparse_bits if target.kind == "sparse_values" else o.bits
        if own is not None and target.kind in MAIN_KINDS:
            bits, pinned = own, True
        granularity = o.granularity or granularity
        symmetric = symmetric if o.symmetric is None else o.symmetric
        narrow = narrow if o.narrow_range is None else o.narrow_range
        include_zero = o.include_zero is not False
        scale_grid = o.scale_grid
    if bits is None:
        return None, pinned
    if target.kind not in ("factors", "weights", "embeddings"):
        granularity = "tensor"
    elif granularity == "auto":
        # a float32 scale per channel pays off only over enough values per channel
        shape = target.shape
        per_channel = math.prod(shape) // max(1, shape[target.channel_axis])
        granularity = "channel" if per_channel >= AUTO_MIN_PER_CHANNEL else "tensor"
    spec = QuantSpec(bits, granularity, symmetric, narrow, include_zero, scale_grid)
    return (spec.for_fixed_zeros() if target.fixed_zeros else spec), pinned


Plan = list[tuple[Target, QuantSpec]]


def _in_scope(config: QuantizeConfig, target: Target, classifier: set[str]) -> bool:
    keys = (target.layer, target.module_path)
    scope = config.scope
    if not any(match_any(k, scope.include) for k in keys):
        return False
    if any(match_any(k, scope.exclude) for k in keys):
        return False
    # the classifier may be a sub-layer of a factorized layer (SVD's ``fc.second``): the whole
    # layer is the output layer then
    return not any(c == target.layer or c.startswith(f"{target.layer}.") for c in classifier)


def plan_targets(
    model: nn.Module, config: QuantizeConfig, context: Context
) -> tuple[Plan, Plan, list[dict[str, str]], set[str]]:
    """(tensors the method quantizes, tensors rounded after training, tensors left float with
    reasons, names whose bits an override fixed)."""
    classifier = set()
    if config.scope.exclude_classifier:
        classifier = set(classifier_names(model, context.example()))
    targets, floats = find_targets(model, set(fixed_zero_names(model)))
    plan: Plan = []
    extras: Plan = []
    pinned: set[str] = set()
    for t in targets:
        if not _in_scope(config, t, classifier):
            is_classifier = any(c == t.layer or c.startswith(f"{t.layer}.") for c in classifier)
            reason = "classifier (scope.exclude_classifier)" if is_classifier else "out of scope"
            floats.append({"name": t.name, "reason": reason})
            continue
        spec, fixed_bits = spec_for(config, t)
        if spec is None:
            floats.append({"name": t.name, "reason": f"bits.{t.kind} is null"})
            continue
        if fixed_bits:
            pinned.add(t.name)
        (plan if t.kind in MAIN_KINDS else extras).append((t, spec))
    return plan, extras, floats, pinned


def _codebook(config: QuantizeConfig, target: Target) -> bool:
    o = _override(config, target)
    return o is not None and bool(o.codebook)


def _kmeans(iters: int, seed: int) -> Quantizer:
    return lambda t, spec, x: kmeans_codebook(
        x,
        spec.bits,
        pin_zero=t.fixed_zeros or bool((x == 0).float().mean() > 0.01),
        seed=seed,
        max_iter=iters,
    )


def one_shot_quantizer(config: QuantizeConfig, seed: int) -> Quantizer:
    """The method's one-shot quantizer (target, spec, value) → parametrization: k-means
    codebooks for kmeans, rounding to nearest on a calibrated grid otherwise."""
    if config.kmeans is not None:
        return _kmeans(config.kmeans.iters, seed)
    return lambda t, spec, x: ptq_tensor(
        x, spec, spec.axis(t.channel_axis), config.calibration, t.fixed_zeros
    )


def _attach_all(model: nn.Module, plan: Plan, quantize: Quantizer) -> None:
    """Put ``quantize``'s parametrization on every planned tensor not quantized yet (a shared
    tensor is met once per layer that holds it)."""
    done = set(quantized_tensors(model))
    for target, spec in plan:
        if target.name not in done:
            x = target.value(model).detach()
            attach(target.module(model), target.tensor, quantize(target, spec, x).to(x.device))
            done.add(target.name)


# --- the stage -----------------------------------------------------------------------------


def quantize(model: nn.Module, config: QuantizeConfig, context: Context) -> Step:
    """Quantize ``model`` in place as ``config`` says; returns it with the record."""
    start = time.perf_counter()
    model = model.to(context.device).eval()
    summary: dict[str, Any] = {"method": config.method, "metric_before": context.score(model)}
    if config.fold is not None:
        folded, unfolded = fold_batchnorms(model, context.selector(config.fold, model))
        summary.update(bn_folded=folded, bn_not_folded=unfolded)
        summary["metric_folded"] = context.score(model)
        context.log(f"folded {len(folded)} batch norm(s), {len(unfolded)} left")
    plan, extras, floats, pinned = plan_targets(model, config, context)
    if not plan and not extras:
        raise ModelError(
            "quantize: no tensor to quantize (every kind's bits is null, or every layer out "
            "of scope)"
        )
    if config.bits.budget is not None:
        plan = _apply_budget(model, config, context, plan, pinned, summary)
    methods = {t.name: config.method for t, _ in plan}
    trained = [t.name for t, s in plan if not s.include_zero]
    if trained and config.method != "ptq":
        raise ModelError(
            f"quantize: include_zero false is for tensors rounded after training (biases, "
            f"norms), but {trained[:3]} are trained by {config.method}"
        )
    if config.qat is not None:
        codebooks = [(t, s) for t, s in plan if _codebook(config, t)]
        # trained with the uniform grids' QAT, as method kmeans trains them
        _attach_all(model, codebooks, _kmeans(CODEBOOK_ITERS, context.seed))
        methods.update({t.name: "kmeans" for t, _ in codebooks})
        _qat(
            model,
            config.qat,
            context,
            [(t, s) for t, s in plan if not _codebook(config, t)],
            summary,
        )
    else:
        if config.ptq is not None and config.ptq.refit:
            methods.update(_refit(model, context, plan, summary))
        if config.ptq is not None and config.ptq.gptq is not None:
            methods.update(_gptq(model, config, context, plan, summary))
        _attach_all(model, plan, one_shot_quantizer(config, context.seed))
        if config.kmeans is not None:
            summary["metric_quantized"] = context.score(model)
            fit = context.train(model, config.kmeans.finetune, description="quantize (kmeans)")
            summary["finetune_loss"] = fit.loss if fit else None
    _round_extras(model, config, extras)
    methods.update({t.name: "ptq" for t, _ in extras})
    snap_scales(model, plan + extras, summary)
    model.eval()
    summary["metric_after"] = context.score(model)
    record = _record(model, plan + extras, methods, floats, summary, start)
    context.log(
        f"{summary['tensors']} tensors quantized ({summary['params_quantized']:,} params, "
        f"≈{summary['est_bytes']:,} B coded)"
    )
    return Step(model, record)


def _round_extras(model: nn.Module, config: QuantizeConfig, extras: Plan) -> None:
    """Round the biases and norms once training is over."""
    for target, spec in extras:
        module = target.module(model)
        x = target.value(model).detach()
        attach(module, target.tensor, ptq_tensor(x, spec, None, config.calibration).to(x.device))


def _apply_budget(
    model: nn.Module,
    config: QuantizeConfig,
    context: Context,
    plan: Plan,
    pinned: set[str],
    summary: dict[str, Any],
) -> Plan:
    budget = config.bits.budget
    assert budget is not None
    batches = context.validation(budget.batches, budget.batch_size)
    free = [(t, s) for t, s in plan if t.name not in pinned]
    fixed = [(t, s) for t, s in plan if t.name in pinned]
    try:
        bits, record = choose_bits(
            model,
            free,
            budget.options,
            budget.bytes,
            one_shot_quantizer(config, context.seed),
            lambda m: context.loss(m, batches),
            fixed,
        )
    except ValueError as exc:
        raise ModelError(f"quantize: {exc}") from None
    summary["budget"] = record
    context.log(
        f"budget {budget.bytes:,} B: bits {sorted(set(bits.values()))} "
        f"(estimated {record['achieved_bytes']:,} B)"
    )
    return [(t, s.with_bits(bits[t.name]) if t.name in bits else s) for t, s in plan]


def _refit(model: nn.Module, context: Context, plan: Plan, summary: dict) -> dict[str, str]:
    """Quantized CP-ALS / TT-SVD for CP and TT layers whose factors all share one width."""
    methods, notes = {}, []
    for path, module in dict(model.named_modules()).items():
        if not isinstance(module, REFITTABLE):
            continue
        prefix = f"{path}." if path else ""
        mine = [
            (t, s)
            for t, s in plan
            if t.kind == "factors" and (t.module_path == path or t.module_path.startswith(prefix))
        ]
        widths = {s.bits for _, s in mine}
        if not mine or len(widths) != 1:
            notes.append({"name": path, "reason": "factors not all quantized at one width"})
            continue
        try:
            quantized = refit_layer(module, widths.pop(), seed=context.seed)
        except ValueError as exc:
            notes.append({"name": path, "reason": str(exc)})
            continue
        for rel, q in quantized.items():
            sub, _, tensor = rel.rpartition(".")
            owner = module.get_submodule(sub) if sub else module
            device = getattr(owner, tensor).device
            attach(owner, tensor, q.to(device))
            methods[prefix + rel] = "qcp" if "cores" not in rel else "qtt"
    summary["refit_skipped"] = notes
    return methods


def _gptq(
    model: nn.Module, config: QuantizeConfig, context: Context, plan: Plan, summary: dict
) -> dict[str, str]:
    """GPTQ for the planned Conv/Linear weights, after the other planned tensors are rounded
    (so sequential GPTQ measures each layer's inputs on the model as it will be)."""
    gptq = config.ptq.gptq  # type: ignore[union-attr]
    batches = context.calibration(gptq.batches)
    done = set(quantized_tensors(model))
    todo = [(t, s) for t, s in plan if t.name not in done]
    layers = {t.name for t, _ in todo if t.module_level and t.tensor == "weight"}
    _attach_all(
        model,
        [(t, s) for t, s in todo if t.name not in layers],
        one_shot_quantizer(config, context.seed),
    )
    settings = GPTQSettings(gptq.damp, gptq.block, gptq.act_order, gptq.sequential)
    rows, left = gptq_layers(
        model,
        [(t, s) for t, s in todo if t.name in layers],
        batches,
        context.device,
        config.calibration,
        settings,
    )
    summary["gptq"] = {"layers": rows, "rounded": left}
    context.log(f"gptq: {len(rows)} layer(s), {len(left)} rounded to nearest instead")
    return {r["name"]: r["method"] for r in rows}


def _qat(
    model: nn.Module, qat: QATConfig, context: Context, plan: Plan, summary: dict[str, Any]
) -> None:
    from ..quant.qat import QATSession  # brevitas takes seconds to import

    session = QATSession(model, qat.scaling)
    session.prepare(plan)
    if qat.bn_batches:
        recalibrate_batchnorm(model, context.calibration(qat.bn_batches), context.device)
    summary["metric_quantized"] = context.score(model)
    extra_loss = None
    if qat.rate:
        rate = qat.rate / 8192  # per KiB → per bit

        def extra_loss(_: nn.Module) -> torch.Tensor:
            return rate * session.rate_bits()

        with torch.no_grad():
            summary["rate_bytes_before"] = round(float(session.rate_bits()) / 8)
    fit = context.train(model, qat.finetune, description="quantize (qat)", extra_loss=extra_loss)
    if qat.rate:
        with torch.no_grad():
            summary["rate_bytes_after"] = round(float(session.rate_bits()) / 8)
    if fit is not None:
        summary.update(
            finetune_loss=fit.loss, finetune_steps=fit.steps, finetune_seconds=round(fit.seconds, 2)
        )
    if qat.bn_reestimate and qat.bn_batches > 0:
        summary["metric_trained"] = context.score(model)
        batches = context.calibration(qat.bn_batches)
        if recalibrate_batchnorm(model, batches, context.device):
            summary["metric_reestimated"] = context.score(model)
    session.export()


def _record(
    model: nn.Module,
    targets: Plan,
    methods: dict[str, str],
    floats: list[dict[str, str]],
    summary: dict[str, Any],
    start: float,
) -> dict[str, Any]:
    quantized = quantized_tensors(model)
    rows = []
    for t, _spec in targets:
        q = quantized.get(t.name)
        if q is None:
            continue
        value = getattr(t.module(model), t.tensor).detach()
        est = coded_bytes(q)
        nonzero = int((value != 0).sum())
        stored = nonzero if t.fixed_zeros else value.numel()  # sparse: values + positions
        granularity = (
            "codebook"
            if methods[t.name] == "kmeans"
            else ("channel" if q.scale.numel() > 1 else "tensor")
        )
        rows.append(
            {
                "name": t.layer,
                "tensor": t.name,
                "kind": t.kind,
                "method": methods[t.name],
                "bits": bits_of(q),
                "granularity": granularity,
                "params": value.numel(),
                "stored": stored,
                "est_bytes": est,
                "bits_per_value": round(8 * est / max(1, stored), 3),
            }
        )
    params_q = sum(r["params"] for r in rows)
    stored_q = sum(r["stored"] for r in rows)
    summary.update(
        tensors=len(rows),
        params_quantized=params_q,
        params_float=count_params(model) - params_q,
        est_bytes=sum(r["est_bytes"] for r in rows),
        values_stored=stored_q,
        mean_bits=round(sum(r["bits"] * r["stored"] for r in rows) / max(1, stored_q), 3),
        coded_bits_per_value=round(8 * sum(r["est_bytes"] for r in rows) / max(1, stored_q), 3),
        seconds=round(time.perf_counter() - start, 2),
    )
    return {"layers": rows, "float": floats, "summary": summary}
