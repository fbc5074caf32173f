"""The ``jointcomp`` command line."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .config import printable, short
from .errors import FormatError, JointcompError, OutputExistsError, RecipeError
from .version import __version__


def _console(**kwargs: Any) -> Console:
    """A console that prints text as it is: no markup, no emoji codes, no highlighting (what
    we print comes from files and recipes; styled parts are built as rich Text)."""
    return Console(soft_wrap=True, markup=False, emoji=False, highlight=False, **kwargs)


# wide tables when piped (rich assumes 80 columns without a terminal)
out = _console(width=None if sys.stdout.isatty() else 160)
err = _console(stderr=True)

# at most this many edits and tensor rows are listed (--json lists all)
MAX_LISTED = 500


def plain(value: Any, limit: int | None = None) -> Text:
    """``value`` as terminal-safe plain text: control characters and escapes written out,
    markup not interpreted, cut to ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return Text(printable(text))


def _row(table: Table, cells: Iterable[Any]) -> None:
    table.add_row(*(plain(c, 200) for c in cells))


def _error(message: str, *, newlines: bool) -> Text:
    return Text.assemble(("error:", "bold red"), " ", printable(message, newlines=newlines))


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print errors as one line (a recipe's list of problems: one line each), never a
    traceback, and exit non-zero: 2 for bad input, 1 for anything unforeseen (set
    JOINTCOMP_DEBUG=1 to see its traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except JointcompError as exc:
            err.print(_error(str(exc), newlines=isinstance(exc, RecipeError)))
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted; continue with: jointcomp run RECIPE --resume")
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if os.environ.get("JOINTCOMP_DEBUG"):
                raise
            message = short(str(exc), 300, quote=False)
            err.print(
                _error(
                    f"unexpected {type(exc).__name__}: {message} "
                    "(JOINTCOMP_DEBUG=1 shows the traceback)",
                    newlines=False,
                )
            )
            sys.exit(1)

    return wrapper


def bundled_recipes_dir() -> Path:
    """The repository's recipes/ folder (next to the package in a source checkout)."""
    return Path(__file__).resolve().parent.parent / "recipes"


def _resolve_recipe(path: str) -> str:
    """Accept a recipe path, or the bare name of a bundled recipe (``quickstart``)."""
    p = Path(path)
    if p.exists():
        return path
    bundled = bundled_recipes_dir() / (path if path.endswith(".yaml") else f"{path}.yaml")
    return str(bundled) if bundled.exists() else path


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="jointcomp")
def cli() -> None:
    """Compress trained PyTorch models into one small file that decodes bit for bit.

    \b
    jointcomp run recipes/quickstart.yaml       compress as a recipe says
    jointcomp inspect runs/quickstart/model.jcz what is in the file
    jointcomp recipes                           the bundled recipes
    """


@cli.command()
@click.argument("recipe")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="override a recipe key, e.g. --set stages.0.prune.ratio=0.3 (repeatable)",
)
@click.option("--resume", is_flag=True, help="continue after the last finished stage")
@click.option(
    "--force",
    is_flag=True,
    help="replace the output directory when it is an earlier run's (or empty)",
)
@click.option("--output", "-o", default=None, help="output directory (default: runs/NAME)")
@click.option("--quiet", "-q", is_flag=True, help="no progress display")
@_friendly
def run(
    recipe: str,
    overrides: tuple[str, ...],
    resume: bool,
    force: bool,
    output: str | None,
    quiet: bool,
) -> None:
    """Run RECIPE: train or load the baseline, run the stages, write the file and the reports."""
    from .audit.report import metric_name, summary_headers, summary_rows
    from .pipeline import run as run_pipeline
    from .recipe import load_recipe
    from .tasks import format_metric

    if resume and force:
        raise click.UsageError("--resume and --force exclude each other")
    # the path as a YAML string (JSON is YAML): "~" or "1e3" stay paths
    extra = (*overrides, f"output={json.dumps(output)}") if output else overrides
    parsed = load_recipe(_resolve_recipe(recipe), extra)
    result = run_pipeline(
        parsed,
        resume=resume,
        force=force,
        show_progress=not quiet,
        console=_console(stderr=True, quiet=quiet),
    )
    if not result.report:
        return
    table = Table(title=plain(f"jointcomp: {parsed.name}"), title_justify="left")
    for h in summary_headers(result.report):
        table.add_column(h, justify="left" if h == "step" else "right")
    for row in summary_rows(result.report):
        _row(table, row)
    out.print(table)
    fin, name = result.report["final"], metric_name(result.report)
    drop = fin["metric_drop"]  # top-1 falls in points; other metrics by their own amount
    fell = f"{100 * drop:+.2f} points" if name == "top-1" else f"{drop:+.4f}"
    out.print(
        plain(
            f"file    {result.model_path}  ({fin['bytes']:,} bytes, "
            f"{fin['compression_ratio']:.1f}× vs fp32, test {name} "
            f"{format_metric(name, fin['metric'])}, drop {fell})"
        )
    )
    runtimes = fin.get("runtimes", {}).get("latency_ms", {})
    if runtimes:
        batch = min((b for t in runtimes.values() for b in t), key=int)
        speed = fin["runtimes"].get("speedup", {})
        cells = [
            f"{name} {t[batch]:.3f} ms"
            + (f" ({speed[name][batch]:.2f}×)" if batch in speed.get(name, {}) else "")
            for name, t in runtimes.items()
            if batch in t
        ]
        out.print(plain(f"deploy  batch {batch}: " + ", ".join(cells)))
    out.print(plain(f"reports {result.out_dir / 'report.md'}  {result.out_dir / 'report.html'}"))


