"""One plan for the stages still to run: per layer, the keep ratio prune uses, the rank
decompose uses and the bits quantize uses, chosen together so the written file meets a target.

``make_plan`` measures each layer's options (``sensitivity``: loss deltas on validation
batches; ``size``: coded bytes), adds them per option (keep × rank × bits), and solves the
multiple-choice knapsack over all layers at once (``solve``). Input channels a producer's
pruning removes shrink its consumers: the sizes are re-evaluated with the chosen keeps and the
knapsack solved again, until the keeps settle. ``Plan.apply`` writes the choice into the stages'
per-layer ``overrides``; the pipeline plans again before each planned stage, on the model the
previous stage left (the interactions measured, not assumed).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import StageConfig
from ..context import Context
from ..errors import ModelError
from ..nn.embedding import LowRankEmbedding
from ..nn.execution import FactorizedModule
from ..nn.formats import Geometry
from ..nn.modules import classifier_names
from ..quant import QuantSpec
from ..quant import Target as QuantTarget
from ..stages.decompose import DecomposeConfig, LayerDecompose
from ..stages.prune import LayerPrune, PruneConfig, excluded_layers
from ..stages.quantize import MAIN_KINDS, LayerQuant, QuantizeConfig, plan_targets
from ..training import measure_task
from . import sensitivity as sens
from .options import LayerSpace, describe
from .replay import PrefixReplay
from .size import FLOAT_BYTES, layer_macs, position_bytes, quantized_bytes, stored_values
from .solve import frontier, solve_budget, total
from .target import Target, drop_units

HEADER_BYTES, ENTRY_BYTES = 128, 6  # the file's (compressed) header: fixed, per tensor, about
COUPLING_ROUNDS = 4


@dataclass
class LayerChoice:
    """What the plan does at one layer, and what it predicts there."""

    name: str
    keep: float
    rank: float | None
    ranks: list[int] | None
    format: str | None
    bits: int | None
    predicted_bytes: int
    predicted_loss: float
    options: int
    what: str = ""
    nested: bool = False  # its tensors lie in its sub-layers (a factorized layer)


@dataclass
class Plan:
    """The allocation: per-layer choices, the predicted file size and loss increase (before
    fine-tuning), and what it was asked for."""

    target: dict[str, Any]
    byte_target: int | None
    predicted_bytes: int
    fixed_bytes: int
    base_loss: float
    predicted_loss: float
    layers: list[LayerChoice]
    stages: list[str]
    seconds: float
    base_metric: float | None = None
    oneshot_metric: float | None = None
    notes: list[str] = field(default_factory=list)
    corrections: dict[str, float] = field(default_factory=dict)
    predicted_macs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (report.json)."""
        out = asdict(self)
        out["seconds"] = round(self.seconds, 3)
        return out

    def apply(self, stages: list[StageConfig]) -> list[StageConfig]:
        """``stages`` with this plan's per-layer settings as their first ``overrides``
        (decompose's dense layers excluded from its scope; a decompose left with no layer is
        dropped; quantize's bit budget replaced by the plan)."""
        out: list[StageConfig] = []
        for config in stages:
            if isinstance(config, PruneConfig) and config.structured:
                config = _apply_prune(config, self.layers)
            elif isinstance(config, DecomposeConfig):
                config = _apply_decompose(config, self.layers, self.target.get("macs") is not None)
                if config is None:
                    continue
            elif isinstance(config, QuantizeConfig):
                config = _apply_quantize(config, self.layers)
            out.append(config)
        return out

    @property
    def target_text(self) -> str:
        """The target in words, e.g. ``bytes 20,000``."""
        key = next(k for k in ("bytes", "ratio", "max_drop") if self.target.get(k) is not None)
        value = self.target[key]
        return f"{key} {value:,}" if key == "bytes" else f"{key} {value}"

    def summary(self) -> str:
        """Totals: predicted file bytes against the target, loss change, planning time."""
        text = (
            f"predicted {self.predicted_bytes:,} B (of which {self.fixed_bytes:,} B not planned: "
            f"header, biases, norms) for a file target of {self.byte_target:,} B; predicted "
            f"validation loss {self.base_loss:.4f} {self.predicted_loss:+.4f} before fine-tuning; "
            f"planned in {self.seconds:.1f} s"
        )
        if self.predicted_macs is not None:
            text += f"; predicted {self.predicted_macs:,} MACs (cap {self.target['macs']:,})"
        if self.oneshot_metric is not None and self.base_metric is not None:
            text += f"; one-shot val metric {self.base_metric:.4f} → {self.oneshot_metric:.4f}"
        return text

    def rows(self) -> list[list[str]]:
        """The per-layer table ``jointcomp plan`` prints."""
        return [
            [
                c.name,
                c.what,
                f"{c.predicted_bytes:,}",
                f"{c.predicted_loss:+.4f}",
                str(c.options),
            ]
            for c in self.layers
        ]


