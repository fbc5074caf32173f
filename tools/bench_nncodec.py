"""NNCodec beside jointcomp on the same trained baselines (NNCodec is optional: see nncodec_api).

    python tools/bench_nncodec.py --model lenet5              # LeNet-5 / Fashion-MNIST
    python tools/bench_nncodec.py --model lenet300 --json     # results as JSON on stdout
    python tools/bench_nncodec.py --model lenet5 --quick      # five qp values

(a) Model: NNCodec's uniform quantization (dependent quantization on, its default) + DeepCABAC
    on the baseline's float32 tensors at several qp values; accuracy of the decoded weights
    loaded into the model (no fine-tuning: NNCodec is post-training), bytes of the bitstream.
(b) Coder: NNCodec's entropy coder against jointcomp's on the very same integer tensors: the
    integers inside jointcomp's own files (<model>-fashion-joint and deep-compression-<model>
    beside OUT, when present) and the baseline's weights rounded per tensor to 4 and 8 bits.
    DeepCABAC's raw stream (no headers) is compared with H0 (the first-order entropy), with
    jointcomp's best coder ("auto") and with the bytes the file really spent.

Writes OUT/results.json (everything) and OUT/anchor.json ([[bytes, accuracy], ...], for
``jointcomp sweep --anchor NNCodec=OUT/anchor.json``). The baseline is the joint recipe's (its
cache key: model, data and train settings), trained first if it is not cached.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nncodec_api as nncodec
from harness import setup
from readme_tables import md_table

from jointcomp.codec import encode, entropy_bits
from jointcomp.container.artifact import read_header
from jointcomp.recipe import load_recipe_data
from jointcomp.training import evaluate

ROOT = Path(__file__).resolve().parents[1]
# coarse where accuracy is flat, every qp (a quarter octave of step size) around the knee
QPS = (-38, -34, -30, -27, *range(-24, -7))
QUICK_QPS = (-30, -22, -18, -15, -12)
MIN_ELEMENTS = 64  # tensors below this are listed only in the totals


def model_points(
    model: torch.nn.Module, data: Any, qps: tuple[int, ...], batch: int
) -> list[dict[str, Any]]:
    """(a): one point per qp: NNCodec's bytes and the decoded model's top-1."""
    state = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    points = []
    for qp in qps:
        start = time.perf_counter()
        stream, decoded = nncodec.compress(state, qp=qp, verbose=False)
        trial = copy.deepcopy(model)
        trial.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in decoded.items()})
        acc = evaluate(trial, data.val, batch_size=batch)
        points.append(
            {
                "qp": qp,
                "bytes": len(stream),
                "accuracy": round(acc, 4),
                "seconds": round(time.perf_counter() - start, 2),
            }
        )
        print(f"  qp {qp:4d}: {len(stream):9,} B  top-1 {100 * acc:.2f}%", file=sys.stderr)
    return points


def integer_sources(model: torch.nn.Module, files: list[Path]) -> dict[str, dict[str, Any]]:
    """(b)'s inputs: name → {tensor: (ints, bytes the file spent or None)}."""
    import jointcomp

    sources: dict[str, dict[str, Any]] = {}
    for path in files:
        _, _, entries, _ = read_header(path.read_bytes())
        spent = {e["n"]: e["b"] for e in entries}
        state = jointcomp.load(path).state_dict()
        sources[f"{path.parent.name} (file)"] = {
            k: (v.numpy(), spent.get(k))
            for k, v in state.items()
            if not v.is_floating_point() and v.numel() > 1
        }
    for bits in (4, 8):
        top = 2 ** (bits - 1) - 1
        tensors = {}
        for k, v in model.state_dict().items():
            if v.ndim >= 2:
                w = v.detach().cpu().numpy()
                scale = float(np.abs(w).max()) or 1.0
                tensors[k] = (np.round(w / scale * top).astype(np.int8), None)
        sources[f"baseline weights, {bits}-bit"] = tensors
    return sources


def zero_context_bytes(q: np.ndarray) -> float:
    """Entropy in bytes when each symbol is coded knowing whether the one before it (C order)
    was zero: the simplest context a context-adaptive coder such as DeepCABAC can exploit."""
    flat = q.reshape(-1).astype(np.int64)
    ctx = np.concatenate([[0], flat[:-1] != 0])
    bits = 0.0
    for c in (0, 1):
        part = flat[ctx == c]
        bits += entropy_bits(part) * part.size if part.size else 0.0
    return bits / 8


def coder_rows(sources: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """(b): per tensor and per source total: H0, jointcomp's coders, DeepCABAC, NNR stream."""
    rows = []
    for source, tensors in sources.items():
        total: dict[str, Any] = {
            "source": source,
            "tensor": "total",
            "n": 0,
            "h0_bytes": 0.0,
            "h_zero_context_bytes": 0.0,
            "auto_bytes": 0,
            "file_bytes": 0,
            "deepcabac_bytes": 0,
        }
        for name, (q, spent) in tensors.items():
            flat = q.reshape(-1)
            enc = encode(flat, "auto")
            row = {
                "source": source,
                "tensor": name,
                "n": int(flat.size),
                "zeros": round(float(np.mean(flat == 0)), 4),
                "h0_bytes": round(entropy_bits(flat) * flat.size / 8, 1),
                "h_zero_context_bytes": round(zero_context_bytes(flat), 1),
                "auto_bytes": len(enc.data),
                "auto_codec": enc.codec,
                "file_bytes": spent,
                "deepcabac_bytes": nncodec.deepcabac_bytes(q),
            }
            for key in ("n", "h0_bytes", "h_zero_context_bytes", "auto_bytes", "deepcabac_bytes"):
                total[key] += row[key]
            total["file_bytes"] = None if spent is None else total["file_bytes"] + spent
            if flat.size >= MIN_ELEMENTS:
                rows.append(row)
        ints = {k: np.ascontiguousarray(q, dtype=np.int32) for k, (q, _) in tensors.items()}
        total["nnr_bytes"] = len(nncodec.compress(ints, verbose=False)[0])
        total["h0_bytes"] = round(total["h0_bytes"], 1)
        total["h_zero_context_bytes"] = round(total["h_zero_context_bytes"], 1)
        rows.append(total)
    return rows


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.3f}" if a and b else "–"


