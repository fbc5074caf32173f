"""Runs a recipe: baseline, then each stage in order with a checkpoint after each, then the audit
of the written file. ``resume`` continues after the last finished stage and ends in the same file
as an uninterrupted run (each stage is seeded from the recipe's seed and its index)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from .audit import audit_run
from .baseline import get_baseline, recipe_data
from .batches import Batches
from .config import StageConfig, printable, short
from .container import open_artifact, save, write_atomic
from .container.framing import unpack
from .container.manifest import manifest_from_json
from .context import Context
from .errors import JointcompError, OutputExistsError, RecipeError
from .models import is_allowed_builder
from .models.resolve import check_builder, file_builder
from .nn.modules import count_params
from .nn.sparsity import fixed_zero_names, mark_fixed_zeros
from .recipe import Recipe, recipe_to_data
from .stages import STAGES, EncodeConfig, apply_stage, stage_seed
from .stages.encode import encode
from .tasks import Task, format_metric, make_task
from .training import Trainer, evaluate, frozen_copy, is_main_process
from .version import __version__

STATE_FILE = "state.json"
MAX_STATE_BYTES = 64 << 20


@dataclass
class RunResult:
    """Where a run wrote its outputs, and its report."""

    out_dir: Path
    model_path: Path
    report: dict[str, Any]
    model: torch.nn.Module


def output_dir(recipe: Recipe) -> Path:
    """The run's folder: the recipe's ``output`` (``~`` expanded), else runs/NAME."""
    if recipe.output:
        return Path(recipe.output).expanduser()
    return Path("runs") / (recipe.name or "run")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError(f"device: {name} was asked for but CUDA is not available here")
    return device


def planned_stages(recipe: Recipe) -> list[StageConfig]:
    """The recipe's stages, with an ``encode`` appended when the recipe has none."""
    stages = list(recipe.stages)
    for i, config in enumerate(stages[:-1]):
        if STAGES[config.stage].terminal:
            raise RecipeError(f"stages.{i}.{config.stage}: must be the last stage")
    if not stages or stages[-1].stage != "encode":
        stages.append(EncodeConfig())
    return stages


