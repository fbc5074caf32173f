"""The fast runtime: a decoded (or in-memory compressed) model rebuilt for inference speed, not
for bit-exactness.

``to_fast`` starts from ``materialize`` (plain tensors instead of quantized parametrizations)
and then decides, layer by layer, how each one runs:

- a quantized ``nn.Linear`` whose integers fit int8 (≤ 8 bits, integer zero points, one scale
  per output row or per tensor): torch's dynamic int8 kernel holding the file's own integers
  (``jointcomp.runtime.int8``), activations quantized per token (``int8``) or per tensor
  (``int8 per-tensor``), each with the few input channels that the example shows to be far
  larger than the rest left in float (``… + float channels``) — or ``dense float``. Linears
  reading the same input (a transformer's query, key and value) are chosen together and run on
  one stacked kernel (``jointcomp.runtime.shared``);
- a factorized layer (``FactorizedModule``): ``dense float`` (one plain ``nn.Linear`` /
  ``nn.Conv2d`` / ``nn.Embedding`` with the rebuilt weight), ``factorized float`` (its factors,
  as stored) or ``factorized int8`` (its factors, with the quantized factor Linears on int8
  kernels).

Given ``example`` inputs, every such layer's own input is captured while the example runs and
each form is timed on it (torch.utils.benchmark, median, rounds interleaved). Forms differ in
exactness as much as in speed, and layers differ in how much their error matters (in MiniLM a
value projection on per-tensor int8 costs a hundred times the output cosine that a query
projection does), so under a deviation budget (``min_cosine``, the default) each int8 form's
effect on the model's output is measured too — the output cosine to the exact one on the
example, only that layer switched — and the fastest combination whose summed deviations
(``1 − cosine``, about additive for small independent errors) stay within the budget is chosen
along each layer's time/deviation hull. The whole module is then measured on the example; if
the deviations did not add up as predicted, the worst layers move to more exact forms until
it holds. Without a budget the fastest form of each layer is kept. Without an example a fixed
rule decides: ``int8`` for every quantized Linear that fits, and a factorized layer keeps the
execution stored in it (``factorized int8`` when its factors allow). Convolutions stay float: a
quantized conv needs activation scales calibrated per layer, and around the small convs of the
quickstart (16–32 channels on 8×8 maps, batch 1) quantizing and dequantizing made it twice as
slow as the float conv (it pays from about 64 channels on 56×56).

The result is not bit-exact: int8 kernels quantize activations per call and accumulate in int32,
and a rebuilt dense weight sums in another order than its factors. It says so in the report it
carries (``runtime_report``); ``jointcomp.runtime.deviation`` measures how far it strays.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..batches import run_model
from ..errors import RecipeError
from ..nn._conv import ConvSpec
from ..nn.bnfold import fold_batchnorms
from ..nn.embedding import LowRankEmbedding
from ..nn.execution import FactorizedModule
from ..nn.lowrank_sparse import LowRankPlusSparse
from ..tasks.base import select_output
from .int8 import Int8Linear, int8_linear, outlier_channels
from .materialize import IntGrid, materialize
from .shared import SharedInputKernel, SharedInputSlice, float_channels, stack_linears

__all__ = [
    "ACTIVATIONS",
    "FORMS",
    "FastReport",
    "LayerChoice",
    "dense_module",
    "runtime_report",
    "to_fast",
]

INT8, INT8_FLOAT, INT8_TENSOR, INT8_TENSOR_FLOAT = (
    "int8",
    "int8 + float channels",
    "int8 per-tensor",
    "int8 per-tensor + float channels",
)
DENSE, FACTORIZED, FACTORIZED_INT8 = "dense float", "factorized float", "factorized int8"
FORMS = (INT8, INT8_FLOAT, INT8_TENSOR, INT8_TENSOR_FLOAT, DENSE, FACTORIZED, FACTORIZED_INT8)
# each int8 form of a plain Linear: activations per token or not, outlier channels in float or not
_INT8_VARIANTS = {
    INT8: (True, False),
    INT8_FLOAT: (True, True),
    INT8_TENSOR: (False, False),
    INT8_TENSOR_FLOAT: (False, True),
}
_FLOAT_FORMS = (DENSE, FACTORIZED)
_REPORT_ATTR = "jc_runtime_report"


@dataclass
class LayerChoice:
    """How one layer runs: its ``form`` (one of ``FORMS``), the time of each candidate form on
    the layer's input from the example (ms; empty when chosen by rule), the deviation of each
    int8 form (``1 − cosine`` of the model's output to the exact output on the example when
    only this layer runs in it; float forms count 0), why, how many input channels its int8
    kernels leave to float (outliers) and the layers it covers (``members``: several for
    Linears reading one input, chosen together and run on one stacked kernel)."""

    name: str
    layer: str
    form: str
    times_ms: dict[str, float] = field(default_factory=dict)
    why: str = ""
    float_channels: int = 0
    deviations: dict[str, float] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)


@dataclass
class FastReport:
    """What ``to_fast`` chose. ``bit_exact`` is always False: the fast module's outputs differ
    from the exact module's (``jointcomp.runtime.deviation`` says by how much). Under a budget
    (``min_cosine``), ``predicted_cosine`` is ``1 −`` the sum of the chosen forms' deviations
    and ``cosine`` the fast module's output cosine to the exact one on the example, measured
    after the choice (None without a budget); ``backed_off`` names the layers moved to a more
    exact form because the measured cosine missed the budget; ``folded`` the batch norms
    folded into the float layer before them."""

    threads: int
    timed: bool
    layers: list[LayerChoice]
    bit_exact: bool = False
    min_cosine: float | None = None
    predicted_cosine: float | None = None
    cosine: float | None = None
    backed_off: list[str] = field(default_factory=list)
    folded: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many layers run in each form."""
        out: dict[str, int] = {}
        for layer in self.layers:
            out[layer.form] = out.get(layer.form, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """One line per layer: name, type, chosen form, the measured times and deviations."""
        how = "forms chosen by rule"
        if self.timed:
            how = "fastest form of each layer on the example"
        if self.min_cosine is not None:
            how = (
                f"fastest forms within cosine {self.min_cosine} to exact on the example "
                f"(predicted {self.predicted_cosine:.6f}, measured {self.cosine:.6f})"
            )
        lines = [f"fast runtime (not bit-exact), {self.threads} thread(s), {how}"]
        for c in self.layers:
            times = ", ".join(
                f"{f} {t:.4f} ms" + (f" Δ{c.deviations[f]:.1e}" if f in c.deviations else "")
                for f, t in c.times_ms.items()
            )
            side = f" ({c.float_channels} float channels)" if c.float_channels else ""
            lines.append(f"  {c.name:<40} {c.layer:<18} {c.form:<32} {times or c.why}{side}")
        if self.backed_off:
            lines.append(f"  backed off after measuring: {', '.join(self.backed_off)}")
        return "\n".join(lines)


def runtime_report(model: nn.Module) -> FastReport | None:
    """The report ``to_fast`` attached to ``model`` (None for a module it did not make)."""
    return getattr(model, _REPORT_ATTR, None)


# --- the forms ---------------------------------------------------------------------------------


@torch.no_grad()
def dense_module(layer: FactorizedModule) -> nn.Module:
    """A plain ``nn.Linear`` / ``nn.Conv2d`` / ``nn.Embedding`` computing ``layer``'s dense
    execution (its rebuilt weight and bias); ``layer`` itself, set to dense execution, when it
    is of a kind none of those computes."""
    weight = layer.reconstruct_weight().detach().clone()
    bias = layer.dense_bias
    bias = None if bias is None else bias.detach().clone()
    inner = layer.lowrank if isinstance(layer, LowRankPlusSparse) else layer
    spec = getattr(inner, "spec", None)
    plain: nn.Module
    if isinstance(inner, LowRankEmbedding):
        plain = nn.Embedding.from_pretrained(weight, freeze=True, padding_idx=inner.padding_idx)
    elif isinstance(spec, ConvSpec) and tuple(weight.shape) == spec.weight_shape:
        plain = nn.Conv2d(
            spec.in_channels,
            spec.out_channels,
            spec.kernel_size,
            stride=spec.stride,
            padding=spec.padding,
            dilation=spec.dilation,
            groups=spec.groups,
            bias=bias is not None,
            padding_mode=spec.padding_mode,
        )
    elif spec is None and weight.dim() == 2:
        plain = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    else:
        fallback = copy.deepcopy(layer)
        fallback.execution = "dense"
        return fallback.eval()
    plain = plain.to(device=weight.device, dtype=weight.dtype)
    plain.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        plain.bias = nn.Parameter(bias, requires_grad=False)
    return plain.eval()


@dataclass
class _Int8Setup:
    """What building int8 kernels needs: the grids, the activation granularities allowed
    (``per_token`` values, most exact first), the captured inputs (by module id) and the
    outlier ratio (None: no float channels)."""

    grids: dict[str, IntGrid | None]
    per_token: tuple[bool, ...]
    inputs: dict[int, torch.Tensor]
    outliers: float | None

    def _cols(self, linear: nn.Module) -> torch.Tensor | None:
        x = self.inputs.get(id(linear))
        if x is None or self.outliers is None:
            return None
        cols = outlier_channels(x, self.outliers)
        return cols if len(cols) else None

    def kernels(self, key: str, linear: nn.Module) -> dict[str, Int8Linear]:
        """Every int8 form of ``linear`` allowed (``_INT8_VARIANTS``), most exact first; the
        float-channel forms only where the example shows outlier channels."""
        grid = self.grids.get(key)
        if grid is None or type(linear) is not nn.Linear:
            return {}
        cols = self._cols(linear)
        out: dict[str, Int8Linear] = {}
        for per_token in self.per_token:
            for form, variant in _INT8_VARIANTS.items():
                if variant[0] != per_token or (variant[1] and cols is None):
                    continue
                kernel = int8_linear(linear, grid, per_token=per_token)
                if kernel is None:
                    return {}
                if variant[1]:
                    kernel.set_outliers(cols, linear.weight)
                out[form] = kernel
        # most exact first: float channels before none, per token before per tensor
        return dict(sorted(out.items(), key=lambda kv: (not kv[1].per_token, not _has_cols(kv[1]))))

    def kernel(self, key: str, linear: nn.Module) -> Int8Linear | None:
        """The most exact int8 form of ``linear`` allowed (None: it has none)."""
        return next(iter(self.kernels(key, linear).values()), None)


def _has_cols(kernel: Int8Linear) -> bool:
    return kernel.outlier_cols is not None


def _int8_factors(layer: FactorizedModule, name: str, setup: _Int8Setup) -> nn.Module | None:
    """A copy of ``layer`` (factorized execution) whose quantized factor Linears run on int8
    kernels (their most exact form); None when none of them can."""
    out = copy.deepcopy(layer)
    out.execution = "factorized"
    swapped = False
    for path, child in list(layer.named_modules()):
        kernel = setup.kernel(f"{name}.{path}.weight" if name else f"{path}.weight", child)
        if path and kernel is not None:
            out.set_submodule(path, kernel)
            swapped = True
    return out.eval() if swapped else None


def _candidates(
    name: str, module: nn.Module, setup: _Int8Setup
) -> tuple[dict[str, nn.Module], str]:
    """The forms ``module`` can run in, and the one the rule picks without timing."""
    if isinstance(module, FactorizedModule):
        forms: dict[str, nn.Module] = {DENSE: dense_module(module)}
        factorized = copy.deepcopy(module)
        factorized.execution = "factorized"
        forms[FACTORIZED] = factorized.eval()
        with_int8 = _int8_factors(module, name, setup)
        if with_int8 is not None:
            forms[FACTORIZED_INT8] = with_int8
        if module.execution == "dense":
            return forms, DENSE
        return forms, FACTORIZED_INT8 if with_int8 is not None else FACTORIZED
    kernels = setup.kernels(f"{name}.weight" if name else "weight", module)
    if not kernels:
        return {DENSE: module}, DENSE
    rule = next(f for f in kernels if f in (INT8, INT8_TENSOR))  # no example, no float channels
    return {DENSE: module, **kernels}, rule


def _units(model: nn.Module, grids: dict[str, IntGrid | None]) -> list[tuple[str, nn.Module]]:
    """The layers with a choice to make: every outermost factorized layer and every quantized
    plain Linear outside one (a factorized layer's factors are chosen with it)."""
    units: list[tuple[str, nn.Module]] = []
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside):
            continue
        if isinstance(module, FactorizedModule):
            units.append((name, module))
            inside.append(name)
        elif type(module) is nn.Linear and grids.get(f"{name}.weight" if name else "weight"):
            units.append((name, module))
    return units


