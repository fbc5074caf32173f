"""The "Against the anchors" tables of docs/RESULTS.md: jointcomp, the Deep Compression recipe
and NNCodec on the same trained baselines, read from their measured outputs.

    python tools/anchors_table.py                # runs/ as tools/reproduce.py leaves it
    python tools/anchors_table.py --coders       # bench_nncodec's coder-vs-coder totals

Per model it reads each run's ``RUNS/<folder>/report.json`` and ``RUNS/nncodec-<model>/
results.json`` (tools/bench_nncodec.py). For each jointcomp row, NNCodec's row is its smallest
bitstream whose accuracy is at most ``--tolerance`` points below that row's. The second table
pairs each jointcomp row with each anchor: accuracy gap, bytes ratio and the project's targets
(≤ 0.67× Deep Compression, ≤ 0.33× NNCodec, at accuracy within 0.3 point).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from readme_tables import md_table

TARGETS = {"Deep Compression": 0.67, "NNCodec": 0.33}  # jointcomp bytes ÷ anchor bytes, at most


@dataclass(frozen=True)
class Run:
    """One ``jointcomp run`` of a bundled recipe (with overrides) into ``runs/<folder>``."""

    method: str
    recipe: str
    folder: str
    overrides: tuple[str, ...] = ()

    def command(self, runs: str = "runs", extra: tuple[str, ...] = ()) -> tuple[str, ...]:
        cmd: tuple[str, ...] = ("jointcomp", "run", f"recipes/{self.recipe}.yaml", "--force")
        for o in (*self.overrides, *extra):
            cmd += ("--set", o)
        if self.folder != self.recipe or runs != "runs":
            cmd += ("--set", f"output={runs}/{self.folder}")
        return cmd


@dataclass(frozen=True)
class Model:
    label: str
    key: str  # bench_nncodec --model
    runs: tuple[Run, ...]  # jointcomp rows first, then the Deep Compression recipe

    @property
    def nncodec(self) -> str:
        return f"nncodec-{self.key}"


def _model(label: str, key: str) -> Model:
    joint = f"{key}-fashion-joint"
    return Model(
        label,
        key,
        (
            Run("jointcomp (joint recipe)", joint, joint),
            Run(
                "jointcomp (joint recipe, 3-bit factors)",
                joint,
                f"{joint}-f3",
                ("stages.2.quantize.bits.factors=3",),
            ),
            Run("Deep Compression (recipe)", f"deep-compression-{key}", f"deep-compression-{key}"),
        ),
    )


MODELS = (_model("LeNet-5", "lenet5"), _model("LeNet-300-100", "lenet300"))
HEADERS = ["model", "baseline top-1", "method", "bytes", "× vs fp32", "top-1", "command"]
PAIR_HEADERS = ["model", "jointcomp", "anchor", "top-1 gap (pts)", "bytes ratio", "target", "met"]


def pick_within(
    points: list[dict[str, Any]], target: float, tolerance: float
) -> dict[str, Any] | None:
    """The smallest point (by ``bytes``) whose ``accuracy`` ≥ target − tolerance (fractions)."""
    ok = [p for p in points if p["accuracy"] >= target - tolerance - 1e-12]
    return min(ok, key=lambda p: (p["bytes"], -p["accuracy"])) if ok else None


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


@dataclass
class Row:
    method: str
    bytes: int
    accuracy: float
    command: str


def model_rows(m: Model, runs: Path, tolerance: float) -> tuple[dict[str, Any] | None, list[Row]]:
    """The model's baseline and its measured rows: jointcomp, Deep Compression, NNCodec picks."""
    rows, base = [], None
    for run in m.runs:
        rep = _read(runs / run.folder / "report.json")
        if rep is not None:
            base = base or rep["baseline"]
            fin = rep["final"]
            rows.append(Row(run.method, fin["bytes"], fin["accuracy"], shlex.join(run.command())))
    nnc = _read(runs / m.nncodec / "results.json")
    if nnc is not None:
        picked: set[int] = set()
        for j in [r for r in rows if r.method.startswith("jointcomp")]:
            best = pick_within(nnc["points"], j.accuracy, tolerance)
            if best is not None and best["qp"] not in picked:
                picked.add(best["qp"])
                rows.append(
                    Row(
                        f"NNCodec {nnc['nncodec_version']} (qp {best['qp']})",
                        best["bytes"],
                        best["accuracy"],
                        f"python tools/bench_nncodec.py --model {m.key}",
                    )
                )
    return base, rows


