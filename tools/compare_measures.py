"""Accuracy against compression ratio for the four low-rank regularizers (effective rank,
nuclear norm, Hoyer, Gini; Ou et al. 2023 §II-C) and none, on LeNet-5 / Fashion-MNIST.

Each measure: ``regularize`` (normalized penalty, same weight and epochs for all), then for each
spectral-norm indicator threshold ``decompose`` every layer with channel SVD at
``rank: indicator:T`` and one short fine-tune; compression ratio = baseline params / nonzero
params after.

    python tools/compare_measures.py           # full data
    python tools/compare_measures.py --quick   # 5,000 training images, short training
"""

from __future__ import annotations

import argparse
import time

from compare_lrs import RECIPE
from harness import nonzero_params, setup
from readme_tables import md_table

MEASURES = ["none", "effective_rank", "nuclear", "hoyer", "gini"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--weight", type=float, default=1.0, help="regularizer weight")
    parser.add_argument("--epochs", type=int, default=2, help="regularized training epochs")
    parser.add_argument(
        "--max-batches",
        type=int,
        default=150,
        help="batches per training epoch (0: the whole training set)",
    )
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5, 0.6])
    args = parser.parse_args()
    raw = {
        **RECIPE,
        "name": "compare-measures",
        "data": dict(RECIPE["data"]),
        "train": dict(RECIPE["train"]),
    }
    reg_ft: dict = {"epochs": args.epochs}
    dec_ft: dict = {"epochs": 1}
    if args.max_batches:
        reg_ft["max_batches"] = dec_ft["max_batches"] = args.max_batches
    if args.quick:
        raw["data"]["limit"] = 5000
        raw["train"]["epochs"] = 3
        reg_ft["max_batches"] = dec_ft["max_batches"] = 20
    start = time.perf_counter()
    bench = setup(raw)
    total = sum(p.numel() for p in bench.baseline.parameters())
    base_acc = bench.accuracy(bench.baseline)
    rows = [["baseline", "—", "—", "1.00×", f"{base_acc:.2%}"]]
    for measure in MEASURES:
        if measure == "none":
            model = bench.baseline
        else:
            model = bench.run(
                bench.baseline,
                "regularize",
                {"measure": measure, "weight": args.weight, "finetune": reg_ft},
            ).model
        reg_acc = bench.accuracy(model)
        for t in args.thresholds:
            spec = {"format": "svd", "rank": f"indicator:{t}", "execution": "factorized"}
            out = bench.run(model, "decompose", {**spec, "finetune": dec_ft}).model
            n = nonzero_params(out)
            rows.append(
                [measure, f"{reg_acc:.2%}", t, f"{total / n:.2f}×", f"{bench.accuracy(out):.2%}"]
            )
            print(rows[-1], flush=True)
    print()
    per = f" × {reg_ft['max_batches']} batches" if "max_batches" in reg_ft else ""
    print(
        f"LeNet-5 / Fashion-MNIST (test split); regularize {args.epochs} epoch(s){per} at "
        f"weight {args.weight}, then decompose (channel SVD) + 1 epoch{per}"
        f"{' (quick)' if args.quick else ''}; {time.perf_counter() - start:.0f} s"
    )
    print(
        md_table(
            [
                "measure",
                "top-1 after regularize",
                "indicator",
                "compression",
                "top-1 after decompose",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