# --- timing ------------------------------------------------------------------------------------


@torch.no_grad()
def _capture(model: nn.Module, modules: list[nn.Module], example: Any) -> dict[int, torch.Tensor]:
    """Each module's first single-tensor input while ``model`` runs ``example`` (by id; one
    copy for modules reading the same tensor), and the model's output (its first tensor) under
    ``_OUTPUT``."""
    seen: dict[int, torch.Tensor] = {}
    copies: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # held: ids stay unique

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if (
            id(module) not in seen
            and len(args) == 1
            and not kwargs
            and isinstance(args[0], torch.Tensor)
        ):
            # modules reading the same tensor get the same copy (how _make_units finds them)
            x = args[0]
            if id(x) not in copies:
                copies[id(x)] = (x, x.detach().clone())
            seen[id(module)] = copies[id(x)][1]

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in modules]
    try:
        output = run_model(model, example)
    finally:
        for h in handles:
            h.remove()
    with contextlib.suppress(RecipeError):  # no tensor in it: no deviation to measure
        seen[_OUTPUT] = select_output(output).detach().clone()
    return seen


_OUTPUT = -1  # the model's output in _capture's answer (no module has this id)


@torch.inference_mode()
def _time_forms(
    forms: dict[str, nn.Module], x: torch.Tensor, threads: int, min_run_time: float, rounds: int
) -> dict[str, float]:
    """Median time of each form on ``x`` in ms, best of ``rounds`` interleaved rounds."""
    from torch.utils import benchmark

    times = {form: math.inf for form in forms}
    for _ in range(rounds):
        for form, module in forms.items():
            module(x)  # warm-up: first calls allocate and pick kernels
            timer = benchmark.Timer(stmt="m(x)", globals={"m": module, "x": x}, num_threads=threads)
            times[form] = min(
                times[form], timer.blocked_autorange(min_run_time=min_run_time).median
            )
    return {form: round(t * 1e3, 5) for form, t in times.items()}