@cli.command()
@click.argument("recipe")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE")
@_friendly
def validate(recipe: str, overrides: tuple[str, ...]) -> None:
    """Check RECIPE without running it."""
    from .pipeline import output_dir, planned_stages
    from .recipe import load_recipe

    parsed = load_recipe(_resolve_recipe(recipe), overrides)
    names = " → ".join(s.stage for s in planned_stages(parsed))
    out.print(
        plain(
            f"ok: {parsed.name}: {parsed.model.builder} on {parsed.data.dataset}; "
            f"stages: {names}; output: {output_dir(parsed)}"
        )
    )


@cli.command(name="plan")
@click.argument("recipe")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE")
@click.option("--json", "as_json", is_flag=True, help="print the plan as JSON")
@_friendly
def plan_command(recipe: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Print the allocation RECIPE's target makes per layer (what prune, decompose and
    quantize do there, predicted bytes and loss change), without running the stages. The
    baseline is trained first when it is not cached."""
    from .pipeline import plan_recipe
    from .recipe import load_recipe

    plan = plan_recipe(load_recipe(_resolve_recipe(recipe), overrides), _console(stderr=True))
    if as_json:
        out.print_json(json.dumps(plan.to_dict()))
        return
    table = Table(title=f"plan for {plan.stages[0]} → … ({plan.target_text})")
    for header in ("layer", "plan", "predicted bytes", "Δ val loss", "options"):
        table.add_column(header, justify="left" if header in ("layer", "plan") else "right")
    for row in plan.rows():
        _row(table, row)
    out.print(table)
    out.print(plain(plan.summary()))


def _entropy_bits(values: Any) -> float:
    import numpy as np

    if values.size == 0:
        return 0.0
    _, counts = np.unique(values, return_counts=True)
    p = counts / values.size
    return float(-(p * np.log2(p)).sum())


def _read_file(file: str) -> bytes:
    path = Path(file)
    if not path.is_file():
        raise FormatError(f"{file}: no such file")
    return path.read_bytes()


def _header_only(data: bytes) -> tuple[Any, Any, list[Any], dict[str, Any]]:
    """The framing (checksums checked), manifest, stored table and meta of a file image,
    without building anything."""
    from .container.framing import unpack
    from .container.manifest import manifest_from_json

    frame = unpack(data)
    manifest = manifest_from_json(frame.header.get("model"))
    entries = frame.header.get("tensors")
    if not isinstance(entries, list):
        raise FormatError("header: missing tensor table")
    meta = frame.header.get("meta", {})
    if not isinstance(meta, dict):
        raise FormatError("header: meta is not an object")
    return frame, manifest, entries, meta


def _stored_row(entry: Any) -> list[str]:
    """One table entry as the header states it; '(implied)' where the structure fills it in."""
    if not isinstance(entry, dict):
        return ["(malformed entry)", "", "", "", ""]
    name = entry.get("n")
    if isinstance(name, str):
        shown = name
    elif isinstance(name, list):
        shown = f"({len(name)} packed scalars)"
    else:
        shown = "(implied)"
    shape = entry.get("s")
    if isinstance(shape, list) and all(isinstance(d, int) for d in shape):
        shape_text = "×".join(map(str, shape)) or "scalar"
    else:
        shape_text = "(implied)"
    length = entry.get("b")
    return [
        shown,
        shape_text,
        short(entry["d"], 20, quote=False) if "d" in entry else "(implied)",
        short(entry.get("c", "?"), 20, quote=False),
        f"{length:,}" if isinstance(length, int) else "(implied)",
    ]


def _file_summary(file: str, frame: Any, manifest: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """What `inspect` reports of any file, with or without building its structure."""
    return {
        "file": file,
        "bytes": frame.file_bytes,
        "header_bytes": frame.header_bytes,
        "payload_bytes": frame.file_bytes - frame.header_bytes,
        "builder": manifest.builder,
        "kwargs": manifest.kwargs,
        "edits": len(manifest.edits),
        "ties": len(manifest.ties),
        "meta": meta,
    }


def _print_overview(file: str, frame: Any, manifest: Any) -> None:
    payload = frame.file_bytes - frame.header_bytes
    out.print(
        plain(
            f"{file}: {frame.file_bytes:,} bytes = {frame.header_bytes:,} header + "
            f"{payload:,} payload ({100 * frame.header_bytes / frame.file_bytes:.1f}% header)"
        )
    )
    _print_edits(manifest)


def _print_edits(manifest: Any) -> None:
    out.print(
        plain(
            f"model: {manifest.builder} {json.dumps(manifest.kwargs)}; "
            f"{len(manifest.edits)} structural edit(s), {len(manifest.ties)} tied tensor(s)",
            2000,
        )
    )
    for path, type_name, config in manifest.edits[:MAX_LISTED]:
        out.print(plain(f"  edit {path or '(root)'} → {type_name}({json.dumps(config)})", 500))
    if len(manifest.edits) > MAX_LISTED:
        out.print(plain(f"  ... and {len(manifest.edits) - MAX_LISTED:,} more edit(s)"))


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print the header and table as JSON")
@click.option(
    "--structure",
    is_flag=True,
    help="also build the model's structure (its builder, untrained; nothing is downloaded) to "
    "name every tensor, and decode the tensors for their entropy bound",
)
@click.option(
    "--trust",
    is_flag=True,
    help="with --structure: allow a builder outside the allow-list (implies --structure)",
)
@_friendly
def inspect(file: str, as_json: bool, structure: bool, trust: bool) -> None:
    """Show what is in a .jcz FILE: its model, edits and tensor table as the header states
    them. Nothing is built or imported unless --structure (and nothing outside the allow-list
    unless --trust)."""
    data = _read_file(file)
    if structure or trust:
        _inspect_structure(file, data, as_json, trust)
        return
    frame, manifest, entries, meta = _header_only(data)
    from .container.names import needs_structure
    from .models import is_allowed_builder

    implied = needs_structure(entries)
    summary = {
        **_file_summary(file, frame, manifest, meta),
        "structure": False,
        "table_needs_structure": implied,
        "table": entries,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    _print_overview(file, frame, manifest)
    table = Table(title=plain(f"tensor table as stored: {len(entries):,} entries"))
    for h in ("tensor", "shape", "dtype", "codec", "bytes"):
        table.add_column(h, justify="left" if h in ("tensor", "codec", "dtype") else "right")
    for entry in entries[:MAX_LISTED]:
        _row(table, _stored_row(entry))
    out.print(table)
    if len(entries) > MAX_LISTED:
        out.print(plain(f"... and {len(entries) - MAX_LISTED:,} more entries (--json lists all)"))
    needs = "tensor names, shapes and dtypes marked (implied), and " if implied else ""
    trust_hint = "" if is_allowed_builder(manifest.builder) else " --trust"
    out.print(
        plain(
            f"{needs}the H0 entropy bound need the model's structure: "
            f"jointcomp inspect --structure{trust_hint} {file} builds {manifest.builder} "
            "(untrained, nothing downloaded) and decodes the tensors"
        )
    )


def _inspect_structure(file: str, data: bytes, as_json: bool, trust: bool) -> None:
    from .container.artifact import decode_tensors, read_header

    frame, manifest, entries, meta = read_header(data, trust=trust)
    tensors = decode_tensors(frame, entries)
    rows = []
    for e in entries:
        n = math.prod(e["s"])
        t = tensors[e["n"]]
        h0 = None if t.is_floating_point() else _entropy_bits(t.reshape(-1).numpy())
        rows.append(
            {
                "name": e["n"],
                "shape": e["s"],
                "dtype": e["d"],
                "storage": e.get("st", e["d"]),
                "codec": e["c"],
                "bytes": e["b"],
                "bits_per_element": 8 * e["b"] / max(1, n),
                "entropy_bits": h0,
                "entropy_bytes": None if h0 is None else h0 * n / 8,
            }
        )
    summary = {
        **_file_summary(file, frame, manifest, meta),
        "structure": True,
        "tensors": rows,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    _print_overview(file, frame, manifest)
    table = Table()
    for h in ("tensor", "shape", "dtype", "codec", "bytes", "bits/elem", "H0 bound (bytes)"):
        table.add_column(h, justify="left" if h in ("tensor", "codec", "dtype") else "right")
    for r in rows[:MAX_LISTED]:
        _row(
            table,
            [
                r["name"],
                "×".join(map(str, r["shape"])) or "scalar",
                r["dtype"] if r["storage"] == r["dtype"] else f"{r['dtype']} as {r['storage']}",
                r["codec"],
                f"{r['bytes']:,}",
                f"{r['bits_per_element']:.2f}",
                "–" if r["entropy_bytes"] is None else f"{max(0.0, r['entropy_bytes']):,.0f}",
            ],
        )
    out.print(table)
    if len(rows) > MAX_LISTED:
        out.print(plain(f"... and {len(rows) - MAX_LISTED:,} more tensors (--json lists all)"))


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Path(dir_okay=False),
    help="output .safetensors path",
)
@click.option("--force", is_flag=True, help="replace an existing --to file (never FILE itself)")
@click.option("--trust", is_flag=True, help="allow a builder outside the allow-list")
@_friendly
def decode(file: str, target: str, force: bool, trust: bool) -> None:
    """Decode FILE into a dense state dict in a .safetensors file."""
    from safetensors.torch import save

    from .container import open_artifact, write_atomic

    source, destination = Path(file), Path(target)
    if destination.exists() or destination.is_symlink():
        if destination.exists() and source.exists() and os.path.samefile(source, destination):
            raise OutputExistsError(f"--to {target} is FILE itself; refused")
        if not force:
            raise OutputExistsError(f"{target} already exists; pass --force to replace it")
    artifact = open_artifact(file, trust=trust)
    state = {
        k: v.detach().cpu().contiguous().clone() for k, v in artifact.model.state_dict().items()
    }
    write_atomic(
        target,
        save(state, metadata={"source": source.name, "builder": artifact.manifest.builder}),
    )
    out.print(plain(f"wrote {target}: {len(state)} tensors"))


@cli.command("export")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--to",
    "target",
    required=True,
    help="model.onnx | model.pt2 | dense.safetensors | DIR (a transformers folder)",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "pt2", "safetensors", "transformers"]),
    default=None,
    help="default: from --to's suffix (a path without one: transformers)",
)
@click.option(
    "--weights",
    type=click.Choice(["dynamic", "qdq", "float"]),
    default=None,
    help="ONNX integer weights: dynamic (int8 MatMulInteger, the default: fastest in "
    "onnxruntime), qdq (DequantizeLinear of the exact integers) or float",
)
@click.option("--input-shape", default=None, help="example input shape, e.g. 1,3,32,32")
@click.option("--input-dtype", default=None, help="example input dtype (default float32)")
@click.option("--opset", type=int, default=None, help="ONNX opset (default 17)")
@click.option("--no-check", is_flag=True, help="skip comparing the export with the module")
@click.option("--force", is_flag=True, help="replace an existing --to (never FILE itself)")
@click.option("--trust", is_flag=True, help="allow a builder outside the allow-list")
@_friendly
def export_cmd(
    file: str,
    target: str,
    fmt: str | None,
    weights: str | None,
    input_shape: str | None,
    input_dtype: str | None,
    opset: int | None,
    no_check: bool,
    force: bool,
    trust: bool,
) -> None:
    """Export FILE's model for deployment: ONNX (integer weights kept, checked in
    onnxruntime), a torch.export program (.pt2), a dense state dict (.safetensors: the
    original architecture's keys, factorized layers as dense weight/bias) or a transformers
    folder (config.json + model.safetensors).

    Example inputs: --input-shape, else the recipe of the run folder FILE sits in, else
    [1, 128] token ids for transformers models."""
    from .export import export_file

    report = export_file(
        file, target, fmt=fmt, weights=weights, input_shape=input_shape,
        input_dtype=input_dtype, opset=opset, check=not no_check, force=force, trust=trust,
    )  # fmt: skip
    size = f"{report['bytes']:,} bytes" if "bytes" in report else f"{report['tensors']} tensors"
    line = f"wrote {target} ({report['format']}, {size}"
    if report.get("weights"):
        counts = ", ".join(f"{v} {k}" for k, v in report["tensors"].items() if v)
        line += f"; weights {report['weights']}: {counts or 'none quantized'}"
    out.print(plain(line + ")"))
    if "inputs" in report:
        out.print(plain(f"example input: {report['inputs']} {report['input_shapes']}"))
    if "max_abs_err" in report:
        figures = [f"max abs err {report['max_abs_err']:.3g}", f"cosine {report['cosine']:.6f}"]
        if "top1_agreement" in report:
            figures.append(f"top-1 agreement {report['top1_agreement']:.2%}")
        if "exact_max_abs_err" in report:
            figures.append(f"with float kernels {report['exact_max_abs_err']:.3g}")
        out.print(plain("check: " + ", ".join(figures)))


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--recipe", "recipe_path", required=True, help="the recipe that names the data")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE")
@click.option("--out", "out_dir", default=None, help="write report.json/md/html here")
@_friendly
def audit(file: str, recipe_path: str, overrides: tuple[str, ...], out_dir: str | None) -> None:
    """Re-measure FILE (size, MACs, latency, accuracy) on the recipe's test split."""
    from .audit import audit_file, write_reports
    from .audit.report import summary_headers, summary_rows
    from .baseline import baseline_at_hand, get_baseline, recipe_data
    from .recipe import load_recipe

    recipe = load_recipe(_resolve_recipe(recipe_path), overrides)
    data, kwargs = recipe_data(recipe)
    baseline = None
    if baseline_at_hand(recipe, kwargs):
        baseline, _ = get_baseline(recipe, data, kwargs, device="cpu", log=lambda *_: None)
    report = audit_file(Path(file), recipe, data, baseline)
    table = Table(title=plain(f"audit: {file}"), title_justify="left")
    for h in summary_headers(report):
        table.add_column(h, justify="left" if h == "step" else "right")
    rows = summary_rows(report)
    if baseline is None:
        rows = rows[1:]
    for row in rows:
        _row(table, row)
    out.print(table)
    if out_dir:
        write_reports(report, Path(out_dir).expanduser())
        out.print(plain(f"reports in {out_dir}"))


def load_anchor(spec: str) -> dict[str, Any]:
    """``LABEL=FILE``: FILE is a run's report.json (its final row), a sweep.json (its points) or
    a JSON list of [bytes, metric] pairs (the metric: top-1 accuracy, or the task's)."""
    from .audit.report import metric_of

    label, sep, path = spec.partition("=")
    shown = short(spec)
    if not sep or not Path(path).is_file():
        raise click.UsageError(f"--anchor {shown}: expected LABEL=FILE with an existing JSON file")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise click.UsageError(f"--anchor {shown}: not JSON ({short(str(exc))})") from None
    try:
        if isinstance(data, dict) and "final" in data:
            points = [[data["final"]["bytes"], metric_of(data["final"])]]
        elif isinstance(data, dict) and "points" in data:
            points = [[p["bytes"], metric_of(p)] for p in data["points"]]
        elif isinstance(data, list) and all(isinstance(p, list) and len(p) == 2 for p in data):
            points = data
        else:
            raise TypeError
        if not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for p in points for v in p
        ):
            raise TypeError
    except (KeyError, TypeError):
        raise click.UsageError(
            f"--anchor {shown}: expected a report.json, sweep.json or [[bytes, acc]]"
        ) from None
    return {"label": label, "points": points}


