"""End to end: regularize → decompose → encode through ``jointcomp.run`` on digits; the regularizer
measures lower their penalty; a Hugging Face BERT's Linear layers through the stage and a file."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import jointcomp.nn as jn
from jointcomp.data.bundle import DataBundle
from jointcomp.pipeline import run
from jointcomp.recipe import validate_recipe
from jointcomp.stages.encode import save

from .conftest import Encoded, assert_file_holds, assert_learned, tiny_recipe
from .test_decompose import LAYER_KEYS, random_data, run_stage


def test_regularize_then_decompose_recipe_runs_end_to_end(tmp_path: Path, encoded) -> None:
    stages = [
        {
            "regularize": {
                "measure": "effective_rank",
                "weight": 1.0,
                "scope": {"exclude_classifier": True},
                "finetune": {"epochs": 1},
            }
        },
        {
            "decompose": {
                "scope": {"include": ["block*", "fc"]},
                "overrides": {
                    "block*": {"format": "tucker2", "rank": "indicator:0.5", "sparse": 0.02},
                    "fc": {"format": "svd", "rank": 4},
                },
                "finetune": {"epochs": 1},
                "timing_seconds": 0.005,
            }
        },
        {"encode": {}},
    ]
    result = run(validate_recipe(tiny_recipe(tmp_path, stages)), show_progress=False)
    names = [s["name"] for s in result.report["stages"]]
    assert names == ["regularize", "decompose", "encode"]
    reg = result.report["stages"][0]["record"]
    assert reg["measure"] == "effective_rank" and len(reg["layers"]) == 3
    dec = result.report["stages"][1]["record"]
    assert dec["layers"] and all(set(i) >= LAYER_KEYS for i in dec["layers"])
    assert dec["params_after"] < dec["params_before"]
    assert result.report["final"]["nonzero_params"] < result.report["baseline"]["params"]
    # the file decodes to the model the stages left, tensors and outputs bit-identical
    (before,) = encoded
    loaded = assert_file_holds(before, torch.randn(4, 1, 8, 8), result.model_path)
    assert any(isinstance(m, jn.LowRankPlusSparse) for m in loaded.modules())
    # small_cnn after 2 epochs on digits: ~87% test top-1; regularized and decomposed: ~78%
    assert_learned(result.report, baseline_floor=0.75, final_floor=0.65, max_drop=0.2)


@pytest.mark.parametrize("measure", ["effective_rank", "nuclear", "hoyer", "gini"])
def test_regularizer_lowers_its_measure(measure: str) -> None:
    stage = {
        "regularize": {
            "measure": measure,
            "weight": 5.0,
            "scope": {"include": ["fc1", "fc2"]},
            "finetune": {"epochs": 3, "lr": 0.01, "distill": False},
        }
    }
    kwargs = {"in_channels": 1, "num_classes": 10, "image_size": 8, "hidden": [32, 16]}
    _, _, record = run_stage("zoo:lenet300", kwargs, random_data((1, 8, 8)), stage)
    assert [i["name"] for i in record["layers"]] == ["fc1", "fc2"]
    # normalized: every layer starts at 1, so the mean penalty must fall below 1
    assert record["penalty_after"] < 0.97


def make_bert() -> nn.Module:
    """A tiny BERT classifier (the builder a file names)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=3,
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config).eval()


def test_bert_linear_layers_decompose_and_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    model = make_bert()
    ids = torch.randint(0, 50, (8, 12), generator=torch.Generator().manual_seed(0))
    tokens = TensorDataset(ids, torch.zeros(8, dtype=torch.long))
    data = DataBundle("tokens", tokens, tokens, tokens, (12,), 3)
    stage = {
        "decompose": {
            "format": "svd",
            "rank": 0.5,
            "overrides": {
                "*.intermediate.dense": {"rank": 8, "sparse": 0.05},
                "*.attention.*": {"format": "tt", "rank": 4},
            },
            "finetune": {"epochs": 0},
            "timing_seconds": 0.002,
        }
    }
    builder = "tests.test_decompose_e2e:make_bert"
    _, out, record = run_stage(builder, {}, data, stage, model)
    formats = {i["name"]: i["format"] for i in record["layers"]}
    assert formats["bert.encoder.layer.0.intermediate.dense"] == "svd+sparse"
    assert formats["bert.encoder.layer.1.attention.self.query"] == "tt"
    assert formats["classifier"] == "svd"
    path = tmp_path / "bert.jcz"
    before = Encoded(copy.deepcopy(out).eval(), "f32", path)
    save(out, path, builder=builder, kwargs={})
    assert_file_holds(before, ids)