def literal(name: str) -> str:
    """``name`` as an fnmatch pattern matching only itself.

    >>> literal("blocks[0].fc")
    'blocks[[]0].fc'
    """
    return "".join(f"[{ch}]" if ch in "[*?" else ch for ch in name)


def _apply_prune(config: PruneConfig, layers: list[LayerChoice]) -> PruneConfig:
    planned = {literal(c.name): LayerPrune(ratio=round(1 - c.keep, 4)) for c in layers}
    # the target decides every planned layer's ratio; layers it does not plan keep theirs
    return config.model_copy(
        update={"target": "channels", "ratio": 0.0, "overrides": _merge(planned, config.overrides)}
    )


def _apply_decompose(
    config: DecomposeConfig, layers: list[LayerChoice], capped: bool = False
) -> DecomposeConfig | None:
    config = _apply_tables(config, layers)
    planned = {}
    dense = []
    for c in layers:
        if c.format is None or c.format == sens.TABLE:
            continue
        if c.rank is None:
            dense.append(literal(c.name))
            continue
        rank: Any = c.ranks if c.ranks is not None else c.rank
        own = next((o for p, o in config.overrides.items() if _matches(c.name, p)), None)
        base = own.model_dump(exclude_none=True) if own is not None else {}
        planned[literal(c.name)] = LayerDecompose(**{**base, "format": c.format, "rank": rank})
    if not planned:
        if config.embeddings is None:
            return None  # nothing left to factorize
        # the tables alone: no Linear/Conv2d layer is decomposed
        return config.model_copy(update={"rank": None, "budget": None, "overrides": {}})
    scope = config.scope.model_copy(update={"exclude": [*config.scope.exclude, *dense]})
    update = {"overrides": _merge(planned, config.overrides), "budget": None, "scope": scope}
    if capped:  # under a MACs cap the layers run as planned: through their factors
        update["execution"] = "factorized"
    return config.model_copy(update=update)


def _apply_tables(config: DecomposeConfig, layers: list[LayerChoice]) -> DecomposeConfig:
    """The embedding tables' planned ranks as per-table overrides; a table planned whole is
    left out of the stage's ``embeddings`` scope; every table whole: no ``embeddings``."""
    tables = config.embeddings
    chosen = [c for c in layers if c.format == sens.TABLE]
    if tables is None or not chosen:
        return config
    ranks = {literal(c.name): c.ranks[0] for c in chosen if c.ranks}
    if not ranks:
        return config.model_copy(update={"embeddings": None})
    whole = [literal(c.name) for c in chosen if not c.ranks]
    scope = tables.scope.model_copy(update={"exclude": [*tables.scope.exclude, *whole]})
    update = {"overrides": _merge(ranks, tables.overrides), "scope": scope}
    return config.model_copy(update={"embeddings": tables.model_copy(update=update)})


def _apply_quantize(config: QuantizeConfig, layers: list[LayerChoice]) -> QuantizeConfig:
    planned = {}
    for c in layers:
        if c.bits is None:
            continue
        own = next((o for p, o in config.overrides.items() if _matches(c.name, p)), None)
        base = own.model_dump(exclude_none=True) if own is not None else {}
        planned[literal(c.name)] = LayerQuant(**{**base, "bits": c.bits})
        if c.nested:  # its tensors lie in sub-layers (a factorized table's first factor)
            planned[literal(c.name) + ".*"] = LayerQuant(**{**base, "bits": c.bits})
    bits = config.bits.model_copy(update={"budget": None})
    return config.model_copy(update={"overrides": _merge(planned, config.overrides), "bits": bits})


