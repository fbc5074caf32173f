"""Benchmark: T-Basis weight sharing vs plain per-layer TT at equal parameter counts on
ResNet-32 (jointcomp's zoo), and the T-Basis file after 4-bit QAT + entropy coding.

    python tools/bench_tbasis.py                         # Fashion-MNIST, defaults below
    python tools/bench_tbasis.py --quick                 # 2,000 samples, 1 epoch, 16/16 and 8/8
    python tools/bench_tbasis.py --dataset cifar10 --root DIR   # DIR holds the binary batches
    python tools/bench_tbasis.py --settings 16/16 --no-tt --quantize ''   # one row
    python tools/bench_tbasis.py --settings 16/16 --no-tt --rate 2   # rate-aware QAT row
    python tools/bench_tbasis.py --settings 16/16 --no-tt --scaling mse   # least-MSE QAT scales
    python tools/bench_tbasis.py --settings 16/16 --no-tt --qat-alpha 0.9   # QAT mostly distilled
    python tools/bench_tbasis.py --settings 16/16 --no-tt --qat-teacher input   # QAT distils
        from the float T-Basis network, not the dense baseline
    python tools/bench_tbasis.py --limit 0 --device cuda --out runs/bench-tbasis-full   # all
        60,000 images, trained on the GPU (each --limit needs its own --out: run names omit it)
    python tools/bench_tbasis.py --settings '' --no-tt --rate 2 --scale-bits 8   # 8-bit rank
        scalings, basis and coefficients still 4-bit
    python tools/bench_tbasis.py --settings '' --no-tt --method kmeans   # 16-entry k-means
        codebooks (one per tensor) instead of uniform 4-bit grids

Every row is a ``jointcomp run`` of recipes/resnet32-fashion-tbasis.yaml with its stages
replaced: ``share`` (B/R, mode 9, the stem conv left dense; fitted with ``--fit-steps`` L-BFGS
steps in each layer's input metric) or ``decompose`` (TT-matrix layers of jointcomp.nn,
TT-SVD, one uniform rank cap chosen so the model's parameter count is closest to the T-Basis
row's), each fine-tuned ``--epochs`` epochs with distillation from the baseline, which
is trained once (``--baseline-epochs``) on the same ``--limit`` samples and cached. Accuracy is
top-1 on the full test set of the file the run wrote. Quantized rows (``--quantize``) run the
recipe's quantize and encode stages (``--qat-epochs`` of QAT, then the recipe's
``fold_epochs`` with the batch norms folded) on the float row's share checkpoint. A cached row
written in an older file format is re-encoded from its last checkpoint. Reference (Obukhov et
al. 2020, ResNet-32, CIFAR-10, trained from scratch for hundreds of epochs, no quantization):
93.45% at 66% of the parameters (B32 R32), 90.24% at 9.5% (B16 R16), 81.35% at 2.1% (B8 R8).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes/resnet32-fashion-tbasis.yaml"
PAPER = {"32/32": (93.45, 66.0), "16/16": (90.24, 9.5), "8/8": (81.35, 2.1)}
QAT_EPOCHS = 18  # the quantized rows' QAT epochs (the README's rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "cifar10"])
    ap.add_argument("--root", default=None, help="dataset directory (CIFAR-10 binary batches)")
    ap.add_argument("--limit", type=int, default=6000, help="training samples (all: 0)")
    ap.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs per row")
    ap.add_argument("--baseline-epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.002, help="Adam learning rate of fine-tuning")
    ap.add_argument(
        "--settings", default="32/32,16/16,8/8,4/4", help="B/R pairs (the paper's four)"
    )
    ap.add_argument("--mode", type=int, default=9)
    ap.add_argument("--init", default="packed", choices=["packed", "pca"], help="fit start")
    ap.add_argument("--fit-steps", type=int, default=400, help="L-BFGS steps of the fit")
    ap.add_argument(
        "--fit-batches", type=int, default=4, help="batches weighing the fit (0: weight error)"
    )
    ap.add_argument("--tt-cores", type=int, default=3, help="cores of the plain TT layers")
    ap.add_argument("--no-tt", action="store_true", help="skip the plain TT rows")
    ap.add_argument(
        "--tt-for",
        default="16/16,8/8",
        help="B/R settings that get a plain TT row at their parameter count ('all': every one)",
    )
    ap.add_argument(
        "--quantize", default="16/16", help="B/R pairs to also run share→quantize→encode"
    )
    ap.add_argument("--bits", type=int, default=4, help="bits of basis and coefficients")
    ap.add_argument(
        "--qat-epochs",
        type=int,
        default=QAT_EPOCHS,
        help="QAT epochs of quantized rows (then fold_epochs)",
    )
    ap.add_argument(
        "--keep-bn", action="store_true", help="quantized rows: do not fold batch norms"
    )
    ap.add_argument(
        "--rate",
        type=float,
        default=None,
        help="quantized rows: rate-aware QAT, loss per KiB of estimated coded size (the "
        "recipe's quantize rate)",
    )
    ap.add_argument(
        "--scaling",
        choices=("stats", "learned", "mse"),
        default=None,
        help="quantized rows: QAT scales (the recipe's quantize scaling)",
    )
    ap.add_argument(
        "--qat-lr", type=float, default=None, help="quantized rows: QAT Adam rate (the recipe's)"
    )
    ap.add_argument(
        "--qat-alpha",
        type=float,
        default=None,
        help="quantized rows: weight of QAT's distillation term at train.distill's temperature "
        "(the recipe's: train.distill)",
    )
    ap.add_argument(
        "--qat-teacher",
        choices=("baseline", "input"),
        default=None,
        help="quantized rows: QAT distils from the dense baseline (the recipe's) or from the "
        "float T-Basis network it quantizes (distill.teacher: input)",
    )
    ap.add_argument(
        "--fold-epochs",
        type=int,
        default=None,
        help="quantized rows: epochs trained after the fold (the recipe's fold_epochs)",
    )
    ap.add_argument(
        "--fold-lr",
        type=float,
        default=None,
        help="quantized rows: learning rate of the epochs after the fold (the recipe's fold_lr)",
    )
    ap.add_argument(
        "--fold-bits",
        type=int,
        default=None,
        help="quantized rows: bits of the folded output scales and of the biases (the "
        "recipe's *.out_scale layer override and bits.biases)",
    )
    ap.add_argument(
        "--scale-bits",
        type=int,
        default=None,
        help="quantized rows: bits of the T-Basis rank scalings (a '*.rank_scale' layer "
        "override; default: the factors' bits)",
    )
    ap.add_argument(
        "--coef-bits",
        type=int,
        default=None,
        help="quantized rows: bits of the T-Basis coefficient table (a '*.coef' layer "
        "override; default: the factors' bits)",
    )
    ap.add_argument(
        "--codebooks",
        default="",
        help="quantized rows: T-Basis tables that get a k-means codebook of 2^bits values "
        "within QAT instead of a uniform grid, comma-separated: coef, rank_scale (a layer "
        "override's method: kmeans)",
    )
    ap.add_argument(
        "--row-scales",
        default="",
        help="quantized rows: T-Basis tables that get a scale per row (per core) instead of "
        "one per table, comma-separated: coef, rank_scale (a layer override's granularity: "
        "channel; the recipe already gives coef one)",
    )
    ap.add_argument(
        "--scale-grid",
        default="",
        help="quantized rows: TABLE=STEPS,… moves the scales of a T-Basis tensor (coef, "
        "rank_scale, basis) to a log grid of STEPS per octave, stored as integer codes (a "
        "layer override's scale_grid; STEPS 0: float scales; the recipe gives coef 64)",
    )
    ap.add_argument(
        "--bias-bits",
        type=int,
        default=None,
        help="quantized rows: bits of the biases alone (after --fold-bits; the recipe's "
        "bits.biases)",
    )
    ap.add_argument(
        "--fold-offset",
        action="store_true",
        help="quantized rows: the folded output scales' grid spans their own [min, max] "
        "instead of reaching 0 (the *.out_scale layer override's include_zero: false)",
    )
    ap.add_argument(
        "--bias-correction",
        action="store_true",
        help="quantized rows: move the mean-output shift of each rounded folded scale into "
        "its layer's bias before the bias is rounded (the recipe's bias_correction)",
    )
    ap.add_argument(
        "--fold-rounding",
        choices=("ptq", "qat"),
        default=None,
        help="quantized rows: round the folded scales and biases after QAT (ptq) or with "
        "QAT's quantizers (qat; the recipe's fold_rounding)",
    )
    ap.add_argument(
        "--calibration",
        choices=("absmax", "mse"),
        default=None,
        help="quantized rows: range of the biases and folded scales rounded after QAT (the "
        "recipe's quantize calibration)",
    )
    ap.add_argument(
        "--method",
        choices=("qat", "kmeans"),
        default=None,
        help="quantized rows: QAT on uniform grids (the recipe's) or k-means codebooks of "
        "2^bits entries per tensor with fine-tuned centroids (Deep Compression)",
    )
    ap.add_argument("--coupled", action="store_true", help="coupled cores within ResNet stages")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="--limit 2000 --epochs 1 --baseline-epochs 3 --settings 16/16,8/8 --fit-steps 30 "
        "--qat-epochs 1",
    )
    ap.add_argument("--out", default="runs/bench-tbasis")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--device",
        default="cpu",
        help="where rows train: cpu, cuda, cuda:N or auto (the recipe's device; the audit "
        "measures every file on the CPU either way)",
    )
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args(argv)
    if args.quick:
        args.limit, args.epochs, args.baseline_epochs = 2000, 1, 3
        args.settings, args.fit_steps, args.qat_epochs = "16/16,8/8", 30, 1
    if args.dataset == "cifar10" and not args.root:
        ap.error("--dataset cifar10 needs --root (the directory of the binary batches)")
    return args


def base_recipe(args: argparse.Namespace) -> dict[str, Any]:
    from jointcomp.recipe import load_recipe_data

    raw = load_recipe_data(RECIPE)
    raw["threads"] = args.threads
    raw["device"] = args.device
    raw["data"].update(dataset=args.dataset, root=args.root, limit=args.limit or None)
    raw["train"]["epochs"] = args.baseline_epochs
    raw["audit"] = {"latency": False, "macs": False, "html": False}
    return raw


def seed_first_stage(src: Path, dst: Path) -> bool:
    """Start run ``dst`` from the finished first stage of run ``src`` (its state entry and
    checkpoint), so a quantized row does not repeat the share + fine-tuning of its float row.
    The pipeline's --resume then checks that the recipe and that stage are the same."""
    state_path = src / "state.json"
    if not state_path.is_file():
        return False
    state = json.loads(state_path.read_text())
    if not state.get("stages"):
        return False
    first = state["stages"][0]
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "checkpoints").mkdir(parents=True)
    shutil.copy2(src / first["checkpoint"], dst / first["checkpoint"])
    state["stages"] = [first]
    (dst / "state.json").write_text(json.dumps(state, indent=1))
    return True


