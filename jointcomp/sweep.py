"""``jointcomp sweep``: run a recipe over a grid of overrides (resumable) and collect the task's
metric (top-1, or e.g. mean cosine for distillation) vs bytes into one table and plot with the
Pareto front. Points keep ``accuracy`` for classification; every point has ``metric`` and
``metric_name``."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from .container import write_atomic
from .errors import RecipeError
from .recipe import load_recipe
from .tasks import format_metric

SWEEP_FILE = "sweep.json"


@dataclass(frozen=True)
class Axis:
    """One ``--vary KEY.PATH=v1,v2,...``."""

    key: str
    values: tuple[Any, ...]


def _split_values(text: str) -> list[str]:
    """Split on commas that are not inside brackets or braces (so [1,2],[3,4] is two values)."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_axis(text: str) -> Axis:
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise RecipeError(
            f"--vary {text!r}: expected KEY.PATH=v1,v2,... e.g. stages.0.prune.ratio=0.3,0.5"
        )
    parsed = []
    for v in _split_values(values):
        try:
            parsed.append(yaml.safe_load(v))
        except yaml.YAMLError as exc:
            raise RecipeError(f"--vary {key}: value {v!r} is not valid YAML ({exc})") from None
    return Axis(key.strip(), tuple(parsed))


def _slug(overrides: dict[str, Any]) -> str:
    text = "_".join(f"{k.split('.')[-1]}-{v}" for k, v in overrides.items())
    text = re.sub(r"[^A-Za-z0-9._-]+", "", text)[:60]
    digest = hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()
    return f"{text}-{digest[:6]}"


def grid(axes: list[Axis], *, zipped: bool = False) -> list[dict[str, Any]]:
    """Every combination of the axes' values, as ``{key: value}`` overrides, in order; with
    ``zipped``, the axes' i-th values together (the axes must have equal lengths)."""
    if zipped:
        lengths = {len(a.values) for a in axes}
        if len(lengths) > 1:
            shown = ", ".join(f"{a.key} has {len(a.values)}" for a in axes)
            raise RecipeError(f"--zip varies the axes together: give each as many values ({shown})")
        return [dict(zip([a.key for a in axes], combo)) for combo in zip(*(a.values for a in axes))]
    return [
        dict(zip([a.key for a in axes], combo))
        for combo in itertools.product(*(a.values for a in axes))
    ]


def _as_override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"


def run_sweep(
    recipe_path: str,
    axes: list[Axis],
    *,
    base_overrides: tuple[str, ...] = (),
    output: str | None = None,
    resume: bool = False,
    force: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
    anchors: list[dict[str, Any]] | None = None,
    zipped: bool = False,
) -> dict[str, Any]:
    """Run every grid point (each into its own run directory) and write the sweep's table,
    JSON and HTML. With ``resume``, finished points are kept and an unfinished one continues.
    ``zipped``: the axes vary together (point i takes every axis's i-th value), not as a grid."""
    from .pipeline import output_dir, run

    console = console or Console(stderr=True)
    points = grid(axes, zipped=zipped)
    if not points:
        raise RecipeError("sweep: no --vary values given")
    base = load_recipe(recipe_path, base_overrides)
    out = Path(output).expanduser() if output else output_dir(base).with_name(f"{base.name}-sweep")
    if out.exists() and any(out.iterdir()) and not (resume or force):
        raise RecipeError(f"{out} already exists; pass --resume to continue the sweep or --force")
    # validate every point before running any, so a typo fails in a second, not an hour in
    recipes = []
    for overrides in points:
        run_dir = out / "points" / _slug(overrides)
        extra = (
            *base_overrides,
            *(_as_override(k, v) for k, v in overrides.items()),
            f"output={json.dumps(str(run_dir))}",
        )
        recipes.append((overrides, run_dir, load_recipe(recipe_path, extra)))
    rows = []
    for i, (overrides, run_dir, recipe) in enumerate(recipes, 1):
        label = ", ".join(f"{k}={v}" for k, v in overrides.items())
        report_path = run_dir / "report.json"
        if report_path.is_file() and resume:
            console.print(f"sweep {i}/{len(recipes)}: {label} (done)")
            report = json.loads(report_path.read_text())
        else:
            console.print(f"sweep {i}/{len(recipes)}: {label}")
            # a point with a target re-plans and re-runs from the start (no --resume there)
            partial = (run_dir / "state.json").is_file() and recipe.target is None
            report = run(
                recipe,
                resume=resume and partial,
                force=not (resume and partial),
                show_progress=show_progress,
                console=console,
            ).report
        rows.append(_point(overrides, run_dir, report))
    from .audit.plots import pareto_front

    front = set(pareto_front([(r["bytes"], r["metric"]) for r in rows]))
    for i, r in enumerate(rows):
        r["pareto"] = i in front
    summary = {
        "recipe": str(recipe_path),
        "axes": {a.key: list(a.values) for a in axes},
        "zipped": zipped,
        "points": rows,
        "anchors": anchors or [],
    }
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / SWEEP_FILE, (json.dumps(summary, indent=2, default=str) + "\n").encode())
    write_atomic(out / "sweep.md", render_sweep_markdown(summary).encode())
    write_atomic(out / "sweep.html", render_sweep_html(summary).encode())
    summary["output"] = str(out)
    return summary


