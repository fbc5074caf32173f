"""One docs/RESULTS.md row per bundled recipe, read from the report each ``jointcomp run`` wrote.

    python tools/recipes_table.py                       # runs/<recipe>/report.json of RECIPES
    python tools/recipes_table.py --runs DIR quickstart # other folder, other recipes

Every figure comes from the run's report.json: the baseline and the module decoded from the
written model.jcz (params = nonzero parameters; stages = the compression stages' own seconds,
without baseline training and the audit). Latency is left to tools/latency_ab.py, which times
baseline and file interleaved: a run's single timings drift with the machine's load.
A recipe whose report is missing is listed as not run, never guessed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from readme_tables import md_table

RECIPES = (
    "quickstart",
    "lenet5-fashion-prune",
    "lenet5-fashion-lrs",
    "lenet5-fashion-joint",
    "deep-compression-lenet5",
    "lenet300-fashion-joint",
    "deep-compression-lenet300",
    "resnet20-fashion-budget",
)
HEADERS = [
    "recipe",
    "stages",
    "baseline top-1",
    "top-1",
    "nonzero params",
    "file bytes",
    "× vs fp32",
    "stages (s)",
]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def row(name: str, report: dict[str, Any]) -> list[str]:
    base, final = report["baseline"], report["final"]
    kept = final["nonzero_params"] / base["params"]
    stages = " → ".join(s["name"] for s in report["stages"])
    return [
        f"`{name}`",
        stages,
        _pct(base.get("accuracy")),
        _pct(final.get("accuracy")),
        f"{final['nonzero_params']:,} ({100 * kept:.1f}%)",
        f"{final['bytes']:,}",
        f"{final['compression_ratio']:.1f}×",
        f"{sum(s.get('seconds') or 0 for s in report['stages']):.0f}",
    ]


def recipes_table(runs: Path, names: tuple[str, ...] = RECIPES) -> str:
    rows = []
    for name in names:
        path = runs / name / "report.json"
        if not path.is_file():
            rows.append([f"`{name}`", "not run", *["–"] * (len(HEADERS) - 2)])
            continue
        rows.append(row(name, json.loads(path.read_text(encoding="utf-8"))))
    return md_table(HEADERS, rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="*", help=f"recipe names (default: {', '.join(RECIPES)})")
    ap.add_argument("--runs", type=Path, default=Path("runs"), help="folder of the run folders")
    args = ap.parse_args(argv)
    print(recipes_table(args.runs, tuple(args.recipes) or RECIPES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
