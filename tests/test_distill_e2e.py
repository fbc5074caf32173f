"""Label-free distillation end to end through ``jointcomp run``: a recipe with ``task: distill``
on data without labels compresses a model as given (its weights file), fine-tunes towards it,
and reports the fidelity of the written file — by name, measured on the module the file
decodes to, which is bit for bit the model the run encoded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file, save_file
from torch.utils.data import TensorDataset

import jointcomp
from jointcomp.cli import cli
from jointcomp.data import load_data
from jointcomp.models import build_model
from jointcomp.tasks import DistillTask
from jointcomp.training import fit, measure_task
from jointcomp.training.specs import TrainSpec

from .conftest import Encoded, assert_file_holds, assert_same_tensors, spy_encode
from .tiny_transformers import WORDS, tiny_batch, write_tiny_sentence_transformer

KWARGS = {"in_channels": 1, "image_size": 8, "num_classes": 10}


def unlabeled_digits(seed: int = 0) -> dict:
    """Digits with their labels dropped: every split holds images alone."""
    bundle = load_data("digits", val_split=0.1, seed=seed, test_split=0.2)

    def images(split) -> TensorDataset:
        return TensorDataset(torch.stack([split[i][0] for i in range(len(split))]))

    return {
        "train": images(bundle.train),
        "val": images(bundle.val),
        "test": images(bundle.test),
        "num_classes": 0,
    }


@pytest.fixture(scope="module")
def distilled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Encoded, str]:
    """A small CNN trained on labeled digits (the model a user holds, saved as safetensors),
    then compressed by a distill recipe on the same images without labels."""
    root = tmp_path_factory.mktemp("distill")
    torch.manual_seed(0)
    model = build_model("zoo:small_cnn", KWARGS)
    labeled = load_data("digits", val_split=0.1, seed=0, test_split=0.2)
    fit(model, labeled.train, TrainSpec(epochs=2, lr=0.003), batch_size=64, seed=0)
    weights = root / "small_cnn.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    recipe = {
        "name": "distill",
        "threads": 1,
        "model": {"builder": "zoo:small_cnn", "kwargs": KWARGS, "weights": str(weights)},
        "data": {"dataset": "tests.test_distill_e2e:unlabeled_digits", "batch_size": 64},
        "task": "distill",
        "train": {"epochs": 3, "lr": 0.003},
        "stages": [
            {
                "decompose": {
                    "scope": {"include": ["block2.0", "block3.0"]},
                    "format": "tucker2",
                    "rank": 0.25,
                }
            },
            {"quantize": {"ptq": {}, "bits": {"weights": 6, "factors": 6}}},
            {"encode": {"codec": "auto"}},
        ],
        "output": str(root / "run"),
        "audit": {"batch_sizes": [1], "min_run_time": 0.02},
    }
    path = root / "distill.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with spy_encode() as seen:
        result = CliRunner().invoke(cli, ["run", str(path), "-q"])
    assert result.exit_code == 0, result.output
    (before,) = seen
    return root / "run", before, result.output


def test_distill_report_names_mean_cosine(distilled: tuple[Path, Encoded, str]) -> None:
    out, _, output = distilled
    assert "test mean cosine" in output and "test top-1" not in output
    report = json.loads((out / "report.json").read_text())
    assert (report["task"], report["metric_name"]) == ("distill", "mean cosine")
    final, base = report["final"], report["baseline"]
    assert "accuracy" not in final  # no labels: nothing claims a top-1
    assert set(final["metrics"]) == {"mean cosine", "p5 cosine", "relative error"}
    assert base["metric"] == pytest.approx(1.0, abs=1e-5)  # the original against itself
    # rank 1/4 of two convs, 6 bits, fine-tuned without labels: ~0.95 here
    assert 0.9 < final["metric"] < 1.0, final["metrics"]
    assert final["metric_drop"] == pytest.approx(base["metric"] - final["metric"])
    md = (out / "report.md").read_text()
    assert "mean cosine" in md and "p5 cosine" in md and "test top-1" not in md
    state = json.loads((out / "state.json").read_text())
    assert all(s["metric_name"] == "mean cosine" for s in state["stages"])
    assert all("val_accuracy" not in s for s in state["stages"])


def _original(out: Path) -> torch.nn.Module:
    model = build_model("zoo:small_cnn", KWARGS)
    model.load_state_dict(load_file(str(out.parent / "small_cnn.safetensors")))
    return model.eval()


def test_distill_fine_tuning_recovered_fidelity(distilled: tuple[Path, Encoded, str]) -> None:
    """The decompose stage's checkpoint, fine-tuned on unlabeled images, is closer to the
    original than the same factorization left untrained."""
    out, _, _ = distilled
    report = json.loads((out / "report.json").read_text())
    test = unlabeled_digits()["test"]
    original = _original(out)
    config = {"scope": {"include": ["block2.0", "block3.0"]}, "format": "tucker2", "rank": 0.25}
    untrained, _ = jointcomp.decompose(_original(out), config, data=test, task="distill")
    cut = measure_task(untrained, test, DistillTask(), reference=original)["mean cosine"]
    checkpoint = jointcomp.load(out / "checkpoints/00-decompose.jcz")
    tuned = measure_task(checkpoint, test, DistillTask(), reference=original)["mean cosine"]
    assert tuned == report["stages"][0]["metric"]  # what the audit reported for the stage
    assert tuned > cut + 0.01, f"mean cosine {cut:.4f} untrained, {tuned:.4f} fine-tuned"


def test_distill_file_is_the_model_the_audit_measured(
    distilled: tuple[Path, Encoded, str],
) -> None:
    out, before, _ = distilled
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    loaded = assert_file_holds(before, x, out / "model.jcz")
    report = json.loads((out / "report.json").read_text())
    figures = measure_task(
        loaded, unlabeled_digits()["test"], DistillTask(), reference=_original(out)
    )
    assert figures == report["final"]["metrics"]


def test_audit_command_re_measures_fidelity(distilled: tuple[Path, Encoded, str]) -> None:
    out, _, _ = distilled
    recipe = out.parent / "distill.yaml"
    result = CliRunner().invoke(
        cli, ["audit", str(out / "model.jcz"), "--recipe", str(recipe), "--out", str(out / "re")]
    )
    assert result.exit_code == 0, result.output
    assert "test mean cosine" in result.output
    again = json.loads((out / "re" / "report.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert again["final"]["metrics"] == report["final"]["metrics"]


# --------------------------------------------- a sentence-transformers folder on plain text


def test_sentence_embedder_distilled_on_unlabeled_text(tmp_path: Path) -> None:
    """A tiny sentence-transformers folder on a text file, one sentence a line: the tokenizer
    is the model folder's, the task is distill, no labels exist; the report names mean cosine
    and the file loads — without trust — into the model the run encoded, whose embeddings the
    audit measured."""
    folder = write_tiny_sentence_transformer(tmp_path / "model")
    rng = torch.Generator().manual_seed(0)
    picks = torch.randint(len(WORDS), (240, 8), generator=rng).tolist()
    (tmp_path / "corpus.txt").write_text(
        "\n".join(" ".join(WORDS[i] for i in row) for row in picks)
    )
    recipe = {
        "name": "embedder",
        "threads": 1,
        "model": {"builder": f"sentence-transformers:{folder}"},
        "data": {
            "dataset": "text",
            "root": str(tmp_path / "corpus.txt"),
            "test_split": 0.2,
            "max_length": 16,
            "batch_size": 32,
        },
        "task": {"kind": "distill", "distance": "cosine"},
        "train": {"epochs": 1, "lr": 0.001},
        "stages": [
            {"decompose": {"rank": 0.5, "scope": {"include": ["*intermediate.dense"]}}},
            {"quantize": {"ptq": {}, "bits": {"weights": 4}}},
        ],
        "output": str(tmp_path / "run"),
        "audit": {"batch_sizes": [1], "min_run_time": 0.02, "latency": False},
    }
    path = tmp_path / "embedder.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with spy_encode() as seen:
        result = CliRunner().invoke(cli, ["run", str(path), "-q"])
    assert result.exit_code == 0, result.output
    assert "test mean cosine" in result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["metric_name"] == "mean cosine" and "accuracy" not in report["final"]
    assert 0.5 < report["final"]["metric"] <= 1.0 + 1e-6
    (before,) = seen
    loaded = jointcomp.load(tmp_path / "run" / "model.jcz")  # no trust: no user code runs
    assert_same_tensors(before.model.state_dict(), loaded.state_dict())
    batch = tiny_batch(folder, max_length=16)
    with torch.no_grad():
        assert torch.equal(loaded(**batch), before.model(**batch))
    text = load_data(
        "text", tmp_path / "corpus.txt", test_split=0.2, tokenizer=folder, max_length=16
    )
    original = build_model(f"sentence-transformers:{folder}")
    figures = measure_task(loaded, text.test, DistillTask(), reference=original)
    assert figures == report["final"]["metrics"]  # the audit measured this very module
