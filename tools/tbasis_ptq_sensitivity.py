"""How much each T-Basis tensor group loses when rounded to a 4-bit grid, per kind of grid.

Loads a float T-Basis checkpoint (e.g. the share stage's), rounds one group at a time (basis,
coefficients, rank scales) to nearest on a grid, re-estimates the batch norms on 16 training
batches, and prints top-1 on the test split. It tells which tensors QAT must rescue and
which grid (uniform per tensor / per row / per column / asymmetric, or a k-means codebook, as
``quantize: {method: kmeans}`` makes) keeps most of the accuracy before any training:

    python tools/tbasis_ptq_sensitivity.py runs/bench-tbasis/tbasis-b16-r16/checkpoints/00-share.jcz
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable

import torch
from torch import nn

from jointcomp.container.artifact import load
from jointcomp.data import load_data
from jointcomp.quant import kmeans_codebook
from jointcomp.quant.ptq import ptq_tensor
from jointcomp.quant.spec import QuantSpec
from jointcomp.train import evaluate, first_batches, recalibrate_batchnorm

GROUPS = {
    "basis": "basis.basis",
    "coefficients": "coefficients.coef",
    "rank scales": "coefficients.rank_scale",
}


def uniform(
    t: torch.Tensor, bits: int, axis: int | None = None, symmetric: bool = True
) -> torch.Tensor:
    """Round to nearest on the grid the quantize stage's ptq method makes (mse clipping)."""
    spec = QuantSpec(bits, "channel" if axis is not None else "tensor", symmetric)
    return ptq_tensor(t, spec, axis, "mse")(t).to(t.dtype)


def codebook(t: torch.Tensor, bits: int) -> torch.Tensor:
    return kmeans_codebook(t, bits, pin_zero=False).lookup().to(t.dtype)


GRIDS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "4-bit, per tensor": lambda t: uniform(t, 4),
    "4-bit, per row": lambda t: uniform(t, 4, axis=0),
    "4-bit, per column": lambda t: uniform(t, 4, axis=1),
    "4-bit, asymmetric": lambda t: uniform(t, 4, symmetric=False),
    "4-bit k-means": lambda t: codebook(t, 4),
    "5-bit, per tensor": lambda t: uniform(t, 5),
}


def rounded_accuracy(model: nn.Module, suffix: str, grid, data, calibration) -> float:
    trial = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in trial.named_parameters():
            if name.endswith(suffix):
                p.copy_(grid(p.detach()))
    recalibrate_batchnorm(trial, calibration, "cpu")
    return evaluate(trial, data.val)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="a float T-Basis .jcz (the share stage's checkpoint)")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--root", default=None)
    ap.add_argument("--limit", type=int, default=6000, help="training images (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_data(args.dataset, args.root, val_split="test", limit=args.limit or None)
    calibration = first_batches(data.train, 256, 16)
    model = load(args.checkpoint)
    names = [n for n, _ in model.named_parameters()]
    missing = [g for g, s in GROUPS.items() if not any(n.endswith(s) for n in names)]
    if missing:
        raise SystemExit(f"{args.checkpoint}: no float T-Basis {', '.join(missing)} to round")
    print(f"float: {100 * evaluate(model, data.val):.2f}%\n")
    print("| grid | " + " | ".join(GROUPS) + " |")
    print("|---|" + "---|" * len(GROUPS))
    for label, grid in GRIDS.items():
        row = [rounded_accuracy(model, s, grid, data, calibration) for s in GROUPS.values()]
        print(f"| {label} | " + " | ".join(f"{100 * a:.2f}%" for a in row) + " |", flush=True)


if __name__ == "__main__":
    main()