def _merge(planned: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """The plan's overrides first (first match wins), then the stage's own for layers the plan
    does not name (an earlier plan's for the same layer are replaced)."""
    return {**planned, **{k: v for k, v in own.items() if k not in planned}}


def _matches(name: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(name, pattern)


# --- the layers and their options ----------------------------------------------------------


@dataclass
class _Unit:
    space: LayerSpace
    tensors: list[tuple[QuantTarget, QuantSpec]]  # what quantize rounds there (main kinds)
    stored: int = 0  # values those tensors hold now
    dkeep: list[float] = field(default_factory=list)
    drank: list[float] = field(default_factory=list)
    dbits: dict[int | None, float] = field(default_factory=dict)
    bytes_per_value: dict[int | None, float] = field(default_factory=dict)
    own_bytes: float = 0.0  # the layer's tensors the plan does not size (its bias, residual)
    correction: float = 1.0  # measured / predicted bytes of this layer in an earlier try
    geom: Geometry | None = None  # activation sizes (for MACs; only under a MACs cap)
    macs_now: int = 0  # the layer's MACs as it is now


def _first(stages: list[StageConfig], kind: type) -> Any:
    return next((c for c in stages if isinstance(c, kind)), None)


def _units(model: nn.Module) -> dict[str, nn.Module]:
    """Plain Linear/Conv2d layers, embedding tables and factorized layers (not their
    sub-layers)."""
    out: dict[str, nn.Module] = {}
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if isinstance(module, FactorizedModule):
            inside.append(name)
            out[name] = module
        elif type(module) in (nn.Linear, nn.Conv2d, nn.Embedding):
            out[name] = module
    return out


def _owner(layer: str, units: dict[str, Any]) -> str | None:
    """The unit a quantized tensor's layer belongs to: itself, or the factorized unit it lies
    in (a factorized table's ``first`` is a layer of its own)."""
    if layer in units:
        return layer
    return next((n for n in units if layer.startswith(n + ".")), None)


def _producers(model: nn.Module, names: list[str], example: Any) -> dict[str, str]:
    """consumer → the layer whose output-channel pruning removes its input channels."""
    import torch_pruning as tp

    modules = dict(model.named_modules())
    by_module = {m: n for n, m in modules.items()}
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    out = {}
    for name in names:
        module = modules[name]
        pruner = graph.get_pruner_of_module(module)
        if pruner is None or module not in graph.module2node:
            continue  # not on the traced forward (a BERT pooler under a sentence embedding)
        group = graph.get_pruning_group(module, pruner.prune_out_channels, idxs=[0])
        for dep, _ in group:
            target = by_module.get(dep.target.module)
            if target in names and target != name and "in_channels" in dep.handler.__name__:
                out.setdefault(target, name)
    return out


def _default_format(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d) and tuple(module.kernel_size) != (1, 1):
        return "tucker2"
    return "svd"


def _decomposable(
    name: str, module: nn.Module, config: DecomposeConfig, classifier: set[str]
) -> str | None:
    """The format decompose would use for this layer, or None when it would not factorize it
    (an embedding table: ``TABLE`` when the stage's ``embeddings`` selects it; a Linear or
    Conv2d only when the stage is asked to decompose those)."""
    if type(module) is nn.Embedding:
        tables = config.embeddings
        return sens.TABLE if tables is not None and tables.scope.selects(name) else None
    if type(module) not in (nn.Linear, nn.Conv2d) or not config.scope.selects(name):
        return None
    if not config.layers_asked:
        return None
    if config.scope.exclude_classifier and name in classifier:
        return None
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        return None
    from ..nn import make_format

    fmt_name = config.layer(name).format or _default_format(module)
    try:
        if not make_format(module, fmt_name, {}).ladder():
            return None
    except ValueError:
        return None
    return fmt_name


def _spaces(
    model: nn.Module, stages: list[StageConfig], target: Target, context: Context
) -> tuple[dict[str, _Unit], list[str]]:
    prune = _first(stages, PruneConfig)
    if prune is not None and not prune.structured:
        prune = None  # unstructured ratios are left to the recipe
    decompose = _first(stages, DecomposeConfig)
    quantize = _first(stages, QuantizeConfig)
    notes = []
    if prune is None and decompose is None and quantize is None:
        raise ModelError(
            "plan: a target allocates prune, decompose and quantize settings; the stages to "
            "run have none of them"
        )
    units = _units(model)
    example = context.example()
    classifier = set(classifier_names(model, example))
    pruned = set(units) - excluded_layers(model, prune, context) if prune else set()
    plan: list = []
    if quantize is not None:
        plan, _, _, _ = plan_targets(model, quantize, context)
    tensors: dict[str, list] = {}
    for t, spec in plan:
        owner = _owner(t.layer, units)
        if t.kind in MAIN_KINDS and t.kind != "sparse_values" and owner is not None:
            tensors.setdefault(owner, []).append((t, spec))
    out = {}
    for name, module in units.items():
        space = LayerSpace(name, module)
        plain = type(module) in (nn.Linear, nn.Conv2d)
        if plain and name in pruned and module.weight.shape[0] > 1:
            space.keeps = list(target.keeps)
        fmt = _decomposable(name, module, decompose, classifier) if decompose else None
        if fmt is not None:
            space.format = fmt
            space.sparse = 0.0 if fmt == sens.TABLE else decompose.layer(name).sparse or 0.0
            space.ranks = [None, *target.ranks]
        if name in tensors:
            space.bits = list(target.bits)
        if len(space.options()) > 1 or name in tensors:
            out[name] = _Unit(space, tensors.get(name, []))
    if prune is not None:
        producers = _producers(model, list(units), example)
        for name, unit in out.items():
            unit.space.producer = producers.get(name)
    if quantize is None:
        notes.append("no quantize stage: every layer stays float32")
    return out, notes


# --- measuring -----------------------------------------------------------------------------


def size_calibration(quantize: Any) -> str:
    """The grid whose integers the file will hold: QAT exports brevitas' grid, which starts
    from the max-abs statistics (``scaling: stats`` or ``learned``) or the least-MSE clipping
    (``mse``); post-training methods round on the stage's ``calibration``.

    >>> from jointcomp.stages import QuantizeConfig
    >>> size_calibration(QuantizeConfig()), size_calibration(QuantizeConfig(ptq={}))
    ('absmax', 'mse')
    """
    if quantize is None:
        return "mse"
    if quantize.qat is not None:
        return "mse" if quantize.qat.scaling == "mse" else "absmax"
    return quantize.calibration


def _measure_bits(model: nn.Module, unit: _Unit, grid: str, loss, base: float) -> None:
    """Loss delta and bytes per stored value at each bit width, all of the layer's tensors
    rounded together on ``grid``: the one the quantize method exports (``size_calibration``),
    for the loss as for the bytes. QAT's statistics scaling keeps the max-abs grid through
    training, which at 2 bits rounds most values to zero: the least-MSE rounding understates
    that loss many times over (a 2-bit LeNet-300 planned on it lost 4 points after QAT)."""
    if not unit.tensors:
        values = unit.space.module.weight.numel()
        unit.stored, unit.dbits, unit.bytes_per_value = values, {None: 0.0}, {None: FLOAT_BYTES}
        return
    unit.stored = sum(t.value(model).numel() for t, _ in unit.tensors)
    for bits in unit.space.bits:
        total_bytes, swaps = 0.0, []
        for t, spec in unit.tensors:
            x = t.value(model).detach()
            est, value = quantized_bytes(
                x, spec.with_bits(bits), spec.axis(t.channel_axis), grid, t.fixed_zeros
            )
            total_bytes += est
            swaps.append((t.module(model), t.tensor, value))
        saved = [(m, k, getattr(m, k).detach().clone()) for m, k, _ in swaps]
        with torch.no_grad():
            for m, k, v in swaps:
                getattr(m, k).copy_(v)
        try:
            unit.dbits[bits] = loss(model) - base
        finally:
            with torch.no_grad():
                for m, k, v in saved:
                    getattr(m, k).copy_(v)
        unit.bytes_per_value[bits] = total_bytes / max(1, unit.stored)
    # fewer bits never predict a lower loss
    running = 0.0
    for bits in sorted(unit.space.bits, reverse=True):
        running = max(running, unit.dbits[bits], 0.0)
        unit.dbits[bits] = running


def _measure(
    model: nn.Module,
    units: dict[str, _Unit],
    context: Context,
    grid: str,
    batches,
) -> float:
    replay = PrefixReplay(model, [unit.space.module for unit in units.values()])
    base = replay.record(lambda: context.loss(model, batches))

    for name, unit in units.items():
        space, module = unit.space, unit.space.module

        def loss(m: nn.Module, module: nn.Module = module) -> float:
            with replay.before(module):  # what ran before the layer is not run again
                return context.loss(m, batches)

        unit.dkeep = sens.prune_deltas(model, module, space.keeps, loss, base)
        if space.format is not None:
            unit.drank = sens.rank_deltas(
                model, module, space.ranks, space.format, space.sparse, loss, base, context.seed
            )
        else:
            unit.drank = [0.0]
        _measure_bits(model, unit, grid, loss, base)
        context.log(f"plan: {name}: {len(space.options())} options measured and interpolated")
    return base


def _tables(units: dict[str, _Unit], keeps: dict[str, float], sparse_bits: int | None):
    """Per layer: the options and their predicted bytes (times the layer's ``correction``),
    loss deltas and MACs (None where no MACs cap asks for them), with each layer's input
    channels cut by its producer's keep in ``keeps``."""
    costs, losses, options, macs = [], [], [], []
    for unit in units.values():
        space = unit.space
        keep_in = keeps.get(space.producer, 1.0) if space.producer else 1.0
        row_c, row_l, row_o, row_m = [], [], [], []
        factorized = isinstance(space.module, FactorizedModule)
        for ki, keep in enumerate(space.keeps):
            for ri, rank in enumerate(space.ranks):
                if factorized:  # as it is
                    values, dense = unit.stored, unit.stored
                else:
                    values, dense = stored_values(space.module, keep, keep_in, rank, space.format)
                ops = None
                if _is_table(unit):
                    ops = 0  # a lookup: no multiply-accumulates
                elif unit.geom is not None:
                    ops = unit.macs_now if factorized else layer_macs(
                        space.module, keep, keep_in, rank, space.format, unit.geom, space.sparse
                    )  # fmt: skip
                for bits in space.bits:
                    size = values * unit.bytes_per_value[bits]
                    if rank is not None and space.sparse > 0:  # the residual: values + positions
                        width = (sparse_bits or 32) / 8
                        size += space.sparse * dense * width + position_bytes(dense, space.sparse)
                    row_c.append(size * unit.correction)
                    row_l.append(unit.dkeep[ki] + unit.drank[ri] + unit.dbits[bits])
                    row_o.append((keep, rank, bits))
                    row_m.append(ops)
        costs.append(row_c)
        losses.append(row_l)
        options.append(row_o)
        macs.append(row_m)
    if any(unit.geom is None and not _is_table(unit) for unit in units.values()):
        return costs, losses, options, None
    return costs, losses, options, macs


def _is_table(unit: _Unit) -> bool:
    module = unit.space.module
    return isinstance(module, (nn.Embedding, LowRankEmbedding))


def _fixed_bytes(model: nn.Module, units: dict[str, _Unit], quantize: Any, rest: float) -> int:
    """Bytes of everything the plan does not size: tensors outside its layers' planned ones
    (biases, norms, sparse residuals, unplanned layers) and the header. A layer's own share is
    kept with it (``own_bytes``, times its correction); the rest is scaled by ``rest``."""
    sparse_bits = quantize.bits.sparse_values if quantize is not None else None
    planned = set()
    for name, unit in units.items():
        unit.own_bytes = 0.0
        if unit.tensors:
            planned |= {t.name for t, _ in unit.tensors}
        else:
            planned.add(f"{name}.weight")
    bias_bits = quantize.bits.biases if quantize is not None else None
    other, entries = float(HEADER_BYTES), 0
    for key, tensor in model.state_dict().items():
        entries += 1
        if key in planned or not tensor.is_floating_point():
            continue
        width = bias_bits / 8 if bias_bits and key.endswith("bias") else FLOAT_BYTES
        size = tensor.numel() * width
        nonzero = int(torch.count_nonzero(tensor))
        if nonzero < tensor.numel() / 2:  # mostly zeros (a sparse residual): values + positions
            values = sparse_bits / 8 if sparse_bits else FLOAT_BYTES
            size = nonzero * values + position_bytes(tensor.numel(), nonzero / tensor.numel())
        owner = next((n for n in units if key.startswith(n + ".")), None)
        if owner is not None:  # reported with its layer (a constant: the solve is unchanged)
            units[owner].own_bytes += size * units[owner].correction
        else:
            other += size
    own = sum(unit.own_bytes for unit in units.values())
    return int(own + (other + ENTRY_BYTES * entries) * rest)


def _solve(
    units: dict[str, _Unit],
    budget: float | None,
    frontier_pick,
    sparse_bits: int | None,
    macs_cap: float | None = None,
) -> tuple[list[int], list, list, list, list | None]:
    """Solve with the keeps' coupling: re-size consumers with their producers' chosen keeps
    and solve again until the choice settles."""
    keeps: dict[str, float] = {}
    choice: list[int] = []
    for _ in range(COUPLING_ROUNDS):
        costs, losses, options, macs = _tables(units, keeps, sparse_bits)
        if budget is not None:
            new = solve_budget(costs, losses, budget, macs=macs, macs_cap=macs_cap)
        else:
            new = frontier_pick(costs, losses, options, macs)
        new_keeps = {n: options[i][j][0] for i, (n, j) in enumerate(zip(units, new))}
        if new == choice and new_keeps == keeps:
            break
        choice, keeps = new, new_keeps
    return choice, costs, losses, options, macs


def _macs(model: nn.Module, units: dict[str, _Unit], example: Any) -> int:
    """The model's MACs per sample (torch's counter, as the audit counts them) less those of
    the planned layers now; sets each unit's geometry and current MACs."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..batches import run_model
    from ..nn.layer_trace import trace_layers

    geoms, _ = trace_layers(model, list(units), example)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        run_model(model, example)
    per_module = {
        key.partition(".")[2]: sum(counts.values()) // 2
        for key, counts in counter.get_flop_counts().items()
    }
    fixed = int(counter.get_total_flops() // 2)
    for name, unit in units.items():
        if _is_table(unit):
            continue  # lookups: no MACs
        if name not in geoms:
            raise ModelError(f"plan: macs: layer {name} is not reached by the example input")
        unit.geom = geoms[name]
        unit.macs_now = int(per_module.get(name, 0))
        fixed -= unit.macs_now
    return max(0, fixed)


def _metric(context: Context, model: nn.Module, batches) -> float:
    if context.evaluate is not None:
        return float(context.evaluate(model))
    found = measure_task(
        model, batches, context.task, reference=context.reference, device=context.device
    )
    return float(found[context.task.metric])


def oneshot(model: nn.Module, units: dict[str, _Unit], picks: dict[str, tuple], calibration: str):
    """A copy of ``model`` with every layer's choice applied at once without fine-tuning
    (channels zeroed, weights replaced by their low-rank reconstruction, rounded to the
    grid): what the plan predicts before the stages train."""
    out = copy.deepcopy(model)
    modules = dict(out.named_modules())
    for name, (keep, rank, bits) in picks.items():
        unit = units[name]
        module = modules[name]
        with torch.no_grad():
            if keep < 1:
                for k, v in sens.masked(module, keep).items():
                    getattr(module, k).copy_(v)
            if rank is not None:
                module.weight.copy_(
                    sens.low_rank(module, unit.space.format, rank, unit.space.sparse, 0)
                )
            if bits is not None:
                for t, spec in unit.tensors:
                    x = t.value(out).detach()
                    _, value = quantized_bytes(
                        x, spec.with_bits(bits), spec.axis(t.channel_axis), calibration,
                        t.fixed_zeros,
                    )  # fmt: skip
                    getattr(t.module(out), t.tensor).copy_(value)
    return out


def make_plan(
    model: nn.Module,
    stages: list[StageConfig],
    target: Target,
    context: Context,
    *,
    dense_bytes: int | None = None,
    byte_target: int | None = None,
    corrections: dict[str, float] | None = None,
    recovery: float | None = None,
    min_bits: int | None = None,
) -> Plan:
    """Plan ``stages`` (those still to run) on ``model`` as it is now for ``target``.
    ``dense_bytes``: the baseline's float32 bytes (for ``ratio``; default: this model's);
    ``byte_target``: a file size that replaces the target's own (the size a max_drop target
    was turned into, or the closed loop's next size); ``corrections``: per layer name, the
    factor an earlier try's file measured against its prediction (``""``: everything outside
    the planned layers), applied to that layer's predicted bytes; ``recovery``: replaces
    ``target.recovery`` (max_drop: the one-shot drop allowed per point of ``max_drop``);
    ``min_bits``: no layer below this bit width (a width an earlier try's QAT failed at,
    ``plan.loop.bit_floor``; a layer whose candidates all lie below keeps its widest).

    >>> import torch, jointcomp
    >>> from torch import nn
    >>> from jointcomp.context import Context
    >>> from jointcomp.batches import Batches
    >>> from jointcomp.stages import QuantizeConfig
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    >>> data = [(torch.randn(32, 16), torch.randint(0, 4, (32,))) for _ in range(4)]
    >>> context = Context(data=Batches(data, data, batch_size=32))
    >>> plan = make_plan(model, [QuantizeConfig(ptq={})], Target(bytes=1400), context)
    >>> plan.predicted_bytes <= 1400, [c.bits for c in plan.layers]
    (True, [2, 6])

    A first layer whose file came out 1.5× its prediction leaves less for the second:

    >>> again = make_plan(model, [QuantizeConfig(ptq={})], Target(bytes=1400), context,
    ...                   corrections={"0": 1.5})
    >>> again.predicted_bytes <= 1400, [c.bits for c in again.layers]
    (True, [2, 3])
    """
    start = time.perf_counter()
    model = model.to(context.device).eval()
    units, notes = _spaces(model, stages, target, context)
    corrections = dict(corrections or {})
    for name, unit in units.items():
        unit.correction = float(corrections.get(name, 1.0))
        if min_bits is not None and unit.tensors:
            widths = [b for b in unit.space.bits if b is not None]
            unit.space.bits = [b for b in widths if b >= min_bits] or [max(widths)]
    if min_bits is not None:
        notes.append(f"bit widths below {min_bits} left out (an earlier try failed there)")
    quantize = _first(stages, QuantizeConfig)
    calibration = size_calibration(quantize)  # the grid the file's integers will be on
    sparse_bits = quantize.bits.sparse_values if quantize is not None else None
    batches = context.validation(target.batches, target.batch_size)
    base = _measure(model, units, context, calibration, batches)
    fixed = _fixed_bytes(model, units, quantize, float(corrections.get("", 1.0)))
    fixed_macs = cap = None
    if target.macs is not None:
        fixed_macs = _macs(model, units, context.example())
        cap = target.macs - fixed_macs
        if cap <= 0:
            raise ModelError(
                f"plan: macs {target.macs:,} cannot be met: the layers the plan does not "
                f"change already take {fixed_macs:,} MACs"
            )
    if dense_bytes is None:
        dense_bytes = sum(p.numel() for p in model.parameters()) * FLOAT_BYTES
    wanted = byte_target if byte_target is not None else target.byte_target(dense_bytes)
    base_metric = oneshot_metric = None
    if wanted is not None:
        if wanted <= fixed:
            raise ModelError(
                f"plan: a file of {wanted:,} bytes cannot be met: the tensors the plan does not "
                f"size and the header already take about {fixed:,} bytes"
            )
        try:
            choice, costs, losses, options, macs = _solve(
                units, wanted - fixed, None, sparse_bits, cap
            )
        except ValueError as exc:
            raise ModelError(f"plan: a file of {wanted:,} bytes cannot be met: {exc}") from None
    else:
        base_metric = _metric(context, model, batches)
        factor = target.recovery if recovery is None else recovery
        # in the metric's own unit (top-1: a fraction)
        allowed = target.max_drop * factor / drop_units(context.task.metric)  # type: ignore[operator]

        def within(costs, losses, options, macs):
            front = frontier(costs, losses, macs=macs, macs_cap=cap)
            lo, hi = 0, len(front) - 1  # front[0]: most accurate; front[-1]: smallest
            while lo < hi:  # the smallest file whose one-shot drop stays within `allowed`
                mid = (lo + hi + 1) // 2
                picks = _picks(units, options, front[mid])
                drop = base_metric - _metric(context, oneshot(model, units, picks, calibration),
                                             batches)  # fmt: skip
                lo, hi = (mid, hi) if drop <= allowed else (lo, mid - 1)
            return front[lo]

        try:
            choice, costs, losses, options, macs = _solve(units, None, within, sparse_bits, cap)
        except ValueError as exc:
            raise ModelError(f"plan: {exc}") from None
    picks = _picks(units, options, choice)
    if base_metric is not None:
        oneshot_metric = _metric(context, oneshot(model, units, picks, calibration), batches)
    layers = _choices(model, units, options, choice, costs, losses, stages)
    predicted = int(total(costs, choice) + fixed)
    if wanted is None:
        wanted = predicted
    return Plan(
        target=target.model_dump(),
        byte_target=int(wanted),
        predicted_bytes=predicted,
        fixed_bytes=fixed,
        base_loss=round(base, 6),
        predicted_loss=round(total(losses, choice), 6),
        layers=layers,
        stages=[c.stage for c in stages],
        seconds=time.perf_counter() - start,
        base_metric=base_metric,
        oneshot_metric=oneshot_metric,
        notes=notes,
        corrections={k: round(v, 4) for k, v in corrections.items()},
        predicted_macs=None if macs is None else int(total(macs, choice) + (fixed_macs or 0)),
    )


def _picks(units: dict[str, _Unit], options: list, choice: list[int]) -> dict[str, tuple]:
    return {name: options[i][j] for i, (name, j) in enumerate(zip(units, choice))}


def _choices(model, units, options, choice, costs, losses, stages) -> list[LayerChoice]:
    prune_first = _first(stages, PruneConfig) is not None
    out = []
    for i, (name, unit) in enumerate(units.items()):
        keep, rank, bits = options[i][choice[i]]
        ranks = None
        if rank is not None and unit.space.format == sens.TABLE:
            ranks = [sens.table_rank(unit.space.module, rank)]
        elif rank is not None and not prune_first:  # the shapes are final: integer ranks
            from ..nn import make_format
            from ..nn.ranks import parse_rank

            module = unit.space.module
            fmt = make_format(module, unit.space.format, {})
            ranks = fmt.resolve(module.weight.detach().cpu().float(), parse_rank(rank))
        out.append(
            LayerChoice(
                name=name,
                keep=keep,
                rank=rank,
                ranks=ranks,
                format=unit.space.format,
                bits=bits,
                predicted_bytes=round(costs[i][choice[i]] + unit.own_bytes),
                predicted_loss=round(losses[i][choice[i]], 6),
                options=len(options[i]),
                nested=isinstance(unit.space.module, FactorizedModule),
                what=(
                    f"factorized · {bits}-bit"
                    if isinstance(unit.space.module, FactorizedModule)
                    else describe(keep, rank, bits)
                )
                + (f" ({unit.space.format} {ranks})" if ranks else ""),
            )
        )
    return out