def drop_encode_stage(out: Path) -> bool:
    """Forget run ``out``'s finished encode stage (the one that wrote model.jcz), so --resume
    writes the file again from the last checkpoint, in the current format."""
    state_path = out / "state.json"
    if not state_path.is_file():
        return False
    state = json.loads(state_path.read_text())
    stages = state.get("stages") or []
    if not stages or stages[-1].get("name") != "encode" or len(stages) < 2:
        return False
    state["stages"] = stages[:-1]
    state_path.write_text(json.dumps(state, indent=1))
    return True


def run_stages(
    args, name: str, stages: list[dict[str, Any]], seed_from: str | None = None
) -> dict[str, Any]:
    """One pipeline run; returns its report (re-used when the run already finished).
    ``seed_from``: a run whose first stage equals this one's, to continue from."""
    from jointcomp.container.framing import FORMAT_MAJOR, FORMAT_MINOR
    from jointcomp.errors import RecipeError
    from jointcomp.pipeline import run
    from jointcomp.recipe import validate_recipe

    file_format = f"{FORMAT_MAJOR}.{FORMAT_MINOR}"  # a cached row of an older format is re-encoded

    raw = copy.deepcopy(base_recipe(args))
    raw["name"] = name
    raw["stages"] = stages
    raw["output"] = str(Path(args.out) / name)
    report_path = Path(raw["output"]) / "report.json"
    rewrite = False
    if report_path.is_file():
        saved = json.loads(report_path.read_text())
        if saved.get("bench_stages") == stages:
            if saved.get("bench_format") == file_format:
                return saved
            rewrite = True  # same run, older file format: resume, so only the file is rewritten
    start = time.perf_counter()
    recipe = validate_recipe(raw, name)
    result = None
    if rewrite and drop_encode_stage(Path(raw["output"])):
        try:
            result = run(recipe, resume=True, show_progress=False)
        except RecipeError:
            result = None
    elif seed_from and seed_first_stage(Path(args.out) / seed_from, Path(raw["output"])):
        try:
            result = run(recipe, resume=True, show_progress=False)
        except RecipeError:  # the first stages differ after all: run from the start
            result = None
    if result is None:
        result = run(recipe, force=True, show_progress=False)
    report = dict(result.report)
    seconds = round(time.perf_counter() - start, 1)
    report["bench_seconds"] = saved.get("bench_seconds", seconds) if rewrite else seconds
    report["bench_stages"] = stages
    report["bench_format"] = file_format
    report_path.write_text(json.dumps(report, indent=1, default=str))
    return report