# --- the module --------------------------------------------------------------------------------


ACTIVATIONS = ("auto", "token", "tensor")


def _signature(module: nn.Module, x: torch.Tensor) -> tuple:
    """What a layer's timing depends on: its type, its tensors' shapes and its input's shape
    (layers alike in all three, as a transformer's blocks are, are timed once)."""
    shapes = tuple((n, tuple(t.shape)) for n, t in module.state_dict().items())
    return (type(module).__name__, shapes, tuple(x.shape), x.dtype)


@dataclass
class _Unit:
    """Layers chosen together (one, or Linears reading the same input) and the forms they can
    run in: per form, what replaces each of ``layers``."""

    name: str
    kind: str
    layers: tuple[nn.Module, ...]
    forms: dict[str, tuple[nn.Module, ...]]
    rule: str
    x: torch.Tensor | None

    def runner(self, form: str) -> nn.Module:
        """A module running the form's replacements on the unit's input, for timing."""
        mods = self.forms[form]
        return mods[0] if len(mods) == 1 else _Calls(mods)

    def key(self) -> tuple:
        """What the forms' times depend on: the layers' and input's shapes and which forms
        there are (how many float channels a form keeps, at most 1/32 of them, barely counts)."""
        assert self.x is not None
        return (tuple(_signature(m, self.x) for m in self.layers), tuple(self.forms))


