"""Report writers: report.json (the machine-readable record), report.md and a self-contained
report.html with embedded plots, plus the short terminal summary."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ..container import write_atomic
from ..tasks import format_metric


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def _fmt_ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def _fmt_int(v: int | None) -> str:
    return "–" if v is None else f"{v:,}"


def metric_name(report: dict[str, Any]) -> str:
    """The name of the metric a report measured (``top-1`` for reports that name none)."""
    return report.get("metric_name") or "top-1"


def metric_of(row: dict[str, Any]) -> float | None:
    """A report row's metric (its ``accuracy`` in reports written before rows named one)."""
    return row.get("metric", row.get("accuracy"))


def _fmt_metric(report: dict[str, Any], row: dict[str, Any]) -> str:
    return format_metric(metric_name(report), metric_of(row))


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """Rows of the main table: baseline, each stage, the final file."""
    base = report["baseline"]
    rows = [
        [
            "baseline",
            _fmt_int(base.get("params")),
            _fmt_bytes(base.get("bytes")),
            "1.0×",
            _fmt_int(base.get("macs")),
            _fmt_ms(base.get("latency_ms")),
            _fmt_metric(report, base),
        ]
    ]
    for st in report["stages"]:
        ratio = base["bytes"] / st["bytes"] if st.get("bytes") else None
        rows.append(
            [
                f"{st['index']}: {st['name']}",
                _fmt_int(st.get("params")),
                _fmt_bytes(st.get("bytes")),
                f"{ratio:.1f}×" if ratio else "–",
                _fmt_int(st.get("macs")),
                _fmt_ms(st.get("latency_ms")),
                _fmt_metric(report, st),
            ]
        )
    fin = report["final"]
    rows.append(
        [
            "final (model.jcz)",
            _fmt_int(fin.get("params")),
            _fmt_bytes(fin.get("bytes")),
            f"{fin['compression_ratio']:.1f}×",
            _fmt_int(fin.get("macs")),
            _fmt_ms(fin.get("latency_ms")),
            _fmt_metric(report, fin),
        ]
    )
    return rows


HEADERS = ["step", "params", "bytes", "× vs fp32", "MACs", "latency b1 (ms)", "test top-1"]


def summary_headers(report: dict[str, Any]) -> list[str]:
    """The main table's headers, the last naming the report's metric."""
    return [*HEADERS[:-1], f"test {metric_name(report)}"]


LAYER_HEADERS = [
    "layer",
    "type",
    "shape",
    "params",
    "density",
    "bytes",
    "q-bits",
    "bits/param",
    "H0 bytes",
    "codecs",
]


def layer_table_rows(report: dict[str, Any]) -> list[list[str]]:
    return [
        [
            r["name"],
            r["type"],
            "×".join(map(str, r["shape"] or [])),
            _fmt_int(r["params"]),
            "–" if r.get("density") is None else f"{r['density']:.3f}",
            _fmt_int(r["bytes"]),
            r.get("qbits") or "–",
            f"{r.get('bits_per_element', 0):.2f}",
            "–" if r.get("entropy_bytes") is None else f"{r['entropy_bytes']:,.0f}",
            ",".join(r.get("codecs", [])),
        ]
        for r in report["layers"]
    ]


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return (
            "×".join(map(str, v)) if all(isinstance(x, int) for x in v) else ", ".join(map(str, v))
        )
    return "–" if v is None else str(v)


