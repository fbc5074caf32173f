"""Tasks wired through recipes, stages, fine-tuning and the Python API: distillation needs no
labels and wins back fidelity a compression lost; sensitivities and budgets use the task's
loss; classification still needs labels and says to use distill; a user's task needs trust;
reports name the task's metric."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import jointcomp
from jointcomp.audit.report import summary_headers, summary_rows
from jointcomp.errors import DataError, RecipeError
from jointcomp.recipe import validate_recipe
from jointcomp.tasks import ClassifyTask, DistillTask, Task, TaskSpec, format_metric, make_task
from jointcomp.training import Trainer, frozen_copy, measure_task

TASK_CALLABLE = "tests.test_tasks:mse_task"


def mse_task() -> Task:
    """A user's task factory (imported by name in the trust tests)."""
    return DistillTask(distance="mse")


def not_a_task() -> object:
    return "cosine, please"


def _encoder(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 48), nn.ReLU(), nn.Linear(48, 8)).eval()


def _inputs(n: int = 6, seed: int = 1) -> list[torch.Tensor]:
    """Batches of inputs alone: no labels anywhere."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(32, 12, generator=g) for _ in range(n)]


def _fidelity(model: nn.Module, original: nn.Module, batches: list) -> float:
    return measure_task(model, batches, DistillTask(), reference=original)["mean cosine"]


# ------------------------------------------------------------------------- fine-tuning


def test_distill_trains_without_labels_and_wins_back_fidelity() -> None:
    original = _encoder()
    train, held_out = _inputs(6, seed=1), _inputs(2, seed=2)
    cut = {"rank": 2, "scope": {"include": ["0"]}}
    model, _ = jointcomp.decompose(copy.deepcopy(original), cut, data=train, task="distill")
    before = _fidelity(model, original, held_out)
    assert before < 0.9, f"rank 2 should hurt the encoder (mean cosine {before:.3f})"
    trainer = Trainer(
        train, {"epochs": 15, "lr": 0.01}, teacher=frozen_copy(original), task=DistillTask()
    )
    fit = trainer(model)
    after = _fidelity(model, original, held_out)
    assert fit.steps == 15 * len(train)
    assert after > before + 0.05, f"mean cosine {before:.3f} → {after:.3f} on held-out inputs"


def test_classification_on_unlabeled_batches_says_use_distill() -> None:
    trainer = Trainer(_inputs(2), {"epochs": 1})
    with pytest.raises(DataError, match="distill"):
        trainer(_encoder())


def test_distill_fine_tuning_needs_the_original() -> None:
    trainer = Trainer(_inputs(2), {"epochs": 1}, task=DistillTask())
    with pytest.raises(DataError, match="teacher"):
        trainer(_encoder())


# ----------------------------------------------------- sensitivities and budgets use the task


def test_taylor_pruning_scores_with_the_distill_loss_on_unlabeled_data() -> None:
    config = {"ratio": 0.5, "importance": "taylor", "scope": {"include": ["0"]}}
    pruned, _ = jointcomp.prune(_encoder(), config, data=_inputs(4), task="distill")
    assert pruned[0].out_features == 24
    with pytest.raises(DataError, match="labeled"):
        jointcomp.prune(_encoder(), config, data=_inputs(4))


def test_bit_budget_sensitivities_use_the_distill_loss() -> None:
    config = {"ptq": {}, "bits": {"budget": {"bytes": 700, "options": [2, 4, 8], "batches": 2}}}
    _, record = jointcomp.quantize(_encoder(), config, data=_inputs(4), task="distill")
    assert {layer["bits"] for layer in record["layers"]} <= {2, 4} | {8}
    with pytest.raises(DataError, match="labeled"):
        jointcomp.quantize(_encoder(), config, data=_inputs(4))


def test_context_loss_is_the_distill_distance_to_the_reference() -> None:
    from jointcomp.context import Context

    model = _encoder()
    batches = _inputs(2)
    same = Context(task=DistillTask(), reference=frozen_copy(model))
    assert same.loss(model, batches) == pytest.approx(0.0, abs=1e-6)
    other = Context(task=DistillTask(), reference=_encoder(seed=5))
    assert other.loss(model, batches) > 0.1


def test_context_loss_runs_the_reference_once_per_batch_list() -> None:
    # a sensitivity sweep measures hundreds of variants against one teacher
    from jointcomp.context import Context

    model, reference = _encoder(), _encoder(seed=5)
    calls = []
    reference.register_forward_hook(lambda *_: calls.append(1))
    context = Context(task=DistillTask(), reference=reference)
    batches = _inputs(3)
    first = context.loss(model, batches)
    with torch.no_grad():
        model[0].weight.mul_(0.5)  # a variant: the loss moves, the teacher is not re-run
    second = context.loss(model, batches)
    assert len(calls) == 3 and second != first
    assert second == pytest.approx(
        Context(task=DistillTask(), reference=reference).loss(model, batches)
    )
    context.loss(model, _inputs(2, seed=9))  # another list: the teacher runs on it
    assert len(calls) == 3 + 3 + 2


def test_kl_distillation_reports_top1_agreement() -> None:
    teacher = torch.randn(64, 10)
    task = DistillTask(distance="kl", temperature=2.0)
    figures = task.summarize(task.measure(teacher, None, teacher))
    assert figures["top-1 agreement"] == 1.0 and figures["mean cosine"] == pytest.approx(1.0)
    assert float(task.loss(teacher, None, teacher)) == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------------ the Python API


def test_compress_under_distill_fine_tunes_towards_the_model_as_given() -> None:
    original = _encoder()
    train, held_out = _inputs(6, seed=1), _inputs(2, seed=2)
    steps = [{"decompose": {"rank": 2, "scope": {"include": ["0"]}}}]
    cut, _ = jointcomp.compress(copy.deepcopy(original), steps, data=train, task="distill")
    tuned, record = jointcomp.compress(
        copy.deepcopy(original),
        steps,
        data=train,
        task=TaskSpec(kind="distill"),
        finetune={"epochs": 15, "lr": 0.01},
        evaluate=lambda m: _fidelity(m, original, held_out),
    )
    assert _fidelity(tuned, original, held_out) > _fidelity(cut, original, held_out) + 0.05
    assert record["stages"][0]["metric"] == _fidelity(tuned, original, held_out)


def test_a_users_task_needs_trust() -> None:
    with pytest.raises(RecipeError, match="trust"):
        make_task(TASK_CALLABLE, trust=False)
    task = make_task(TASK_CALLABLE, trust=True)
    assert isinstance(task, DistillTask) and task.distance == "mse"
    with pytest.raises(RecipeError, match="not a Task"):
        make_task("tests.test_tasks:not_a_task", trust=True)
    steps = [{"quantize": {"ptq": {}}}]
    with pytest.raises(RecipeError, match="trust"):
        jointcomp.compress(_encoder(), steps, data=_inputs(2), task=TASK_CALLABLE)
    model, _ = jointcomp.compress(
        _encoder(), steps, data=_inputs(2), task=TASK_CALLABLE, trust=True
    )
    assert isinstance(model, nn.Module)
    assert make_task(task) is task  # a Task object is the user's own code in hand


# ---------------------------------------------------------------------------------- recipes


def _recipe(**overrides: object) -> dict:
    recipe = {
        "model": {"builder": "zoo:lenet300", "weights": "base.safetensors"},
        "data": {"dataset": "digits", "test_split": 0.2},
        "stages": [{"quantize": {"ptq": {}}}],
    }
    recipe.update(overrides)
    return recipe


def test_recipe_task_section_and_short_form() -> None:
    assert validate_recipe(_recipe()).task.kind == "classify"
    assert validate_recipe(_recipe(task="distill")).task.kind == "distill"
    spec = validate_recipe(_recipe(task={"kind": "distill", "distance": "kl", "output": 0})).task
    assert (spec.distance, spec.output) == ("kl", 0)
    with pytest.raises(RecipeError, match=r"task\.kind"):
        validate_recipe(_recipe(task={"kind": "regress"}))
    with pytest.raises(RecipeError, match=r"task\.distance"):
        validate_recipe(_recipe(task={"kind": "distill", "distance": "l1"}))


def test_recipe_classify_on_unlabeled_text_names_task_distill() -> None:
    text = {"dataset": "text", "root": "corpus.txt", "test_split": 0.2}
    with pytest.raises(RecipeError, match="`task: distill`"):
        validate_recipe(_recipe(data=text))
    assert validate_recipe(_recipe(data=text, task="distill")).data.dataset == "text"


def test_recipe_distill_needs_the_models_weights() -> None:
    model = {"builder": "zoo:lenet300", "weights": "train"}
    with pytest.raises(RecipeError, match=r"model\.weights.*as given"):
        validate_recipe(_recipe(model=model, task="distill"))


def test_recipe_data_fields_for_text_and_images() -> None:
    data = {"dataset": "image-folder", "root": "imgs", "test_split": 0.2, "image_size": [32, 48]}
    data.update(mean=[0.5, 0.5, 0.5], std=0.25)
    spec = validate_recipe(_recipe(data=data)).data
    assert (spec.image_size, spec.std) == ([32, 48], 0.25)
    with pytest.raises(RecipeError, match=r"data\.image_size"):
        validate_recipe(_recipe(data={**data, "image_size": [0, 4]}))
    with pytest.raises(RecipeError, match=r"data\.std"):
        validate_recipe(_recipe(data={**data, "std": [0.5, -1.0]}))
    text = {"dataset": "wordnet", "test_split": 0.2, "max_length": 32, "tokenizer": "tok"}
    assert validate_recipe(_recipe(data=text, task="distill")).data.max_length == 32


def test_unlabeled_data_with_classify_is_refused_before_any_output(tmp_path) -> None:
    from jointcomp.pipeline import run

    data = {"dataset": "tests.test_distill_e2e:unlabeled_digits"}
    recipe = validate_recipe(_recipe(data=data, output=str(tmp_path / "run")))
    with pytest.raises(RecipeError, match="`task: distill`"):
        run(recipe, show_progress=False)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ reports


def _report(metric_name: str | None, value: float) -> dict:
    row = {"params": 10, "bytes": 100, "macs": 5, "latency_ms": 0.1}
    final = {**row, "compression_ratio": 4.0}
    if metric_name is None:  # a report written before rows named their metric
        return {
            "baseline": {**row, "accuracy": 0.9},
            "stages": [],
            "final": {**final, "accuracy": value},
        }
    return {
        "metric_name": metric_name,
        "baseline": {**row, "metric": 1.0},
        "stages": [],
        "final": {**final, "metric": value},
    }


def test_report_tables_name_the_metric() -> None:
    old = _report(None, 0.8512)
    assert summary_headers(old)[-1] == "test top-1"
    assert summary_rows(old)[-1][-1] == "85.12%"
    distill = _report("mean cosine", 0.98765)
    assert summary_headers(distill)[-1] == "test mean cosine"
    assert summary_rows(distill)[-1][-1] == "0.9877"
    assert format_metric("top-1", 0.5) == "50.00%" and format_metric("p5 cosine", None) == "–"


def test_classify_is_the_default_task() -> None:
    assert isinstance(make_task(None), ClassifyTask) and make_task("classify").metric == "top-1"


def test_sweep_table_names_the_metric() -> None:
    from jointcomp.sweep import render_sweep_markdown, sweep_table

    point = {"overrides": {"k": 1}, "bytes": 1000, "compression_ratio": 4.0, "pareto": True}
    old = {"recipe": "r.yaml", "axes": {"k": [1]}, "points": [{**point, "accuracy": 0.9}]}
    headers, rows = sweep_table(old)
    assert headers[-2] == "top-1" and rows[0][-2] == "90.00%"
    new = {
        "recipe": "r.yaml",
        "axes": {"k": [1]},
        "points": [{**point, "metric_name": "mean cosine", "metric": 0.99123}],
    }
    headers, rows = sweep_table(new)
    assert headers[-2] == "mean cosine" and rows[0][-2] == "0.9912"
    assert "| mean cosine |" in render_sweep_markdown(new)
