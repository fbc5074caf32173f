"""Recipe validation: every bad key or value is named with its path and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jointcomp.errors import RecipeError
from jointcomp.pipeline import planned_stages
from jointcomp.recipe import apply_override, load_recipe, parse_override, validate_recipe

from .conftest import tiny_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def _error(raw: dict) -> str:
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    return str(info.value)


def test_bundled_recipes_validate() -> None:
    files = sorted(RECIPES.glob("*.yaml"))
    assert files, "no bundled recipes"
    for path in files:
        recipe = load_recipe(path)
        assert recipe.name == path.stem
        assert planned_stages(recipe)[-1].name == "encode"


def test_unknown_key_names_path_and_allowed(tmp_path: Path) -> None:
    raw = tiny_recipe(tmp_path)
    raw["train"]["epochz"] = 3
    msg = _error(raw)
    assert "train.epochz: unknown key" in msg
    assert "epochs" in msg and "optimizer" in msg


def test_bad_values_name_each_path(tmp_path: Path) -> None:
    raw = tiny_recipe(tmp_path)
    raw["train"]["optimizer"] = "rmsprop"
    raw["data"]["val_split"] = 1.5
    raw["model"]["builder"] = "lenet5"
    msg = _error(raw)
    assert "train.optimizer" in msg and "'adam'" in msg and "rmsprop" in msg
    assert "data.val_split" in msg
    assert "model.builder" in msg and "zoo:NAME" in msg


def test_missing_required_key(tmp_path: Path) -> None:
    raw = tiny_recipe(tmp_path)
    del raw["data"]["dataset"]
    assert "data.dataset: required key is missing" in _error(raw)


def test_stage_errors_name_stage_path(tmp_path: Path) -> None:
    raw = tiny_recipe(tmp_path, stages=[{"prune": {"ratio": 1.5, "bogus": 1}}, {"squash": {}}])
    msg = _error(raw)
    assert "stages.0.prune.ratio" in msg
    assert "stages.0.prune.bogus: unknown key" in msg
    assert "stages.1.squash: unknown stage" in msg and "prune" in msg


def test_stage_entry_must_be_single_key_mapping(tmp_path: Path) -> None:
    raw = tiny_recipe(tmp_path, stages=[{"prune": {}, "encode": {}}])
    assert "stages.0: each stage is a mapping with one key" in _error(raw)


def test_encode_must_be_last(tmp_path: Path) -> None:
    recipe = validate_recipe(tiny_recipe(tmp_path, stages=[{"encode": {}}, {"prune": {}}]))
    with pytest.raises(RecipeError, match="stages.0.encode: must be the last stage"):
        planned_stages(recipe)


def test_encode_is_appended_when_missing(tmp_path: Path) -> None:
    recipe = validate_recipe(tiny_recipe(tmp_path, stages=[{"prune": {}}]))
    assert [s.name for s in planned_stages(recipe)] == ["prune", "encode"]


def test_set_overrides(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tmp_path)))
    recipe = load_recipe(path, ["stages.0.prune.ratio=0.3", "data.limit=100", "train.lr=1e-4"])
    assert recipe.stages[0].params.ratio == 0.3
    assert recipe.data.limit == 100
    assert recipe.train.lr == pytest.approx(1e-4)
    with pytest.raises(RecipeError, match="stages.0.prune.ratio"):
        load_recipe(path, ["stages.0.prune.ratio=2"])
    with pytest.raises(RecipeError, match="index out of range"):
        load_recipe(path, ["stages.7.prune.ratio=0.2"])
    with pytest.raises(RecipeError, match="expected KEY.PATH=VALUE"):
        parse_override("stages.0.prune.ratio")


def test_override_creates_missing_mappings() -> None:
    raw: dict = {"train": {}}
    apply_override(raw, ["train", "distill", "alpha"], 0.2)
    assert raw == {"train": {"distill": {"alpha": 0.2}}}


def test_malformed_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    top = tmp_path / "list.yaml"
    top.write_text("- a\n- b\n")
    with pytest.raises(RecipeError, match="a recipe is a mapping"):
        load_recipe(top)