def stage_layer_tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headers, rows) for every stage whose record lists per-layer details."""
    tables = []
    for st in report["stages"]:
        layers = (st.get("record") or {}).get("layers")
        if isinstance(layers, dict):  # {name: value} records
            layers = [{"name": k, "value": v} for k, v in layers.items()]
        if not isinstance(layers, list) or not layers or not isinstance(layers[0], dict):
            continue
        headers = list(dict.fromkeys(k for row in layers for k in row))
        rows = [[_cell(row.get(h)) for h in headers] for row in layers]
        tables.append((f"Stage {st['index']}: {st['name']}", headers, rows))
    return tables


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _figures(report: dict[str, Any]) -> str:
    """The file's metric as the intro says it: top-1 against the baseline's, or fidelity to
    the original model's outputs with the task's other figures."""
    name, fin = metric_name(report), report["final"]
    if name == "top-1":
        return (
            f"top-1 {_fmt_metric(report, fin)} on the held-out test split, measured on the "
            f"module decoded from the file (baseline {_fmt_metric(report, report['baseline'])})"
        )
    others = [
        f"{k} {format_metric(k, v)}" for k, v in (fin.get("metrics") or {}).items() if k != name
    ]
    return (
        f"{name} {_fmt_metric(report, fin)} (task {report.get('task', '?')}"
        + (f"; {', '.join(others)}" if others else "")
        + ") on the held-out test split, measured on the module decoded from the file against "
        "the original model's outputs"
    )


PLAN_HEADERS = ["layer", "plan", "predicted bytes", "measured bytes"]
TRY_HEADERS = ["try", "byte target", "file bytes", "val drop", "within", "planning s", "stages s"]


def plan_tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """A target's run: its tries, and the final plan's predicted bytes per layer and for the
    file beside those measured in the file (none without a target)."""
    plan = report.get("plan")
    if not plan:
        return []
    tries = [
        [
            str(t["try"]),
            _fmt_int(t["byte_target"]),
            _fmt_int(t["file_bytes"]),
            _cell(t["drop"]),
            "yes" if t["within"] else "no",
            _cell(t["planning_seconds"]),
            _cell(t["stage_seconds"]),
        ]
        for t in plan["tries"]
    ]
    rows = [
        [r["name"], r["what"], _fmt_int(r["predicted_bytes"]), _fmt_int(r["measured_bytes"])]
        for r in plan["layers"]
    ]
    whole = plan["file"]
    rows.append(
        ["(file)", "", _fmt_int(whole["predicted_bytes"]), _fmt_int(whole["measured_bytes"])]
    )
    target = ", ".join(
        f"{k}: {v}" for k, v in plan["target"].items() if k in ("bytes", "ratio", "max_drop") and v
    )
    return [
        (f"Target ({target}): tries (best: {plan['best_try']})", TRY_HEADERS, tries),
        ("Plan: predicted vs measured bytes (the best try's last plan)", PLAN_HEADERS, rows),
    ]


RUNTIME_NAMES = {
    "baseline": "baseline (fp32)",
    "exact": "file, exact",
    "fast": "file, fast",
    "onnxruntime": "file, onnxruntime",
}


def _deviation_cell(dev: dict[str, Any] | None) -> str:
    if not dev:
        return "–"
    text = f"cos ≥ {dev['min_cosine']:.5f}"
    if dev.get("top1_agreement") is not None:
        text += f", top-1 agree {100 * dev['top1_agreement']:.1f}%"
    return text


def extra_tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The tables after the per-layer one: each stage's layers, deployment, the target's plan."""
    return stage_layer_tables(report) + runtime_tables(report) + plan_tables(report)


