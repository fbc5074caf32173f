"""A recipe's target through the pipeline and the CLI: `jointcomp plan` prints the allocation
without running the stages; `jointcomp run` re-plans before each planned stage, measures the
written file against the target and reports predicted vs measured bytes."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from jointcomp.cli import cli
from jointcomp.pipeline import run
from jointcomp.recipe import validate_recipe

from .conftest import tiny_recipe

FAST = {"batches": 1, "batch_size": 64}  # sensitivities on one validation batch
TRAIN = {"epochs": 1, "lr": 0.003}
STAGES = [
    {"prune": {"ratio": 0.3, "finetune": {"epochs": 1}}},
    {"quantize": {"ptq": {}, "bits": {"biases": 16}}},
    {"encode": {"codec": "auto"}},
]


def test_plan_command_prints_the_allocation_per_layer(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        yaml.safe_dump(tiny_recipe(tmp_path, STAGES, target={"bytes": 6000, **FAST}, train=TRAIN))
    )
    result = CliRunner().invoke(cli, ["plan", str(path)])
    assert result.exit_code == 0, result.output
    for text in ("block2.0", "predicted bytes", "bit", "for a file target of 6,000 B"):
        assert text in result.output, text
    assert not (tmp_path / "run").exists()  # nothing ran
    as_json = CliRunner().invoke(cli, ["plan", str(path), "--json"])
    plan = json.loads(as_json.output[as_json.output.index("{") :])
    assert plan["predicted_bytes"] <= 6000 and {c["name"] for c in plan["layers"]} >= {"fc"}


def test_plan_command_refuses_a_recipe_without_target(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tmp_path, STAGES)))
    result = CliRunner().invoke(cli, ["plan", str(path)])
    assert result.exit_code != 0 and "no target" in result.output


def test_run_meets_a_byte_target_and_reports_predicted_vs_measured(tmp_path: Path) -> None:
    recipe = validate_recipe(
        tiny_recipe(tmp_path, STAGES, target={"bytes": 6000, "tries": 2, **FAST}, train=TRAIN)
    )
    result = run(recipe, show_progress=False)
    plan = result.report["plan"]
    assert result.model_path.stat().st_size <= 6000 and plan["met"]
    assert plan["file"]["measured_bytes"] == result.model_path.stat().st_size
    assert plan["planning_seconds"] > 0 and plan["tries"][0]["plans"]
    assert all(r["measured_bytes"] for r in plan["layers"])
    markdown = (result.out_dir / "report.md").read_text()
    assert "predicted vs measured bytes" in markdown
    assert 'id="planned-vs-measured"' in (result.out_dir / "report.html").read_text()

    assert plan["tries"][0]["restarted_from"] == "0-prune"


def test_a_second_try_reuses_the_stages_whose_settings_did_not_change(tmp_path: Path) -> None:
    # magnitude pruning is not planned: its settings never change, so a second try (the file
    # came out far under a generous target) starts from its checkpoint; quantize is planned
    # again with the per-layer corrections the first file measured (and reused when its
    # settings came out the same); encode always runs
    stages = [
        {"prune": {"ratio": 0.3, "structured": False, "finetune": {"epochs": 1}}},
        {"quantize": {"ptq": {}, "bits": {"biases": 16}}},
        {"encode": {"codec": "auto"}},
    ]
    target = {"bytes": 400_000, "tries": 2, "bits": [2, 3, 4], **FAST}
    recipe = validate_recipe(tiny_recipe(tmp_path, stages, target=target, train=TRAIN))
    result = run(recipe, show_progress=False)
    first, second = result.report["plan"]["tries"]
    assert first["restarted_from"] == "0-prune" and not first["reused"]
    assert second["reused"][0] == "0-prune" and second["restarted_from"] != "0-prune"
    assert second["stage_seconds"] < first["stage_seconds"]
    assert second["corrections"] and set(second["corrections"]) >= {"fc"}
    kept = result.out_dir / "tries"
    name = "checkpoints/00-prune.jcz"
    assert (kept / "01" / name).read_bytes() == (kept / "02" / name).read_bytes()
    state = json.loads((result.out_dir / "state.json").read_text())
    assert state["stages"][0].get("reused") in (None, "try 1")
