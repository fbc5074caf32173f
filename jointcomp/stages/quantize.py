"""Stage ``quantize``: every factor, sparse residual and weight becomes integers × scale (or
indices into a k-means codebook), held as ``IntQuantized`` / ``Codebook`` parametrizations whose
integers ``encode`` entropy-codes as they are.

Methods: ``qat`` (brevitas quantizers with straight-through gradients, fine-tuned with
distillation, then brevitas' integers exported), ``ptq`` (round to nearest on calibrated grids;
``refit: true`` re-fits CP and TT layers on the grid with quantized CP-ALS / TT-SVD instead),
``kmeans`` (Deep Compression's shared codebooks, centroids fine-tuned). Bits per kind of tensor
and per layer pattern; optionally chosen per tensor to meet a coded-size budget. QAT can be
rate-aware (``rate``: a differentiable estimate of the coded size joins the loss). T-Basis
tables are first equalized (``equalize``: each row's and layer's magnitude moved where one
grid per table quantizes every layer alike; ``jointcomp.quant.tbasis_equalize``).

Record: ``layers`` (one row per quantized tensor: layer, tensor, kind, method, bits, scale
granularity, params, values stored, estimated coded bytes, coded bits per stored value),
``float`` (tensors left float, with the reason) and ``summary`` (top-1 before, right after the
quantizers went in, and after fine-tuning; folded batch norms; equalized T-Basis layers; the
budget's allocation; with ``rate``, the estimated coded bytes before and after training).
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ..audit.measure import count_params
from ..errors import ModelError
from ..nn.quantized import attach, quantized_tensors
from ..nn.tbasis import shared_modules
from ..quant import (
    QuantSpec,
    Target,
    bits_of,
    coded_bytes,
    find_targets,
    fixed_zero_names,
    fold_batchnorms,
    kmeans_codebook,
    ptq_tensor,
    refit_layer,
)
from ..quant.bias_correction import correct_bias, output_means
from ..quant.refit import REFITTABLE
from ..quant.scale_grid import snap_scales
from ..quant.tbasis_equalize import equalize_tbasis
from ..recipe import FinetuneSpec, Strict
from ..train import first_batches, recalibrate_batchnorm
from .base import Stage, StageContext, StageParams, first_match, match_any

Method = Literal["qat", "ptq", "kmeans"]
MAIN_KINDS = ("factors", "sparse_values", "weights")  # quantized by the method; others rounded
AUTO_MIN_PER_CHANNEL = 64  # granularity auto: per-channel scales for channels this long
Bits = int | None


class KindBits(Strict):
    """Bits per kind of tensor; null keeps that kind float."""

    factors: Bits = Field(
        8,
        ge=1,
        le=16,
        description="tensors inside factorized layers (SVD/Tucker/CP sub-layers, TT cores)",
    )
    sparse_values: Bits = Field(
        8, ge=1, le=16, description="low-rank + sparse residuals (their zeros stay exactly 0)"
    )
    weights: Bits = Field(8, ge=1, le=16, description="plain conv/linear weights")
    biases: Bits = Field(
        None,
        ge=2,
        le=16,
        description="biases (default float; 16 is lossless "
        "in practice), rounded per tensor after training",
    )
    norms: Bits = Field(None, ge=2, le=16, description="normalization layers' affine parameters")


class LayerQuant(Strict):
    """Overrides for the layers a name pattern matches (unset keys inherit)."""

    bits: Bits = Field(None, ge=1, le=16, description="bits of the layer's weights / factors")
    sparse_bits: Bits = Field(None, ge=1, le=16, description="bits of its sparse residual")
    granularity: Literal["channel", "tensor", "auto"] | None = None
    symmetric: bool | None = None
    narrow_range: bool | None = None
    include_zero: bool | None = Field(
        None,
        description="asymmetric grids rounded after training (biases, norms, folded output "
        "scales): false spans only the values' [min, max] instead of reaching 0, a finer grid "
        "for values far from 0 such as folded output scales (null: reach 0)",
    )
    scale_grid: Literal[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024] | None = Field(
        None,
        description="once quantized, move the tensors' scales to the nearest 2^(k/steps) for "
        "this many steps per octave (64: at most 0.54% away), so the file stores each as a "
        "small integer code instead of a float: a scale per row of a T-Basis coefficient table "
        "costs ~3 bits instead of 16 (for scales of 8 or more values; a tensor's single scale "
        "stays a float; null: float scales)",
    )
    keep_float: bool = Field(False, description="leave the layer's tensors float")
    method: Literal["kmeans"] | None = Field(
        None,
        description="qat: kmeans gives the matched tensors a codebook of 2^bits values, "
        "fine-tuned with the rest, instead of a uniform grid (for tensors of a few large "
        "values among many small ones, such as T-Basis coefficient tables)",
    )


class QuantBudget(Strict):
    """Pick bits per tensor so the quantized tensors' coded size (integers through the coder
    ``encode`` uses, plus scales) fits ``bytes``, with the least validation-loss increase."""

    bytes: int = Field(ge=1)
    options: list[int] = Field(
        default_factory=lambda: [2, 3, 4, 5, 6, 8], description="bit widths to choose from"
    )
    batches: int = Field(2, ge=1, description="validation batches for the sensitivities")
    batch_size: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _options(self) -> QuantBudget:
        if not self.options or any(not 1 <= b <= 16 for b in self.options):
            raise ValueError("options must list bit widths in 1..16")
        self.options = sorted(set(self.options))
        return self


class QuantizeParams(StageParams):
    method: Method = Field(
        "qat",
        description="qat: brevitas fake-quantization fine-tuned with straight-through "
        "gradients; ptq: round to nearest; kmeans: shared codebooks with fine-tuned centroids",
    )
    bits: KindBits = Field(default_factory=KindBits, description="bits per kind of tensor")
    layers: dict[str, LayerQuant] = Field(
        default_factory=dict,
        description="per-layer overrides by name pattern, e.g. "
        "{'fc*': {bits: 6}}; the first matching pattern wins",
    )
    skip: list[str] = Field(default_factory=list, description="layer patterns left float")
    granularity: Literal["channel", "tensor", "auto"] = Field(
        "channel",
        description="one scale per output channel or per tensor; auto: per channel where "
        f"channels hold at least {AUTO_MIN_PER_CHANNEL} values (sparse residuals, biases and "
        "norms always per tensor)",
    )
    symmetric: bool = Field(
        True,
        description="signed grid with zero point 0; false: unsigned "
        "with an integer zero point (not for tensors with fixed zeros)",
    )
    narrow_range: bool = Field(True, description="drop the most negative code (signed)")
    scaling: Literal["stats", "learned", "mse"] = Field(
        "stats",
        description="qat: scale from weight statistics each step, or a trained scale "
        "initialized from them (learned) or from the least-MSE clipping (mse)",
    )
    calibration: Literal["absmax", "mse"] = Field(
        "mse", description="ptq / budget / biases: max-abs range or least-MSE clipping"
    )
    refit: bool = Field(
        False,
        description="ptq: re-fit CP and TT layers on the grid "
        "(quantized CP-ALS / error-compensated TT-SVD) instead of rounding",
    )
    fold_bn: bool | Literal["after"] = Field(
        False,
        description="true: fold batch norms into the conv before them first (quantization sees "
        "the folded weights); after: train with the batch norms, then fold those that follow "
        "T-Basis layers into the layers' output scales and biases, rounded after training like "
        "biases (the batch norms keep adapting to the quantized weights during QAT); those "
        "after plain layers are folded first, as with true",
    )
    fold_epochs: int = Field(
        0,
        ge=0,
        description="qat with fold_bn: after: fold the batch norms once QAT is over, then "
        "train this many more epochs with the folded output scales and biases on their grids "
        "too, so they can take fewer bits (0: round them after training instead)",
    )
    fold_lr: float | None = Field(
        None,
        gt=0,
        description="learning rate of the fold_epochs (default: finetune's); with no batch "
        "norms left, steps of QAT's size can throw the network off",
    )
    fold_rounding: Literal["ptq", "qat"] = Field(
        "ptq",
        description="qat with fold_bn: after: how the output scales and biases the fold makes "
        "(and the other biases) are rounded. ptq: after QAT, on the calibration range; qat: "
        "fold before QAT's quantizers are exported and round them with QAT's own quantizers "
        "(scaling), no more training unless fold_epochs (which always rounds this way)",
    )
    bias_correction: bool | None = Field(
        None,
        description="fold_bn: after, ptq rounding: round each folded output scale first and "
        "move the shift it makes in its layer's mean output (measured on bn_batches training "
        "batches) into the layer's bias before that is rounded (Nagel et al. 2019); "
        "null: off",
    )
    equalize: bool = Field(
        True,
        description="T-Basis layers: first move each coefficient row's magnitude into its "
        "rank scaling and each layer's into the batch norm after it, so that one grid per "
        "table quantizes every layer alike (the network computes the same function)",
    )
    bn_batches: int = Field(
        16,
        ge=0,
        description="qat: re-estimate the batch norms' statistics on this many training "
        "batches once the quantizers are in, so the accuracy before training is the quantized "
        "network's (0: keep the float statistics)",
    )
    bn_reestimate: bool = Field(
        False,
        description="qat with batch norms: re-estimate their statistics again after training, "
        "on the final quantized weights (bn_batches batches), as Nagel et al. (ICML 2022) do "
        "for weights that oscillate between grid points (off: no gain on the T-Basis ResNet-32, "
        "87.56% instead of 87.59%)",
    )
    rate: float | None = Field(
        None,
        ge=0,
        description="qat: rate-aware training, the loss gains this much per KiB of the "
        "quantized tensors' estimated coded size (a Laplace fit to their integers, "
        "jointcomp.quant.rate), which pulls values toward the middle of their grids so entropy "
        "coding stores them in fewer bits; unset or 0: off",
    )
    kmeans_iters: int = Field(100, ge=1)
    budget: QuantBudget | None = Field(
        None, description="choose bits per tensor to meet a coded-size target"
    )
    finetune: FinetuneSpec = Field(
        default_factory=FinetuneSpec, description="qat / kmeans fine-tuning"
    )

    @model_validator(mode="after")
    def _check(self) -> QuantizeParams:
        if self.fold_epochs and (self.method != "qat" or self.fold_bn != "after"):
            raise ValueError("fold_epochs trains folded batch norms: use method qat, fold_bn after")
        if self.fold_lr is not None and not self.fold_epochs:
            raise ValueError("fold_lr is the learning rate of fold_epochs: set fold_epochs too")
        if self.fold_rounding == "qat" and (self.method != "qat" or self.fold_bn != "after"):
            raise ValueError(
                "fold_rounding qat rounds folded batch norms with QAT's quantizers: "
                "use method qat, fold_bn after"
            )
        if self.bias_correction and (
            self.fold_bn != "after" or self.fold_rounding != "ptq" or self.fold_epochs
        ):
            raise ValueError(
                "bias_correction corrects the folded output scales rounded after training: "
                "use fold_bn after, fold_rounding ptq, fold_epochs 0"
            )
        if self.rate and self.method != "qat":
            raise ValueError("rate adds a code-length term to QAT's loss: use method qat")
        codebooks = [k for k, o in self.layers.items() if o.method == "kmeans"]
        if codebooks and self.method == "ptq":
            raise ValueError(
                f"layers {codebooks}: method kmeans fine-tunes codebooks, which ptq does not "
                "train: use method qat (codebooks beside uniform grids) or kmeans"
            )
        if self.refit and self.method != "ptq":
            raise ValueError("refit re-fits factors on the grid after training: use method ptq")
        if self.method != "kmeans":
            low = [k for k in MAIN_KINDS if getattr(self.bits, k) == 1]
            low += [p for p, o in self.layers.items() if 1 in (o.bits, o.sparse_bits)]
            if low or (self.budget and 1 in self.budget.options):
                raise ValueError(
                    f"1-bit integer grids hold one value; {self.method} needs at "
                    f"least 2 bits (found in {low or ['budget.options']})"
                )
        return self


class QuantizeStage(Stage):
    name = "quantize"
    Params = QuantizeParams

    # --- settings per tensor ---------------------------------------------------------------

    def _override(self, target: Target) -> LayerQuant | None:
        p: QuantizeParams = self.params  # type: ignore[assignment]
        for key in (target.name, target.module_path, target.layer):
            found = first_match(key, p.layers)
            if found is not None:
                return found
        return None

    def spec_for(self, target: Target) -> tuple[QuantSpec | None, bool]:
        """(spec, whether a layer override fixed its bits); spec None = stays float."""
        p: QuantizeParams = self.params  # type: ignore[assignment]
        bits = getattr(p.bits, target.kind)
        granularity, symmetric, narrow = p.granularity, p.symmetric, p.narrow_range
        include_zero, scale_grid = True, None
        pinned = False
        o = self._override(target)
        if o is not None:
            if o.keep_float:
                return None, True
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
        if target.kind not in ("factors", "weights"):
            granularity = "tensor"
        elif granularity == "auto":
            # a float32 scale per channel pays off only over enough values per channel
            shape = target.shape
            per_channel = math.prod(shape) // max(1, shape[target.channel_axis])
            granularity = "channel" if per_channel >= AUTO_MIN_PER_CHANNEL else "tensor"
        spec = QuantSpec(bits, granularity, symmetric, narrow, include_zero, scale_grid)
        return (spec.for_fixed_zeros() if target.fixed_zeros else spec), pinned

    def _codebook(self, target: Target) -> bool:
        """Whether a layer override gives ``target`` a k-means codebook under QAT."""
        o = self._override(target)
        return o is not None and o.method == "kmeans"

    def _kmeans(self, ctx: StageContext):
        p: QuantizeParams = self.params  # type: ignore[assignment]
        return lambda t, spec, x: kmeans_codebook(
            x,
            spec.bits,
            pin_zero=t.fixed_zeros or bool((x == 0).float().mean() > 0.01),
            seed=ctx.seed,
            max_iter=p.kmeans_iters,
        )

    @staticmethod
    def _attach_all(model: nn.Module, plan: list[tuple[Target, QuantSpec]], quantize) -> None:
        """Put ``quantize``'s parametrization on every planned tensor not quantized yet (a
        shared tensor is met once per layer that holds it)."""
        done = set(quantized_tensors(model))
        for target, spec in plan:
            if target.name not in done:
                x = target.value(model).detach()
                attach(target.module(model), target.tensor, quantize(target, spec, x).to(x.device))
                done.add(target.name)

    def quantizer(self, ctx: StageContext):
        """The method's one-shot quantizer (target, spec, value) → parametrization."""
        p: QuantizeParams = self.params  # type: ignore[assignment]
        if p.method == "kmeans":
            return self._kmeans(ctx)
        return lambda t, spec, x: ptq_tensor(
            x, spec, spec.axis(t.channel_axis), p.calibration, t.fixed_zeros
        )

    # --- the stage -------------------------------------------------------------------------

    def apply(self, model: nn.Module, ctx: StageContext) -> nn.Module:
        p: QuantizeParams = self.params  # type: ignore[assignment]
        start = time.perf_counter()
        model = model.to(ctx.device).eval()
        summary: dict[str, Any] = {"method": p.method, "accuracy_before": ctx.evaluate(model)}
        if p.fold_bn is True:
            folded, unfolded = fold_batchnorms(model)
            summary.update(
                bn_folded=folded, bn_not_folded=unfolded, accuracy_folded=ctx.evaluate(model)
            )
            ctx.log(f"folded {len(folded)} batch norm(s), {len(unfolded)} left")
        elif p.fold_bn == "after":  # plain layers' batch norms now; T-Basis layers' after QAT
            folded, _ = fold_batchnorms(model)
            summary["bn_folded_first"] = [f["name"] for f in folded]
        if p.equalize and shared_modules(model)[1]:
            summary["equalized"] = equalize_tbasis(model)
            ctx.log(f"equalized {summary['equalized']['rows']} T-Basis table rows")
        plan, extras, floats, pinned = self._plan(model, ctx)
        if not plan and not extras:
            raise ModelError(
                "quantize: no tensor to quantize (every kind's bits is null, or "
                "every layer skipped)"
            )
        if p.budget is not None:
            plan = self._apply_budget(model, ctx, plan, pinned, summary)
        methods = {t.name: p.method for t, _ in plan}
        trained = [t.name for t, s in plan if not s.include_zero]
        if trained and p.method != "ptq":
            raise ModelError(
                f"quantize: include_zero false is for tensors rounded after training (biases, "
                f"norms, folded output scales), but {trained[:3]} are trained by {p.method}"
            )
        if p.method == "qat":
            codebooks = [(t, s) for t, s in plan if self._codebook(t)]
            # trained with the uniform grids' QAT, as method kmeans trains them
            self._attach_all(model, codebooks, self._kmeans(ctx))
            methods.update({t.name: "kmeans" for t, _ in codebooks})
            uniform = [(t, s) for t, s in plan if not self._codebook(t)]
            folded_plan = self._qat(model, ctx, uniform, summary)
            plan = plan + folded_plan
            methods.update({t.name: "qat" for t, _ in folded_plan})
        else:
            if p.method == "ptq" and p.refit:
                methods.update(self._refit(model, ctx, plan, summary))
            self._attach_all(model, plan, self.quantizer(ctx))
            if p.method == "kmeans":
                summary["accuracy_quantized"] = ctx.evaluate(model)
                fit = ctx.finetune(model, p.finetune, description="quantize (kmeans)")
                summary["finetune_loss"] = fit.loss
        if p.fold_bn == "after":
            extras = self._fold_after(model, ctx, extras, summary)
        self._round_extras(model, ctx, extras, summary)
        methods.update({t.name: "ptq" for t, _ in extras})
        snap_scales(model, plan + extras, summary)
        model.eval()
        summary["accuracy_after"] = ctx.evaluate(model)
        self._record(model, ctx, plan + extras, methods, floats, summary, start)
        return model

    def _round_extras(self, model, ctx, extras, summary) -> None:
        """Round the biases and norms once training is over: output scales first, each
        layer's shift in mean output then moved into its bias (``bias_correction``)."""
        p: QuantizeParams = self.params  # type: ignore[assignment]
        scales = [(t, s) for t, s in extras if t.tensor == "out_scale"]
        means = {}
        if p.bias_correction and scales:
            layers = {t.module_path: t.module(model) for t, _ in scales}
            batches = ctx.calibration_batches(p.bn_batches or 4)
            means = output_means(model, layers, batches, ctx.device)
        corrected = 0
        for target, spec in scales + [(t, s) for t, s in extras if t.tensor != "out_scale"]:
            module = target.module(model)
            x = target.value(model).detach()
            attach(module, target.tensor, ptq_tensor(x, spec, None, p.calibration).to(x.device))
            bias = getattr(module, "bias", None)
            if target.module_path in means and isinstance(bias, nn.Parameter):
                rounded = target.value(model).detach()
                new = correct_bias(bias, x, rounded, means[target.module_path].to(x.device))
                bias.data.copy_(new)
                corrected += 1
        if p.bias_correction and scales:
            summary["bias_corrected"] = corrected

    def _fold_and_train(self, model, ctx, session, summary) -> list[tuple[Target, QuantSpec]]:
        """Fold the batch norms after T-Basis layers into the layers mid-QAT, put quantizers on
        the output scales and biases that appear, and train ``fold_epochs`` more epochs (none:
        QAT's export rounds them)."""
        p: QuantizeParams = self.params  # type: ignore[assignment]
        targets, _ = self._fold_tbasis(model, ctx, summary)
        summary["fold_epochs"] = p.fold_epochs
        done = set(session.layers) | set(session.params)
        fresh = [
            (t, spec)
            for t, spec in targets
            if t.name not in done and t.module_path not in done and not t.module_level
        ]
        session.prepare(fresh)
        summary["accuracy_folded"] = ctx.evaluate(model)
        if not p.fold_epochs:
            return fresh
        ctx.log(f"training {len(fresh)} folded tensors on their grids for {p.fold_epochs} epoch(s)")
        update: dict[str, object] = {"epochs": p.fold_epochs}
        if p.fold_lr is not None:
            update["lr"] = p.fold_lr
        spec = p.finetune.model_copy(update=update)
        fit = ctx.finetune(model, spec, description="quantize (qat, folded)", seed_offset=1)
        summary["fold_finetune_loss"] = fit.loss
        return fresh

    def _fold_after(self, model, ctx, extras, summary) -> list[tuple[Target, QuantSpec]]:
        """Fold the batch norms after T-Basis layers into the trained, quantized layers; the
        output scales and biases that appear join the tensors rounded after training."""
        targets, alive = self._fold_tbasis(model, ctx, summary)
        kept = [(t, s) for t, s in extras if t.name in alive]
        skip = {t.name for t, _ in kept} | set(quantized_tensors(model))
        return kept + [(t, s) for t, s in targets if t.name not in skip]

    def _fold_tbasis(self, model, ctx, summary) -> tuple[list[tuple[Target, QuantSpec]], set[str]]:
        """Fold the batch norms after T-Basis layers into the layers (once: a second call finds
        none) and plan the model again. Returns its targets — a folded output scale is a norm:
        the norms' bits unless a layer override pins it, left out when those are null — and
        the names of every target the new plan has."""
        from ..nn.tbasis_bn import fold_batchnorms as fold_into_tbasis

        p: QuantizeParams = self.params  # type: ignore[assignment]
        model.eval()
        folded, unfolded = fold_into_tbasis(model)
        if folded or "bn_folded" not in summary:
            summary.update(bn_folded=folded, bn_not_folded=unfolded)
        if folded:
            ctx.log(f"folded {len(folded)} batch norm(s) into their layers, {len(unfolded)} left")
        plan, extras, _, pinned = self._plan(model, ctx)
        targets = []
        for t, spec in plan + extras:
            if t.kind in MAIN_KINDS and t.name not in pinned:
                if p.bits.norms is None:
                    continue
                spec = spec.with_bits(p.bits.norms)
            targets.append((t, spec))
        return targets, {t.name for t, _ in plan + extras}

    def _plan(self, model: nn.Module, ctx: StageContext):
        p: QuantizeParams = self.params  # type: ignore[assignment]
        fixed = fixed_zero_names(model, ctx.meta.get("sparse", []))
        targets, floats = find_targets(model, fixed)
        plan, extras, pinned = [], [], set()
        for t in targets:
            if match_any(t.layer, p.skip) or match_any(t.module_path, p.skip):
                floats.append({"name": t.name, "reason": "matches a skip pattern"})
                continue
            spec, fixed_bits = self.spec_for(t)
            if spec is None:
                why = "layer override keep_float" if fixed_bits else f"bits.{t.kind} is null"
                floats.append({"name": t.name, "reason": why})
                continue
            if fixed_bits:
                pinned.add(t.name)
            (plan if t.kind in MAIN_KINDS else extras).append((t, spec))
        return plan, extras, floats, pinned

    def _apply_budget(
        self, model, ctx, plan, pinned: set[str], summary
    ) -> list[tuple[Target, QuantSpec]]:
        from ..quant.mixed import choose_bits

        p: QuantizeParams = self.params  # type: ignore[assignment]
        budget = p.budget
        val = ctx.data.val if len(ctx.data.val) else ctx.data.train
        batches = first_batches(val, budget.batch_size, budget.batches)
        free = [(t, s) for t, s in plan if t.name not in pinned]
        fixed = [(t, s) for t, s in plan if t.name in pinned]
        try:
            bits, record = choose_bits(
                model,
                free,
                budget.options,
                budget.bytes,
                self.quantizer(ctx),
                batches,
                ctx.device,
                fixed,
            )
        except ValueError as exc:
            raise ModelError(f"quantize: {exc}") from None
        summary["budget"] = record
        ctx.log(
            f"budget {budget.bytes:,} B: bits {sorted(set(bits.values()))} "
            f"(estimated {record['achieved_bytes']:,} B)"
        )
        return [(t, s.with_bits(bits[t.name]) if t.name in bits else s) for t, s in plan]

    def _refit(self, model, ctx, plan, summary) -> dict[str, str]:
        """Quantized CP-ALS / TT-SVD for CP and TT layers whose factors all share one width."""
        methods, notes = {}, []
        modules = dict(model.named_modules())
        for path, module in modules.items():
            if not isinstance(module, REFITTABLE):
                continue
            prefix = f"{path}." if path else ""
            mine = [
                (t, s)
                for t, s in plan
                if t.kind == "factors"
                and (t.module_path == path or t.module_path.startswith(prefix))
            ]
            widths = {s.bits for _, s in mine}
            if not mine or len(widths) != 1:
                notes.append({"name": path, "reason": "factors not all quantized at one width"})
                continue
            try:
                quantized = refit_layer(module, widths.pop(), seed=ctx.seed)
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

    def _qat(self, model, ctx, plan, summary) -> list[tuple[Target, QuantSpec]]:
        """QAT of ``plan``; returns the folded tensors trained after it (``fold_epochs``)."""
        from ..quant.qat import QATSession

        p: QuantizeParams = self.params  # type: ignore[assignment]
        session = QATSession(model, p.scaling)
        session.prepare(plan)
        if p.bn_batches:
            recalibrate_batchnorm(model, ctx.calibration_batches(p.bn_batches), ctx.device)
        summary["accuracy_quantized"] = ctx.evaluate(model)
        extra_loss = None
        if p.rate:
            rate = p.rate / 8192  # per KiB → per bit

            def extra_loss(_: nn.Module) -> torch.Tensor:
                return rate * session.rate_bits()

            with torch.no_grad():
                summary["rate_bytes_before"] = round(float(session.rate_bits()) / 8)
        fit = ctx.finetune(model, p.finetune, description="quantize (qat)", extra_loss=extra_loss)
        if p.rate:
            with torch.no_grad():
                summary["rate_bytes_after"] = round(float(session.rate_bits()) / 8)
        summary["finetune_loss"] = fit.loss
        summary["finetune_steps"] = fit.steps
        summary["finetune_seconds"] = round(fit.seconds, 2)
        reestimate = p.fold_bn is not True and p.bn_reestimate and p.bn_batches > 0
        if p.fold_bn == "after" or reestimate:  # the accuracy the fold / re-estimation starts at
            summary["accuracy_trained"] = ctx.evaluate(model)
        if reestimate:
            batches = ctx.calibration_batches(p.bn_batches)
            if recalibrate_batchnorm(model, batches, ctx.device):
                summary["accuracy_reestimated"] = ctx.evaluate(model)
        fold_now = p.fold_epochs or (p.fold_bn == "after" and p.fold_rounding == "qat")
        folded = self._fold_and_train(model, ctx, session, summary) if fold_now else []
        session.export()
        return folded

    def _record(self, model, ctx, targets, methods, floats, summary, start) -> None:
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
        ctx.record["layers"] = rows
        ctx.record["float"] = floats
        ctx.record["summary"] = summary
        ctx.log(
            f"{len(rows)} tensors quantized ({params_q:,} params, ≈{summary['est_bytes']:,} "
            f"B coded); top-1 {summary['accuracy_before']:.2%} → "
            f"{summary['accuracy_after']:.2%}"
        )
