"""The tries of runs with a `target:` as one Markdown table, read from their report.json.

    python tools/target_table.py runs/lenet300-fashion-target [runs/OTHER ...]

Per try: where it restarted, the byte target the closed loop set, the planner's predicted
bytes, the written file's bytes and ratio to fp32, the validation drop (what the loop judges
on) and whether it was within the target, planning and stage seconds. The kept try's row ends
with the test figure the audit measured on its file (the only number taken on the test split).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from readme_tables import md_table

HEADERS = [
    "run",
    "try",
    "restarted from",
    "byte target",
    "predicted B",
    "file B",
    "× vs fp32",
    "val drop",
    "within",
    "plan s / stages s",
    "test",
]


def _int(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else "–"


def _drop(report: dict[str, Any], value: float | None) -> str:
    """A try's drop, as the loop records it: points for top-1, the metric's own unit else."""
    if value is None:
        return "–"
    return f"{value:.2f} pt" if report.get("metric_name") == "top-1" else f"{value:.4f}"


def _test(report: dict[str, Any]) -> str:
    fin, name = report["final"], report.get("metric_name", "metric")
    if name == "top-1":
        return f"{100 * fin['metric']:.2f}% (drop {100 * fin['metric_drop']:.2f} pt)"
    return f"{name} {fin['metric']:.4f} (drop {fin['metric_drop']:.4f})"


def rows(run: Path) -> list[list[str]]:
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    plan = report.get("plan")
    if not plan:
        raise SystemExit(f"{run}: its report holds no plan (a run without target:)")
    base = report["baseline"]["bytes"]
    out = []
    for t in plan["tries"]:
        kept = t["try"] == plan["best_try"]
        file_bytes = t.get("file_bytes")
        out.append(
            [
                report["name"] if t["try"] == 1 else "",
                f"{t['try']}{' (kept)' if kept else ''}",
                t.get("restarted_from") or "–",
                _int(t.get("byte_target")),
                _int(t.get("predicted_bytes")),
                _int(file_bytes),
                f"{base / file_bytes:.1f}×" if isinstance(file_bytes, int) else "–",
                _drop(report, t.get("drop")),
                "yes" if t.get("within") else "no",
                f"{t['planning_seconds']:.0f} / {t['stage_seconds']:.0f}",
                _test(report) if kept else "–",
            ]
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of recipes with target:")
    args = parser.parse_args(argv)
    table: list[list[str]] = []
    for run in args.runs:
        table += rows(run)
    print(md_table(HEADERS, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
