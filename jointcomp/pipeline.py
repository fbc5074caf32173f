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

from .audit import LatencyGateError, audit_run, check_latency_gate
from .audit.report import write_reports
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
from .plan import make_plan
from .plan.loop import bit_floor, corrections, next_try, stage_drops
from .plan.report import planned_vs_measured
from .plan.target import drop_units
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
    if resume and recipe.target is not None:
        raise RecipeError(
            "--resume: a run with a target re-plans and may re-run its stages; start it again "
            "(--force) instead"
        )
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
        if recipe.target is None:
            model, records = _run_stages(
                recipe, stages, state, baseline, data, kwargs, device, out_dir, progress,
                console, task,
            )  # fmt: skip
            planning = None
        else:
            model, records, planning = _run_targeted(
                recipe, stages, state, baseline, data, kwargs, device, out_dir, progress,
                console, task,
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
        if planning is not None:
            report["plan"] = planned_vs_measured(planning, report)
            write_reports(report, out_dir, html_too=recipe.audit.html)
        gate = recipe.audit.max_latency_ratio
        if gate is not None:
            failure = check_latency_gate(report["final"].get("runtimes", {}), gate)
            report["latency_gate"] = {"max_ratio": gate, "passed": failure is None}
            write_reports(report, out_dir, html_too=recipe.audit.html)
            if failure:
                raise LatencyGateError(failure)
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
    before_stage: Any = None,
    reuse: Any = None,
) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """Run (or skip, when resuming) each stage; checkpoint after each. ``before_stage(index,
    model, stages, context)`` (a target's planner) may rewrite the stages still to run;
    ``reuse(index, config, records)`` (a target's later tries) may return (model, record) of
    an earlier run of the same stages instead of running it."""
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
    index = len(done)
    while index < len(stages):
        name = stages[index].stage
        context = _stage_context(
            recipe, index, name, data, teacher, device, progress, console, task
        )
        if before_stage is not None:
            stages[index:] = before_stage(index, model, stages[index:], context)
            name = stages[index].stage
            context.name = name
        config = stages[index]
        found = reuse(index, config, records) if reuse is not None else None
        if found is not None:  # the same stage on the same input: an earlier try's checkpoint
            model, record = found
            records.append(record)
            if is_main_process():
                write_atomic(out_dir / STATE_FILE, _state_bytes(state["fingerprint"], records))
            index += 1
            continue
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
        index += 1
    return model, records


PLANNED = ("prune", "decompose", "quantize")


def _planner(recipe: Recipe, plans: list[dict[str, Any]], aim: dict[str, Any], dense: int):
    """The hook that plans each planned stage (and those after it) on the model as it is, for
    ``aim`` (this try's byte target, recovery and per-layer corrections)."""

    def before_stage(index: int, model: torch.nn.Module, rest: list, context: Context) -> list:
        if rest[0].stage not in PLANNED:
            return rest
        if rest[0].stage == "prune" and not rest[0].structured:
            return rest
        plan = make_plan(
            model, rest, recipe.target, context, dense_bytes=dense,
            byte_target=aim["byte_target"], corrections=aim["corrections"],
            recovery=aim["recovery"], min_bits=aim.get("min_bits"),
        )  # fmt: skip
        aim["byte_target"] = plan.byte_target  # a max_drop target is a size from here on
        entry = plan.to_dict()
        entry["index"] = index
        plans.append(entry)
        context.log(
            f"plan: {len(plan.layers)} layers, predicted {plan.predicted_bytes:,} B for a "
            f"target of {plan.byte_target:,} B ({plan.seconds:.1f} s)"
        )
        return plan.apply(rest)

    return before_stage


