"""The audit: every figure measured on real modules — the baseline, each stage's checkpoint, and
the module decoded from the written file."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..container import open_artifact
from ..training import evaluate, world
from .layers import layer_rows
from .measure import count_params, dense_bytes, measure
from .report import render_html, render_markdown, summary_rows, write_reports

__all__ = [
    "audit_file",
    "audit_run",
    "count_params",
    "dense_bytes",
    "measure",
    "render_html",
    "render_markdown",
    "summary_rows",
    "write_reports",
]


def _measure_row(model: nn.Module, recipe: Any, data: Any) -> dict[str, Any]:
    cfg = recipe.audit
    sample = data.test[0][0]
    row = measure(
        model,
        sample,
        batch_sizes=cfg.batch_sizes,
        threads=cfg.threads,
        min_run_time=cfg.min_run_time,
        with_latency=cfg.latency,
        with_macs=cfg.macs,
    )
    # the reported figure: on the held-out test split, which no stage has chosen anything on
    row["accuracy"] = evaluate(model, data.test, batch_size=recipe.data.eval_batch_size)
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


def _final_row(path: Path, recipe: Any, data: Any, base_bytes: int) -> tuple[dict[str, Any], list]:
    artifact = open_artifact(path, trust=True)
    row = _measure_row(artifact.model, recipe, data)
    row.update(
        file=str(path),
        bytes=artifact.file_bytes,
        header_bytes=artifact.header_bytes,
        payload_bytes=artifact.payload_bytes,
        compression_ratio=base_bytes / artifact.file_bytes,
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
) -> dict[str, Any]:
    """Measure a finished run and write report.json / report.md / report.html."""
    base = _measure_row(baseline, recipe, data)
    base["bytes"] = base["dense_bytes"]
    base.update(source=baseline_info)
    final, layers = _final_row(model_path, recipe, data, base["bytes"])
    final["accuracy_drop"] = base["accuracy"] - final["accuracy"]
    stages = []
    for rec in records:
        row = {k: rec[k] for k in ("index", "name", "seconds", "record", "checkpoint")}
        if rec["name"] == "encode":  # the file itself: its measurements are the final row's
            measured = dict(final)
        else:
            measured = _measure_row(
                open_artifact(out_dir / rec["checkpoint"], trust=True).model, recipe, data
            )
            measured["bytes"] = measured["dense_bytes"]
        for key in (
            "params",
            "nonzero_params",
            "bytes",
            "macs",
            "latency_ms",
            "latency_ms_by_batch",
            "accuracy",
        ):
            if key in measured:
                row[key] = measured[key]
        stages.append(row)
    report = {
        "name": recipe.name,
        "jointcomp_version": version,
        "environment": _environment(recipe),
        "seconds": round(elapsed, 2),
        "baseline": base,
        "stages": stages,
        "final": final,
        "layers": layers,
    }
    write_reports(report, out_dir, html_too=recipe.audit.html)
    return report


def audit_file(path: Path, recipe: Any, data: Any, baseline: nn.Module | None) -> dict[str, Any]:
    """Re-measure a written file (and the baseline, when one is at hand)."""
    if baseline is not None:
        base = _measure_row(baseline, recipe, data)
        base["bytes"] = base["dense_bytes"]
    else:
        artifact = open_artifact(path, trust=True)
        base = {
            "bytes": dense_bytes(artifact.model),
            "accuracy": None,
            "params": None,
            "note": "baseline not cached: bytes are the file's model at dense fp32",
        }
    final, layers = _final_row(path, recipe, data, base["bytes"])
    if base.get("accuracy") is not None:
        final["accuracy_drop"] = base["accuracy"] - final["accuracy"]
    return {
        "name": recipe.name,
        "environment": _environment(recipe),
        "baseline": base,
        "stages": [],
        "final": final,
        "layers": layers,
    }
