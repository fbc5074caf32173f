"""Export .jcz files (or the model.jcz of run folders) to ONNX, check each in onnxruntime and time
it against torch at batch 1 on one thread.

    python tools/export_check.py /tmp/qs model.jcz --weights dynamic qdq float

Columns: file, ONNX weights form, ONNX bytes, max abs error and smallest cosine against the exact
module (as onnxruntime runs the file by default), top-1 agreement (2-D outputs), and median
milliseconds at batch 1 of: the builder's fp32 model (the uncompressed architecture), the exact
module (jointcomp.load), the fast runtime (built on the example), and the ONNX file in
onnxruntime. Every timing is interleaved round by round, so drifting load hits all alike.
Example inputs as ``jointcomp export`` finds them (run folder recipe, [1, 128] tokens for
transformers models) or ``--input-shape``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import jointcomp
from jointcomp.export import examples_for, to_onnx
from jointcomp.export.common import INPUT, call
from jointcomp.export.inputs import is_token_model
from jointcomp.export.onnx import feeds, session
from jointcomp.models import build_model


def _file(arg: str) -> Path:
    path = Path(arg)
    return path / "model.jcz" if path.is_dir() else path


def _interleaved(fns: dict[str, Callable[[], object]], rounds: int, min_time: float) -> dict:
    """Median milliseconds per call of each function, timed round-robin."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            n, start = 0, time.perf_counter()
            while True:
                fn()
                n += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_time:
                    break
            times[name].append(elapsed / n * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def check(
    path: Path,
    weights: list[str],
    shape: str | None,
    rounds: int,
    out: Path,
    tokens: int | None = None,
) -> list:
    artifact = jointcomp.open_file(path)
    model, manifest = artifact.model, artifact.manifest
    if tokens and is_token_model(manifest.builder):
        shape = f"1,{tokens}"
    examples = examples_for(manifest.builder, manifest.kwargs, file=path, input_shape=shape)
    x = examples.example
    fp32 = build_model(manifest.builder, manifest.kwargs).eval()
    fns: dict[str, Callable[[], object]] = {
        "torch fp32": lambda: call(fp32, x),
        "torch exact": lambda: call(model, x),
    }
    # the fast runtime times each layer's forms on the example, as the audit builds it
    inputs = x[INPUT] if list(x) == [INPUT] else x
    fast = jointcomp.load(path, runtime="fast", example=inputs)
    fns["torch fast"] = lambda: call(fast, x)
    reports = {}
    for form in weights:
        target = out / f"{path.stem}-{form}.onnx"
        reports[form] = to_onnx(model, target, x, samples=examples.samples,
                                dynamic=examples.dynamic, weights=form)  # fmt: skip
        sess = session(target, threads=1)
        feed = feeds(sess, x)
        fns[f"ORT {form}"] = lambda s=sess, f=feed: s.run(None, f)
    with torch.inference_mode():
        ms = _interleaved(fns, rounds, 0.2)
    rows = []
    torch_ms = " / ".join(f"{ms[k]:.2f}" for k in fns if k.startswith("torch"))
    for form, r in reports.items():
        c = r.check or {}
        agree = c.get("top1_agreement")
        rows.append([
            str(path), form, f"{r.bytes:,}", f"{c['max_abs_err']:.3g}", f"{c['cosine']:.5f}",
            "–" if agree is None else f"{agree:.1%}", torch_ms, f"{ms[f'ORT {form}']:.2f}",
            f"{ms['torch fp32'] / ms[f'ORT {form}']:.2f}×",
        ])  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sources", nargs="+", help=".jcz files or run folders")
    parser.add_argument("--weights", nargs="+", default=["dynamic", "qdq", "float"])
    parser.add_argument("--input-shape", default=None)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--tokens", type=int, default=None, help="text models: time [1, N] token ids"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    header = ["file", "weights", "onnx bytes", "max abs err", "cosine", "top-1 agree",
              "torch ms (fp32 / exact / fast)", "ORT ms", "ORT vs fp32"]  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for source in args.sources:
            rows += check(
                _file(source), args.weights, args.input_shape, args.rounds, Path(tmp), args.tokens
            )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