class _Calls(nn.Module):
    """Each of ``mods`` on the same input, in order (how a model calls Linears sharing one)."""

    def __init__(self, mods: tuple[nn.Module, ...]) -> None:
        super().__init__()
        self.mods = nn.ModuleList(mods)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [m(x) for m in self.mods]


def _group_name(names: list[str]) -> str:
    """``a.b.{c,d,e}`` for ``a.b.c``, ``a.b.d`` and ``a.b.e``."""
    parts = [n.split(".") for n in names]
    common = 0
    while all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    head = ".".join(parts[0][:common])
    tails = ",".join(".".join(p[common:]) for p in parts)
    return f"{head}.{{{tails}}}" if head else f"{{{tails}}}"


def _shared_forms(
    names: list[str], linears: list[nn.Module], setup: _Int8Setup, x: torch.Tensor
) -> dict[str, tuple[nn.Module, ...]]:
    """Linears reading the same input, stacked into one int8 kernel in each form allowed: per
    form, the slice that replaces each Linear (empty when their grids do not stack)."""
    grids = [setup.grids.get(f"{n}.weight") for n in names]
    if any(g is None or not g.fits_int8() for g in grids):
        return {}
    stacked = stack_linears(list(linears), grids)  # type: ignore[arg-type]
    if stacked is None:
        return {}
    big, grid = stacked
    own = _Int8Setup({"weight": grid}, setup.per_token, {id(big): x}, setup.outliers)
    sizes = [m.out_features for m in linears]
    out: dict[str, tuple[nn.Module, ...]] = {}
    for form, kernel in own.kernels("weight", big).items():
        shared = SharedInputKernel(kernel, sizes)
        out[form] = tuple(SharedInputSlice(shared, i) for i in range(len(sizes)))
    return out


