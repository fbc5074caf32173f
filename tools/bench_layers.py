"""Latency of every factorized layer against its dense layer at typical shapes.

For each shape and format the rank is the largest that keeps at most ``--keep`` of the dense
parameters; times are medians from torch.utils.benchmark with one thread, batch 1 and 32, in
the layer's factorized execution (the dense column is the original nn.Linear / nn.Conv2d).

    python tools/bench_layers.py            # full table
    python tools/bench_layers.py --quick    # shorter timings, fewer shapes
"""

from __future__ import annotations

import argparse
import logging

import torch
from torch import nn

import jointcomp.nn as jn
from jointcomp.nn.formats import make_format

SHAPES = [
    ("linear 800→500 (LeNet-5 fc1)", lambda: nn.Linear(800, 500), (800,)),
    ("linear 768→3072 (BERT FFN)", lambda: nn.Linear(768, 3072), (768,)),
    ("conv 16→16 3×3 @32² (ResNet-20 s1)", lambda: nn.Conv2d(16, 16, 3, padding=1), (16, 32, 32)),
    ("conv 64→64 3×3 @8² (ResNet-20 s3)", lambda: nn.Conv2d(64, 64, 3, padding=1), (64, 8, 8)),
    ("conv 128→128 3×3 @16² (ResNet-18)", lambda: nn.Conv2d(128, 128, 3, padding=1), (128, 16, 16)),
    ("conv 256→256 3×3 @14²", lambda: nn.Conv2d(256, 256, 3, padding=1), (256, 14, 14)),
]
QUICK = {0, 3, 4}
LINEAR_FORMATS = [("svd", 0.0), ("tt", 0.0), ("svd", 0.02)]
CONV_FORMATS = [
    ("svd", 0.0),
    ("svd_spatial", 0.0),
    ("tucker2", 0.0),
    ("cp", 0.0),
    ("tt", 0.0),
    ("tucker2", 0.02),
]


def timed(module: nn.Module, x: torch.Tensor, seconds: float) -> float:
    """Median µs of module(x), one thread, inference mode."""
    from torch.utils import benchmark

    with torch.inference_mode():
        module(x)
        timer = benchmark.Timer("m(x)", globals={"m": module, "x": x}, num_threads=1)
        return timer.blocked_autorange(min_run_time=seconds).median * 1e6


def ranks_for(module: nn.Module, fmt_name: str, keep: float, sparse: float) -> list[int] | None:
    """The largest ladder setting whose params (sparse nonzeros included) are ≤ keep·dense."""
    fmt = make_format(module, fmt_name, {"tt_cores": 3, "cp_iters": 30})
    nnz = round(sparse * module.weight.numel())
    fits = [r for r in fmt.ladder() if fmt.params(r) + nnz <= keep * fmt.dense_params()]
    return fits[-1] if fits else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=float, default=0.25, help="kept fraction of params")
    parser.add_argument("--quick", action="store_true", help="fewer shapes, short timings")
    args = parser.parse_args()
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    seconds = 0.05 if args.quick else 0.3
    header = (
        "| layer | format | ranks | params kept | b1 dense µs | b1 fact. µs | b1 × "
        "| b32 dense µs | b32 fact. µs | b32 × | picked b1 |"
    )
    print(header)
    print("|---" * 11 + "|")
    for i, (label, make, shape) in enumerate(SHAPES):
        if args.quick and i not in QUICK:
            continue
        dense = make().eval()
        x1, x32 = torch.randn(1, *shape), torch.randn(32, *shape)
        d1, d32 = timed(dense, x1, seconds), timed(dense, x32, seconds)
        formats = LINEAR_FORMATS if isinstance(dense, nn.Linear) else CONV_FORMATS
        for fmt_name, sparse in formats:
            ranks = ranks_for(dense, fmt_name, args.keep, sparse)
            if ranks is None:
                continue
            layer, info = jn.decompose(
                dense, fmt_name, ranks, sparse, name=label, options={"cp_iters": 30}
            )
            layer.eval()
            f1, f32 = timed(layer, x1, seconds), timed(layer, x32, seconds)
            layer.choose_execution(x1, min_run_time=seconds / 2)
            kept = info["params_after"] / info["params_before"]
            print(
                f"| {label} | {info['format']} | {ranks} | {kept:.1%} | {d1:.0f} | {f1:.0f} | "
                f"{d1 / f1:.2f} | {d32:.0f} | {f32:.0f} | {d32 / f32:.2f} | {layer.execution} |"
            )


if __name__ == "__main__":
    main()