@cli.command()
@click.argument("recipe")
@click.option(
    "--vary",
    "axes",
    multiple=True,
    required=True,
    metavar="KEY.PATH=v1,v2,...",
    help="a grid axis, e.g. --vary stages.0.prune.ratio=0.3,0.5,0.7 (repeatable)",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="an override applied to every point",
)
@click.option(
    "--anchor",
    "anchors",
    multiple=True,
    metavar="LABEL=FILE",
    help="points of another method to plot beside the sweep (report.json, sweep.json)",
)
@click.option(
    "--zip",
    "zipped",
    is_flag=True,
    help="vary the axes together (the i-th values of each), not as a grid of all combinations",
)
@click.option("--output", "-o", default=None, help="sweep directory (default: runs/NAME-sweep)")
@click.option("--resume", is_flag=True, help="keep finished points, continue the rest")
@click.option("--force", is_flag=True, help="rerun every point")
@click.option("--quiet", "-q", is_flag=True)
@_friendly
def sweep(
    recipe: str,
    axes: tuple[str, ...],
    overrides: tuple[str, ...],
    anchors: tuple[str, ...],
    zipped: bool,
    output: str | None,
    resume: bool,
    force: bool,
    quiet: bool,
) -> None:
    """Run RECIPE over a grid of values and collect accuracy vs bytes with the Pareto front.

    \b
    jointcomp sweep R.yaml --vary stages.0.prune.ratio=0.3,0.5,0.7
    jointcomp sweep R.yaml --zip --vary stages.0.share.basis=8,16 --vary stages.0.share.rank=8,16
    """
    from .sweep import parse_axis, run_sweep, sweep_table

    if resume and force:
        raise click.UsageError("--resume and --force exclude each other")
    summary = run_sweep(
        _resolve_recipe(recipe),
        [parse_axis(a) for a in axes],
        base_overrides=overrides,
        output=output,
        resume=resume,
        force=force,
        show_progress=not quiet,
        console=_console(stderr=True, quiet=quiet),
        anchors=[load_anchor(a) for a in anchors],
        zipped=zipped,
    )
    headers, rows = sweep_table(summary)
    table = Table(title="sweep", title_justify="left")
    for h in headers:
        table.add_column(plain(h, 100), justify="right")
    for row in rows:
        _row(table, row)
    out.print(table)
    out.print(plain(f"sweep   {summary['output']}/sweep.md  {summary['output']}/sweep.html"))


@cli.command("recipes")
def recipes_cmd() -> None:
    """List the bundled recipes."""
    folder = bundled_recipes_dir()
    files = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    if not files:
        out.print(plain(f"no bundled recipes found in {folder}"))
        return
    table = Table()
    table.add_column("recipe")
    table.add_column("what it does")
    for f in files:
        first = f.read_text(encoding="utf-8").splitlines()[:1]
        desc = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        _row(table, [str(f.relative_to(folder.parent)), desc])
    out.print(table)


def main() -> None:
    cli(prog_name="jointcomp")


if __name__ == "__main__":
    main()