def finetune(args) -> dict[str, Any]:
    return {"epochs": args.epochs, "optimizer": "adam", "lr": args.lr, "weight_decay": 0.0}


def share_stage(args, b: int, r: int) -> dict[str, Any]:
    return {
        "share": {
            "basis": b,
            "rank": r,
            "mode": args.mode,
            "skip": ["conv1"],
            "coupled": args.coupled,
            "init": args.init,
            "fit_steps": args.fit_steps,
            "fit_batches": args.fit_batches,
            "finetune": finetune(args),
        }
    }


def tt_rank_for(args, target_params: int) -> tuple[int, int]:
    """The uniform TT rank cap whose model (stem dense, as for T-Basis) is closest to
    ``target_params``; returns (rank, params)."""
    from torch import nn

    from jointcomp.models import build_model
    from jointcomp.nn.formats import make_format

    in_ch = 3 if args.dataset == "cifar10" else 1
    model = build_model("zoo:resnet32", {"in_channels": in_ch, "num_classes": 10})
    layers = [
        m for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear) and n != "conv1"
    ]
    dense = sum(m.weight.numel() for m in layers)
    rest = sum(p.numel() for p in model.parameters()) - dense
    best = None
    for rank in range(1, 65):
        total = rest
        for m in layers:
            fmt = make_format(m, "tt", {"tt_cores": args.tt_cores})
            ranks = fmt.feasible([rank] * len(fmt.full()))
            total += min(fmt.factor_params(ranks), m.weight.numel())
        if best is None or abs(total - target_params) < abs(best[1] - target_params):
            best = (rank, total)
    assert best is not None
    return best


