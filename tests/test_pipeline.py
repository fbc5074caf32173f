"""The whole trip: recipe → baseline → stages → model.jcz → audit, resume and overwrite rules."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from jointcomp.baseline import get_baseline, recipe_data
from jointcomp.errors import OutputExistsError, RecipeError
from jointcomp.pipeline import run
from jointcomp.recipe import validate_recipe
from jointcomp.stages import STAGES
from jointcomp.training import evaluate

from .conftest import assert_file_holds, assert_learned, tiny_recipe

TWO_PRUNES = [
    {"prune": {"ratio": 0.3, "finetune": {"epochs": 1}}},
    {"prune": {"ratio": 0.3, "finetune": {"epochs": 1}}},
    {"encode": {"codec": "auto"}},
]


def test_run_writes_file_reports_and_loads_bit_exactly(tmp_path: Path, encoded) -> None:
    recipe = validate_recipe(tiny_recipe(tmp_path))
    result = run(recipe, show_progress=False)
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
    assert [s["name"] for s in report["stages"]] == ["prune", "encode"]
    assert all({"name", "params", "accuracy", "seconds"} <= set(s) for s in report["stages"])
    assert report["layers"] and {"name", "type", "shape", "params", "bytes"} <= set(
        report["layers"][0]
    )
    # stages judge on val: the state records val top-1, the report test top-1
    state = json.loads((out / "state.json").read_text())
    assert all(0.0 <= s["val_accuracy"] <= 1.0 for s in state["stages"])
    # the file holds the model the stages produced, tensor for tensor and output for output
    data, kwargs = recipe_data(recipe)
    (before,) = encoded
    x = torch.cat([data.test.tensors[0][:32], torch.randn(5, 1, 8, 8)])
    loaded = assert_file_holds(before, x, result.model_path)
    # the reported figure is the file's on the test split; 2 epochs of small_cnn on digits
    # reach ~87% (chance: 10%), pruning half the channels with one epoch of fine-tuning ~64%
    assert final["accuracy"] == evaluate(loaded, data.test)
    baseline, info = get_baseline(recipe, data, kwargs, device=torch.device("cpu"))
    assert info["source"] == "cache" and base["accuracy"] == evaluate(baseline, data.test)
    assert_learned(report, baseline_floor=0.75, final_floor=0.5, max_drop=0.3)


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


# ----------------------------------------------------------------------------- data roles

BIT_BUDGET = {"bytes": 6000, "options": [4, 8], "batches": 1}
MARK = 1234.5  # the first input value of every test sample; no digit (|x| < 3) comes near it
_SEEN: dict[str, list] = {"phase": ["run"], "reads": [], "forwards": []}


class _Watched(torch.utils.data.Dataset):
    """The test split of :func:`marked_digits`: marked samples whose every read is recorded
    with the run's phase (run: data, baseline and stages; then audit)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x.clone(), y
        self.x.view(len(x), -1)[:, 0] = MARK

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        _SEEN["reads"].append(_SEEN["phase"][0])
        return self.x[i], self.y[i]


def marked_digits() -> dict:
    """A custom loader: digits' train and val as plain TensorDatasets, its test split marked
    and watched (``num_classes`` given: inferring it would read the test labels)."""
    from .stage_util import digits_bundle

    data = digits_bundle()
    test = _Watched(*data.test.tensors)
    return {"train": data.train, "val": data.val, "test": test, "num_classes": 10}


def test_stages_never_see_the_test_split(tmp_path: Path, monkeypatch) -> None:
    """The baseline trains, budgets measure sensitivities, the stages train and score
    themselves: none of it reads the test split or runs any module on a test sample (a
    forward pre-hook on every module watches for the marked inputs). Only the audit does."""
    import jointcomp.audit
    import jointcomp.context
    import jointcomp.pipeline

    from .stage_util import digits_bundle

    bundle = digits_bundle()  # the loader's splits, the same objects
    _SEEN.update(phase=["run"], reads=[], forwards=[])
    evaluated: list[tuple[str, str, str]] = []  # (phase, function, split)

    def role(data) -> str:
        if isinstance(data, list):  # batches: which split do they start?
            x = data[0][0]
            for name, split in (("train", bundle.train), ("val", bundle.val)):
                if torch.equal(x, split.tensors[0][: len(x)]):
                    return name
            return "unknown batches"
        if isinstance(data, _Watched):
            return "test"
        return {id(bundle.train): "train", id(bundle.val): "val"}.get(id(data), "unknown")

    def spy(module, name):
        real = getattr(module, name)

        def wrapped(model, data, *args, **kwargs):
            evaluated.append((_SEEN["phase"][0], name, role(data)))
            return real(model, data, *args, **kwargs)

        monkeypatch.setattr(module, name, wrapped)

    spy(jointcomp.pipeline, "evaluate")
    spy(jointcomp.audit, "evaluate")
    spy(jointcomp.context, "evaluate_loss")  # every budget's sensitivities go through it
    real_audit = jointcomp.pipeline.audit_run

    def audit(*args, **kwargs):
        _SEEN["phase"][0] = "audit"
        return real_audit(*args, **kwargs)

    monkeypatch.setattr(jointcomp.pipeline, "audit_run", audit)

    def saw_mark(module, inputs) -> None:  # every forward of every module, anywhere
        x = inputs[0] if inputs else None
        if isinstance(x, torch.Tensor) and x.is_floating_point() and bool((x == MARK).any()):
            _SEEN["forwards"].append(_SEEN["phase"][0])

    hook = torch.nn.modules.module.register_module_forward_pre_hook(saw_mark)
    stages = [
        {"decompose": {"format": "svd", "budget": {"params": 0.6, "batches": 1}}},
        {"quantize": {"ptq": {}, "bits": {"weights": 8, "budget": BIT_BUDGET}}},
        {"encode": {}},
    ]
    raw = tiny_recipe(tmp_path, stages, data={"dataset": "tests.test_pipeline:marked_digits"})
    raw["train"]["epochs"] = 1
    try:
        result = run(validate_recipe(raw), show_progress=False)
    finally:
        hook.remove()
    stage_time = [(n, r) for phase, n, r in evaluated if phase == "run"]
    # budgets measured sensitivities on val batches; each stage scored itself on val
    assert {n for n, _ in stage_time} == {"evaluate", "evaluate_loss"}
    assert {r for _, r in stage_time} == {"val"}, stage_time
    assert "run" not in _SEEN["reads"] and "run" not in _SEEN["forwards"]
    # the audit measured on test (the marks are seen: the watch works)
    assert ("audit", "evaluate", "test") in evaluated
    assert "audit" in _SEEN["reads"] and "audit" in _SEEN["forwards"]
    assert {r for phase, _, r in evaluated if phase == "audit"} == {"test"}
    assert result.report["final"]["bytes"] == result.model_path.stat().st_size
