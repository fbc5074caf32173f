"""The written file's model timed the ways a user deploys it, beside the baseline.

``exact`` is the bit-exact module ``jointcomp.load`` returns (what every other figure of the
audit is measured on); ``fast`` is ``jointcomp.load(..., runtime="fast")`` — int8 kernels,
parametrizations gone, each factorized layer in its faster form — and ``onnxruntime`` its ONNX
export run by onnxruntime. Both deployed forms are not bit-exact, so the audit also reports how
far each strays from the exact module on the test split. All are timed interleaved with the
baseline (``timing.time_interleaved``) at the audit's batch sizes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..batches import first_batches, inputs_of
from ..errors import JointcompError
from ..runtime import deviation, runtime_report, to_fast
from .measure import _repeat
from .timing import throughput, time_interleaved

# a few test batches are enough to tell a deployed form's deviation from the exact module's
DEVIATION_SAMPLES = 64


class LatencyGateError(JointcompError):
    """The fast module is slower than the recipe's ``audit.max_latency_ratio`` allows."""

    exit_code = 1


def _onnx_runnable(exact: nn.Module, example: Any, workdir: Path, threads: int) -> tuple[Any, Any]:
    """An onnxruntime session of ``exact``'s ONNX export (written under ``workdir``) as a
    callable on batch inputs, and the session itself."""
    from ..export.inputs import _as_inputs
    from ..export.onnx import feeds, session, to_onnx

    inputs = _as_inputs(example, "the audit's example")
    path = workdir / "model.onnx"
    to_onnx(exact, path, inputs, check=False)
    sess = session(path, threads)

    def run(batch: Any) -> Any:
        return sess.run(None, feeds(sess, _as_inputs(batch, "the audit's inputs")))

    return run, sess


def _onnx_deviation(sess: Any, exact: nn.Module, batches: list[Any]) -> dict[str, Any]:
    """onnxruntime's outputs against the exact module's on ``batches`` (first output)."""
    from ..export.common import call, compare, flat_outputs
    from ..export.inputs import _as_inputs
    from ..export.onnx import feeds

    worst: dict[str, Any] = {}
    for batch in batches:
        inputs = _as_inputs(inputs_of(batch), "the audit's test data")
        with torch.no_grad():
            reference = flat_outputs(call(exact, inputs))
        got = compare(reference, sess.run(None, feeds(sess, inputs)))
        worst["max_abs_error"] = max(worst.get("max_abs_error", 0.0), got["max_abs_err"])
        worst["min_cosine"] = min(worst.get("min_cosine", 1.0), got["cosine"])
        if "top1_agreement" in got:
            worst["top1_agreement"] = min(worst.get("top1_agreement", 1.0), got["top1_agreement"])
    return worst


def time_runtimes(
    exact: nn.Module,
    baseline: nn.Module | None,
    example: Any,
    test: Any,
    cfg: Any,
) -> dict[str, Any]:
    """Latency by runtime and batch size (``{"baseline"|"exact"|"fast"|"onnxruntime":
    {str(batch): ms}}``), throughput, speed-ups over the baseline at batch 1, each deployed
    form's deviation from the exact module on ``test``, the fast module's per-layer choices, and
    notes on runtimes that could not run. ``cfg`` is the recipe's ``audit`` section."""
    out: dict[str, Any] = {"notes": []}
    runnables: dict[str, Any] = {}
    if baseline is not None:
        runnables["baseline"] = baseline.to("cpu").eval()
    exact = exact.to("cpu").eval()
    if "exact" in cfg.runtimes:
        runnables["exact"] = exact
    batches = first_batches(test, DEVIATION_SAMPLES, 1) if test is not None else []
    fast = None
    if "fast" in cfg.runtimes:
        fast = to_fast(exact, example=example, threads=cfg.threads)
        runnables["fast"] = fast
        out["fast_layers"] = runtime_report(fast).to_dict()
        if batches:
            out.setdefault("deviation", {})["fast"] = deviation(fast, exact, batches).to_dict()
    with tempfile.TemporaryDirectory(prefix="jointcomp-audit-") as tmp:
        if "onnxruntime" in cfg.runtimes:
            try:
                run, sess = _onnx_runnable(exact, example, Path(tmp), cfg.threads)
            except JointcompError as exc:  # onnxruntime missing, or the model cannot export
                out["notes"].append(f"onnxruntime not timed: {exc}")
            else:
                runnables["onnxruntime"] = run
                if batches:
                    out.setdefault("deviation", {})["onnxruntime"] = _onnx_deviation(
                        sess, exact, batches
                    )
        inputs = {b: _repeat(example, b) for b in cfg.batch_sizes}
        times = time_interleaved(
            runnables,
            inputs,
            rounds=cfg.rounds,
            threads=cfg.threads,
            min_run_time=cfg.min_run_time,
        )
    out["latency_ms"] = times
    out["throughput"] = {name: throughput(t) for name, t in times.items()}
    base = times.get("baseline", {})
    out["speedup"] = {
        name: {b: round(base[b] / ms, 3) for b, ms in t.items() if b in base and ms > 0}
        for name, t in times.items()
        if name != "baseline" and base
    }
    out["rounds"] = cfg.rounds
    return out


def check_latency_gate(runtimes: dict[str, Any], max_ratio: float | None) -> str | None:
    """None when there is no gate or the fast module passes it; otherwise the failure message
    (the fast module's smallest-batch latency over ``max_ratio`` × the baseline's)."""
    if max_ratio is None:
        return None
    times = runtimes.get("latency_ms", {})
    fast, base = times.get("fast"), times.get("baseline")
    if not fast or not base:
        return "latency gate: the fast module and the baseline were not both timed"
    batch = min(fast, key=int)
    ratio = fast[batch] / base[batch]
    if ratio <= max_ratio:
        return None
    return (
        f"latency gate failed: the fast module takes {fast[batch]:.3f} ms at batch {batch}, "
        f"{ratio:.2f}× the baseline's {base[batch]:.3f} ms (audit.max_latency_ratio: "
        f"{max_ratio:g}); the file and reports were written"
    )
