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

from .audit import audit_run
from .baseline import get_baseline, recipe_data
from .batches import Batches
from .config import StageConfig
from .container import open_artifact, save, write_atomic
from .context import Context
from .errors import JointcompError, OutputExistsError, RecipeError
from .nn.modules import count_params
from .nn.sparsity import fixed_zero_names, mark_fixed_zeros
from .recipe import Recipe, recipe_to_data
from .stages import STAGES, EncodeConfig, apply_stage, stage_seed
from .stages.encode import encode
from .training import Trainer, evaluate, frozen_copy, is_main_process
from .version import __version__

STATE_FILE = "state.json"


@dataclass
class RunResult:
    """Where a run wrote its outputs, and its report."""

    out_dir: Path
    model_path: Path
    report: dict[str, Any]
    model: torch.nn.Module


def output_dir(recipe: Recipe) -> Path:
    return Path(recipe.output or Path("runs") / (recipe.name or "run"))


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
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _init_distributed(device: torch.device) -> None:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def _prepare_output(out_dir: Path, recipe: Recipe, resume: bool, force: bool) -> dict[str, Any]:
    """Check the output directory against --resume/--force; return the saved state, if any."""
    state: dict[str, Any] = {"fingerprint": _run_fingerprint(recipe), "stages": []}
    state_path = out_dir / STATE_FILE
    if out_dir.exists() and any(out_dir.iterdir()):
        if resume and state_path.is_file():
            saved = json.loads(state_path.read_text())
            if saved.get("fingerprint") != state["fingerprint"]:
                raise RecipeError(
                    f"{out_dir}: the recipe's model, data, train or seed changed since that run; "
                    "use --force to start over"
                )
            return saved
        if resume:
            raise OutputExistsError(
                f"{out_dir}: nothing to resume ({STATE_FILE} missing); use --force"
            )
        if not force:
            raise OutputExistsError(
                f"{out_dir} already exists; pass --resume to continue it or --force to replace it"
            )
        if is_main_process():
            shutil.rmtree(out_dir)
    return state


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
    state = _prepare_output(out_dir, recipe, resume, force)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # every rank checks the output directory before rank 0 writes into it
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(out_dir / "recipe.json", json.dumps(recipe_to_data(recipe), indent=2).encode())
    torch.manual_seed(recipe.seed)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)

    t0 = time.perf_counter()
    data, kwargs = recipe_data(recipe)
    progress = _progress(show_progress and main)
    with progress or _null():
        baseline, baseline_info = get_baseline(
            recipe, data, kwargs, device=device, progress=progress, log=console.print
        )
        model, records = _run_stages(
            recipe, stages, state, baseline, data, kwargs, device, out_dir, progress, console
        )
    model_path = out_dir / stages[-1].filename
    report = None
    if main:
        console.print("[bold]audit[/]: measuring baseline and the file")
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
) -> Context:
    """What stage ``index`` gets: calibration batches from the training data, validation
    batches from the validation split (carved from the training data: the test split is the
    audit's alone), a trainer with the recipe's settings distilling from the baseline, top-1
    on the validation split as its metric."""
    batch_size, eval_batch = recipe.data.batch_size, recipe.data.eval_batch_size
    return Context(
        data=Batches(data.train, data.val, batch_size=batch_size),
        finetune=Trainer(
            data.train,
            recipe.train,
            teacher=teacher,
            batch_size=batch_size,
            device=device,
            progress=progress,
        ),
        device=device,
        seed=stage_seed(recipe.seed, index),
        log=lambda message: console.print(f"  [dim]{name}:[/] {message}"),
        evaluate=lambda m: evaluate(m, data.val, batch_size=eval_batch, device=device),
        name=name,
    )


def _checkpoint(path: Path, model: torch.nn.Module, recipe: Recipe, kwargs: dict) -> None:
    sparse = fixed_zero_names(model)
    meta = {"sparse": sparse} if sparse else None
    save(path, model.to("cpu"), recipe.model.builder, kwargs, meta=meta)


def _resume(out_dir: Path, done: list[dict[str, Any]], device: torch.device, console: Console):
    ckpt = open_artifact(out_dir / done[-1]["checkpoint"], trust=True)
    mark_fixed_zeros(ckpt.model, ckpt.meta.get("sparse", []))
    console.print(f"resume: {len(done)} stage(s) done, continuing from {done[-1]['checkpoint']}")
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
) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """Run (or skip, when resuming) each stage; checkpoint after each."""
    done: list[dict[str, Any]] = state.get("stages", [])
    for i, rec in enumerate(done):
        if i >= len(stages) or rec["fingerprint"] != _stage_fingerprint(stages[i]):
            raise RecipeError(
                f"stages.{i}: differs from the interrupted run's stage {rec['name']!r}; "
                "use --force to start over"
            )
    model = _resume(out_dir, done, device, console) if done else copy.deepcopy(baseline)
    teacher = frozen_copy(baseline)
    records = list(done)
    for index in range(len(done), len(stages)):
        config = stages[index]
        name = config.stage
        context = _stage_context(recipe, index, name, data, teacher, device, progress, console)
        torch.manual_seed(context.seed)
        console.print(f"[bold]stage {index}: {name}[/]")
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
        accuracy = context.score(model)
        context.log(f"val top-1 {accuracy:.2%} ({seconds:.1f} s)")
        record = {
            "index": index,
            "name": name,
            "fingerprint": _stage_fingerprint(config),
            "seconds": round(seconds, 3),
            "val_accuracy": accuracy,
            "params": count_params(model),
            "record": stage_record,
        }
        if STAGES[name].terminal:
            record["checkpoint"] = config.filename
        else:
            record["checkpoint"] = f"checkpoints/{index:02d}-{name}.jcz"
            if is_main_process():
                _checkpoint(out_dir / record["checkpoint"], model, recipe, kwargs)
            model = model.to(device)
        records.append(record)
        if is_main_process():
            write_atomic(
                out_dir / STATE_FILE,
                json.dumps(
                    {"fingerprint": state["fingerprint"], "stages": records}, indent=1, default=str
                ).encode(),
            )
    return model, records


def run_file(path: str, overrides: tuple[str, ...] = (), **kwargs: Any) -> RunResult:
    """Load the recipe at ``path`` (with ``--set`` overrides) and run it."""
    from .recipe import load_recipe

    return run(load_recipe(path, overrides), **kwargs)


__all__ = ["JointcompError", "RunResult", "run", "run_file"]
