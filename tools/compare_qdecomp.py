"""Quantized decompositions vs decompose-then-round on a trained network's layers.

    python tools/compare_qdecomp.py                        # LeNet-5 / Fashion-MNIST, 2–8 bits
    python tools/compare_qdecomp.py --layer conv2:cp:8 --layer fc1:tt:12 --bits 2 3 4
    python tools/compare_qdecomp.py --max-test 2000        # faster, on part of the test set

For each layer spec NAME:FORMAT:RANK (FORMAT cp or tt) and bit width, the layer's trained weight
is decomposed two ways: float CP-ALS / TT-SVD whose factors are then rounded each on its own
max-abs grid (``round_cp_factors`` / ``round_tt_cores``), and the quantized fits that live on
the grid during the fit (``quantized_cp_als`` / error-compensated ``quantized_tt_matrix``).
Columns: relative Frobenius error of the reconstructed weight, and top-1 of the network with
only that layer's weight replaced by the reconstruction (every other layer as trained). The
baseline comes from the recipe's cache (trained on first use).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from readme_tables import md_table

from jointcomp.baseline import get_baseline, recipe_data
from jointcomp.nn import make_format
from jointcomp.recipe import load_recipe
from jointcomp.tensor import (
    cp_als,
    cp_to_full,
    qcp_to_full,
    quantized_cp_als,
    quantized_tt_matrix,
    round_cp_factors,
    round_tt_cores,
    tt_matrix,
    tt_matrix_to_full,
)
from jointcomp.tensor.qtt import dequantize_cores
from jointcomp.training import evaluate

ROOT = Path(__file__).resolve().parents[1]


def rel_error(ref: torch.Tensor, approx: torch.Tensor) -> float:
    return float((ref.double() - approx.double()).norm() / ref.double().norm())


def cp_variants(w: torch.Tensor, rank: int, bits: int, seed: int) -> dict[str, torch.Tensor]:
    """Float CP, CP then round, quantized CP-ALS: each reconstructed to w's shape."""
    lam, factors = cp_als(w, rank, seed=seed)
    rounded = qcp_to_full(*round_cp_factors(lam, factors, bits))
    quantized = qcp_to_full(*quantized_cp_als(w, rank, bits, seed=seed))
    return {"float": cp_to_full(lam, factors), "round": rounded, "quantized": quantized}


def tt_variants(
    layer: torch.nn.Module, rank: int, bits: int, cores: int
) -> dict[str, torch.Tensor]:
    """Float TT-matrix, TT then round, error-compensated quantized TT-SVD (same ranks)."""
    fmt = make_format(layer, "tt", {"tt_cores": cores})
    w = layer.weight.detach().double()
    ranks = fmt.feasible([rank] * len(fmt.cut_full))
    padded = fmt.padded_matrix(w)
    float_cores = tt_matrix(padded, fmt.out_modes, fmt.in_modes, ranks)
    r_ints, r_scales = round_tt_cores(float_cores, bits)
    q_ints, q_scales = quantized_tt_matrix(padded, fmt.out_modes, fmt.in_modes, bits, ranks=ranks)

    def crop(m: torch.Tensor) -> torch.Tensor:
        m = m.reshape(fmt.out_pad, fmt.in_pad, fmt.kh * fmt.kw)[: fmt.o, : fmt.cin]
        return m.reshape(w.shape)

    return {
        "float": crop(tt_matrix_to_full(float_cores)),
        "round": crop(tt_matrix_to_full(dequantize_cores(r_ints, r_scales, torch.float64))),
        "quantized": crop(tt_matrix_to_full(dequantize_cores(q_ints, q_scales, torch.float64))),
    }


def accuracy_with(model: torch.nn.Module, name: str, weight: torch.Tensor, data, max_test) -> float:
    trial = copy.deepcopy(model)
    with torch.no_grad():
        trial.get_submodule(name).weight.copy_(weight.to(torch.float32))
    batches = None if max_test is None else max(1, max_test // 500)
    return evaluate(trial, data.val, batch_size=500, max_batches=batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "lenet5-fashion-joint.yaml"))
    parser.add_argument(
        "--layer",
        action="append",
        default=None,
        help="NAME:FORMAT:RANK with FORMAT cp or tt (repeatable); default "
        "conv2:cp:40 and fc1:tt:64",
    )
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 5, 6, 8])
    parser.add_argument("--tt-cores", type=int, default=3)
    parser.add_argument("--max-test", type=int, default=None, help="evaluate on N test samples")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    recipe = load_recipe(args.recipe)
    data, kwargs = recipe_data(recipe)
    model, _ = get_baseline(recipe, data, kwargs, device=torch.device("cpu"), log=lambda *_: None)
    batches = None if args.max_test is None else max(1, args.max_test // 500)
    base_acc = evaluate(model, data.val, batch_size=500, max_batches=batches)
    print(f"{recipe.model.builder} on {recipe.data.dataset}: baseline top-1 {100 * base_acc:.2f}%")

    md_rows: list[list[str]] = []
    header = (
        f"{'layer':8} {'fmt':3} {'rank':>4} {'bits':>4} | {'err round':>9} "
        f"{'err qdec':>9} | {'top-1 round':>11} {'top-1 qdec':>10}"
    )
    for layer_spec in args.layer or ["conv2:cp:40", "fc1:tt:64"]:
        name, fmt, rank_text = layer_spec.split(":")
        rank = int(rank_text)
        layer = model.get_submodule(name)
        w = layer.weight.detach().double()
        print()
        float_variant = (
            cp_variants(w, rank, 8, recipe.seed)
            if fmt == "cp"
            else tt_variants(layer, rank, 8, args.tt_cores)
        )["float"]
        print(
            f"{name} {tuple(w.shape)} {fmt} rank {rank}: float decomposition error "
            f"{rel_error(w, float_variant):.4f}, top-1 "
            f"{100 * accuracy_with(model, name, float_variant, data, args.max_test):.2f}%"
        )
        print(header)
        print("-" * len(header))
        for bits in args.bits:
            variants = (
                cp_variants(w, rank, bits, recipe.seed)
                if fmt == "cp"
                else tt_variants(layer, rank, bits, args.tt_cores)
            )
            err = {k: rel_error(w, v) for k, v in variants.items()}
            acc = {
                k: accuracy_with(model, name, variants[k], data, args.max_test)
                for k in ("round", "quantized")
            }
            print(
                f"{name:8} {fmt:3} {rank:>4} {bits:>4} | {err['round']:>9.4f} "
                f"{err['quantized']:>9.4f} | {100 * acc['round']:>10.2f}% "
                f"{100 * acc['quantized']:>9.2f}%",
                flush=True,
            )
            md_rows.append(
                [
                    f"{name} ({fmt}, rank {rank})",
                    str(bits),
                    f"{err['round']:.4f}",
                    f"{err['quantized']:.4f}",
                    f"{100 * acc['round']:.2f}%",
                    f"{100 * acc['quantized']:.2f}%",
                ]
            )
    print()
    print(f"baseline top-1 {100 * base_acc:.2f}%")
    print(
        md_table(
            [
                "layer",
                "bits",
                "rel. error, round",
                "rel. error, quantized fit",
                "top-1, round",
                "top-1, quantized fit",
            ],
            md_rows,
        )
    )


if __name__ == "__main__":
    main()
