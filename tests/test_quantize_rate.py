"""Rate-aware QAT: the code-length estimate tracks what entropy coding spends, its gradient
lowers that, and a quantize stage with ``qat: {rate: ...}`` writes a smaller file than one
without."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from jointcomp.errors import RecipeError
from jointcomp.pipeline import _stage_fingerprint, run
from jointcomp.quant.rate import laplace_bits, rounded_laplace_entropy
from jointcomp.recipe import validate_recipe

from .conftest import tiny_recipe


def entropy_bits(ints: torch.Tensor) -> float:
    """First-order entropy of an integer tensor, in bits per value."""
    _, counts = np.unique(ints.numpy(), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0])
def test_rounded_laplace_entropy_is_that_of_rounded_laplace_samples(scale: float) -> None:
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(400_000, generator=gen, dtype=torch.float64) - 0.5
    samples = -scale * torch.sign(u) * torch.log1p(-2 * u.abs())  # inverse CDF of Laplace
    expected = entropy_bits(torch.round(samples).long())
    assert float(rounded_laplace_entropy(torch.tensor(scale))) == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("levels", [7, 31])  # 4-bit and 6-bit narrow-range grids
def test_laplace_bits_tracks_the_entropy_of_the_integers(levels: int) -> None:
    gen = torch.Generator().manual_seed(1)
    weights = torch.randn(20_000, generator=gen)
    scale = weights.abs().max() / levels
    ints = torch.round(weights / scale).clamp(-levels, levels)
    actual = entropy_bits(ints.long()) * weights.numel()
    estimate = float(laplace_bits(weights, scale))
    assert abs(estimate - actual) < 0.1 * weights.numel()  # within 0.1 bit per value


def test_a_step_down_the_gradient_lowers_the_coded_size() -> None:
    gen = torch.Generator().manual_seed(2)
    weights = torch.randn(5_000, generator=gen).requires_grad_()
    scale = torch.tensor(0.25)
    laplace_bits(weights, scale).backward()
    before = entropy_bits(torch.round(weights.detach() / scale).long())
    stepped = weights.detach() - 0.05 * weights.grad.sign()  # a fifth of a grid step
    after = entropy_bits(torch.round(stepped / scale).long())
    assert after < before - 0.05


def test_laplace_bits_counts_only_the_stored_entries_of_a_sparse_tensor() -> None:
    weights = torch.randn(1_000, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(1_000, dtype=torch.bool)
    mask[:100] = True
    full = float(laplace_bits(weights[:100], torch.tensor(0.1)))
    assert float(laplace_bits(weights, torch.tensor(0.1), mask)) == pytest.approx(full)


def _quantize(rate: float | None) -> dict:
    qat: dict = {"finetune": {"epochs": 2}}
    if rate is not None:
        qat["rate"] = rate
    return {"quantize": {"qat": qat, "bits": {"weights": 4}}}


def test_rate_aware_qat_writes_a_smaller_file(tmp_path: Path) -> None:
    sizes, summaries = {}, {}
    for rate in (None, 2.0):
        out = tmp_path / f"rate-{rate}"
        raw = tiny_recipe(tmp_path, stages=[_quantize(rate), {"encode": {"codec": "auto"}}])
        raw["output"] = str(out)
        run(validate_recipe(raw), show_progress=False)
        report = json.loads((out / "report.json").read_text())
        sizes[rate] = report["final"]["bytes"]
        summaries[rate] = report["stages"][0]["record"]["summary"]
    assert "rate_bytes_before" not in summaries[None]
    trained = summaries[2.0]
    assert trained["rate_bytes_after"] < 0.9 * trained["rate_bytes_before"]
    assert summaries[2.0]["est_bytes"] < 0.9 * summaries[None]["est_bytes"]
    assert sizes[2.0] < sizes[None]


def test_rate_belongs_to_qat(tmp_path: Path) -> None:
    raw = tiny_recipe(tmp_path, stages=[{"quantize": {"ptq": {"rate": 0.1}}}])
    with pytest.raises(
        RecipeError, match=r"quantize\.ptq\.rate: unknown key; allowed keys here: refit"
    ):
        validate_recipe(raw)
    raw = tiny_recipe(tmp_path, stages=[{"quantize": {"rate": 0.1}}])
    with pytest.raises(RecipeError, match=r"quantize\.rate: unknown key; allowed keys here: qat, "):
        validate_recipe(raw)


def test_rate_changes_the_stage_fingerprint(tmp_path: Path) -> None:
    plain = validate_recipe(tiny_recipe(tmp_path, stages=[_quantize(None)]))
    off = validate_recipe(tiny_recipe(tmp_path, stages=[_quantize(0.0)]))
    on = validate_recipe(tiny_recipe(tmp_path, stages=[_quantize(0.5)]))
    # a run interrupted with one rate does not resume with another
    assert _stage_fingerprint(plain.stages[0]) != _stage_fingerprint(on.stages[0])
    assert _stage_fingerprint(off.stages[0]) != _stage_fingerprint(on.stages[0])
