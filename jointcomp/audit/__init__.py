"""The audit: every figure measured on real modules — the baseline, each stage's checkpoint, and
the module decoded from the written file — with the task's metric (top-1 for classification;
for distillation the fidelity to the original model's outputs: mean and 5th-percentile cosine,
relative error, top-1 agreement on logits). Every row names its metric (``metric_name``) and
holds its value (``metric``) and the task's other figures (``metrics``); classification rows
keep ``accuracy`` as well."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..batches import Batches
from ..container import open_artifact
from ..errors import DataError
from ..tasks import ClassifyTask, Task, make_task
from ..training import evaluate, world
from ..training.evaluate import measure_task
from .layers import layer_rows
from .measure import count_params, dense_bytes, measure
from .report import render_html, render_markdown, summary_rows, write_reports
from .runtimes import LatencyGateError, check_latency_gate, time_runtimes

__all__ = [
    "LatencyGateError",
    "audit_file",
    "audit_run",
    "check_latency_gate",
    "count_params",
    "dense_bytes",
    "measure",
    "render_html",
    "render_markdown",
    "summary_rows",
    "write_reports",
]


def _example(data: Any) -> Any:
    """The first test sample's model inputs, with a batch dimension of 1."""
    if len(data.test) == 0:
        raise DataError("the audit measures on the test split, and it holds no samples")
    return Batches(data.test).example()


def _metrics(
    model: nn.Module, recipe: Any, data: Any, task: Task, reference: nn.Module | None
) -> dict[str, Any]:
    """The task's figures of ``model`` on the held-out test split, which no stage has chosen
    anything on: ``metric`` and ``metric_name``, ``metrics`` (all the task's figures) and, for
    classification, ``accuracy`` (the key tools read)."""
    batch = recipe.data.eval_batch_size
    if isinstance(task, ClassifyTask):
        accuracy = evaluate(model, data.test, batch_size=batch, task=task)
        return {
            "accuracy": accuracy,
            "metric": accuracy,
            "metric_name": task.metric,
            "metrics": {task.metric: accuracy},
        }
    figures = measure_task(model, data.test, task, reference=reference, batch_size=batch)
    return {"metric": figures[task.metric], "metric_name": task.metric, "metrics": figures}


def _measure_row(
    model: nn.Module, recipe: Any, data: Any, task: Task, reference: nn.Module | None
) -> dict[str, Any]:
    cfg = recipe.audit
    row = measure(
        model,
        _example(data),
        batch_sizes=cfg.batch_sizes,
        threads=cfg.threads,
        min_run_time=cfg.min_run_time,
        with_latency=cfg.latency,
        with_macs=cfg.macs,
    )
    row.update(_metrics(model, recipe, data, task, reference))
    return row


def _environment(recipe: Any) -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": recipe.audit.threads,
        "world_size": world()[1],
        "latency_device": "cpu",
    }


def _drops(final: dict[str, Any], base: dict[str, Any]) -> None:
    """How far the file's metric fell from the baseline's (``accuracy_drop`` too, for top-1)."""
    if base.get("metric") is None:
        return
    final["metric_drop"] = base["metric"] - final["metric"]
    if "accuracy" in final and base.get("accuracy") is not None:
        final["accuracy_drop"] = base["accuracy"] - final["accuracy"]


def _final_row(
    path: Path,
    recipe: Any,
    data: Any,
    base_bytes: int,
    task: Task,
    reference: nn.Module | None,
    baseline: nn.Module | None,
) -> tuple[dict[str, Any], list]:
    artifact = open_artifact(path, trust=True)
    row = _measure_row(artifact.model, recipe, data, task, reference)
    row.update(
        file=str(path),
        bytes=artifact.file_bytes,
        header_bytes=artifact.header_bytes,
        payload_bytes=artifact.payload_bytes,
        compression_ratio=base_bytes / artifact.file_bytes,
    )
    if recipe.audit.latency and recipe.audit.runtimes:
        row["runtimes"] = time_runtimes(
            artifact.model, baseline, _example(data), data.test, recipe.audit
        )
    return row, layer_rows(artifact)


def audit_run(
    recipe: Any,
    data: Any,
    baseline: nn.Module,
    baseline_info: dict[str, Any],
    records: list[dict[str, Any]],
    model_path: Path,
    out_dir: Path,
    *,
    version: str,
    elapsed: float,
    task: Task | None = None,
) -> dict[str, Any]:
    """Measure a finished run with ``task``'s metric (default: the recipe's task; distillation
    compares each model with ``baseline``, the original) and write report.json / report.md /
    report.html."""
    task = task or make_task(recipe.task)
    reference = baseline if task.needs_reference else None
    base = _measure_row(baseline, recipe, data, task, reference)
    base["bytes"] = base["dense_bytes"]
    base.update(source=baseline_info)
    final, layers = _final_row(model_path, recipe, data, base["bytes"], task, reference, baseline)
    _drops(final, base)
    stages = []
    for rec in records:
        row = {k: rec[k] for k in ("index", "name", "seconds", "record", "checkpoint")}
        if rec["name"] == "encode":  # the file itself: its measurements are the final row's
            measured = dict(final)
        else:
            checkpoint = open_artifact(out_dir / rec["checkpoint"], trust=True).model
            measured = _measure_row(checkpoint, recipe, data, task, reference)
            measured["bytes"] = measured["dense_bytes"]
        for key in (
            "params",
            "nonzero_params",
            "bytes",
            "macs",
            "latency_ms",
            "latency_ms_by_batch",
            "accuracy",
            "metric",
            "metric_name",
            "metrics",
        ):
            if key in measured:
                row[key] = measured[key]
        stages.append(row)
    report = {
        "name": recipe.name,
        "jointcomp_version": version,
        "task": task.name,
        "metric_name": task.metric,
        "environment": _environment(recipe),
        "seconds": round(elapsed, 2),
        "baseline": base,
        "stages": stages,
        "final": final,
        "layers": layers,
    }
    write_reports(report, out_dir, html_too=recipe.audit.html)
    return report


def audit_file(
    path: Path, recipe: Any, data: Any, baseline: nn.Module | None, task: Task | None = None
) -> dict[str, Any]:
    """Re-measure a written file (and the baseline, when one is at hand: distillation needs it,
    as the original the file is compared with)."""
    task = task or make_task(recipe.task)
    if task.needs_reference and baseline is None:
        raise DataError(
            f"task {task.name}: auditing the file compares it with the original model, which "
            "is not at hand (model.weights names it)"
        )
    reference = baseline if task.needs_reference else None
    if baseline is not None:
        base = _measure_row(baseline, recipe, data, task, reference)
        base["bytes"] = base["dense_bytes"]
    else:
        artifact = open_artifact(path, trust=True)
        base = {
            "bytes": dense_bytes(artifact.model),
            "accuracy": None,
            "metric": None,
            "metric_name": task.metric,
            "params": None,
            "note": "baseline not cached: bytes are the file's model at dense fp32",
        }
    final, layers = _final_row(path, recipe, data, base["bytes"], task, reference, baseline)
    _drops(final, base)
    return {
        "name": recipe.name,
        "task": task.name,
        "metric_name": task.metric,
        "environment": _environment(recipe),
        "baseline": base,
        "stages": [],
        "final": final,
        "layers": layers,
    }
