"""LR+S against pure low rank, pure unstructured pruning, and filter pruning + Tucker-2 on
LeNet-5 / Fashion-MNIST at equal parameter counts (stored numbers: nonzeros) and equal
fine-tuning (epochs, distillation from the baseline).

    python tools/compare_lrs.py           # 10%, 5%, 2% of the baseline's parameters
    python tools/compare_lrs.py --quick   # 5,000 training images, short training

Low-rank methods get their ranks from the decompose stage's global params budget (greedy by
measured loss increase per parameter saved); LR+S spends a quarter of each target on the
sparse residual (density = target / 4 in every layer).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from harness import Bench, nonzero_params, setup
from readme_tables import md_table

RECIPE: dict[str, Any] = {
    "name": "compare-lrs",
    "threads": 1,
    "model": {"builder": "zoo:lenet5", "weights": "train"},
    "data": {"dataset": "fashion-mnist", "val_split": 0.1, "batch_size": 128},
    "train": {
        "epochs": 12,
        "optimizer": "adam",
        "lr": 0.001,
        "schedule": "cosine",
        "distill": {"temperature": 4.0, "alpha": 0.7},
    },
}


def overrides(sparse: float) -> dict[str, Any]:
    return {
        "conv1": {"format": "svd", "sparse": sparse},
        "conv2": {"format": "tucker2", "sparse": sparse},
        "fc*": {"format": "svd", "sparse": sparse},
    }


def decompose(bench: Bench, model, keep_total: int, sparse: float, epochs: int, extra: dict):
    """Decompose every layer of ``model`` so that it holds ≈ keep_total numbers."""
    decomposable = sum(p.numel() for p in model.parameters())
    fraction = keep_total / decomposable
    params = {
        "overrides": overrides(sparse),
        "execution": "factorized",
        "budget": {"params": fraction, "batches": 2, "batch_size": 256, "levels": 6},
        "finetune": {"epochs": epochs, **extra},
    }
    return bench.run(model, "decompose", params).model


def methods(bench: Bench, keep: float, epochs: int, extra: dict) -> dict[str, Any]:
    base = bench.baseline
    total = sum(p.numel() for p in base.parameters())
    target = keep * total
    out = {}
    out["LR+S (svd/tucker2 + sparse)"] = decompose(bench, base, target, keep / 4, epochs, extra)
    out["low rank (svd/tucker2)"] = decompose(bench, base, target, 0.0, epochs, extra)
    weights = sum(m.weight.numel() for m in base.modules() if hasattr(m, "weight"))
    ratio = 1 - (target - (total - weights)) / weights  # biases stay: prune the rest to target
    unstructured = {"structured": False, "ratio": ratio, "global_ranking": True}
    out["unstructured pruning"] = bench.run(
        base, "prune", {**unstructured, "finetune": {"epochs": epochs, **extra}}
    ).model
    half = max(1, epochs // 2)
    pruned = bench.run(
        base, "prune", {"ratio": 0.5, "target": "params", "finetune": {"epochs": half, **extra}}
    ).model
    out["filter pruning + tucker2"] = decompose(bench, pruned, target, 0.0, epochs - half, extra)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 images, 3+1 epochs")
    parser.add_argument("--keep", type=float, nargs="+", default=[0.10, 0.05, 0.02])
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs per method")
    parser.add_argument(
        "--max-batches",
        type=int,
        default=150,
        help="batches per fine-tuning epoch (0: the whole training set)",
    )
    args = parser.parse_args()
    raw = {**RECIPE, "data": dict(RECIPE["data"]), "train": dict(RECIPE["train"])}
    epochs = args.epochs
    extra = {"max_batches": args.max_batches} if args.max_batches else {}
    if args.quick:
        raw["data"]["limit"] = 5000
        raw["train"]["epochs"] = 3
        epochs, extra = 2, {"max_batches": 20}
    start = time.perf_counter()
    bench = setup(raw)
    base_acc = bench.accuracy(bench.baseline)
    total = sum(p.numel() for p in bench.baseline.parameters())
    rows = [["baseline", "100%", f"{total:,}", "100.0%", f"{base_acc:.2%}", "—"]]
    for keep in args.keep:
        for name, model in methods(bench, keep, epochs, extra).items():
            n = nonzero_params(model)
            acc = bench.accuracy(model)
            rows.append(
                [
                    name,
                    f"{keep:.0%}",
                    f"{n:,}",
                    f"{n / total:.2%}",
                    f"{acc:.2%}",
                    f"{(base_acc - acc) * 100:+.2f}",
                ]
            )
            print(rows[-1], flush=True)
    print()
    per = f" × {extra['max_batches']} batches" if extra else ""
    print(
        f"LeNet-5 / Fashion-MNIST (test split), fine-tuning {epochs} epoch(s){per} per method"
        f"{' (quick)' if args.quick else ''}; {time.perf_counter() - start:.0f} s"
    )
    print(
        md_table(
            ["method", "target", "params (nonzero)", "of baseline", "top-1", "drop (pts)"], rows
        )
    )


if __name__ == "__main__":
    main()