def _point(overrides: dict[str, Any], run_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
    """One sweep point from its run's report (``accuracy`` kept for classification)."""
    from .audit.report import metric_name, metric_of

    fin, base = report["final"], report["baseline"]
    point = {
        "overrides": overrides,
        "run": str(run_dir),
        "bytes": fin["bytes"],
        "compression_ratio": fin["compression_ratio"],
        "metric_name": metric_name(report),
        "metric": metric_of(fin),
        "params": fin["params"],
        "latency_ms": fin.get("latency_ms"),
        "baseline_bytes": base["bytes"],
        "baseline_metric": metric_of(base),
    }
    if "accuracy" in fin:
        point["accuracy"] = fin["accuracy"]
        point["baseline_accuracy"] = base.get("accuracy")
    return point


def _metric_name(summary: dict[str, Any]) -> str:
    points = summary["points"]
    return points[0].get("metric_name", "top-1") if points else "top-1"


def _value(point: dict[str, Any], key: str = "metric") -> float | None:
    """A point's metric (its ``accuracy`` in sweeps written before points named one)."""
    return point.get(key, point.get("accuracy" if key == "metric" else "baseline_accuracy"))


def sweep_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    keys = list(summary["axes"])
    name = _metric_name(summary)
    headers = [*keys, "bytes", "× vs fp32", name, "Pareto"]
    rows = [
        [
            *(str(r["overrides"][k]) for k in keys),
            f"{r['bytes']:,}",
            f"{r['compression_ratio']:.1f}×",
            format_metric(name, _value(r)),
            "★" if r["pareto"] else "",
        ]
        for r in summary["points"]
    ]
    return headers, rows


def render_sweep_markdown(summary: dict[str, Any]) -> str:
    from .audit.report import _md_table

    headers, rows = sweep_table(summary)
    return f"# jointcomp sweep: {summary['recipe']}\n\n{_md_table(headers, rows)}\n"


def render_sweep_html(summary: dict[str, Any]) -> str:
    import html

    from .audit.plots import accuracy_vs_size

    headers, rows = sweep_table(summary)
    series = [
        {
            "label": "jointcomp",
            "front": True,
            "points": [(r["bytes"], _value(r)) for r in summary["points"]],
        }
    ]
    if summary["points"]:
        first = summary["points"][0]
        series.append(
            {
                "label": "fp32 baseline",
                "marker": "D",
                "points": [(first["baseline_bytes"], _value(first, "baseline_metric"))],
            }
        )
    for anchor in summary.get("anchors", []):
        series.append(
            {
                "label": anchor["label"],
                "marker": anchor.get("marker", "s"),
                "points": [tuple(p) for p in anchor["points"]],
            }
        )
    name = _metric_name(summary)
    title = "Sweep: accuracy vs file size" if name == "top-1" else f"Sweep: {name} vs file size"
    plot = accuracy_vs_size(series, title, metric=name)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>jointcomp sweep</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}</style></head><body>
<h1>jointcomp sweep: {html.escape(summary["recipe"])}</h1>
<img id="sweep-plot" alt="{html.escape(name)} vs size" src="data:image/png;base64,{plot}">
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
</body></html>
"""