def _stage_fingerprint(config: StageConfig) -> str:
    text = json.dumps(config.to_entry(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run_fingerprint(recipe: Recipe) -> str:
    data = recipe_to_data(recipe)
    keep = {k: data[k] for k in ("model", "data", "train", "seed")}
    if recipe.task.kind != "classify":  # another task trains and judges otherwise
        keep["task"] = data["task"]
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _init_distributed(device: torch.device) -> None:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def _protected(out_dir: Path) -> str | None:
    """What ``out_dir`` is when it must never be replaced: the root, the home or the working
    directory, or a folder holding one of them; else None."""
    target = out_dir.resolve()
    for what, place in (
        ("the root directory", Path(target.anchor or "/")),
        ("your home directory", Path.home()),
        ("the working directory", Path.cwd()),
    ):
        place = place.resolve()
        if target == place:
            return what
        if target in place.parents:
            return f"a folder holding {what}"
    return None


def _read_state(state_path: Path) -> dict[str, Any]:
    """A run folder's saved state; OutputExistsError when it is not one jointcomp wrote."""
    hint = "use --force to start over"
    try:
        if state_path.is_symlink() or state_path.stat().st_size > MAX_STATE_BYTES:
            raise OutputExistsError(f"{state_path}: not a state file jointcomp wrote; {hint}")
        saved = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise OutputExistsError(
            f"{state_path}: unreadable ({short(str(exc), 120, quote=False)}); {hint}"
        ) from None
    stages = saved.get("stages") if isinstance(saved, dict) else None
    if (
        not isinstance(saved, dict)
        or not isinstance(saved.get("fingerprint"), str)
        or not isinstance(stages, list)
        or not all(isinstance(r, dict) for r in stages)
    ):
        raise OutputExistsError(f"{state_path}: not a state file jointcomp wrote; {hint}")
    return saved


def _is_run_folder(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a state file jointcomp wrote (a run folder it may replace)."""
    try:
        _read_state(out_dir / STATE_FILE)
    except OutputExistsError:
        return False
    return True


def _check_output(
    out_dir: Path, recipe: Recipe, resume: bool, force: bool
) -> tuple[dict[str, Any], bool]:
    """Check the output directory against --resume/--force without touching it: the saved
    state to continue from (or a fresh one), and whether the folder is to be replaced.

    --force replaces only an empty folder or a run folder (its state file present); never the
    root, the home or the working directory or a folder holding one of them, nor a symlink."""
    state: dict[str, Any] = {"fingerprint": _run_fingerprint(recipe), "stages": []}
    if out_dir.is_symlink() and force:
        raise OutputExistsError(f"{out_dir} is a symbolic link; --force replaces only folders")
    if not out_dir.exists():
        return state, False
    if not out_dir.is_dir():
        raise OutputExistsError(f"{out_dir} exists and is not a folder; choose another output")
    if not any(out_dir.iterdir()):
        return state, False
    state_path = out_dir / STATE_FILE
    if resume:
        if not state_path.exists():
            raise OutputExistsError(
                f"{out_dir}: nothing to resume ({STATE_FILE} missing); use --force"
            )
        saved = _read_state(state_path)
        if saved["fingerprint"] != state["fingerprint"]:
            raise RecipeError(
                f"{out_dir}: the recipe's model, data, train or seed changed since that run; "
                "use --force to start over"
            )
        return saved, False
    if not force:
        raise OutputExistsError(
            f"{out_dir} already exists; pass --resume to continue it or --force to replace it"
        )
    protected = _protected(out_dir)
    if protected:
        raise OutputExistsError(f"--force would delete {out_dir}, {protected}; refused")
    if not _is_run_folder(out_dir):
        raise OutputExistsError(
            f"{out_dir} holds files but no {STATE_FILE}: it is not a jointcomp run folder, "
            "and --force replaces only those (or empty folders); choose another output"
        )
    return state, True


def _check_inputs(recipe: Recipe, kwargs: dict[str, Any]) -> None:
    """What can fail before any output exists: the builder and its arguments (an allow-listed
    model built on the meta device, a user's callable imported) and the weights file."""
    check_builder(recipe.model.builder, kwargs)
    weights = recipe.model.weights
    if weights != "train" and not Path(weights).is_file():
        raise RecipeError(f"model.weights: {weights} does not exist")


def _state_bytes(fingerprint: str, records: list[dict[str, Any]]) -> bytes:
    state = {"jointcomp": __version__, "fingerprint": fingerprint, "stages": records}
    return json.dumps(state, indent=1, default=str).encode()


def _say(console: Console, label: str, message: Any, style: str = "dim") -> None:
    """Print ``label: message`` with ``message`` as plain text (no markup, no escapes)."""
    console.print(Text.assemble((label, style), " ", printable(str(message))))


def _progress(enabled: bool) -> Progress | None:
    if not enabled:
        return None
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    )


def run(
    recipe: Recipe,
    *,
    resume: bool = False,
    force: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
) -> RunResult:
    """Run ``recipe`` end to end and return where it wrote its file and reports."""
    console = console or Console(stderr=True, quiet=not show_progress)
    device = resolve_device(recipe.device)
    _init_distributed(device)
    main = is_main_process()
    if not main:
        console = Console(quiet=True)
    stages = planned_stages(recipe)
    out_dir = output_dir(recipe)
    # everything that can fail is checked before the output folder is touched
    state, replace = _check_output(out_dir, recipe, resume, force)
    torch.manual_seed(recipe.seed)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    t0 = time.perf_counter()
    task = make_task(recipe.task)  # a recipe runs the callables it names, as its builder's
    data, kwargs = recipe_data(recipe)
    _check_inputs(recipe, kwargs)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # every rank checks the output directory before rank 0 writes into it
    if main:
        if replace:
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if not (out_dir / STATE_FILE).exists():  # marks the folder as a run folder at once
            write_atomic(out_dir / STATE_FILE, _state_bytes(state["fingerprint"], []))
        write_atomic(out_dir / "recipe.json", json.dumps(recipe_to_data(recipe), indent=2).encode())

    progress = _progress(show_progress and main)
    with progress or _null():
        baseline, baseline_info = get_baseline(
            recipe,
            data,
            kwargs,
            device=device,
            progress=progress,
            log=lambda message: console.print(Text(printable(str(message)))),
            task=task,
        )
        model, records = _run_stages(
            recipe, stages, state, baseline, data, kwargs, device, out_dir, progress, console,
            task,
        )  # fmt: skip
    model_path = out_dir / stages[-1].filename
    report = None
    if main:
        console.print(Text("audit", style="bold") + Text(": measuring baseline and the file"))
        report = audit_run(
            recipe,
            data,
            baseline,
            baseline_info,
            records,
            model_path,
            out_dir,
            version=__version__,
            elapsed=time.perf_counter() - t0,
            task=task,
        )
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return RunResult(out_dir, model_path, report or {}, model)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _stage_context(
    recipe: Recipe,
    index: int,
    name: str,
    data: Any,
    teacher: torch.nn.Module,
    device: torch.device,
    progress: Any,
    console: Console,
    task: Task,
) -> Context:
    """What stage ``index`` gets: calibration batches from the training data, validation
    batches from the validation split (carved from the training data: the test split is the
    audit's alone), the task and the baseline (frozen) it compares with, a trainer with the
    recipe's settings distilling from the baseline, the task's metric on the validation split
    as its metric."""
    batch_size, eval_batch = recipe.data.batch_size, recipe.data.eval_batch_size
    reference = teacher if task.needs_reference else None
    return Context(
        data=Batches(data.train, data.val, batch_size=batch_size),
        finetune=Trainer(
            data.train,
            recipe.train,
            teacher=teacher,
            batch_size=batch_size,
            device=device,
            progress=progress,
            task=task,
        ),
        device=device,
        seed=stage_seed(recipe.seed, index),
        log=lambda message: _say(console, f"  {name}:", message),
        evaluate=lambda m: evaluate(
            m, data.val, batch_size=eval_batch, device=device, task=task, reference=reference
        ),
        name=name,
        task=task,
        reference=reference,
    )


def _checkpoint(path: Path, model: torch.nn.Module, recipe: Recipe, kwargs: dict) -> str:
    """Write a stage's checkpoint; its SHA-256, which the state records."""
    sparse = fixed_zero_names(model)
    meta = {"sparse": sparse} if sparse else None
    save(path, model.to("cpu"), recipe.model.builder, kwargs, meta=meta)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refuse(message: str) -> OutputExistsError:
    return OutputExistsError(f"resume: {message}; use --force to start over")


def _open_checkpoint(out_dir: Path, record: dict[str, Any], recipe: Recipe, kwargs: dict):
    """The checkpoint ``record`` names, opened only when it lies inside the run folder, holds
    the bytes whose SHA-256 the run recorded, and names the recipe's own builder with the run's
    arguments. It is never opened with blanket trust: a user's callable builder is allowed only
    because it is the recipe's, which this run builds anyway."""
    name, digest = record.get("checkpoint"), record.get("sha256")
    if not isinstance(name, str) or not name:
        raise _refuse("the state names no checkpoint")
    if not isinstance(digest, str):
        raise _refuse(f"the state records no SHA-256 for {short(name)} (an older jointcomp?)")
    relative = Path(name)
    root = out_dir.resolve()
    path = (out_dir / relative).resolve()
    if relative.is_absolute() or ".." in relative.parts or root not in path.parents:
        raise _refuse(f"checkpoint {short(name)} lies outside the run folder {out_dir}")
    if not path.is_file():
        raise _refuse(f"checkpoint {short(name)} is missing")
    data = path.read_bytes()  # hashed and opened from these bytes: no second read to swap
    if hashlib.sha256(data).hexdigest() != digest:
        raise _refuse(f"checkpoint {short(name)} changed since the run wrote it (SHA-256)")
    manifest = manifest_from_json(unpack(data).header.get("model"))
    # a model folder (hf:DIR) is stored as what rebuilds it without the folder
    builder, kwargs = file_builder(recipe.model.builder, kwargs)
    if manifest.builder != builder:
        raise _refuse(
            f"checkpoint {short(name)} names builder {short(manifest.builder)}, "
            f"the recipe builds {short(builder)}"
        )
    expected = json.loads(json.dumps(kwargs, default=str))
    if manifest.kwargs != expected:
        raise _refuse(f"checkpoint {short(name)} was built with other arguments")
    return open_artifact(data, trust=not is_allowed_builder(recipe.model.builder))


def _resume(
    out_dir: Path,
    done: list[dict[str, Any]],
    recipe: Recipe,
    kwargs: dict[str, Any],
    device: torch.device,
    console: Console,
):
    ckpt = _open_checkpoint(out_dir, done[-1], recipe, kwargs)
    mark_fixed_zeros(ckpt.model, ckpt.meta.get("sparse", []))
    _say(console, "resume:", f"{len(done)} stage(s) done, continuing from {done[-1]['checkpoint']}")
    return ckpt.model.to(device)


def _run_stages(
    recipe: Recipe,
    stages: list[StageConfig],
    state: dict[str, Any],
    baseline: torch.nn.Module,
    data: Any,
    kwargs: dict[str, Any],
    device: torch.device,
    out_dir: Path,
    progress: Any,
    console: Console,
    task: Task,
) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """Run (or skip, when resuming) each stage; checkpoint after each."""
    done: list[dict[str, Any]] = state.get("stages", [])
    for i, rec in enumerate(done):
        if i >= len(stages) or rec.get("fingerprint") != _stage_fingerprint(stages[i]):
            raise RecipeError(
                f"stages.{i}: differs from the interrupted run's stage "
                f"{short(rec.get('name'))}; use --force to start over"
            )
    if done:
        model = _resume(out_dir, done, recipe, kwargs, device, console)
    else:
        model = copy.deepcopy(baseline)
    teacher = frozen_copy(baseline)
    records = list(done)
    for index in range(len(done), len(stages)):
        config = stages[index]
        name = config.stage
        context = _stage_context(
            recipe, index, name, data, teacher, device, progress, console, task
        )
        torch.manual_seed(context.seed)
        console.print(Text(f"stage {index}: {name}", style="bold"))
        start = time.perf_counter()
        if STAGES[name].terminal:
            model, stage_record = encode(
                model,
                config,
                path=out_dir / config.filename,
                builder=recipe.model.builder,
                kwargs=kwargs,
            )
            context.log(
                f"wrote {out_dir / config.filename} ({stage_record.get('file_bytes', 0):,} bytes)"
            )
        else:
            model, stage_record = apply_stage(model, config, context)
        model = model.to(device).eval()
        seconds = time.perf_counter() - start
        metric = context.score(model)
        context.log(f"val {task.metric} {format_metric(task.metric, metric)} ({seconds:.1f} s)")
        record = {
            "index": index,
            "name": name,
            "fingerprint": _stage_fingerprint(config),
            "seconds": round(seconds, 3),
            # the task's metric on the validation split (top-1 keeps its old key)
            **({"val_accuracy": metric} if task.metric == "top-1" else {}),
            "val_metric": metric,
            "metric_name": task.metric,
            "params": count_params(model),
            "record": stage_record,
        }
        if STAGES[name].terminal:
            record["checkpoint"] = config.filename
            if is_main_process():
                data = (out_dir / config.filename).read_bytes()
                record["sha256"] = hashlib.sha256(data).hexdigest()
        else:
            record["checkpoint"] = f"checkpoints/{index:02d}-{name}.jcz"
            if is_main_process():
                path = out_dir / record["checkpoint"]
                record["sha256"] = _checkpoint(path, model, recipe, kwargs)
            model = model.to(device)
        records.append(record)
        if is_main_process():
            write_atomic(out_dir / STATE_FILE, _state_bytes(state["fingerprint"], records))
    return model, records


def run_file(path: str, overrides: tuple[str, ...] = (), **kwargs: Any) -> RunResult:
    """Load the recipe at ``path`` (with ``--set`` overrides) and run it."""
    from .recipe import load_recipe

    return run(load_recipe(path, overrides), **kwargs)


__all__ = ["JointcompError", "RunResult", "run", "run_file"]
