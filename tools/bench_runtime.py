"""CPU latency of a compressed file in the exact and the fast runtime against its baseline, and
how far the fast runtime's outputs stray from the exact ones.

    python tools/bench_runtime.py runs/quickstart                  # a run folder: its baseline
    python tools/bench_runtime.py model.jcz --trust --tokens 128 \\
        --baseline sentence-transformers:models/all-MiniLM-L6-v2   # a file and a builder
    python tools/bench_runtime.py model.jcz --input-shape 1,8,8 --baseline zoo:small_cnn

A run folder's baseline is the cached one its recipe trained or named, its inputs the first
samples of its test split (``--tokens N``: random token ids of length N instead, for text). A
bare file needs ``--baseline BUILDER`` for the fp32 column (left out: no baseline) and says its
inputs with ``--tokens N`` (token ids) or ``--input-shape C,H,W`` (normal noise). The fast
module is made once, timing its forms on a batch-1 input (``jointcomp.runtime.to_fast``). The
models are timed in interleaved rounds (torch.utils.benchmark, ``--threads`` threads,
inference mode), so a machine's drifting load hits all of them alike; the table gives the
best round's median (load from other processes only adds time). Deviation: fast against
exact on ``--eval-batches`` batches of 8.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn


def _vocab_size(model: nn.Module) -> int:
    for module in model.modules():
        size = getattr(getattr(module, "config", None), "vocab_size", None)
        if isinstance(size, int):
            return size
    raise SystemExit("--tokens: the model names no vocab_size in a config; give --input-shape")


def _tokens(model: nn.Module, batch: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    vocab = _vocab_size(model)
    ids = torch.randint(min(1000, vocab - 1), vocab, (batch, length), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones(batch, length, dtype=torch.long)}


def _repeat(example: Any, batch: int) -> Any:
    from jointcomp.audit.measure import _repeat as repeat

    return repeat(example, batch)


def _run_folder(path: Path, args: argparse.Namespace) -> tuple[Path, nn.Module, Any, list[Any]]:
    """(file, baseline, batch-1 example, evaluation inputs) of a run folder."""
    from jointcomp.baseline import get_baseline, recipe_data
    from jointcomp.batches import Batches, inputs_of
    from jointcomp.recipe import validate_recipe

    raw = json.loads((path / "recipe.json").read_text(encoding="utf-8"))
    recipe = validate_recipe(raw, raw.get("name"))
    data, kwargs = recipe_data(recipe)
    base, _ = get_baseline(recipe, data, kwargs, device=torch.device("cpu"), log=lambda *_: None)
    if args.baseline:
        from jointcomp.models import build_model

        base = build_model(args.baseline)
    if args.tokens:
        example = _tokens(base, 1, args.tokens, 0)
        evals = [_tokens(base, 8, args.tokens, i + 1) for i in range(args.eval_batches)]
    else:
        test = Batches(data.test)
        example = test.example()
        evals = [inputs_of(b) for b in test.calibration(args.eval_batches, 8)]
    if args.top1 is None:
        args.top1 = recipe.task.kind == "classify"
    return path / "model.jcz", base, example, evals


def _file(path: Path, args: argparse.Namespace, exact: nn.Module) -> tuple[Any, list[Any]]:
    if args.tokens:
        example = _tokens(exact, 1, args.tokens, 0)
        return example, [_tokens(exact, 8, args.tokens, i + 1) for i in range(args.eval_batches)]
    if not args.input_shape:
        raise SystemExit(f"{path}: give --tokens N or --input-shape C,H,W for a bare file")
    shape = [int(s) for s in args.input_shape.split(",")]
    g = torch.Generator().manual_seed(0)
    example = torch.randn(1, *shape, generator=g)
    return example, [torch.randn(8, *shape, generator=g) for _ in range(args.eval_batches)]


@torch.inference_mode()
def _time(models: dict[str, nn.Module], x: Any, args: argparse.Namespace) -> dict[str, float]:
    from torch.utils import benchmark

    from jointcomp.batches import run_model

    rounds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            run_model(model, x)
            timer = benchmark.Timer(
                stmt="run(m, x)",
                globals={"run": run_model, "m": model, "x": x},
                num_threads=args.threads,
            )
            rounds[name].append(timer.blocked_autorange(min_run_time=args.seconds).median * 1e3)
    # best of the rounds: another process's load only ever adds time
    return {name: min(t) for name, t in rounds.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", type=Path, help="a run folder (recipe.json, model.jcz) or a .jcz")
    ap.add_argument("--baseline", help="builder of the fp32 baseline (a run folder has its own)")
    ap.add_argument("--tokens", type=int, help="text inputs: random token ids of this length")
    ap.add_argument("--input-shape", help="a bare file's per-sample input shape, e.g. 1,8,8")
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.5, help="timing per model per round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-batches", type=int, default=4)
    ap.add_argument("--activations", default="auto", choices=["auto", "token", "tensor"])
    ap.add_argument(
        "--min-cosine",
        default="default",
        help="to_fast's budget: cosine to exact on the example, none (each layer's fastest "
        "form) or default (to_fast's)",
    )
    ap.add_argument(
        "--outliers", default="4", help="to_fast's outlier ratio for float channels, or none"
    )
    ap.add_argument(
        "--trust", action="store_true", help="load a file of a non-allow-listed builder"
    )
    ap.add_argument(
        "--top1",
        action=argparse.BooleanOptionalAction,
        help="report top-1 agreement (outputs are logits); default: a run's task is classify",
    )
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)

    import jointcomp
    from jointcomp.runtime import deviation, runtime_report, to_fast

    torch.set_num_threads(args.threads)
    if args.target.is_dir():
        path, base, example, evals = _run_folder(args.target, args)
        exact = jointcomp.load(path, trust=True)
    else:
        path = args.target
        exact = jointcomp.load(path, trust=args.trust)
        base = None
        if args.baseline:
            from jointcomp.models import build_model

            base = build_model(args.baseline)
        example, evals = _file(path, args, exact)
    outliers = None if args.outliers.lower() == "none" else float(args.outliers)
    budget: dict[str, Any] = {}
    if args.min_cosine != "default":
        budget["min_cosine"] = None if args.min_cosine == "none" else float(args.min_cosine)
    t0 = time.perf_counter()
    fast = to_fast(
        exact,
        example,
        threads=args.threads,
        activations=args.activations,
        outliers=outliers,
        **budget,
    )
    built_s = time.perf_counter() - t0
    report = runtime_report(fast)
    assert report is not None
    print(report.table())
    print(f"to_fast took {built_s:.1f} s; forms: {report.counts()}")
    dev = deviation(fast, exact, evals)
    rows = []
    for batch in args.batch:
        models = {"exact": exact, "fast": fast}
        if base is not None:
            models = {"baseline": base.eval(), **models}
        t = _time(models, _repeat(example, batch), args)
        ref = t.get("baseline")
        rows.append(
            {
                "model": path.parent.name if path.name == "model.jcz" else path.name,
                "batch": batch,
                "baseline_ms": ref,
                "exact_ms": t["exact"],
                "fast_ms": t["fast"],
                "speedup_vs_baseline": ref / t["fast"] if ref else None,
                "speedup_vs_exact": t["exact"] / t["fast"],
                "forms": report.counts(),
                "to_fast_s": round(built_s, 2),
                "example_cosine": report.cosine,
                **{f"fast_vs_exact_{k}": v for k, v in dev.to_dict().items()},
            }
        )
    print(
        f"\n{'model':<24} {'batch':>5} {'fp32 ms':>9} {'exact ms':>9} {'fast ms':>9} "
        f"{'× fp32':>7} {'× exact':>7}  deviation (fast vs exact)"
    )
    for r in rows:
        base_ms = f"{r['baseline_ms']:.3f}" if r["baseline_ms"] else "–"
        speed = f"{r['speedup_vs_baseline']:.2f}" if r["speedup_vs_baseline"] else "–"
        top1 = r["fast_vs_exact_top1_agreement"]
        print(
            f"{r['model']:<24} {r['batch']:>5} {base_ms:>9} {r['exact_ms']:>9.3f} "
            f"{r['fast_ms']:>9.3f} {speed:>7} {r['speedup_vs_exact']:>7.2f}  "
            f"cos {r['fast_vs_exact_mean_cosine']:.5f} (min {r['fast_vs_exact_min_cosine']:.5f}), "
            f"max |Δ| {r['fast_vs_exact_max_abs_error']:.3g}"
            + (f", top-1 agreement {100 * top1:.1f}%" if top1 is not None and args.top1 else "")
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
