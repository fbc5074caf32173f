"""Hugging Face models a user has: a transformers folder (``hf:DIR``), a sentence-transformers
folder as one embedding module, and their files, which rebuild without the folder, without
trust, and never from a hostile config. Tiny models written from configs (tests/
tiny_transformers.py); nothing is downloaded."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

pytest.importorskip("transformers")

import transformers

import jointcomp
from jointcomp.errors import FormatError, ModelError
from jointcomp.models import SentenceEmbedder, build_model, file_builder, is_allowed_builder
from jointcomp.models.resolve import check_builder
from tests.hostile import parts, reseal
from tests.tiny_transformers import (
    tiny_batch,
    write_tiny_bert,
    write_tiny_sentence_transformer,
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {
        "bert": write_tiny_bert(root / "bert"),
        "classifier": write_tiny_bert(
            root / "classifier", "BertForSequenceClassification", seed=1, num_labels=3
        ),
        "st": write_tiny_sentence_transformer(root / "st", normalize=True, seed=2),
    }


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_hf_folder_builds_the_class_its_config_names_with_its_weights(folders):
    model = build_model(f"hf:{folders['classifier']}")
    assert type(model) is transformers.BertForSequenceClassification
    assert not model.training
    stored = load_file(str(folders["classifier"] / "model.safetensors"))
    state = model.state_dict()
    for key, tensor in stored.items():
        assert torch.equal(state[key], tensor), key
    logits = model(**tiny_batch(folders["classifier"])).logits
    assert logits.shape == (8, 3)

    # an Auto class by name: the class it builds for the model type, the weights under its
    # prefix in the folder
    base = build_model(f"hf:{folders['classifier']}", {"architecture": "AutoModel"})
    assert type(base) is transformers.BertModel
    assert torch.equal(
        base.state_dict()["encoder.layer.0.output.dense.weight"],
        stored["bert.encoder.layer.0.output.dense.weight"],
    )


def test_hf_folder_without_architectures_builds_the_base_model(folders, tmp_path):
    folder = shutil.copytree(folders["bert"], tmp_path / "bare")
    config = json.loads((folder / "config.json").read_text())
    del config["architectures"]
    (folder / "config.json").write_text(json.dumps(config))
    assert type(build_model(f"hf:{folder}")) is transformers.BertModel


def test_hf_folder_refuses_missing_weights_and_pickles(folders, tmp_path):
    with pytest.raises(ModelError, match="not a local model folder"):
        build_model(f"hf:{tmp_path / 'nowhere'}")  # a hub name is never looked up
    folder = shutil.copytree(folders["bert"], tmp_path / "pickled")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(ModelError, match=r"pytorch_model\.bin, a pickle"):
        build_model(f"hf:{folder}")
    # weights that do not fill the class: refused, not left at random
    with pytest.raises(ModelError, match="do not fill"):
        build_model(f"hf:{folders['bert']}", {"architecture": "BertForSequenceClassification"})


def _manual_embeddings(folder: Path, batch: dict, mode: str, normalize: bool) -> torch.Tensor:
    """What sentence-transformers computes, written out: the transformers forward, pooling
    over the kept tokens, L2 normalization."""
    model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    tokens = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    if mode == "mean":
        out = (tokens * mask).sum(1) / mask.sum(1)
    elif mode == "cls":
        out = tokens[:, 0]
    else:
        out = tokens.masked_fill(mask == 0, -1e9).max(1).values
    return F.normalize(out, dim=1) if normalize else out


@pytest.mark.parametrize(("mode", "normalize"), [("mean", True), ("cls", False), ("max", True)])
def test_sentence_folder_is_one_module_giving_the_embeddings(tmp_path, mode, normalize):
    folder = write_tiny_sentence_transformer(
        tmp_path / "st", normalize=normalize, pooling=mode, normalize_folder=False
    )
    model = build_model(f"sentence-transformers:{folder}")
    assert isinstance(model, SentenceEmbedder)
    assert model.pooling == (mode,) and model.normalize is normalize
    batch = tiny_batch(folder)
    assert batch["attention_mask"].min() == 0  # padded: the pooling must skip the padding
    with torch.no_grad():
        got = model(**batch)
        assert torch.equal(model(batch), got)  # a dict batch as one argument too
        want = _manual_embeddings(folder, batch, mode, normalize)
    assert got.shape == (8, 32)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_sentence_folder_refuses_modules_it_does_not_know(folders, tmp_path):
    folder = shutil.copytree(folders["st"], tmp_path / "dense")
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "x.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelError, match="Transformer, Pooling and optionally Normalize"):
        build_model(f"sentence-transformers:{folder}")
    with pytest.raises(ModelError, match="not a sentence-transformers folder"):
        build_model(f"sentence-transformers:{folders['bert']}")


@pytest.mark.parametrize(
    ("kind", "builder"),
    [
        ("st", "sentence-embedder:BertModel"),
        ("classifier", "transformers:BertForSequenceClassification"),
    ],
)
def test_file_rebuilds_without_the_folder_and_without_trust(folders, tmp_path, kind, builder):
    folder = shutil.copytree(folders[kind], tmp_path / "model")
    scheme = "sentence-transformers" if kind == "st" else "hf"
    model = build_model(f"{scheme}:{folder}")
    batch = tiny_batch(folder)
    with torch.no_grad():
        before = model(**batch)
    path = tmp_path / "model.jcz"
    jointcomp.save(model, path, builder=f"{scheme}:{folder}")
    shutil.rmtree(folder)

    artifact = jointcomp.open_file(path)  # trust=False: the builder is on the allow-list
    assert artifact.manifest.builder == builder and is_allowed_builder(builder)
    assert "model_type" in artifact.manifest.kwargs["config"]
    loaded = artifact.model
    assert type(loaded) is type(model)
    _same_state(loaded, model)
    with torch.no_grad():
        after = loaded(**batch)
    after = after if isinstance(after, torch.Tensor) else after.logits
    before = before if isinstance(before, torch.Tensor) else before.logits
    assert torch.equal(after, before)


def test_portable_form_stores_the_pooling_settings(folders):
    builder, kwargs = file_builder(f"sentence-transformers:{folders['st']}", {})
    assert builder == "sentence-embedder:BertModel"
    assert kwargs["pooling"] == ["mean"] and kwargs["normalize"] is True
    assert kwargs["max_seq_length"] == 64
    assert kwargs["config"]["hidden_size"] == 32
    json.dumps(kwargs)  # plain JSON
    # default label names are not stored, only the class count that shapes the model
    builder, kwargs = file_builder(f"hf:{folders['classifier']}", {})
    assert builder == "transformers:BertForSequenceClassification"
    assert kwargs["config"]["num_labels"] == 3 and "id2label" not in kwargs["config"]
    # other builders are stored as they are
    assert file_builder("zoo:lenet300", {"num_classes": 3}) == ("zoo:lenet300", {"num_classes": 3})


@pytest.fixture(scope="module")
def bert_file(folders, tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("file") / "bert.jcz"
    jointcomp.save(build_model(f"hf:{folders['bert']}"), path, builder=f"hf:{folders['bert']}")
    return path.read_bytes()


def _big(config: dict) -> None:
    config.update(hidden_size=1 << 16, num_attention_heads=4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(auto_map={"AutoModel": "evil.Model"}), "auto_map"),
        (lambda c: c.update(text_config={"auto_map": {"AutoModel": "x.Y"}}), "auto_map"),
        (lambda c: c.update(quantization_config={"quant_method": "bnb"}), "quantization_config"),
        (lambda c: c.update(use_pretrained_backbone=True), "pretrained"),
        (lambda c: c.update(_attn_implementation="kernels-community/x"), "never fetched"),
        (_big, "more than"),
        (lambda c: c.update(vocab_size=1 << 30), "more than"),
        (lambda c: c.update(num_hidden_layers=1 << 20), "out of bounds"),
        (lambda c: c.update(max_position_embeddings=1 << 40), "out of bounds"),
        (lambda c: c.update(model_type="no_such_type"), "built-in model types"),
        (lambda c: c.update(model_type="llama"), "not allowed for model type"),
    ],
)
def test_hostile_config_in_a_file_is_refused_before_building(bert_file, change, message):
    header, payload = parts(bert_file)
    change(header["model"]["kwargs"]["config"])
    start = time.perf_counter()
    with pytest.raises(FormatError, match=message):
        jointcomp.load(reseal(header, payload))
    assert time.perf_counter() - start < 5  # refused up front, not after a build


@pytest.mark.parametrize("builder", ["transformers:os", "transformers:AutoModel"])
def test_file_naming_a_class_outside_the_allow_list_is_refused(bert_file, builder):
    header, payload = parts(bert_file)
    header["model"]["builder"] = builder
    with pytest.raises(FormatError, match="not allowed"):
        jointcomp.load(reseal(header, payload))


def test_hf_folder_with_custom_code_is_refused(folders, tmp_path):
    folder = shutil.copytree(folders["bert"], tmp_path / "custom")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text("raise SystemExit('user code ran')\n")
    with pytest.raises(ModelError, match="trust_remote_code is never used"):
        build_model(f"hf:{folder}")
    with pytest.raises(ModelError, match="auto_map"):
        check_builder(f"hf:{folder}")


def test_check_builder_measures_a_folder_from_its_config(folders, tmp_path):
    check_builder(f"hf:{folders['bert']}")
    check_builder(f"sentence-transformers:{folders['st']}")
    folder = shutil.copytree(folders["bert"], tmp_path / "huge")
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_size=1 << 15, intermediate_size=1 << 17, num_attention_heads=4)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="parameter and buffer elements"):
        check_builder(f"hf:{folder}")


def test_missing_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers fails
    with pytest.raises(ModelError, match=r"jointcomp\[hf\]"):
        build_model("transformers:BertModel", {"config": {"model_type": "bert"}})


def test_recipe_with_a_model_folder_validates(folders, tmp_path):
    from jointcomp.pipeline import _check_inputs
    from jointcomp.recipe import validate_recipe

    def recipe(builder: str) -> object:
        return validate_recipe(
            {
                "name": "hf-folder",
                "model": {"builder": builder},
                "data": {"dataset": "text", "root": str(tmp_path)},
                "task": "distill",
                "stages": [{"encode": {}}],
            }
        )

    for builder in (f"hf:{folders['bert']}", f"sentence-transformers:{folders['st']}"):
        parsed = recipe(builder)
        _check_inputs(parsed, {})
    with pytest.raises(ModelError, match="not a local model folder"):
        _check_inputs(recipe(f"hf:{tmp_path / 'missing'}"), {})