def _make_units(
    plain: nn.Module, grids: dict[str, IntGrid | None], setup: _Int8Setup
) -> list[_Unit]:
    """Every layer with a choice to make as a unit, quantized Linears reading the same captured
    input (and able to run on one int8 kernel) as one unit."""
    units: list[_Unit] = []
    sharing: dict[int, list[tuple[str, nn.Module]]] = {}
    for name, module in _units(plain, grids):
        forms, rule = _candidates(name, module, setup)
        x = setup.inputs.get(id(module))
        if type(module) is nn.Linear and x is not None and len(forms) > 1:
            sharing.setdefault(id(x), []).append((name, module))
        units.append(
            _Unit(
                name, type(module).__name__, (module,), {f: (m,) for f, m in forms.items()}, rule, x
            )
        )
    for members in sharing.values():
        if len(members) < 2:
            continue
        names, linears = [n for n, _ in members], [m for _, m in members]
        x = setup.inputs[id(linears[0])]
        stacked = _shared_forms(names, linears, setup, x)
        if not stacked:
            continue
        first = next(i for i, u in enumerate(units) if u.name == names[0])
        forms = {DENSE: tuple(linears), **stacked}
        rule = next(f for f in stacked if f in (INT8, INT8_TENSOR))
        group = _Unit(
            _group_name(names), f"{len(names)} Linears, one input", tuple(linears), forms, rule, x
        )
        units = [u for u in units if u.name not in names]
        units.insert(min(first, len(units)), group)
    return units


