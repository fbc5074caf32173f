"""Recipe validation: every bad key or value is named with its path and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import jointcomp
from jointcomp.config import Scope
from jointcomp.errors import RecipeError
from jointcomp.pipeline import planned_stages
from jointcomp.recipe import (
    apply_override,
    load_recipe,
    parse_override,
    recipe_to_data,
    split_key_path,
    validate_recipe,
)
from jointcomp.stages import STAGES, stage_config

from .conftest import tiny_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def _error(raw: dict) -> str:
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    return str(info.value)


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_bundled_recipes_validate(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    raw = yaml.safe_load(path.read_text())
    assert [c.stage for c in recipe.stages] == [next(iter(e)) for e in raw["stages"]]
    assert all(isinstance(c, STAGES[c.stage].config) for c in recipe.stages)
    assert planned_stages(recipe)[-1].stage == "encode"
    # the recipe form of every validated stage reads back as the same config
    for config in recipe.stages:
        assert stage_config(config.to_entry()) == config
    assert validate_recipe(recipe_to_data(recipe)).stages == recipe.stages


def test_there_are_bundled_recipes() -> None:
    assert len(list(RECIPES.glob("*.yaml"))) >= 5


# the same settings as a Python config object and as a recipe's stage entry
SAME_NAMES = [
    (jointcomp.PruneConfig(ratio=0.3), {"prune": {"ratio": 0.3}}),
    (
        jointcomp.PruneConfig(
            ratio=0.4,
            scope=Scope(exclude=["conv2"], exclude_classifier=False),
            overrides={"conv1": {"ratio": 0.25}},
            finetune={"epochs": 1, "distill": False},
        ),
        {
            "prune": {
                "ratio": 0.4,
                "scope": {"exclude": ["conv2"], "exclude_classifier": False},
                "overrides": {"conv1": {"ratio": 0.25}},
                "finetune": {"epochs": 1, "distill": False},
            }
        },
    ),
    (
        jointcomp.DecomposeConfig(
            format="tucker2", rank=0.5, overrides={"fc*": {"format": "svd", "rank": 4}}
        ),
        {
            "decompose": {
                "format": "tucker2",
                "rank": 0.5,
                "overrides": {"fc*": {"format": "svd", "rank": 4}},
            }
        },
    ),
    (
        jointcomp.DecomposeConfig(budget={"params": 0.3, "batches": 2}),
        {"decompose": {"budget": {"params": 0.3, "batches": 2}}},
    ),
    (
        jointcomp.ShareConfig(basis=8, rank=4, equalize=True),
        {"share": {"basis": 8, "rank": 4, "equalize": True}},
    ),
    (
        jointcomp.FoldConfig(round={"scales": {"bits": 8}, "bias_correction": True}),
        {"fold": {"round": {"scales": {"bits": 8}, "bias_correction": True}}},
    ),
    (jointcomp.QuantizeConfig(), {"quantize": {}}),
    (jointcomp.QuantizeConfig(), {"quantize": {"qat": {}}}),  # qat is the default method
    (
        jointcomp.QuantizeConfig(
            ptq={"refit": False},
            bits={"weights": 4, "biases": 16},
            scope={"exclude": ["fc"]},
            overrides={"conv1": {"bits": 6, "granularity": "tensor"}},
            fold={},
        ),
        {
            "quantize": {
                "ptq": {"refit": False},
                "bits": {"weights": 4, "biases": 16},
                "scope": {"exclude": ["fc"]},
                "overrides": {"conv1": {"bits": 6, "granularity": "tensor"}},
                "fold": {},
            }
        },
    ),
    (
        jointcomp.RegularizeConfig(measure="hoyer", scope={"include": ["fc1"]}),
        {"regularize": {"measure": "hoyer", "scope": {"include": ["fc1"]}}},
    ),
    (
        jointcomp.EncodeConfig(codec="ans", overrides={"fc*": "raw"}),
        {"encode": {"codec": "ans", "overrides": {"fc*": "raw"}}},
    ),
]


@pytest.mark.parametrize("config,entry", SAME_NAMES, ids=lambda v: getattr(v, "stage", None))
def test_python_config_and_recipe_entry_validate_equal(tmp_path: Path, config, entry) -> None:
    recipe = validate_recipe(tiny_recipe(tmp_path, stages=[entry]))
    assert recipe.stages == [config]
    assert stage_config(entry) == config
    assert config.to_entry() == recipe.stages[0].to_entry()
    # a config object may stand in a recipe's stage list as it is
    assert validate_recipe(tiny_recipe(tmp_path, stages=[config])).stages == [config]


def test_same_names_differ_when_settings_differ(tmp_path: Path) -> None:
    recipe = validate_recipe(tiny_recipe(tmp_path, stages=[{"prune": {"ratio": 0.3}}]))
    assert recipe.stages != [jointcomp.PruneConfig(ratio=0.4)]
    assert recipe.stages != [jointcomp.PruneConfig(ratio=0.3, structured=False)]


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


@pytest.mark.parametrize("value", ["test", " Test "])
def test_val_split_test_is_refused_saying_why(tmp_path: Path, value: str) -> None:
    raw = tiny_recipe(tmp_path)
    raw["data"]["val_split"] = value
    msg = _error(raw)
    assert "data.val_split" in msg
    assert "every choice (sensitivities, calibration, budgets) on the test set" in msg
    assert "val_split: 0.1" in msg  # what to write instead


def test_test_split_is_a_fraction_or_null(tmp_path: Path) -> None:
    raw = tiny_recipe(tmp_path)
    raw["data"]["test_split"] = 1.0
    assert "data.test_split" in _error(raw)
    raw["data"]["test_split"] = None
    assert validate_recipe(raw).data.test_split is None  # the official test split


@pytest.mark.parametrize(
    "path", sorted(RECIPES.rglob("*.yaml")), ids=lambda p: str(p.relative_to(RECIPES))
)
def test_bundled_recipes_report_a_held_out_test_split(path: Path) -> None:
    """Every bundled recipe chooses on a validation split carved from its training data; one
    on a dataset without a test split (digits, WordNet's glosses, an image folder) holds one out."""
    data = load_recipe(path).data
    assert 0 < data.val_split < 1
    assert (data.test_split is not None) == (
        data.dataset in ("digits", "wordnet", "image-folder")
    ), path.name


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
    assert "fold" in msg  # the allowed stages are listed


def test_nested_stage_errors_name_the_key_path(tmp_path: Path) -> None:
    stages = [
        {"prune": {"scope": {"includes": ["fc1"]}, "overrides": {"conv1": {"ratio": 2}}}},
        {"quantize": {"qat": {"scaling": "max"}, "bits": {"budget": {"options": [4]}}}},
        {"encode": {"overrides": {"fc*": "zip"}}},
    ]
    msg = _error(tiny_recipe(tmp_path, stages=stages))
    assert "stages.0.prune.scope.includes: unknown key" in msg
    assert "include, exclude, exclude_classifier" in msg
    assert "stages.0.prune.overrides.conv1.ratio: Input should be less than 1 (got 2)" in msg
    assert "stages.1.quantize.qat.scaling" in msg and "'stats'" in msg and "max" in msg
    assert "stages.1.quantize.bits.budget.bytes: required key is missing" in msg
    assert "stages.2.encode.overrides.fc*" in msg and "zip" in msg


def test_errors_inside_overrides_keep_the_pattern_and_list_the_allowed_keys(
    tmp_path: Path,
) -> None:
    """An override's name pattern is the user's key (any case, ``[...]`` classes included);
    an unknown key inside it lists what an override may set."""
    stages = [
        {"prune": {"overrides": {"Conv1": {"ratio": 2}, "layer[12].*": {"ratio": -1}}}},
        {"decompose": {"rank": 2, "overrides": {"fc": {"rank": 2, "skip": True}}}},
        {"encode": {"overrides": {"Fc*": "zip"}}},
    ]
    msg = _error(tiny_recipe(tmp_path, stages=stages))
    assert "stages.0.prune.overrides.Conv1.ratio: Input should be less than 1 (got 2)" in msg
    assert "stages.0.prune.overrides.layer[12].*.ratio: Input should be greater" in msg
    allowed = "format, rank, sparse, tt_cores"  # LayerDecompose's keys
    assert f"stages.1.decompose.overrides.fc.skip: unknown key; allowed keys here: {allowed}" in msg
    assert "stages.2.encode.overrides.Fc*: Input should be" in msg


@pytest.mark.parametrize(
    "stage,old,new",
    [
        ("prune", {"layers": {"conv1": 0.3}}, "overrides"),
        ("prune", {"ignore": ["fc"]}, "scope"),
        ("prune", {"ignore_classifier": True}, "scope"),
        ("decompose", {"rank": 4, "layers": {"fc": {"rank": 2}}}, "overrides"),
        ("decompose", {"rank": 4, "skip": ["fc"]}, "scope"),
        ("decompose", {"rank": 4, "skip_classifier": True}, "scope"),
        ("share", {"layers": ["conv*"]}, "scope"),
        ("regularize", {"skip": ["fc"]}, "scope"),
        ("encode", {"layers": {"fc": "ans"}}, "overrides"),
        ("quantize", {"method": "ptq"}, "ptq"),
        ("quantize", {"keep_float": ["fc"]}, "scope"),
        ("quantize", {"fold_bn": True}, "fold"),
        ("quantize", {"bias_correction": True}, "fold"),
        ("quantize", {"kmeans_iters": 10}, "kmeans"),
        ("quantize", {"finetune": {"epochs": 1}}, "qat"),
    ],
)
def test_removed_keys_are_errors_listing_the_new_ones(
    tmp_path: Path, stage: str, old: dict, new: str
) -> None:
    """Keys of the old vocabulary are unknown keys; the message lists the keys allowed there."""
    msg = _error(tiny_recipe(tmp_path, stages=[{stage: old}]))
    removed = next(k for k in old if k != "rank")
    allowed = ", ".join(STAGES[stage].config.model_fields)
    assert f"stages.0.{stage}.{removed}: unknown key; allowed keys here: {allowed}" in msg
    assert new in STAGES[stage].config.model_fields


def test_quantize_takes_one_method(tmp_path: Path) -> None:
    msg = _error(tiny_recipe(tmp_path, stages=[{"quantize": {"qat": {}, "kmeans": {}}}]))
    assert "stages.0.quantize: give one method, qat, ptq or kmeans, not qat and kmeans" in msg


def test_stage_entry_must_be_single_key_mapping(tmp_path: Path) -> None:
    raw = tiny_recipe(tmp_path, stages=[{"prune": {}, "encode": {}}])
    assert "stages.0: each stage is a mapping with one key" in _error(raw)


def test_encode_must_be_last(tmp_path: Path) -> None:
    misplaced = [{"encode": {}}, {"prune": {}}]
    assert "stages.0.encode: must be the last stage" in _error(tiny_recipe(tmp_path, misplaced))
    # a recipe whose stages were set in Python is checked when it runs
    recipe = validate_recipe(tiny_recipe(tmp_path, stages=[]))
    recipe.stages = [jointcomp.EncodeConfig(), jointcomp.PruneConfig()]
    with pytest.raises(RecipeError, match="stages.0.encode: must be the last stage"):
        planned_stages(recipe)


def test_encode_is_appended_when_missing(tmp_path: Path) -> None:
    recipe = validate_recipe(tiny_recipe(tmp_path, stages=[{"prune": {}}]))
    assert [s.stage for s in planned_stages(recipe)] == ["prune", "encode"]


def test_set_overrides(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tmp_path)))
    recipe = load_recipe(path, ["stages.0.prune.ratio=0.3", "data.limit=100", "train.lr=1e-4"])
    assert recipe.stages[0] == jointcomp.PruneConfig(ratio=0.3, finetune={"epochs": 1})
    assert recipe.data.limit == 100
    assert recipe.train.lr == pytest.approx(1e-4)
    with pytest.raises(RecipeError, match="stages.0.prune.ratio"):
        load_recipe(path, ["stages.0.prune.ratio=2"])
    with pytest.raises(RecipeError, match="index out of range"):
        load_recipe(path, ["stages.7.prune.ratio=0.2"])
    with pytest.raises(RecipeError, match="expected KEY.PATH=VALUE"):
        parse_override("stages.0.prune.ratio")