def tt_stage(args, rank: int) -> dict[str, Any]:
    return {
        "decompose": {
            "layers": {"*": {"format": "tt", "rank": rank, "tt_cores": args.tt_cores}},
            "skip": ["conv1"],
            "execution": "dense",
            "min_saving": 0.0,
            "finetune": finetune(args),
        }
    }


def quant_stages(args, b: int, r: int) -> list[dict[str, Any]]:
    """The recipe's own share → quantize → encode, at B/R, with the bench's epochs."""
    from jointcomp.recipe import load_recipe_data

    recipe = load_recipe_data(RECIPE)
    stages = copy.deepcopy(recipe["stages"])
    share = stages[0]["share"]
    share.update(share_stage(args, b, r)["share"])
    quantize = stages[1]["quantize"]
    quantize["fold_bn"] = False if args.keep_bn else "after"
    quantize["bits"]["factors"] = args.bits
    quantize["finetune"]["epochs"] = args.qat_epochs
    if args.method is not None:
        quantize["method"] = args.method
    if args.rate is not None:
        quantize["rate"] = args.rate
    if args.scaling is not None:
        quantize["scaling"] = args.scaling
    if args.qat_lr is not None:
        quantize["finetune"]["lr"] = args.qat_lr
    if args.qat_alpha is not None or args.qat_teacher == "input":
        distill = dict(quantize["finetune"].get("distill") or recipe["train"]["distill"])
        if args.qat_alpha is not None:
            distill["alpha"] = args.qat_alpha
        if args.qat_teacher == "input":  # "baseline" is the recipe's: same stage, same run
            distill["teacher"] = "input"
        quantize["finetune"]["distill"] = distill
    if args.fold_epochs is not None:
        quantize["fold_epochs"] = args.fold_epochs
    if args.fold_lr is not None:
        quantize["fold_lr"] = args.fold_lr
    if args.fold_bits is not None:
        quantize["bits"]["biases"] = args.fold_bits
        quantize["layers"]["*.out_scale"]["bits"] = args.fold_bits
    if args.scale_bits is not None:
        quantize.setdefault("layers", {})["*.rank_scale"] = {"bits": args.scale_bits}
    if args.coef_bits is not None:
        quantize.setdefault("layers", {})["*.coef"] = {"bits": args.coef_bits}
    for table in filter(None, args.codebooks.split(",")):
        if table not in ("coef", "rank_scale"):
            raise SystemExit(f"--codebooks: {table!r} is not a T-Basis table (coef, rank_scale)")
        quantize.setdefault("layers", {}).setdefault(f"*.{table}", {})["method"] = "kmeans"
    for table in filter(None, args.row_scales.split(",")):
        if table not in ("coef", "rank_scale"):
            raise SystemExit(f"--row-scales: {table!r} is not a T-Basis table (coef, rank_scale)")
        quantize.setdefault("layers", {}).setdefault(f"*.{table}", {})["granularity"] = "channel"
    for item in filter(None, args.scale_grid.split(",")):
        table, _, steps = item.partition("=")
        if table not in ("coef", "rank_scale", "basis") or not steps.isdigit():
            raise SystemExit(f"--scale-grid: {item!r} is not TABLE=STEPS (coef, rank_scale, basis)")
        override = quantize.setdefault("layers", {}).setdefault(f"*.{table}", {})
        override["scale_grid"] = int(steps) or None
    if args.fold_rounding is not None:
        quantize["fold_rounding"] = args.fold_rounding
    if args.bias_correction:
        quantize["bias_correction"] = True
    if args.bias_bits is not None:
        quantize["bits"]["biases"] = args.bias_bits
    if args.fold_offset:
        quantize["layers"]["*.out_scale"]["include_zero"] = False
    if args.calibration is not None:
        quantize["calibration"] = args.calibration
    return stages


