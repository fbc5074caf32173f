"""The Python API: one function per technique, each usable on any ``nn.Module`` a user holds,
with plain data and optional fine-tuning; ``compress`` chains them; ``save`` and ``load`` write
and read the file.

Every technique takes the model, its config (the config object, its dict form — the same keys a
recipe uses — or nothing for the defaults) and, as keywords:

- ``data``: what the technique measures on — a Dataset, a DataLoader, a list of ``(inputs,
  labels)`` batches or of input tensors (``jointcomp.batches``);
- ``finetune``: how it fine-tunes — a :class:`jointcomp.Trainer`, any callable with its
  signature, or training settings (a TrainSpec or its dict) to train on ``data``, distilling
  from a frozen copy of the model as it came in when the settings have ``distill``; None: no
  fine-tuning;
- ``device``, ``seed``, ``log`` (a callable taking one line of text), ``evaluate`` (a metric
  ``model -> float`` the record reports before and after);
- ``task``: what the model's output means — ``"classify"`` (the default: labels,
  cross-entropy), ``"distill"`` (label-free: the compressed model's outputs against a frozen
  copy of the model as it came in, cosine by default; budgets, sensitivities and fine-tuning
  all use it), a :class:`jointcomp.tasks.TaskSpec` (or its dict: ``{"kind": "distill",
  "distance": "mse", "output": "last_hidden_state"}``) or a :class:`jointcomp.tasks.Task`.

Each returns a :class:`jointcomp.Step` ``(model, record)``; the model is changed in place where
the technique allows it.

>>> import torch, jointcomp
>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
>>> batches = [(torch.randn(8, 16), torch.randint(0, 4, (8,))) for _ in range(4)]
>>> model, record = jointcomp.prune(model, {"ratio": 0.5}, data=batches)
>>> model[0].out_features
16
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from .batches import as_batches
from .config import StageConfig, format_validation_error
from .container import Artifact, open_artifact
from .context import Context, Step
from .errors import JointcompError, RecipeError
from .nn.sparsity import mark_fixed_zeros
from .plan import Target as PlanTarget
from .plan import make_plan
from .stages import (
    STAGES,
    DecomposeConfig,
    EncodeConfig,
    FoldConfig,
    PruneConfig,
    QuantizeConfig,
    RegularizeConfig,
    ShareConfig,
    apply_stage,
    stage_config,
    stage_seed,
)
from .stages.encode import encode
from .stages.encode import save as _save
from .tasks import Task, TaskSpec, make_task
from .training import Trainer, TrainSpec, asks_distillation, frozen_copy

TaskLike = Task | TaskSpec | str | Mapping[str, Any] | None

Log = Callable[[str], None]


def _validated(cls: type, value: Any, prefix: str) -> Any:
    """``value`` as a ``cls``: the object itself, or its dict validated (RecipeError naming
    each bad key under ``prefix``, as a recipe's would)."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a {cls.__name__} or its dict, got {type(value).__name__}")
    try:
        return cls.model_validate(value)
    except ValidationError as exc:
        lines = format_validation_error(exc, cls, prefix=prefix)
        raise RecipeError(f"invalid {cls.__name__}\n  " + "\n  ".join(lines)) from None


def _target(target: Any) -> PlanTarget:
    """``target`` as a plan Target (the object or its dict)."""
    return _validated(PlanTarget, target, "target")


def _config(cls: type[StageConfig], config: Any) -> StageConfig:
    """``config`` as a ``cls`` (the object or its dict; None: the defaults)."""
    return _validated(cls, {} if config is None else config, cls.stage)


def _trainer(
    finetune: Any,
    data: Any,
    model: nn.Module,
    teacher: nn.Module | None,
    device: torch.device,
    config: StageConfig | None = None,
    task: Task | None = None,
) -> Any:
    """``finetune`` as a fine-tune callable: settings become a Trainer on ``data`` with
    ``task``'s loss, distilling from ``teacher`` (default: a frozen copy of ``model`` as it is
    now) when they or the stage's ``config`` say so, or when the task compares with it."""
    if finetune is None or callable(finetune):
        return finetune
    if isinstance(finetune, TrainSpec):
        spec = finetune
    else:
        try:
            spec = TrainSpec.model_validate(finetune)
        except ValidationError as exc:
            lines = format_validation_error(exc, TrainSpec, prefix="finetune")
            raise RecipeError("invalid finetune settings\n  " + "\n  ".join(lines)) from None
    if data is None:
        raise JointcompError(
            "finetune settings train on data=: pass batches (labeled, or inputs alone with "
            "task='distill')"
        )
    if teacher is None and asks_distillation(spec, config):
        teacher = frozen_copy(model)
    return Trainer(data, spec, teacher=teacher, device=device, task=task)


def _context(
    name: str,
    model: nn.Module,
    *,
    data: Any,
    finetune: Any,
    device: str | torch.device,
    seed: int,
    log: Log | None,
    evaluate: Callable[[nn.Module], float] | None,
    task: TaskLike = None,
    teacher: nn.Module | None = None,
    config: StageConfig | None = None,
    trust: bool = False,
) -> Context:
    device = torch.device(device)
    task = make_task(task, trust=trust)
    reference = None
    if task.needs_reference:  # the model as it came in is the original the task compares with
        reference = teacher if teacher is not None else frozen_copy(model)
        teacher = reference
    context = Context(
        data=None if data is None else as_batches(data),
        finetune=_trainer(finetune, data, model, teacher, device, config, task),
        device=device,
        seed=seed,
        evaluate=evaluate,
        name=name,
        task=task,
        reference=reference,
    )
    if log is not None:
        context.log = lambda message: log(f"{name}: {message}")
    return context


def _apply(cls: type[StageConfig], model: nn.Module, config: Any, **options: Any) -> Step:
    cfg = _config(cls, config)
    return apply_stage(model, cfg, _context(cfg.stage, model, config=cfg, **options))


def prune(
    model: nn.Module,
    config: PruneConfig | Mapping[str, Any] | None = None,
    *,
    data: Any = None,
    finetune: Any = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    log: Log | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
    task: TaskLike = None,
) -> Step:
    """Prune channels (torch-pruning) or single weights (magnitude), as ``config`` says.

    >>> import torch, jointcomp
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 2))
    >>> model, record = jointcomp.prune(model, {"ratio": 0.5}, data=[torch.randn(4, 3, 8, 8)])
    >>> model[0].out_channels, record["params_after"] < record["params_before"]
    (4, True)
    """
    return _apply(
        PruneConfig, model, config, data=data, finetune=finetune, device=device, seed=seed,
        log=log, evaluate=evaluate, task=task,
    )  # fmt: skip


def decompose(
    model: nn.Module,
    config: DecomposeConfig | Mapping[str, Any] | None = None,
    *,
    data: Any = None,
    finetune: Any = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    log: Log | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
    task: TaskLike = None,
) -> Step:
    """Factorize Linear/Conv2d layers (SVD, Tucker-2, CP, TT, optionally + a sparse residual)
    at given ranks or under a params/MACs budget.

    >>> import torch, jointcomp
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    >>> config = {"rank": 8, "scope": {"include": ["0"]}, "execution": "factorized"}
    >>> model, record = jointcomp.decompose(model, config, data=[torch.randn(4, 64)])
    >>> type(model[0]).__name__, record["layers"][0]["ranks"]
    ('SVDLinear', [8])
    """
    return _apply(
        DecomposeConfig, model, config, data=data, finetune=finetune, device=device, seed=seed,
        log=log, evaluate=evaluate, task=task,
    )  # fmt: skip


def share(
    model: nn.Module,
    config: ShareConfig | Mapping[str, Any] | None = None,
    *,
    data: Any = None,
    finetune: Any = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    log: Log | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
    task: TaskLike = None,
) -> Step:
    """Share weights across layers: every selected layer becomes a tensor ring of cores drawn
    from one basis (T-Basis).

    >>> import torch, jointcomp
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(81, 81), nn.ReLU(), nn.Linear(81, 81))
    >>> config = {"basis": 4, "rank": 3, "fit_steps": 5, "fit_batches": 0, "bn_batches": 0}
    >>> model, record = jointcomp.share(model, config)
    >>> model[0].basis is model[2].basis
    True
    """
    return _apply(
        ShareConfig, model, config, data=data, finetune=finetune, device=device, seed=seed,
        log=log, evaluate=evaluate, task=task,
    )  # fmt: skip


def fold(
    model: nn.Module,
    config: FoldConfig | Mapping[str, Any] | None = None,
    *,
    data: Any = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    log: Log | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
    task: TaskLike = None,
) -> Step:
    """Fold batch norms into the layers before them (plain, factorized and T-Basis layers).

    >>> import torch, jointcomp
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    >>> x = torch.randn(2, 3, 8, 8)
    >>> before = model(x)
    >>> model, record = jointcomp.fold(model)
    >>> type(model[1]).__name__, torch.allclose(model(x), before, atol=1e-5)
    ('Identity', True)
    """
    return _apply(
        FoldConfig, model, config, data=data, finetune=None, device=device, seed=seed, log=log,
        evaluate=evaluate, task=task,
    )  # fmt: skip


def quantize(
    model: nn.Module,
    config: QuantizeConfig | Mapping[str, Any] | None = None,
    *,
    data: Any = None,
    finetune: Any = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    log: Log | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
    task: TaskLike = None,
) -> Step:
    """Quantize weights and factors to integers: ``{"qat": {...}}`` (quantization-aware
    training, the default), ``{"ptq": {...}}`` (round to nearest) or ``{"kmeans": {...}}``
    (codebooks), with bits per kind of tensor.

    >>> import torch, jointcomp
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> model, record = jointcomp.quantize(model, {"ptq": {}, "bits": {"weights": 4}})
    >>> record["summary"]["tensors"], record["layers"][0]["bits"]
    (2, 4)
    """
    return _apply(
        QuantizeConfig, model, config, data=data, finetune=finetune, device=device, seed=seed,
        log=log, evaluate=evaluate, task=task,
    )  # fmt: skip


def regularize(
    model: nn.Module,
    config: RegularizeConfig | Mapping[str, Any] | None = None,
    *,
    data: Any = None,
    finetune: Any = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    log: Log | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
    task: TaskLike = None,
) -> Step:
    """Fine-tune with a penalty on the layers' singular values, so a later decomposition cuts
    more of them cheaply (needs ``finetune``).

    >>> import torch, jointcomp
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> batches = [(torch.randn(16, 8), torch.randint(0, 2, (16,)))]
    >>> model, record = jointcomp.regularize(model, {"weight": 0.1}, finetune={"epochs": 1},
    ...                                      data=batches)
    >>> record["measure"]
    'effective_rank'
    """
    return _apply(
        RegularizeConfig, model, config, data=data, finetune=finetune, device=device, seed=seed,
        log=log, evaluate=evaluate, task=task,
    )  # fmt: skip


def _stage_list(stages: Any) -> tuple[list[StageConfig], TrainSpec | None, TaskSpec | None]:
    """Stage configs from a list (configs or ``{name: params}``), a Recipe or a recipe file;
    a recipe also gives its train settings and its task."""
    from .recipe import Recipe, load_recipe

    if isinstance(stages, (str, Path)):
        stages = load_recipe(stages)
    if isinstance(stages, Recipe):
        return list(stages.stages), stages.train, stages.task
    if not isinstance(stages, Sequence):
        raise TypeError("stages: a list of stage configs or {name: params}, a Recipe or a path")
    return [stage_config(s) for s in stages], None, None


def compress(
    model: nn.Module,
    stages: Any,
    *,
    data: Any = None,
    finetune: Any = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    log: Log | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
    path: str | Path | None = None,
    builder: str | Callable[..., nn.Module] | None = None,
    kwargs: dict[str, Any] | None = None,
    task: TaskLike = None,
    trust: bool = False,
    target: Any = None,
) -> Step:
    """Run ``stages`` in order on ``model`` (each seeded from ``seed`` and its position, as a
    recipe run does). ``stages``: a list of configs or ``{name: params}`` entries, a Recipe, or
    a recipe file (its stages, its train settings unless ``finetune`` is given, and its task
    unless ``task`` is given). Fine-tuning distils from a frozen copy of ``model`` as given;
    under ``task="distill"`` that copy is the original every stage's loss, budget and
    sensitivity compares with, and no labels are read. A task ``"package.module:callable"``
    is imported and run only with ``trust=True``. With ``path`` (and ``builder``), the result
    is written there (the list's ``encode`` settings, or the defaults) and the module decoded
    from the file is returned. The record holds each stage's record. ``target`` (a
    ``jointcomp.plan.Target`` or its dict, e.g. ``{"bytes": 20000}``; a recipe's own target
    otherwise) plans the prune, decompose and quantize stages' per-layer settings jointly,
    again before each of them on the model as it is; the plans are in the record's ``plans``
    (the closed loop that re-runs a missed target is the recipe pipeline's).

    >>> import torch, jointcomp
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    >>> batches = [(torch.randn(8, 16), torch.randint(0, 4, (8,))) for _ in range(4)]
    >>> model, record = jointcomp.compress(
    ...     model, [{"prune": {"ratio": 0.25}}, {"quantize": {"ptq": {}}}], data=batches)
    >>> [s["name"] for s in record["stages"]]
    ['prune', 'quantize']

    Label-free (``task="distill"``): batches of inputs alone; the model as given is the
    target, here fine-tuned back towards after a rank-2 factorization.

    >>> import copy
    >>> from jointcomp.tasks import DistillTask
    >>> from jointcomp.training import measure_task
    >>> _ = torch.manual_seed(0)
    >>> encoder = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 8))
    >>> inputs = [torch.randn(32, 16) for _ in range(4)]
    >>> steps = [{"decompose": {"rank": 2, "scope": {"include": ["0"]}}}]
    >>> def fidelity(m):
    ...     return measure_task(m, inputs, DistillTask(), reference=encoder)["mean cosine"]
    >>> cut, _ = jointcomp.compress(copy.deepcopy(encoder), steps, data=inputs, task="distill")
    >>> tuned, _ = jointcomp.compress(copy.deepcopy(encoder), steps, data=inputs,
    ...                               task="distill", finetune={"epochs": 20, "lr": 0.01})
    >>> fidelity(cut) < fidelity(tuned)
    True
    """
    configs, recipe_train, recipe_task = _stage_list(stages)
    if finetune is None and recipe_train is not None and data is not None:
        finetune = recipe_train
    task = make_task(recipe_task if task is None else task, trust=trust)
    encodes = [i for i, c in enumerate(configs) if STAGES[c.stage].terminal]
    if encodes and (encodes[0] != len(configs) - 1 or path is None):
        raise JointcompError(
            "compress: encode must be the last stage and needs path= (and builder=) to write to"
        )
    distils = not (finetune is None or callable(finetune)) and asks_distillation(finetune, *configs)
    # the model as given teaches every stage, and is the original a distill task compares with
    teacher = frozen_copy(model) if distils or task.needs_reference else None
    records: list[dict[str, Any]] = []
    plans: list[dict[str, Any]] = []
    if target is None and not isinstance(stages, (list, tuple)):
        from .recipe import Recipe, load_recipe

        if isinstance(stages, Recipe):
            target = stages.target
        elif isinstance(stages, (str, Path)):
            target = load_recipe(stages).target
    goal = None if target is None else _target(target)
    dense, byte_target = sum(p.numel() for p in model.parameters()) * 4, None
    index = 0
    while index < len(configs):
        config = configs[index]
        context_seed = stage_seed(seed, index)
        torch.manual_seed(context_seed)
        start = time.perf_counter()
        if STAGES[config.stage].terminal:
            break
        context = _context(
            config.stage, model, data=data, finetune=finetune, device=device, seed=context_seed,
            log=log, evaluate=evaluate, task=task, teacher=teacher, config=config,
        )  # fmt: skip
        if goal is not None and config.stage in ("prune", "decompose", "quantize"):
            plan = make_plan(
                model, configs[index:], goal, context, dense_bytes=dense, byte_target=byte_target
            )
            byte_target = plan.byte_target
            plans.append(plan.to_dict())
            configs[index:] = plan.apply(configs[index:])
            config = configs[index]
            if STAGES[config.stage].terminal:
                break
            context = _context(
                config.stage, model, data=data, finetune=finetune, device=device,
                seed=context_seed, log=log, evaluate=evaluate, task=task, teacher=teacher,
                config=config,
            )  # fmt: skip
        index += 1
        model, record = apply_stage(model, config, context)
        records.append(
            {"name": config.stage, "seconds": round(time.perf_counter() - start, 3),
             "metric": context.score(model), "record": record}
        )  # fmt: skip
    if path is not None:
        if builder is None:
            raise JointcompError("compress: writing a file needs builder= (e.g. 'torchvision:...')")
        config = configs[-1] if encodes else EncodeConfig()
        model, record = encode(model, config, path=path, builder=builder, kwargs=kwargs)
        records.append({"name": "encode", "record": record})
    return Step(model, {"stages": records, **({"plans": plans} if goal is not None else {})})


def save(
    model: nn.Module,
    path: str | Path,
    config: EncodeConfig | Mapping[str, Any] | None = None,
    *,
    builder: str | Callable[..., nn.Module],
    kwargs: dict[str, Any] | None = None,
) -> Any:
    """Write ``model`` into one .jcz file at ``path`` (atomically) and check that the file holds
    it bit for bit; returns the write report (``file_bytes``, per-tensor entries).

    ``builder`` names how to build the model's architecture before compression —
    ``"torchvision:resnet18"``, ``"zoo:lenet5"``, ``"package.module:function"`` or the
    function itself — with ``kwargs``; the file stores only how ``model`` differs from it and
    the coded tensors. Files of allow-listed builders (zoo, torchvision) load without trust.

    >>> import tempfile, torch, jointcomp
    >>> model = jointcomp.models.build_model("zoo:lenet300").eval()
    >>> path = tempfile.mkdtemp() + "/lenet.jcz"
    >>> report = jointcomp.save(model, path, builder="zoo:lenet300")
    >>> torch.equal(jointcomp.load(path)(torch.ones(1, 1, 28, 28)), model(torch.ones(1, 1, 28, 28)))
    True
    """
    cfg = _config(EncodeConfig, config)
    return _save(model, path, cfg, builder=builder, kwargs=kwargs)  # type: ignore[arg-type]


def open_file(source: str | Path | bytes, *, trust: bool = False) -> Artifact:
    """The module of a .jcz file together with its header (tensor table, structure, sizes).

    Raises FormatError for a corrupted, truncated or malformed file, and for a file whose model
    builder is not on the allow-list unless ``trust=True``."""
    artifact = open_artifact(source, trust=trust)
    mark_fixed_zeros(artifact.model, artifact.meta.get("sparse", []))
    return artifact


RUNTIMES = ("exact", "fast")


def load(
    source: str | Path | bytes,
    *,
    trust: bool = False,
    runtime: str = "exact",
    example: Any = None,
    threads: int = 1,
) -> nn.Module:
    """The module stored in a .jcz file, in eval mode (see ``open_file``).

    ``runtime="exact"`` (the default): rebuilt bit-exactly; its quantized tensors keep their
    integers and its fixed zero patterns stay marked, so it can be compressed further.
    ``runtime="fast"``: the same module made for CPU inference by
    :func:`jointcomp.runtime.to_fast` — int8 kernels on the file's integers, each factorized
    layer dense or factorized by its time on ``example`` (model inputs) at ``threads``
    threads; not bit-exact, and it carries a report of what it chose
    (``jointcomp.runtime.runtime_report``)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    model = open_file(source, trust=trust).model
    if runtime == "exact":
        return model
    from .runtime import to_fast

    return to_fast(model, example, threads=threads)