def runtime_tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The file's model as deployed: latency per runtime and batch size (timed interleaved
    with the baseline), speed-up over the baseline, and each deployed form's deviation from the
    exact module on the test split."""
    rt = report["final"].get("runtimes")
    if not rt or not rt.get("latency_ms"):
        return []
    times = rt["latency_ms"]
    batches = sorted({b for t in times.values() for b in t}, key=int)
    headers = (
        ["runtime"]
        + [f"b{b} (ms)" for b in batches]
        + [f"× b{b}" for b in batches]
        + ["vs exact on test"]
    )
    rows = []
    for name, t in times.items():
        speed = rt.get("speedup", {}).get(name, {})
        dev = rt.get("deviation", {}).get(name)
        if name == "exact":
            cell = "bit-exact"
        elif name == "baseline":
            cell = "–"
        else:
            cell = _deviation_cell(dev)
        rows.append(
            [RUNTIME_NAMES.get(name, name)]
            + [f"{t[b]:.3f}" if b in t else "–" for b in batches]
            + [
                ("1.00×" if name == "baseline" else f"{speed[b]:.2f}×")
                if b in speed or name == "baseline"
                else "–"
                for b in batches
            ]
            + [cell]
        )
    title = f"Deployment: latency by runtime ({rt.get('rounds', 1)} interleaved rounds)"
    if rt.get("notes"):
        title += "; " + "; ".join(rt["notes"])
    return [(title, headers, rows)]


def render_markdown(report: dict[str, Any]) -> str:
    table = _md_table

    fin = report["final"]
    parts = [
        f"# jointcomp report: {report['name']}",
        "",
        f"File `{fin['file']}`: {fin['bytes']:,} bytes ({fin['header_bytes']:,} header, "
        f"{fin['payload_bytes']:,} payload), {fin['compression_ratio']:.1f}× smaller than the "
        f"dense fp32 baseline; {_figures(report)}; every choice the stages made was judged "
        "on the validation split, carved from the training data.",
        "",
        table(summary_headers(report), summary_rows(report)),
        "",
        "## Per layer (final file)",
        "",
        table(LAYER_HEADERS, layer_table_rows(report)),
        "",
        f"Latency: CPU, {report['environment']['threads']} thread(s), median of "
        "torch.utils.benchmark runs; batch sizes "
        + ", ".join(f"{b}: {v:.3f} ms" for b, v in (fin.get("latency_ms_by_batch") or {}).items())
        + ".",
        "",
    ]
    for title, headers, rows in extra_tables(report):
        parts += [f"## {title}", "", table(headers, rows), ""]
    return "\n".join(parts)


def _points(report: dict[str, Any]) -> list[dict[str, Any]]:
    """This run's baseline, stages and file, plus any anchors, for the accuracy-vs-size plot."""
    steps = [(report["baseline"]["bytes"], metric_of(report["baseline"]))]
    steps += [(s["bytes"], metric_of(s)) for s in report["stages"] if metric_of(s) is not None]
    series = [
        {"label": "this run: baseline and stages", "points": steps, "marker": "o"},
        {
            "label": "this run: model.jcz",
            "marker": "*",
            "size": 160,
            "points": [(report["final"]["bytes"], metric_of(report["final"]))],
        },
    ]
    for anchor in report.get("anchors", []):
        series.append(
            {
                "label": anchor["label"],
                "marker": anchor.get("marker", "s"),
                "points": [tuple(p) for p in anchor["points"]],
            }
        )
    return series


def _metric_plot(report: dict[str, Any]) -> str:
    from .plots import accuracy_vs_size

    name = metric_name(report)
    if name == "top-1":
        return accuracy_vs_size(_points(report))
    return accuracy_vs_size(_points(report), f"{name} vs file size", metric=name)


def render_html(report: dict[str, Any]) -> str:
    from .plots import bytes_by_layer, size_waterfall

    def table(headers: list[str], rows: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def img(ident: str, alt: str, data: str) -> str:
        return f'<img id="{ident}" class="plot" alt="{alt}" src="data:image/png;base64,{data}">'

    intro = render_markdown(report).split("\n")[2].replace("`", "")
    stage_tables = "".join(
        f"<h2>{html.escape(title)}</h2>{table(headers, rows)}"
        for title, headers, rows in extra_tables(report)
    )
    if report.get("plan", {}).get("layers"):
        from .plots import planned_bytes

        stage_tables += img(
            "planned-vs-measured", "predicted vs measured bytes", planned_bytes(report)
        )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>jointcomp report: {html.escape(report["name"])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:72em}}table{{border-collapse:collapse;
margin:1em 0;font-size:90%}}td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}
td:first-child,th:first-child{{text-align:left}}.plot{{display:block;margin:1em 0}}</style>
</head><body>
<h1>jointcomp report: {html.escape(report["name"])}</h1>
<p>{html.escape(intro)}</p>
{table(summary_headers(report), summary_rows(report))}
{img("size-by-step", "size by step", size_waterfall(report))}
{img("accuracy-vs-size", "metric vs size", _metric_plot(report))}
<h2>Per layer (final file)</h2>
{img("bytes-by-layer", "bytes by layer", bytes_by_layer(report))}
{table(LAYER_HEADERS, layer_table_rows(report))}
{stage_tables}
</body></html>
"""


def write_reports(report: dict[str, Any], out_dir: Path, html_too: bool = True) -> list[Path]:
    """Write report.json, report.md and (optionally) report.html atomically."""
    paths = [out_dir / "report.json", out_dir / "report.md"]
    write_atomic(paths[0], (json.dumps(report, indent=2) + "\n").encode())
    write_atomic(paths[1], render_markdown(report).encode())
    if html_too:
        paths.append(out_dir / "report.html")
        write_atomic(paths[2], render_html(report).encode())
    return paths