def pairs(m: Model, rows: list[Row], tolerance: float) -> list[list[str]]:
    """Each jointcomp row against each anchor row it is compared with."""
    out = []
    joint = [r for r in rows if r.method.startswith("jointcomp")]
    dc = [r for r in rows if r.method.startswith("Deep Compression")]
    nnc = [r for r in rows if r.method.startswith("NNCodec")]
    for j in joint:
        # NNCodec: the pick made for this row (the smallest within tolerance below it)
        mine = [r for r in nnc if r.accuracy >= j.accuracy - tolerance - 1e-12]
        anchors = [*dc, *sorted(mine, key=lambda r: r.bytes)[:1]]
        for a in anchors:
            name = "Deep Compression" if a in dc else "NNCodec"
            gap = 100 * (j.accuracy - a.accuracy)
            ratio = j.bytes / a.bytes
            # met: small enough, and jointcomp's top-1 at most `tolerance` below the anchor's
            met = ratio <= TARGETS[name] and gap >= -100 * tolerance - 1e-9
            out.append(
                [
                    m.label,
                    f"{j.method.removeprefix('jointcomp ')}: {j.bytes:,} B",
                    f"{a.method}: {a.bytes:,} B",
                    f"{gap:+.2f}",
                    f"{ratio:.2f}×",
                    f"≤ {TARGETS[name]}×",
                    "yes" if met else "no",
                ]
            )
    return out


def build_tables(runs: Path, tolerance: float = 0.003) -> str:
    main_rows, pair_rows = [], []
    for m in MODELS:
        base, rows = model_rows(m, runs, tolerance)
        if base is None:
            continue
        fp32 = base["dense_bytes"]
        for r in rows:
            main_rows.append(
                [
                    m.label,
                    _pct(base["accuracy"]),
                    r.method,
                    f"{r.bytes:,}",
                    f"{fp32 / r.bytes:.1f}×",
                    _pct(r.accuracy),
                    f"`{r.command}`",
                ]
            )
        pair_rows += pairs(m, rows, tolerance)
    if not main_rows:
        raise SystemExit(f"no measurements under {runs}: run the recipes and bench_nncodec first")
    return f"{md_table(HEADERS, main_rows)}\n\n{md_table(PAIR_HEADERS, pair_rows)}"


CODER_HEADERS = [
    "model",
    "integers of",
    "n",
    "H0 B",
    "H(·|prev=0?) B",
    "jointcomp best B",
    "in the file B",
    "DeepCABAC B",
    "DeepCABAC ÷ H0",
    "DeepCABAC ÷ jointcomp",
    "NNR stream B",
]


def coders_table(runs: Path) -> str:
    """bench_nncodec's part (b), one row per source: the same integers through each coder."""
    rows = []
    for m in MODELS:
        nnc = _read(runs / m.nncodec / "results.json")
        for r in (nnc or {}).get("coders", []):
            if r["tensor"] != "total":
                continue
            rows.append(
                [
                    m.label,
                    r["source"],
                    f"{r['n']:,}",
                    f"{r['h0_bytes']:,.0f}",
                    # "–": a results.json written before bench_nncodec measured this column
                    "–"
                    if r.get("h_zero_context_bytes") is None
                    else f"{r['h_zero_context_bytes']:,.0f}",
                    f"{r['auto_bytes']:,}",
                    "–" if r["file_bytes"] is None else f"{r['file_bytes']:,}",
                    f"{r['deepcabac_bytes']:,}",
                    f"{r['deepcabac_bytes'] / r['h0_bytes']:.3f}",
                    f"{r['deepcabac_bytes'] / r['auto_bytes']:.3f}",
                    f"{r['nnr_bytes']:,}",
                ]
            )
    if not rows:
        raise SystemExit(f"no bench_nncodec results under {runs}")
    return md_table(CODER_HEADERS, rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs", help="folder holding the runs (default: runs)")
    ap.add_argument("--tolerance", type=float, default=0.3, help="accuracy points (default 0.3)")
    ap.add_argument("--coders", action="store_true", help="the coder-vs-coder table instead")
    args = ap.parse_args(argv)
    if args.coders:
        print(coders_table(Path(args.runs)))
    else:
        print(build_tables(Path(args.runs), args.tolerance / 100))
    return 0


if __name__ == "__main__":
    sys.exit(main())