def print_tables(result: dict[str, Any]) -> None:
    print(
        f"{result['model']}: baseline top-1 {100 * result['baseline_accuracy']:.2f}%, "
        f"fp32 {result['fp32_bytes']:,} B, NNCodec {result['nncodec_version']}\n"
    )
    rows = [
        [
            p["qp"],
            f"{p['bytes']:,}",
            f"{result['fp32_bytes'] / p['bytes']:.1f}×",
            f"{100 * p['accuracy']:.2f}%",
        ]
        for p in result["points"]
    ]
    print("(a) NNCodec (uniform quantization + DeepCABAC), decoded weights, no fine-tuning\n")
    print(md_table(["qp", "bytes", "× vs fp32", "top-1"], rows))
    print(
        "\n(b) the same integers through each coder (bytes; DeepCABAC: raw stream, "
        "NNR: NNCodec's whole bitstream with headers)\n"
    )
    out = []
    for r in result["coders"]:
        out.append(
            [
                r["source"],
                r["tensor"],
                f"{r['n']:,}",
                f"{r['h0_bytes']:,.0f}",
                f"{r['h_zero_context_bytes']:,.0f}",
                f"{r['auto_bytes']:,}" + (f" ({r['auto_codec']})" if "auto_codec" in r else ""),
                "–" if r["file_bytes"] is None else f"{r['file_bytes']:,}",
                f"{r['deepcabac_bytes']:,}",
                _ratio(r["deepcabac_bytes"], r["h0_bytes"]),
                _ratio(r["deepcabac_bytes"], r["auto_bytes"]),
                f"{r['nnr_bytes']:,}" if "nnr_bytes" in r else "",
            ]
        )
    print(
        md_table(
            [
                "source",
                "tensor",
                "n",
                "H0",
                "H(·|prev=0?)",
                "jointcomp auto",
                "in file",
                "DeepCABAC",
                "DeepCABAC ÷ H0",
                "DeepCABAC ÷ auto",
                "NNR stream",
            ],
            out,
        )
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", choices=("lenet5", "lenet300"), default="lenet5")
    ap.add_argument("--recipe", help="recipe whose baseline is used (default: the joint one)")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe override, e.g. train.max_batches=20",
    )
    ap.add_argument("--qp", type=int, nargs="+", help=f"qp values (default {QPS})")
    ap.add_argument(
        "--jcz",
        type=Path,
        action="append",
        help="jointcomp files whose integers (b) codes (default: the runs/ ones)",
    )
    ap.add_argument("--out", type=Path, help="output folder (default runs/nncodec-MODEL)")
    ap.add_argument("--quick", action="store_true", help=f"qp {QUICK_QPS} only")
    ap.add_argument("--json", action="store_true", help="print results.json to stdout")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    recipe = Path(args.recipe or ROOT / "recipes" / f"{args.model}-fashion-joint.yaml")
    out = args.out or ROOT / "runs" / f"nncodec-{args.model}"
    raw = load_recipe_data(recipe, args.overrides)
    raw.pop("stages", None)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the tables / JSON
            bench = setup(raw)
        qps = tuple(args.qp or (QUICK_QPS if args.quick else QPS))
        batch = bench.recipe.data.eval_batch_size
        print(f"{args.model}: NNCodec at qp {list(qps)}", file=sys.stderr)
        points = model_points(bench.baseline, bench.data, qps, batch)
        files = (
            args.jcz
            if args.jcz is not None
            else [
                p
                for p in (
                    out.parent / f"{args.model}-fashion-joint" / "model.jcz",
                    out.parent / f"deep-compression-{args.model}" / "model.jcz",
                )
                if p.is_file()
            ]
        )
        coders = coder_rows(integer_sources(bench.baseline, files))
    except nncodec.NNCodecError as exc:
        print(f"bench_nncodec: {exc}", file=sys.stderr)
        return 2
    fp32 = sum(t.numel() * 4 for t in bench.baseline.state_dict().values())
    result = {
        "model": args.model,
        "recipe": str(recipe),
        "overrides": args.overrides,
        "nncodec_version": nncodec.version(),
        "baseline_accuracy": round(bench.accuracy(bench.baseline), 4),
        "fp32_bytes": fp32,
        "points": points,
        "coders": coders,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    anchor = [[p["bytes"], p["accuracy"]] for p in points]
    (out / "anchor.json").write_text(json.dumps(anchor) + "\n")
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_tables(result)
        print(f"\nwrote {out / 'results.json'} and {out / 'anchor.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
