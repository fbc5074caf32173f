"""The bundled all-MiniLM-L6-v2 recipes run as written on a BERT of the same structure: a tiny
sentence-transformers folder stands in for the real one (no download in tests) and a small text
file for WordNet; every stage's settings — the FFN scope patterns, the factorized word
embeddings, GPTQ under a bit budget with the position tables pinned, QAT — are the recipes' own.
The file loads without trust into the module the run encoded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import jointcomp
from jointcomp.cli import cli

from .tiny_transformers import WORDS, tiny_batch, write_tiny_sentence_transformer

ROOT = Path(__file__).resolve().parent.parent


def _recipe(tmp_path: Path, name: str) -> Path:
    folder = write_tiny_sentence_transformer(tmp_path / "model")
    rng = torch.Generator().manual_seed(0)
    picks = torch.randint(len(WORDS), (300, 8), generator=rng).tolist()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(WORDS[i] for i in row) for row in picks))
    raw = yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text())
    raw["threads"] = 1
    raw["model"]["builder"] = f"sentence-transformers:{folder}"
    raw["data"].update(
        {"dataset": "text", "root": str(corpus), "test_split": 0.2, "val_split": 0.2,
         "max_length": 16, "limit": None}
    )  # fmt: skip
    raw["train"] = {**raw.get("train", {}), "max_batches": 2}
    for stage in raw["stages"]:
        ((kind, config),) = stage.items()
        if kind == "decompose" and "embeddings" in config:
            config["embeddings"]["rank"] = 16  # the tiny table is 32 wide
        if kind == "quantize" and "qat" in config:
            config["qat"]["finetune"]["max_batches"] = 2
    if "target" in raw:
        raw["target"].update({"bytes": 16_000, "tries": 1, "batch_size": 16})
    raw["output"] = str(tmp_path / "run")
    raw["audit"] = {"batch_sizes": [1], "min_run_time": 0.02, "latency": False}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("name", ["minilm-ptq", "minilm-distill", "minilm-target"])
def test_minilm_recipe_runs_on_a_tiny_bert(tmp_path: Path, name: str) -> None:
    path = _recipe(tmp_path, name)
    result = CliRunner().invoke(cli, ["run", str(path), "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["metric_name"] == "mean cosine"
    assert 0.0 < report["final"]["metric"] <= 1.0 + 1e-6
    loaded = jointcomp.load(tmp_path / "run" / "model.jcz")  # no trust needed
    batch = tiny_batch(tmp_path / "model", max_length=16)
    with torch.no_grad():
        out = loaded(**batch)
    assert out.shape == (len(batch["input_ids"]), 32)
    table = {e.get("n") for e in jointcomp.open_file(tmp_path / "run" / "model.jcz").entries}
    assert any("word_embeddings" in str(n) for n in table)


def test_the_target_recipe_plans_the_word_embedding_table(tmp_path: Path) -> None:
    # the table is half of MiniLM: the planner chooses its rank and bits with the layers'
    path = _recipe(tmp_path, "minilm-target")
    result = CliRunner().invoke(cli, ["run", str(path), "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    first = report["plan"]["tries"][-1]["plans"][0]  # made on the model as given
    (table,) = [c for c in first["layers"] if c["name"].endswith("word_embeddings")]
    assert table["format"] == "table" and table["bits"] is not None
    size = (tmp_path / "run" / "model.jcz").stat().st_size
    assert size <= 16_000
    model = jointcomp.load(tmp_path / "run" / "model.jcz")
    words = model.transformer.embeddings.word_embeddings  # as the plan chose: factorized or whole
    if table["ranks"]:
        assert words.rank == table["ranks"][0]
    else:
        assert isinstance(words, torch.nn.Embedding)
