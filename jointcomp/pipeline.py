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

from . import __version__
from .audit import audit_run, count_params
from .baseline import get_baseline, recipe_data
from .container import open_artifact, save, write_atomic
from .errors import JointcompError, OutputExistsError, RecipeError
from .recipe import Recipe, StageSpec, recipe_to_data, without_unset_added
from .stages import STAGES, StageContext
from .stages.encode import EncodeParams
from .train import is_main_process

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


def planned_stages(recipe: Recipe) -> list[StageSpec]:
    """The recipe's stages, with an ``encode`` appended when the recipe has none."""
    stages = list(recipe.stages)
    for spec in stages[:-1]:
        if STAGES[spec.name].terminal:
            raise RecipeError(f"stages.{spec.index}.{spec.name}: must be the last stage")
    if not stages or stages[-1].name != "encode":
        stages.append(StageSpec(index=len(stages), name="encode", params=EncodeParams()))
    return stages


def _stage_fingerprint(spec: StageSpec) -> str:
    params = without_unset_added(spec.params.model_dump(mode="json"))
    text = json.dumps({spec.name: params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run_fingerprint(recipe: Recipe) -> str:
    data = without_unset_added(recipe_to_data(recipe))
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
        teacher = _frozen_copy(baseline)
        model, _meta, records = _run_stages(
            recipe,
            stages,
            state,
            baseline,
            teacher,
            data,
            kwargs,
            device,
            out_dir,
            progress,
            console,
        )
    model_path = out_dir / stages[-1].params.filename
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


def _distils_from_input(recipe: Recipe, spec: StageSpec) -> bool:
    """Whether the recipe's train settings or this stage's parameters distil from the stage's
    input (``distill: {teacher: input}`` anywhere in them)."""

    def asks(data: Any) -> bool:
        if isinstance(data, dict):
            distill = data.get("distill")
            if isinstance(distill, dict) and distill.get("teacher") == "input":
                return True
            return any(asks(v) for v in data.values())
        if isinstance(data, list):
            return any(asks(v) for v in data)
        return False

    return asks(recipe.train.model_dump()) or asks(spec.params.model_dump())


def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _run_stages(
    recipe: Recipe,
    stages: list[StageSpec],
    state: dict[str, Any],
    baseline: torch.nn.Module,
    teacher: torch.nn.Module,
    data: Any,
    kwargs: dict[str, Any],
    device: torch.device,
    out_dir: Path,
    progress: Any,
    console: Console,
) -> tuple[torch.nn.Module, dict[str, Any], list[dict[str, Any]]]:
    """Run (or skip, when resuming) each stage; checkpoint after each."""
    done: list[dict[str, Any]] = state.get("stages", [])
    for i, rec in enumerate(done):
        if i >= len(stages) or rec["fingerprint"] != _stage_fingerprint(stages[i]):
            raise RecipeError(
                f"stages.{i}: differs from the interrupted run's stage {rec['name']!r}; "
                "use --force to start over"
            )
    model = copy.deepcopy(baseline)
    meta: dict[str, Any] = {}
    if done:
        ckpt = open_artifact(out_dir / done[-1]["checkpoint"], trust=True)
        model, meta = ckpt.model.to(device), dict(ckpt.meta)
        console.print(
            f"resume: {len(done)} stage(s) done, continuing from {done[-1]['checkpoint']}"
        )
    records = list(done)
    for spec in stages[len(done) :]:
        stage = STAGES[spec.name](spec.params)
        seed = recipe.seed * 7919 + 101 * (spec.index + 1)
        torch.manual_seed(seed)
        ctx = StageContext(
            recipe=recipe,
            data=data,
            teacher=teacher,
            input_teacher=_frozen_copy(model) if _distils_from_input(recipe, spec) else None,
            device=device,
            seed=seed,
            stage_index=spec.index,
            stage_name=spec.name,
            out_dir=out_dir,
            builder=recipe.model.builder,
            builder_kwargs=kwargs,
            meta=meta,
            progress=progress,
            console=console,
        )
        console.print(f"[bold]stage {spec.index}: {spec.name}[/]")
        start = time.perf_counter()
        model = stage.apply(model, ctx).to(device).eval()
        seconds = time.perf_counter() - start
        accuracy = ctx.evaluate(model)
        ctx.log(f"top-1 {accuracy:.2%} ({seconds:.1f} s)")
        record = {
            "index": spec.index,
            "name": spec.name,
            "fingerprint": _stage_fingerprint(spec),
            "seconds": round(seconds, 3),
            "accuracy": accuracy,
            "params": count_params(model),
            "record": ctx.record,
        }
        if stage.terminal:
            record["checkpoint"] = ctx.record.get("file", str(out_dir / "model.jcz"))
            record["checkpoint"] = os.path.relpath(record["checkpoint"], out_dir)
        else:
            name = f"checkpoints/{spec.index:02d}-{spec.name}.jcz"
            if is_main_process():
                save(out_dir / name, model.to("cpu"), recipe.model.builder, kwargs, meta=meta)
            model = model.to(device)
            record["checkpoint"] = name
        records.append(record)
        if is_main_process():
            write_atomic(
                out_dir / STATE_FILE,
                json.dumps(
                    {"fingerprint": state["fingerprint"], "stages": records}, indent=1, default=str
                ).encode(),
            )
    return model, meta, records


def run_file(path: str, overrides: tuple[str, ...] = (), **kwargs: Any) -> RunResult:
    """Load the recipe at ``path`` (with ``--set`` overrides) and run it."""
    from .recipe import load_recipe

    return run(load_recipe(path, overrides), **kwargs)


__all__ = ["JointcompError", "RunResult", "run", "run_file"]