def quant_run_name(args, b: int, r: int) -> str:
    """The quantized row's run directory: every flag that changed the stage is in the name."""
    parts = [f"tbasis-b{b}-r{r}-q{args.bits}"]
    if args.qat_epochs != QAT_EPOCHS:  # a shorter run must not overwrite the cached row
        parts.append(f"e{args.qat_epochs}")
    if args.method == "kmeans":
        parts.append("kmeans")
    if args.rate:
        parts.append(f"rate{args.rate:g}")
    if args.scaling:
        parts.append(args.scaling)
    if args.qat_lr is not None:
        parts.append(f"lr{args.qat_lr:g}")
    if args.qat_alpha is not None:
        parts.append(f"kd{args.qat_alpha:g}")
    if args.qat_teacher == "input":
        parts.append("kd-input")
    if args.fold_epochs is not None:
        parts.append(f"fold{args.fold_epochs}")
    if args.fold_lr is not None:
        parts.append(f"foldlr{args.fold_lr:g}")
    if args.fold_bits is not None:
        parts.append(f"fbits{args.fold_bits}")
    if args.scale_bits is not None:
        parts.append(f"sbits{args.scale_bits}")
    if args.coef_bits is not None:
        parts.append(f"cbits{args.coef_bits}")
    if args.codebooks:
        parts.append("km-" + args.codebooks.replace(",", "-").replace("_", ""))
    if args.row_scales:
        parts.append("rows-" + args.row_scales.replace(",", "-").replace("_", ""))
    if args.scale_grid:
        parts.append("grid-" + args.scale_grid.replace(",", "-").replace("_", "").replace("=", ""))
    if args.fold_rounding:
        parts.append(f"fround-{args.fold_rounding}")
    if args.bias_correction:
        parts.append("bcorr")
    if args.bias_bits is not None:
        parts.append(f"bbits{args.bias_bits}")
    if args.fold_offset:
        parts.append("foffset")
    if args.calibration:
        parts.append(args.calibration)
    return "-".join(parts)


