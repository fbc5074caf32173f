"""A bundled recipe on real data, shrunk to a few hundred batches: LeNet-300-100's joint pipeline
on Fashion-MNIST. Its report's figures are the file's: the test-split top-1 of the module
``jointcomp.load`` returns, and the file's size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import jointcomp
from jointcomp.baseline import recipe_data
from jointcomp.pipeline import run
from jointcomp.recipe import load_recipe
from jointcomp.training import evaluate

from .conftest import assert_file_holds, assert_learned, needs_fashion

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "lenet300-fashion-joint.yaml"
SHRINK = [  # 2 × 60 baseline batches and 60 per stage epoch, of 128 samples: ~400 batches in all
    "data.limit=7680",
    "train.epochs=2",
    "train.max_batches=60",
    "stages.0.prune.finetune.epochs=1",
    "stages.1.decompose.finetune.epochs=1",
    "stages.2.quantize.qat.finetune.epochs=1",
    "audit.batch_sizes=[1]",
    "audit.min_run_time=0.02",
    "audit.html=false",
]


@pytest.mark.slow
@needs_fashion
def test_reported_figures_are_the_files(tmp_path: Path, encoded) -> None:
    recipe = load_recipe(RECIPE, [*SHRINK, f"output={tmp_path / 'run'}"])
    result = run(recipe, show_progress=False)
    report = json.loads((result.out_dir / "report.json").read_text())
    path = result.out_dir / "model.jcz"
    assert report["final"]["bytes"] == path.stat().st_size
    data, _ = recipe_data(recipe)
    assert (len(data.train), len(data.val), len(data.test)) == (7680, 6000, 10000)
    (before,) = encoded
    loaded = assert_file_holds(before, data.test.tensors[0][:64], path)
    again = jointcomp.load(path)  # as a user loads it
    batch = recipe.data.eval_batch_size
    assert evaluate(again, data.test, batch_size=batch) == report["final"]["accuracy"]
    assert evaluate(loaded, data.test, batch_size=batch) == report["final"]["accuracy"]
    # ~400 batches: ~81% test top-1 for the baseline and for the file (chance: 10%), ~80×
    # smaller than fp32
    assert_learned(report, baseline_floor=0.75, final_floor=0.72, max_drop=0.05)
    assert report["final"]["bytes"] < report["baseline"]["bytes"] / 20
