"""Benchmark jointcomp's entropy coders: rate and speed per coder and source.

    python tools/bench_codecs.py                 # 1M symbols per source, table on stdout
    python tools/bench_codecs.py --quick         # 100k symbols, one run each
    python tools/bench_codecs.py --json          # the same rows as a JSON list
    python tools/bench_codecs.py --weights model.safetensors   # add real quantized weights
    python tools/bench_codecs.py --weights recipes/lenet5-fashion-joint.yaml   # its baseline

Columns: n, H0 (empirical entropy, bits/symbol), coded bits/symbol (payload without side
information), side-information bytes, encode and decode throughput (M symbols/s, median of
--repeats runs, time.perf_counter), and whether decode reproduced the input exactly.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jointcomp.codec import decode, encode, entropy_bits

CODERS = ("raw", "huffman", "tunstall", "ans", "range", "sparse", "auto")


def quantize(x: np.ndarray, bits: int) -> np.ndarray:
    """Uniform quantizer with 2**bits levels spanning +-(1 + bits/2) standard deviations
    (2 bits: +-2 sigma ... 8 bits: +-5 sigma), values beyond clipped."""
    half = 2 ** (bits - 1)
    step = 2 * (1 + bits / 2) * float(np.std(x)) / 2**bits
    q = np.round(x / step)
    return np.clip(q, -half, half - 1).astype(np.int8 if bits <= 8 else np.int16)


def synthetic_sources(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    lap, gau = rng.laplace(0, 1, n), rng.normal(0, 1, n)
    for bits in (2, 4, 6, 8):
        out[f"laplace-{bits}b"] = quantize(lap, bits)
        out[f"gauss-{bits}b"] = quantize(gau, bits)
    nz = quantize(rng.laplace(0, 1, n), 4)
    nz[nz == 0] = 1
    for zeros in (0.90, 0.99):
        out[f"sparse-{round(zeros * 100)}%0"] = np.where(rng.random(n) < zeros, 0, nz).astype(
            np.int8
        )
    return out


def baseline_file(recipe_path: str) -> str:
    """The cached baseline weights of a recipe (trained first if not cached yet)."""
    import tempfile

    import torch
    from safetensors.torch import save_file

    from jointcomp.baseline import get_baseline, recipe_data
    from jointcomp.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    data, kwargs = recipe_data(recipe)
    model, _ = get_baseline(recipe, data, kwargs, device=torch.device("cpu"), log=lambda *_: None)
    path = Path(tempfile.mkdtemp()) / "baseline.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def weight_sources(path: str) -> dict[str, np.ndarray]:
    """Every float tensor of a safetensors file (or of a recipe's baseline, for a .yaml),
    quantized per tensor to 4 and 8 bits."""
    from safetensors import safe_open

    if path.endswith((".yaml", ".yml")):
        path = baseline_file(path)

    q4, q8 = [], []
    with safe_open(path, framework="pt") as f:  # torch handles bf16/fp16 as well
        for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            t = f.get_tensor(name)
            if not t.is_floating_point() or t.numel() == 0:
                continue
            w = t.float().numpy().reshape(-1)
            scale = float(np.abs(w).max()) or 1.0
            q4.append(np.clip(np.round(w / scale * 7), -8, 7).astype(np.int8))
            q8.append(np.clip(np.round(w / scale * 127), -128, 127).astype(np.int8))
    if not q4:
        raise SystemExit(f"{path}: no floating-point tensors")
    return {"weights-4b": np.concatenate(q4), "weights-8b": np.concatenate(q8)}


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def bench(source: str, x: np.ndarray, coder: str, repeats: int) -> dict:
    n = int(x.size)
    row = {"coder": coder, "source": source, "n": n, "entropy_bits": entropy_bits(x)}
    try:
        t_enc, enc = timed(lambda: encode(x, coder), repeats)
    except ValueError as exc:  # e.g. Tunstall with more symbols than codewords
        return {**row, "skipped": str(exc)}
    t_dec, y = timed(lambda: decode(enc.codec, enc.data, enc.params, n, x.dtype), repeats)
    row.update(
        coded_bits=(len(enc.data) - enc.side_bytes) * 8 / max(n, 1),
        side_bytes=enc.side_bytes,
        encode_msym_s=n / t_enc / 1e6,
        decode_msym_s=n / t_dec / 1e6,
        exact=bool(y.dtype == x.dtype and np.array_equal(y, x)),
    )
    if coder == "auto":
        row["chosen"] = enc.codec
    return row


def print_table(rows: list[dict]) -> None:
    head = f"{'source':<13}{'coder':<10}{'n':>9}{'H0':>8}{'bits/sym':>10}{'side B':>9}"
    head += f"{'enc M/s':>9}{'dec M/s':>9}  exact"
    print(head)
    print("-" * len(head))
    last = None
    for r in rows:
        if last is not None and r["source"] != last:
            print()
        last = r["source"]
        lead = f"{r['source']:<13}{r['coder']:<10}{r['n']:>9}{r['entropy_bits']:>8.3f}"
        if "skipped" in r:
            print(f"{lead}  skipped: {r['skipped']}")
            continue
        note = f"  -> {r['chosen']}" if "chosen" in r else ""
        print(
            f"{lead}{r['coded_bits']:>10.4f}{r['side_bytes']:>9}{r['encode_msym_s']:>9.2f}"
            f"{r['decode_msym_s']:>9.2f}  {r['exact']}{note}"
        )


def print_targets(rows: list[dict]) -> None:
    """The project's speed targets, per source: Tunstall vs Huffman and ANS decode speed."""
    by = {(r["source"], r["coder"]): r for r in rows if "skipped" not in r}
    print("\nTunstall decode speed / Huffman, / ANS; ANS decode M sym/s:")
    for source in dict.fromkeys(r["source"] for r in rows):
        t, h, a = (by.get((source, c)) for c in ("tunstall", "huffman", "ans"))
        parts = [f"  {source:<13}"]
        if t and h:
            parts.append(f"tunstall/huffman {t['decode_msym_s'] / h['decode_msym_s']:6.1f}x")
        if t and a:
            parts.append(f"tunstall/ans {t['decode_msym_s'] / a['decode_msym_s']:5.2f}x")
        if a:
            parts.append(f"ans {a['decode_msym_s']:6.1f}")
        print("  ".join(parts))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="symbols per synthetic source")
    ap.add_argument(
        "--weights",
        help="a .safetensors file, or a recipe .yaml (its baseline): float tensors at 4 and 8 bits",
    )
    ap.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    ap.add_argument("--quick", action="store_true", help="100k symbols, one run each")
    ap.add_argument("--repeats", type=int, default=3, help="runs per timing (median)")
    ap.add_argument("--coders", default=",".join(CODERS), help="comma-separated subset")
    args = ap.parse_args(argv)
    n, repeats = (100_000, 1) if args.quick else (args.n, args.repeats)
    coders = [c for c in args.coders.split(",") if c]
    sources = synthetic_sources(n)
    if args.weights:
        sources.update(weight_sources(args.weights))
    elif not args.json:
        print("note: no --weights FILE.safetensors given; real quantized weights skipped\n")
    rows = [bench(name, x, c, repeats) for name, x in sources.items() for c in coders]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print_table(rows)
        print_targets(rows)
    return 0 if all(r.get("exact", True) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