def row_of(report: dict[str, Any], method: str, setting: str) -> dict[str, Any]:
    base = report["baseline"]
    stage0 = report["stages"][0]
    rec = stage0.get("record", {})
    params = stage0["params"]
    row = {
        "method": method,
        "setting": setting,
        "params": params,
        "pct_params": 100 * params / base["params"],
        "acc_fit": rec.get("accuracy_fit"),
        "acc": report["final"]["accuracy"],
        "baseline_acc": base["accuracy"],
        "file_bytes": report["final"]["bytes"],
        "x_vs_fp32": report["final"]["compression_ratio"],
        "seconds": report.get("bench_seconds"),
    }
    summary = rec.get("summary")
    if summary:
        row["pct_without_basis"] = 100 * (params - summary["basis_params"]) / base["params"]
        row["basis_params"] = summary["basis_params"]
        row["coefficient_params"] = summary["coefficient_params"]
        row["fit_rel_error"] = rec["fit"]["mean_rel_error"]
    if method == "tbasis+q":
        q = report["stages"][1]["record"]["summary"]
        row["acc_before_qat"] = q["accuracy_before"]
        row.update(file_breakdown(report))
    return row


def file_breakdown(report: dict[str, Any]) -> dict[str, int]:
    """Bytes of the written file by part: basis, coefficient table, header, everything else
    (from the per-layer table of the audit)."""
    layers = report.get("layers", [])
    basis = sum(
        r["bytes"] for r in layers if r["type"].startswith("TBasis+") or r["type"] == "TBasis"
    )
    table = sum(r["bytes"] for r in layers if r["type"].startswith("TBasisCoefficients"))
    header = report["final"]["header_bytes"]
    return {
        "basis_bytes": basis,
        "coefficient_bytes": table,
        "header_bytes": header,
        "rest_bytes": report["final"]["bytes"] - basis - table - header,
    }


def fmt_table(rows: list[dict[str, Any]]) -> str:
    head = [
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
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        paper = PAPER.get(r["setting"]) if r["method"] == "tbasis" else None
        cells = [
            r["method"],
            r["setting"],
            f"{r['params']:,}",
            f"{r['pct_params']:.2f}",
            f"{r['pct_without_basis']:.2f}" if "pct_without_basis" in r else "",
            f"{100 * r['acc_fit']:.2f}" if r.get("acc_fit") is not None else "",
            f"{100 * r['acc']:.2f}",
            f"{r['file_bytes']:,}",
            f"{r['x_vs_fp32']:.1f}",
            f"{paper[0]}% at {paper[1]}%" if paper else "",
        ]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = [tuple(int(v) for v in s.split("/")) for s in args.settings.split(",") if s]
    quantized = [tuple(int(v) for v in s.split("/")) for s in args.quantize.split(",") if s]
    rows: list[dict[str, Any]] = []
    print(
        f"# ResNet-32 on {args.dataset}: {args.limit or 'all'} training samples, baseline "
        f"{args.baseline_epochs} epochs, fine-tuning {args.epochs} epochs, mode {args.mode}, "
        f"fit {args.fit_steps} L-BFGS steps",
        flush=True,
    )
    for b, r in settings:
        tag = f"{b}/{r}"
        report = run_stages(args, f"tbasis-b{b}-r{r}", [share_stage(args, b, r)])
        rows.append(row_of(report, "tbasis", tag))
        print(fmt_table(rows[-1:]).splitlines()[-1], flush=True)
        if not args.no_tt and (args.tt_for == "all" or tag in args.tt_for.split(",")):
            rank, _ = tt_rank_for(args, rows[-1]["params"])
            report = run_stages(args, f"tt-r{rank}-d{args.tt_cores}", [tt_stage(args, rank)])
            rows.append(row_of(report, "tt", f"r{rank}"))
            print(fmt_table(rows[-1:]).splitlines()[-1], flush=True)
    for b, r in quantized:
        report = run_stages(
            args,
            quant_run_name(args, b, r),
            quant_stages(args, b, r),
            seed_from=f"tbasis-b{b}-r{r}",
        )
        rows.append(row_of(report, "tbasis+q", f"{b}/{r}"))
        print(fmt_table(rows[-1:]).splitlines()[-1], flush=True)
    base = rows[0] if rows else None
    print()
    if base:
        print(
            f"baseline: top-1 {100 * base['baseline_acc']:.2f}%, "
            f"{round(base['params'] / base['pct_params'] * 100):,} params"
        )
    print(fmt_table(rows))
    for r in rows:
        if "basis_bytes" in r:
            print(
                f"{r['method']} {r['setting']}: {r['file_bytes']:,} B = basis {r['basis_bytes']:,}"
                f" + coefficients {r['coefficient_bytes']:,} + header {r['header_bytes']:,} + "
                f"rest {r['rest_bytes']:,} (top-1 before QAT {100 * r['acc_before_qat']:.2f}%)"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