def _reuser(
    out_dir: Path,
    earlier: list[tuple[int, list[dict[str, Any]]]],
    recipe: Recipe,
    kwargs: dict[str, Any],
    device: torch.device,
    console: Console,
):
    """The hook that skips a stage an earlier try ran with the same settings on the same input
    (every stage before it reused too, with the same settings): its checkpoint from that try's
    folder (SHA-256 checked), copied into this run's checkpoints."""

    def reuse(index: int, config: StageConfig, records: list[dict[str, Any]]):
        if STAGES[config.stage].terminal or any(not r.get("reused") for r in records):
            return None
        prints = [r["fingerprint"] for r in records] + [_stage_fingerprint(config)]
        for attempt, done in reversed(earlier):
            if len(done) <= index or [r["fingerprint"] for r in done[: index + 1]] != prints:
                continue
            record = dict(done[index])
            kept = f"tries/{attempt:02d}/{record['checkpoint']}"
            ckpt = _open_checkpoint(out_dir, {**record, "checkpoint": kept}, recipe, kwargs)
            mark_fixed_zeros(ckpt.model, ckpt.meta.get("sparse", []))
            if is_main_process():
                (out_dir / record["checkpoint"]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(out_dir / kept, out_dir / record["checkpoint"])
            _say(console, "target:", f"stage {index} {config.stage}: as in try {attempt} ({kept})")
            record.update(reused=f"try {attempt}", seconds=0.0)
            return ckpt.model.to(device).eval(), record
        return None

    return reuse


def _run_targeted(
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
) -> tuple[torch.nn.Module, list[dict[str, Any]], dict[str, Any]]:
    """The closed loop of a target: plan, run the stages (re-planning before each planned
    one), measure the written file (its bytes per layer; under max_drop its validation drop),
    and when it missed, correct the plan per layer by how far the file missed its prediction
    (and the size or the one-shot allowance, ``plan.loop.next_try``; under max_drop, a bit
    width whose QAT lost most of the drop is not planned again, ``plan.loop.bit_floor``) and
    run the stages again, from the last stage whose settings changed (earlier ones reuse the
    previous try's checkpoints), at most ``target.tries`` runs. Each try's file and
    checkpoints are kept under tries/; the best one (the file within the target; the smallest
    such under max_drop) ends as the run's. Every decision uses the validation split."""
    target = recipe.target
    assert target is not None
    dense = count_params(baseline) * 4
    context = _stage_context(
        recipe, 0, "plan", data, frozen_copy(baseline), device, progress, console, task
    )
    base_metric = context.score(baseline)
    units = drop_units(task.metric)
    aim: dict[str, Any] = {
        "byte_target": target.byte_target(dense), "recovery": None, "corrections": {},
        "min_bits": None,
    }  # fmt: skip
    tries: list[dict[str, Any]] = []
    results: list[tuple[torch.nn.Module, list[dict[str, Any]]]] = []
    for attempt in range(target.tries):
        plans: list[dict[str, Any]] = []
        aim = {**aim, "corrections": dict(aim["corrections"])}
        asked = dict(aim)
        _say(
            console,
            "target:",
            f"try {attempt + 1}/{target.tries}, byte target "
            f"{aim['byte_target'] or 'from max_drop'}"
            + (f", recovery {aim['recovery']}" if aim["recovery"] is not None else ""),
        )
        earlier = [(i + 1, r) for i, (_, r) in enumerate(results)]
        model, records = _run_stages(
            recipe, list(stages), {"fingerprint": state["fingerprint"], "stages": []},
            baseline, data, kwargs, device, out_dir, progress, console, task,
            before_stage=_planner(recipe, plans, aim, dense),
            reuse=_reuser(out_dir, earlier, recipe, kwargs, device, console),
        )  # fmt: skip
        final = records[-1]
        file_bytes = int(final["record"].get("file_bytes", 0))
        metric = final.get("val_metric")
        drop = None
        if base_metric is not None and metric is not None:
            drop = round((base_metric - metric) * units, 4)
        wanted = target.byte_target(dense)
        ran = next((r for r in records if not r.get("reused")), records[-1])
        entry = {
            "try": attempt + 1,
            "byte_target": aim["byte_target"],
            "asked_byte_target": asked["byte_target"],
            "recovery": asked["recovery"]
            if asked["recovery"] is not None
            else (target.recovery if target.max_drop is not None else None),
            "corrections": asked["corrections"],
            "restarted_from": f"{ran['index']}-{ran['name']}",
            "reused": [f"{r['index']}-{r['name']}" for r in records if r.get("reused")],
            "min_bits": asked["min_bits"],
            "stage_drops": stage_drops(
                base_metric,
                [(f"{r['index']}-{r['name']}", r.get("val_metric")) for r in records],
                units,
            ),
            "wanted_bytes": wanted,
            "predicted_bytes": plans[-1]["predicted_bytes"] if plans else None,
            "file_bytes": file_bytes,
            "val_metric": metric,
            "drop": drop,
            "within": (drop is not None and drop <= target.max_drop)
            if target.max_drop is not None
            else file_bytes <= (wanted or 0),
            "plans": plans,
            "planning_seconds": round(sum(p["seconds"] for p in plans), 3),
            "stage_seconds": round(sum(r["seconds"] for r in records), 3),
        }
        tries.append(entry)
        _say(
            console,
            "target:",
            f"try {attempt + 1}: {file_bytes:,} B (predicted {entry['predicted_bytes']}), "
            f"val drop {drop}, within: {entry['within']}",
        )
        if is_main_process():
            keep = out_dir / "tries" / f"{attempt + 1:02d}"
            if keep.exists():
                shutil.rmtree(keep)
            keep.mkdir(parents=True)
            shutil.copy2(out_dir / stages[-1].filename, keep / stages[-1].filename)
            shutil.copytree(out_dir / "checkpoints", keep / "checkpoints")
        results.append((model, records))
        if plans:
            aim["corrections"] = corrections(
                asked["corrections"], plans[-1], final["record"].get("tensors", {}), file_bytes
            )
        if target.max_drop is not None:  # bits that failed under training are not tried again
            aim["min_bits"] = bit_floor(entry, aim["min_bits"])
        nxt = next_try(target, tries, units)
        if nxt is None:
            break
        aim.update(nxt)
    within = [i for i, t in enumerate(tries) if t["within"]]
    if within and target.max_drop is not None:  # the smallest file within the drop
        best = min(within, key=lambda i: tries[i]["file_bytes"])
    elif within:  # the best validation metric within the size
        best = max(within, key=lambda i: (tries[i]["val_metric"] or 0, -tries[i]["file_bytes"]))
    else:  # none met it: the closest (the smallest file, or the smallest drop)
        key = "file_bytes" if target.max_drop is None else "drop"
        best = min(range(len(tries)), key=lambda i: tries[i][key] or 0)
    if best != len(tries) - 1 and is_main_process():
        keep = out_dir / "tries" / f"{best + 1:02d}"
        shutil.copy2(keep / stages[-1].filename, out_dir / stages[-1].filename)
        shutil.rmtree(out_dir / "checkpoints")
        shutil.copytree(keep / "checkpoints", out_dir / "checkpoints")
        write_atomic(out_dir / STATE_FILE, _state_bytes(state["fingerprint"], results[best][1]))
    model, records = results[best]
    planning = {
        "target": target.model_dump(),
        "base_val_metric": base_metric,
        "tries": tries,
        "best_try": best + 1,
        "met": bool(within),
    }
    return model, records, planning


def plan_recipe(recipe: Recipe, console: Console | None = None) -> Any:
    """The first plan ``recipe``'s target makes (on its baseline, trained when not cached),
    without running any stage."""
    if recipe.target is None:
        raise RecipeError("plan: the recipe has no target (target: {bytes|ratio|max_drop: ...})")
    console = console or Console(stderr=True)
    device = resolve_device(recipe.device)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    stages = planned_stages(recipe)
    task = make_task(recipe.task)
    data, kwargs = recipe_data(recipe)
    _check_inputs(recipe, kwargs)
    baseline, _ = get_baseline(
        recipe, data, kwargs, device=device, task=task,
        log=lambda message: console.print(Text(printable(str(message)))),
    )  # fmt: skip
    index = next(i for i, c in enumerate(stages) if c.stage in PLANNED)
    # named as the stage it plans for, as in a run ("prune: plan: ...")
    context = _stage_context(
        recipe, index, stages[index].stage, data, frozen_copy(baseline), device, None, console,
        task,
    )  # fmt: skip
    torch.manual_seed(context.seed)
    return make_plan(
        copy.deepcopy(baseline),
        stages[index:],
        recipe.target,
        context,
        dense_bytes=count_params(baseline) * 4,
    )


def run_file(path: str, overrides: tuple[str, ...] = (), **kwargs: Any) -> RunResult:
    """Load the recipe at ``path`` (with ``--set`` overrides) and run it."""
    from .recipe import load_recipe

    return run(load_recipe(path, overrides), **kwargs)


__all__ = ["JointcompError", "RunResult", "run", "run_file"]