def test_setting_a_target_goal_replaces_the_recipes_goal(tmp_path: Path) -> None:
    # a sweep of sizes over a max_drop recipe: --set target.bytes=N alone must do
    path = tmp_path / "r.yaml"
    data = tiny_recipe(tmp_path, stages=[{"quantize": {"ptq": {}}}])
    data["target"] = {"max_drop": 1.0, "tries": 2}
    path.write_text(yaml.safe_dump(data))
    recipe = load_recipe(path, ["target.bytes=5000"])
    assert (recipe.target.bytes, recipe.target.max_drop, recipe.target.tries) == (5000, None, 2)
    assert load_recipe(path, ["target.ratio=20"]).target.ratio == 20
    assert load_recipe(path, ["target.tries=3"]).target.max_drop == 1.0  # not a goal: kept
    with pytest.raises(RecipeError, match="exactly one of bytes, ratio or max_drop"):
        load_recipe(path, ["target.max_drop=null"])


def test_override_keys_with_dots_go_in_brackets(tmp_path: Path) -> None:
    assert split_key_path("stages.1.quantize.overrides[*.coef].bits") == [
        "stages",
        1,
        "quantize",
        "overrides",
        "*.coef",
        "bits",
    ]
    assert split_key_path('o["a.b"][c].0') == ["o", "a.b", "c", 0]
    for bad in ("a..b", "a.", "a[b", "a]b", "a[]", "a[b]c"):
        with pytest.raises(ValueError):
            split_key_path(bad)
    with pytest.raises(RecipeError, match="bad key path"):
        parse_override("stages..x=1")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tmp_path, stages=[{"quantize": {"ptq": {}}}])))
    recipe = load_recipe(path, ["stages.0.quantize.overrides[fc*].bits=6"])
    assert recipe.stages[0].overrides["fc*"].bits == 6


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
