"""The T-Basis table of docs/RESULTS.md, from the runs of its study (reproduce.py --only tbasis).

    python tools/tbasis_table.py runs/tbasis-study/{tbasis,tt,tbasis-q}

Each argument is a sweep (its folder or sweep.json: every point, in order) or one run (its folder
or report.json). A run whose first stage is ``share`` is a ``tbasis`` row (``tbasis+q`` when it
also quantizes), one whose first stage is ``decompose`` a row of its format at its rank; B/R and
rank come from the run's recipe.json. params, basis and top-1 after the fit come from the first
stage's record in report.json; top-1, bytes and × fp32 from the written file. Each TT row follows
the T-Basis row nearest to it in parameters; quantized rows come last.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from readme_tables import md_table

# Obukhov et al. 2020: ResNet-32 on CIFAR-10, full training, no quantization: top-1 at % params
PAPER = {"32/32": (93.45, 66.0), "16/16": (90.24, 9.5), "8/8": (81.35, 2.1)}
HEADERS = [
    "method",
    "B/R or rank",
    "params",
    "% params",
    "% w/o basis",
    "top-1 fit",
    "top-1",
    "file bytes",
    "× fp32",
    "paper (CIFAR-10)",
]


def run_dirs(arg: str) -> list[Path]:
    """The run folders an argument names: a sweep's points in order, or one run."""
    path = Path(arg)
    folder = path.parent if path.suffix == ".json" else path
    sweep = folder / "sweep.json"
    if not sweep.is_file():
        return [folder]
    points = json.loads(sweep.read_text())["points"]
    # the run path as the sweep wrote it, else its folder under this sweep (moved or copied)
    return [
        Path(p["run"]) if Path(p["run"]).is_dir() else folder / "points" / Path(p["run"]).name
        for p in points
    ]


def row(run: Path) -> dict[str, Any]:
    report = json.loads((run / "report.json").read_text())
    entry = json.loads((run / "recipe.json").read_text())["stages"][0]
    ((stage, params),) = entry.items()
    first = report["stages"][0]
    record = first.get("record") or {}
    base, final = report["baseline"], report["final"]
    if stage == "share":
        quantized = any(s["name"] == "quantize" for s in report["stages"])
        method = "tbasis+q" if quantized else "tbasis"
        setting = f"{params['basis']}/{params['rank']}"
    else:
        method, setting = params.get("format") or stage, f"r{params.get('rank')}"
    out = {
        "method": method,
        "setting": setting,
        "params": first["params"],
        "pct": 100 * first["params"] / base["params"],
        "fit": record.get("metric_fit"),
        "top1": final["accuracy"],
        "bytes": final["bytes"],
        "ratio": final["compression_ratio"],
        "report": report,
    }
    summary = record.get("summary") or {}
    if "basis_params" in summary:
        out["pct_wo_basis"] = 100 * (first["params"] - summary["basis_params"]) / base["params"]
    return out


def ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """T-Basis rows as given, each followed by the other float rows nearest to it in params;
    the quantized rows last."""
    tbasis = [r for r in rows if r["method"] == "tbasis"]
    quantized = [r for r in rows if r["method"] == "tbasis+q"]
    others = [r for r in rows if r not in tbasis and r not in quantized]
    if not tbasis:
        return others + quantized
    near = {id(o): min(tbasis, key=lambda t: abs(t["params"] - o["params"])) for o in others}
    out = []
    for t in tbasis:
        out += [t, *(o for o in others if near[id(o)] is t)]
    return out + quantized


def cells(r: dict[str, Any]) -> list[str]:
    paper = PAPER.get(r["setting"]) if r["method"] == "tbasis" else None
    return [
        r["method"],
        r["setting"],
        f"{r['params']:,}",
        f"{r['pct']:.2f}",
        f"{r['pct_wo_basis']:.2f}" if "pct_wo_basis" in r else "",
        f"{100 * r['fit']:.2f}" if r["fit"] is not None else "",
        f"{100 * r['top1']:.2f}",
        f"{r['bytes']:,}",
        f"{r['ratio']:.1f}",
        f"{paper[0]}% at {paper[1]}%" if paper else "",
    ]


def breakdown(report: dict[str, Any]) -> str:
    """Bytes of a written T-Basis file by part (the audit's per-layer table)."""
    layers = report.get("layers", [])
    basis = sum(r["bytes"] for r in layers if r["type"].split("+")[0] == "TBasis")
    table = sum(r["bytes"] for r in layers if r["type"].startswith("TBasisCoefficients"))
    header, total = report["final"]["header_bytes"], report["final"]["bytes"]
    return (
        f"{total:,} B = basis {basis:,} + coefficient tables {table:,} + header {header:,} "
        f"+ rest {total - basis - table - header:,}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="sweep or run folders (or their sweep/report.json)")
    args = ap.parse_args(argv)
    rows = ordered([row(run) for arg in args.runs for run in run_dirs(arg)])
    base = rows[0]["report"]["baseline"]
    print(f"baseline: top-1 {100 * base['accuracy']:.2f}%, {base['params']:,} params")
    for r in rows:
        if r["method"] == "tbasis+q":
            print(f"{r['method']} {r['setting']}: {breakdown(r['report'])}")
    print()
    print(md_table(HEADERS, [cells(r) for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