def _gap(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``1 −`` the mean cosine of ``out`` to ``ref`` per sample (each sample flattened)."""
    rows = ref.shape[0] if ref.dim() > 1 else 1
    cos = F.cosine_similarity(
        out.reshape(rows, -1).double(), ref.reshape(rows, -1).double(), dim=1, eps=1e-12
    )
    gap = 1.0 - float(cos.mean())
    return gap if gap > 1e-12 else 0.0  # below that, float64 rounding of equal outputs


class _Swapper:
    """Puts forms in place of a model's layers (at every path a layer is reachable by) and
    measures the model's deviation on the example."""

    def __init__(self, root: nn.Module, example: Any, ref: torch.Tensor | None) -> None:
        self.root, self.example, self.ref = root, example, ref
        self.paths: dict[int, list[str]] = {}
        for name, module in root.named_modules(remove_duplicate=False):
            self.paths.setdefault(id(module), []).append(name)

    def put(self, layers: tuple[nn.Module, ...], replacements: tuple[nn.Module, ...]) -> None:
        """Each of ``replacements`` wherever the model held the same place of ``layers``
        before any swap."""
        for layer, replacement in zip(layers, replacements, strict=True):
            for path in self.paths[id(layer)]:
                if path:
                    self.root.set_submodule(path, replacement)
                else:
                    self.root = replacement

    @torch.inference_mode()
    def gap(self) -> float:
        assert self.ref is not None
        return _gap(select_output(run_model(self.root, self.example)).float(), self.ref.float())


def _hull(times: dict[str, float], devs: dict[str, float]) -> list[str]:
    """The forms worth choosing, fastest first: each next one slower and more exact, and each
    step buying less exactness per ms than the one before (the lower convex hull of the
    (time, deviation) points, so that a greedy walk along it is optimal per step)."""
    pareto: list[str] = []
    for f in sorted(times, key=lambda f: (times[f], devs[f])):
        if not pareto or devs[f] < devs[pareto[-1]]:
            pareto.append(f)
    hull: list[str] = []
    for f in pareto:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b stays only where it lies below the line from a to f
            line = devs[a] + (devs[f] - devs[a]) * (times[b] - times[a]) / (times[f] - times[a])
            if devs[b] < line:
                break
            hull.pop()
        hull.append(f)
    return hull


def _within_budget(
    hulls: dict[str, list[str]],
    times: dict[str, dict[str, float]],
    devs: dict[str, dict[str, float]],
    budget: float,
) -> dict[str, int]:
    """Each layer's position on its hull: the fastest forms, then, while the summed deviation
    exceeds ``budget``, the step that buys the most exactness per ms added."""
    pos = dict.fromkeys(hulls, 0)
    total = sum(devs[n][h[0]] for n, h in hulls.items())
    while total > budget:
        best, best_rate = None, -1.0
        for n, h in hulls.items():
            if pos[n] + 1 < len(h):
                a, b = h[pos[n]], h[pos[n] + 1]
                rate = (devs[n][a] - devs[n][b]) / max(times[n][b] - times[n][a], 1e-9)
                if rate > best_rate:
                    best, best_rate = n, rate
        if best is None:
            break
        a, b = hulls[best][pos[best]], hulls[best][pos[best] + 1]
        total += devs[best][b] - devs[best][a]
        pos[best] += 1
    return pos


def _fold_float_batchnorms(plain: nn.Module, grids: dict[str, IntGrid | None]) -> list[str]:
    """Fold every batch norm into the layer before it (one op instead of two), except into a
    layer whose weight an int8 kernel will run from its integers: folding would move the weight
    off its grid. Returns the batch norms folded."""
    gridded = {key.rsplit(".", 1)[0] for key, grid in grids.items() if grid is not None}

    def select(layer: str) -> bool:
        return not any(g == layer or g.startswith(layer + ".") for g in gridded)

    with torch.no_grad():
        folded, _ = fold_batchnorms(plain, select)
    return [f["name"] for f in folded]


def to_fast(
    model: nn.Module,
    example: Any = None,
    *,
    threads: int = 1,
    activations: str = "auto",
    outliers: float | None = 4.0,
    min_cosine: float | None = 0.9995,
    min_run_time: float = 0.02,
    rounds: int = 3,
) -> nn.Module:
    """A copy of ``model`` for fast CPU inference (see the module docstring): quantized
    parametrizations made plain; quantized Linears on int8 kernels holding their own integers
    or in float, factorized layers dense, factorized or factorized with int8 factors.

    With ``example`` (model inputs: a tensor, a tuple or a dict, as the model takes them) each
    layer's forms are timed on its own input (``rounds`` interleaved rounds of at least
    ``min_run_time`` seconds at ``threads`` torch threads; layers of equal shapes are timed
    once), and quantized Linears reading the same input run on one stacked kernel. Under
    ``min_cosine`` (the default) each int8 form's deviation is measured too — ``1 −`` the
    model's output cosine to the exact output on the example, only that layer switched — and
    the fastest combination whose deviations sum to at most ``1 − min_cosine`` is chosen; the
    whole fast module is then measured on the example, and while it misses ``min_cosine`` the
    layer of largest deviation moves to its next more exact form. The default, 0.9995, leaves
    half the 0.999 a deployment would ask for to inputs other than the example.
    ``min_cosine=None``: each layer's fastest form. Without an example a fixed rule decides.
    ``activations``: the int8 kernels may quantize activations per ``"token"`` (each row on its
    own range), per ``"tensor"`` (faster, less exact) or either (``"auto"``; the rule takes
    per token); input channels whose peak on the example exceeds ``outliers`` × the median
    channel's may run in float (None: none). ``model`` is left untouched. The copy carries its
    :class:`FastReport` (``runtime_report(fast)``); it is not bit-exact.

    >>> import torch, jointcomp
    >>> from jointcomp.nn.quantized import IntQuantized, attach
    >>> layer = torch.nn.Linear(8, 4)
    >>> ints = torch.randint(-8, 8, (4, 8))
    >>> _ = attach(layer, "weight", IntQuantized.from_ints(ints, torch.full((4, 1), 0.1),
    ...                                                   bits=4, axis=0))
    >>> fast = to_fast(layer)
    >>> type(fast).__name__, runtime_report(fast).layers[0].form
    ('Int8Linear', 'int8')
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"to_fast takes an nn.Module, got {type(model).__name__}")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    devices = {t.device.type for t in (*model.parameters(), *model.buffers())}
    if devices - {"cpu"}:
        raise ValueError(
            f"to_fast builds CPU kernels; the model lies on {sorted(devices)}: move it with .cpu()"
        )
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
    if outliers is not None and not (isinstance(outliers, (int, float)) and outliers > 1):
        raise ValueError(f"outliers must be a ratio above 1 or None, got {outliers!r}")
    if min_cosine is not None and not (
        isinstance(min_cosine, (int, float)) and -1 <= min_cosine <= 1
    ):
        raise ValueError(f"min_cosine must be a number in [-1, 1] or None, got {min_cosine!r}")
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    plain, grids = materialize(model)
    folded = _fold_float_batchnorms(plain, grids)
    plain_units = _units(plain, grids)
    watched = [m for _, m in plain_units]  # and the factor Linears inside factorized layers
    watched += [
        m
        for _, unit in plain_units
        if isinstance(unit, FactorizedModule)
        for m in unit.modules()
        if type(m) is nn.Linear
    ]
    inputs = _capture(plain, watched, example) if example is not None else {}
    ref = inputs.pop(_OUTPUT, None)
    budgeted = example is not None and min_cosine is not None
    if budgeted and ref is None:
        raise ValueError(
            "min_cosine: the model's output on the example holds no tensor to measure the "
            "deviation on; pass min_cosine=None to take each layer's fastest form"
        )
    per_token = {"auto": (True, False), "token": (True,), "tensor": (False,)}[activations]
    setup = _Int8Setup(grids, per_token, inputs, outliers)
    units = _make_units(plain, grids, setup)
    swap = _Swapper(plain, example, ref)

    choices: dict[str, LayerChoice] = {}
    timed: dict[tuple, dict[str, float]] = {}
    for unit in units:
        times: dict[str, float] = {}
        devs: dict[str, float] = {}
        if unit.x is not None and len(unit.forms) > 1:
            key = unit.key()
            why = "fastest on its input from the example"
            if key in timed:
                why += " (timed on a layer of its shape)"
            else:
                runners = {f: unit.runner(f) for f in unit.forms}
                timed[key] = _time_forms(runners, unit.x, threads, min_run_time, rounds)
            times = dict(timed[key])
            form = min(times, key=lambda f: times[f])
            if budgeted:
                for f, replacement in unit.forms.items():
                    devs[f] = 0.0
                    if f not in _FLOAT_FORMS:  # float forms compute what the exact module does
                        swap.put(unit.layers, replacement)
                        devs[f] = swap.gap()
                        swap.put(unit.layers, unit.layers)
        elif len(unit.forms) == 1:
            form, why = unit.rule, "the only form"
        else:
            form = unit.rule
            why = "rule (no example)" if example is None else "rule (not run by the example)"
        members = [n for layer in unit.layers for n in swap.paths[id(layer)][:1]]
        choices[unit.name] = LayerChoice(unit.name, unit.kind, form, times, why, 0, devs, members)

    by_name = {u.name: u for u in units}
    report = FastReport(threads, example is not None, [], folded=folded)
    if budgeted:
        assert min_cosine is not None
        budget = 1.0 - float(min_cosine)
        free = {n: c for n, c in choices.items() if c.deviations}
        hulls = {n: _hull(c.times_ms, c.deviations) for n, c in free.items()}
        pos = _within_budget(
            hulls,
            {n: c.times_ms for n, c in free.items()},
            {n: c.deviations for n, c in free.items()},
            budget,
        )
        for n, c in free.items():
            c.form = hulls[n][pos[n]]
            c.why = "fastest within the budget" if pos[n] == 0 else "more exact, for the budget"
        for n, c in choices.items():
            swap.put(by_name[n].layers, by_name[n].forms[c.form])
        report.min_cosine = float(min_cosine)
        report.predicted_cosine = 1.0 - sum(c.deviations.get(c.form, 0.0) for c in choices.values())
        gap = swap.gap()
        while gap > budget:  # the deviations did not add up as predicted: back off the worst
            movable = [n for n in free if pos[n] + 1 < len(hulls[n])]
            if not movable:
                break
            worst = max(movable, key=lambda n: free[n].deviations[free[n].form])
            pos[worst] += 1
            c = free[worst]
            c.form, c.why = hulls[worst][pos[worst]], "more exact, backed off after measuring"
            swap.put(by_name[worst].layers, by_name[worst].forms[c.form])
            report.backed_off.append(worst)
            gap = swap.gap()
        report.cosine = 1.0 - gap
    else:
        for n, c in choices.items():
            swap.put(by_name[n].layers, by_name[n].forms[c.form])
    for c in choices.values():
        c.float_channels = float_channels(_Calls(by_name[c.name].forms[c.form]))
    report.layers = list(choices.values())
    fast = swap.root.eval()
    setattr(fast, _REPORT_ATTR, report)
    return fast
