"""The audit times the file's model as deployed — exact, fast runtime, onnxruntime — interleaved
with the baseline, reports each deployed form's deviation, and a recipe's latency gate fails a
run whose fast module is too slow (after the file and reports are written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from jointcomp.audit import LatencyGateError, check_latency_gate
from jointcomp.audit.timing import throughput, time_interleaved
from jointcomp.pipeline import run
from jointcomp.recipe import AuditSpec, validate_recipe

from .conftest import tiny_recipe

STAGES = [
    {"prune": {"ratio": 0.5, "finetune": {"epochs": 1}}},
    {"quantize": {"ptq": {}, "bits": {"weights": 6}}},
    {"encode": {"codec": "auto"}},
]
AUDIT = {"batch_sizes": [1, 4], "min_run_time": 0.01, "rounds": 2}


def test_interleaved_timing_reports_every_runnable_at_every_batch() -> None:
    slow = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(8)])
    fast = torch.nn.Linear(256, 256)
    inputs = {1: torch.randn(1, 256), 8: torch.randn(8, 256)}
    times = time_interleaved({"slow": slow, "fast": fast}, inputs, rounds=2, min_run_time=0.02)
    assert set(times) == {"slow", "fast"} and set(times["slow"]) == {"1", "8"}
    assert times["fast"]["8"] < times["slow"]["8"]  # 8× the work is not faster
    assert throughput({"8": 2.0}) == {"8": 4000.0}
    with pytest.raises(ValueError, match="rounds"):
        time_interleaved({"a": fast}, inputs, rounds=0)


def test_audit_times_exact_fast_and_onnxruntime_beside_the_baseline(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    recipe = validate_recipe(tiny_recipe(tmp_path, STAGES, audit=AUDIT))
    result = run(recipe, show_progress=False)
    rt = result.report["final"]["runtimes"]
    assert set(rt["latency_ms"]) == {"baseline", "exact", "fast", "onnxruntime"}, rt["notes"]
    assert all(set(t) == {"1", "4"} for t in rt["latency_ms"].values())
    assert set(rt["speedup"]) == {"exact", "fast", "onnxruntime"}
    # the deployed forms are not bit-exact, and the report says how far they stray
    for name in ("fast", "onnxruntime"):
        dev = rt["deviation"][name]
        assert dev["min_cosine"] > 0.999 and dev["top1_agreement"] >= 0.95, (name, dev)
    assert rt["fast_layers"]["layers"], "the fast module's per-layer choices are reported"
    md = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "Deployment: latency by runtime" in md and "file, onnxruntime" in md
    saved = json.loads((tmp_path / "run" / "report.json").read_text(encoding="utf-8"))
    assert saved["final"]["runtimes"]["latency_ms"] == rt["latency_ms"]


def test_latency_gate_fails_a_slow_run_after_writing_the_file(tmp_path: Path) -> None:
    audit = {**AUDIT, "runtimes": ["fast"], "max_latency_ratio": 1e-6}
    recipe = validate_recipe(tiny_recipe(tmp_path, STAGES, audit=audit))
    with pytest.raises(LatencyGateError, match=r"latency gate failed: the fast module takes"):
        run(recipe, show_progress=False)
    out = tmp_path / "run"
    assert (out / "model.jcz").is_file() and (out / "report.html").is_file()
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["latency_gate"] == {"max_ratio": 1e-6, "passed": False}


def test_latency_gate_lets_a_fast_enough_run_pass(tmp_path: Path) -> None:
    audit = {**AUDIT, "runtimes": ["fast"], "max_latency_ratio": 1e6}
    result = run(validate_recipe(tiny_recipe(tmp_path, STAGES, audit=audit)), show_progress=False)
    assert result.report["latency_gate"]["passed"] is True


def test_gate_rules() -> None:
    timed = {"latency_ms": {"baseline": {"1": 2.0, "32": 9.0}, "fast": {"1": 2.5, "32": 1.0}}}
    assert check_latency_gate(timed, None) is None
    assert check_latency_gate(timed, 1.3) is None  # the smallest batch decides: 1.25×
    assert "1.25× the baseline's" in check_latency_gate(timed, 1.2)
    assert "not both timed" in check_latency_gate({"latency_ms": {"fast": {"1": 1.0}}}, 2.0)
    with pytest.raises(ValidationError, match="needs latency: true and 'fast'"):
        AuditSpec(max_latency_ratio=1.5, runtimes=["exact"])
    with pytest.raises(ValidationError):
        AuditSpec(runtimes=["tensorrt"])
