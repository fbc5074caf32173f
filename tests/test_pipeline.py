"""The whole trip: recipe → baseline → stages → model.jcz → audit, resume and overwrite rules."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import jointcomp
from jointcomp.errors import OutputExistsError, RecipeError
from jointcomp.pipeline import run
from jointcomp.recipe import validate_recipe
from jointcomp.stages import STAGES

from .conftest import tiny_recipe

TWO_PRUNES = [
    {"prune": {"ratio": 0.3, "finetune": {"epochs": 1}}},
    {"prune": {"ratio": 0.3, "finetune": {"epochs": 1}}},
    {"encode": {"codec": "auto"}},
]


def test_run_writes_file_reports_and_loads_bit_exactly(tmp_path: Path) -> None:
    result = run(validate_recipe(tiny_recipe(tmp_path)), show_progress=False)
    out = tmp_path / "run"
    assert result.model_path == out / "model.jcz" and result.model_path.is_file()
    for name in ("report.json", "report.md", "report.html", "state.json", "recipe.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    base, final = report["baseline"], report["final"]
    for key in ("params", "bytes", "accuracy", "latency_ms", "macs"):
        assert key in base, key
    for key in ("params", "bytes", "compression_ratio", "accuracy", "latency_ms", "macs"):
        assert key in final, key
    assert final["bytes"] == result.model_path.stat().st_size
    assert final["params"] < base["params"]
    assert 0.0 <= final["accuracy"] <= 1.0
    assert [s["name"] for s in report["stages"]] == ["prune", "encode"]
    assert all({"name", "params", "accuracy", "seconds"} <= set(s) for s in report["stages"])
    assert report["layers"] and {"name", "type", "shape", "params", "bytes"} <= set(
        report["layers"][0]
    )
    # the module a user loads is the one the pipeline evaluated
    loaded = jointcomp.load(str(result.model_path))
    sample = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(sample), result.model.cpu().eval()(sample))


def test_refuses_existing_output_without_flags(tmp_path: Path) -> None:
    recipe = validate_recipe(tiny_recipe(tmp_path, stages=[{"encode": {}}]))
    run(recipe, show_progress=False)
    marker = (tmp_path / "run" / "model.jcz").read_bytes()
    with pytest.raises(OutputExistsError, match="--resume .* --force"):
        run(recipe, show_progress=False)
    assert (tmp_path / "run" / "model.jcz").read_bytes() == marker  # nothing was touched
    run(recipe, force=True, show_progress=False)


def test_resume_after_interruption_gives_the_identical_file(tmp_path: Path, monkeypatch) -> None:
    straight = validate_recipe(tiny_recipe(tmp_path / "a", stages=TWO_PRUNES))
    run(straight, show_progress=False)
    reference = (tmp_path / "a" / "run" / "model.jcz").read_bytes()

    interrupted = validate_recipe(tiny_recipe(tmp_path / "b", stages=TWO_PRUNES))
    original = STAGES["prune"]
    calls = {"n": 0}

    def crash_on_second(model, config, context):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original.fn(model, config, context)

    monkeypatch.setitem(STAGES, "prune", dataclasses.replace(original, fn=crash_on_second))
    with pytest.raises(KeyboardInterrupt):
        run(interrupted, show_progress=False)
    state = json.loads((tmp_path / "b" / "run" / "state.json").read_text())
    assert [s["name"] for s in state["stages"]] == ["prune"]
    assert not (tmp_path / "b" / "run" / "model.jcz").exists()
    monkeypatch.setitem(STAGES, "prune", original)
    run(interrupted, resume=True, show_progress=False)
    assert (tmp_path / "b" / "run" / "model.jcz").read_bytes() == reference


def test_resume_refuses_a_changed_recipe(tmp_path: Path) -> None:
    run(validate_recipe(tiny_recipe(tmp_path, stages=[{"encode": {}}])), show_progress=False)
    changed = tiny_recipe(tmp_path, stages=[{"encode": {}}])
    changed["train"]["lr"] = 0.1
    with pytest.raises(RecipeError, match="changed since that run"):
        run(validate_recipe(changed), resume=True, show_progress=False)


def test_baseline_is_cached_and_shared(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("JOINTCOMP_CACHE", str(tmp_path / "fresh-cache"))
    first = run(
        validate_recipe(tiny_recipe(tmp_path / "a", stages=[{"encode": {}}])), show_progress=False
    )
    second = run(
        validate_recipe(
            tiny_recipe(
                tmp_path / "b", stages=[{"prune": {"ratio": 0.2, "finetune": {"epochs": 0}}}]
            )
        ),
        show_progress=False,
    )
    assert first.report["baseline"]["source"]["source"] == "trained"
    assert second.report["baseline"]["source"]["source"] == "cache"
    assert first.report["baseline"]["accuracy"] == second.report["baseline"]["accuracy"]


def test_distill_teacher_input_is_the_stage_input(tmp_path: Path, monkeypatch) -> None:
    """``distill: {teacher: input}`` makes a stage distil from the model it received (the
    float network before QAT), not from the uncompressed baseline."""
    import jointcomp.training.trainer as trainer

    teachers: list[torch.nn.Module | None] = []
    real_fit = trainer.fit

    def recording_fit(model, *args, **kwargs):
        teachers.append(kwargs["teacher"])
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(trainer, "fit", recording_fit)
    input_taught = {"epochs": 1, "distill": {"alpha": 1.0, "teacher": "input"}}
    stages = [
        {"prune": {"ratio": 0.5, "finetune": {"epochs": 1}}},
        {"prune": {"ratio": 0.3, "finetune": input_taught}},
        {"encode": {"codec": "auto"}},
    ]
    result = run(validate_recipe(tiny_recipe(tmp_path, stages=stages)), show_progress=False)
    report = json.loads((result.out_dir / "report.json").read_text())
    first_stage_params = report["stages"][0]["params"]

    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert len(teachers) == 2
    assert count(teachers[0]) == report["baseline"]["params"]  # the recipe's teacher
    taught_by = teachers[1]
    assert count(taught_by) == first_stage_params < report["baseline"]["params"]
    assert not taught_by.training and not any(p.requires_grad for p in taught_by.parameters())


def test_distill_teacher_rejects_an_unknown_teacher(tmp_path: Path) -> None:
    raw = tiny_recipe(tmp_path)
    raw["train"]["distill"]["teacher"] = "student"
    with pytest.raises(RecipeError, match="teacher"):
        validate_recipe(raw)
