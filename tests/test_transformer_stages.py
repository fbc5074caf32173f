"""Every stage on a transformer: a tiny transformers ``BertModel`` (built from a BertConfig, no
download) fed dict batches ``{input_ids, attention_mask}`` under the label-free ``distill`` task,
compressed and written to a file that loads bit-exactly (every tensor and the outputs)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import jointcomp
from jointcomp.batches import as_batches
from jointcomp.context import Context
from jointcomp.nn.quantized import quantized_tensors
from jointcomp.stages import apply_stage, stage_config
from jointcomp.tasks import DistillTask
from jointcomp.training import Trainer, frozen_copy

transformers = pytest.importorskip("transformers")

BUILDER = "tests.test_transformer_stages:tiny_bert"
VOCAB, HIDDEN, HEADS, FFN, POSITIONS = 120, 32, 4, 64, 24


def tiny_bert(layers: int = 2) -> nn.Module:
    """The architecture a file rebuilds (its values come from the file)."""
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=POSITIONS,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return transformers.BertModel(config, add_pooling_layer=False).eval()


def trained_bert(seed: int = 0) -> nn.Module:
    """A tiny BERT standing in for a trained one: every tensor perturbed off its init (LayerNorms
    off 1/0, biases off 0, so a lost tensor shows), token embeddings near a low-dimensional
    subspace as trained ones are (so layer inputs are correlated, as GPTQ expects)."""
    torch.manual_seed(seed)
    model = tiny_bert()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        words = model.embeddings.word_embeddings.weight
        basis = torch.randn(6, HIDDEN)
        words.copy_(torch.randn(VOCAB, 6) @ basis * 0.3 + 0.02 * torch.randn_like(words))
    return model


def text_batches(n: int = 6, size: int = 8, length: int = 16, seed: int = 1) -> list[dict]:
    """Unlabeled dict batches of token ids with padding masked out (as tokenized text)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1, VOCAB, (size, length), generator=g)
        mask = torch.ones(size, length, dtype=torch.long)
        lengths = torch.randint(length // 2, length + 1, (size,), generator=g)
        mask[torch.arange(length)[None, :] >= lengths[:, None]] = 0
        out.append({"input_ids": ids * mask, "attention_mask": mask})
    return out


TASK = DistillTask(output="last_hidden_state")


def context(model: nn.Module, data: list[dict], train: dict | None = None) -> Context:
    """A stage context under the label-free distill task, the model as given its reference."""
    reference = frozen_copy(model)
    trainer = None
    if train is not None:
        trainer = Trainer(data, train, teacher=reference, task=TASK)
    return Context(data=as_batches(data), finetune=trainer, task=TASK, reference=reference)


def run(model: nn.Module, stage: dict[str, Any], data: list[dict], train: dict | None = None):
    """Apply one stage ``{name: params}`` under the distill task; (model, record, context)."""
    ctx = context(model, data, train)
    model, record = apply_stage(model, stage_config(stage), ctx)
    return model, record, ctx


def hidden(model: nn.Module, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).last_hidden_state


def round_trip(model: nn.Module, path: Path, data: list[dict]) -> Any:
    """Save, load (trusting the test builder) and check every tensor and the outputs equal."""
    jointcomp.save(model, path, builder=BUILDER)
    artifact = jointcomp.open_file(path, trust=True)
    loaded = artifact.model
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        assert torch.equal(tensor, theirs[name]), name
    for batch in data[:2]:
        assert torch.equal(hidden(loaded, batch), hidden(model, batch))
    return artifact


def error(model: nn.Module, reference: nn.Module, data: list[dict]) -> float:
    """Relative squared error of the hidden states against the float model's."""
    num = den = 0.0
    for batch in data:
        out, ref = hidden(model, batch), hidden(reference, batch)
        num += float(((out - ref) ** 2).sum())
        den += float((ref**2).sum())
    return num / den


EMBEDDINGS = [f"embeddings.{k}_embeddings.weight" for k in ("word", "position", "token_type")]
ALL_BITS = {"weights": 4, "embeddings": 4, "norms": 8, "biases": 8}


# --- quantize ------------------------------------------------------------------------------


def _coded_entries(artifact: Any) -> dict[str, dict]:
    return {e["n"]: e for e in artifact.entries}


def assert_every_kind_coded(model: nn.Module, artifact: Any) -> None:
    """Linear, Embedding and LayerNorm tensors are held as integers the file codes; what is
    left float of them is their scales alone."""
    quantized = set(quantized_tensors(model))
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    norms = [n for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)]
    wanted = set(EMBEDDINGS) | {f"{n}.weight" for n in linears + norms}
    wanted |= {f"{n}.bias" for n in linears + norms}
    assert wanted <= quantized, sorted(wanted - quantized)
    entries = _coded_entries(artifact)
    for name in EMBEDDINGS + [f"{n}.weight" for n in norms]:
        module, _, tensor = name.rpartition(".")
        ints = f"{module}.parametrizations.{tensor}.0.int_repr"
        assert name not in entries  # no float table of the raw tensor
        # integers (LayerNorm weights may be one constant: coded in no payload bytes at all)
        assert ints in entries and entries[ints]["d"].startswith(("i", "u")), name
    floats = [e for e in artifact.entries if e["d"] == "f32"]
    assert all(e["n"].endswith((".scale", ".zero_point")) for e in floats), floats[:3]


@pytest.mark.parametrize("gptq", [False, True], ids=["rtn", "gptq"])
def test_ptq_quantizes_linear_embedding_and_layernorm_tensors(tmp_path: Path, gptq: bool) -> None:
    data = text_batches()
    model = trained_bert()
    ptq = {"gptq": {"batches": 4}} if gptq else {}
    model, record, _ = run(model, {"quantize": {"ptq": ptq, "bits": ALL_BITS}}, data)
    kinds = {r["kind"] for r in record["layers"]}
    assert kinds == {"weights", "embeddings", "norms", "biases"}
    rows = {r["tensor"]: r for r in record["layers"]}
    assert all(rows[n]["bits"] == 4 and rows[n]["granularity"] == "channel" for n in EMBEDDINGS)
    assert not record["float"]
    if gptq:
        done = record["summary"]["gptq"]["layers"]
        assert len(done) == 12 and not record["summary"]["gptq"]["rounded"]
        assert all(row["error"] < row["rtn_error"] for row in done)
    artifact = round_trip(model, tmp_path / "bert.jcz", data)
    assert_every_kind_coded(model, artifact)


def test_gptq_lowers_the_output_error_of_round_to_nearest() -> None:
    """At 3 and 4 bits on the Linear layers, GPTQ's hidden states are closer to the float
    model's than round-to-nearest's on the same grids."""
    data = text_batches()
    reference = trained_bert()
    for bits in (3, 4):
        errors = {}
        for method, ptq in (("rtn", {}), ("gptq", {"gptq": {"batches": 6}})):
            config = {"ptq": ptq, "bits": {"weights": bits, "embeddings": None}}
            model, _, _ = run(copy.deepcopy(reference), {"quantize": config}, data)
            errors[method] = error(model, reference, data)
        assert errors["gptq"] < 0.7 * errors["rtn"], (bits, errors)


def test_qat_trains_every_kind_without_labels_and_round_trips(tmp_path: Path) -> None:
    data = text_batches()
    model = trained_bert()
    train = {"epochs": 1, "lr": 1e-3}
    model, record, _ = run(model, {"quantize": {"qat": {}, "bits": ALL_BITS}}, data, train)
    methods = {r["kind"]: r["method"] for r in record["layers"]}
    assert methods == {"weights": "qat", "embeddings": "qat", "norms": "ptq", "biases": "ptq"}
    assert record["summary"]["finetune_steps"] == len(data)
    artifact = round_trip(model, tmp_path / "qat.jcz", data)
    assert_every_kind_coded(model, artifact)


def test_bits_budget_mixes_bits_per_tensor(tmp_path: Path) -> None:
    """Under a coded-size budget the weights and embedding tables get different bits (the
    sensitivities are the distill task's loss), within the budget, and the file holds them."""
    data = text_batches()
    model = trained_bert()
    budget = {"bytes": 9000, "options": [2, 3, 4, 6, 8], "batches": 2, "batch_size": 8}
    bits = {"weights": 8, "embeddings": 8, "norms": 8, "biases": 8, "budget": budget}
    model, record, _ = run(model, {"quantize": {"ptq": {}, "bits": bits}}, data)
    chosen = {
        r["tensor"]: r["bits"] for r in record["layers"] if r["kind"] in ("weights", "embeddings")
    }
    assert len(set(chosen.values())) > 1, chosen
    assert record["summary"]["budget"]["achieved_bytes"] <= 9000
    round_trip(model, tmp_path / "mixed.jcz", data)


# --- prune ---------------------------------------------------------------------------------


def attention(model: nn.Module) -> list[nn.Module]:
    return [model.encoder.layer[i].attention.self for i in range(len(model.encoder.layer))]


@pytest.mark.parametrize("heads", [0.5, None], ids=["whole-heads", "head-dims"])
def test_prune_heads_and_ffn_channels_round_trips(tmp_path: Path, heads: float | None) -> None:
    """Whole attention heads (q, k, v and the output projection's inputs together, the head
    count updated) or the same dimensions of every head, and FFN channels, go; the model's
    output width stays; the pruned model runs, and its file loads bit-exactly."""
    data = text_batches()
    model = trained_bert()
    config = {"ratio": 0.5, "heads": heads}
    model, record, _ = run(model, {"prune": config}, data)
    assert record["params_after"] < record["params_before"]
    for layer in model.encoder.layer:
        self_attention = layer.attention.self
        width = self_attention.query.out_features
        assert width == 16 and layer.attention.output.dense.in_features == 16
        assert self_attention.key.out_features == self_attention.value.out_features == width
        assert self_attention.all_head_size == width
        if heads is None:
            assert (self_attention.num_attention_heads, self_attention.attention_head_size) == (
                4,
                4,
            )
        else:
            assert (self_attention.num_attention_heads, self_attention.attention_head_size) == (
                2,
                8,
            )
        assert layer.intermediate.dense.out_features == FFN // 2
        assert layer.output.dense.in_features == FFN // 2
    assert hidden(model, data[0]).shape[-1] == HIDDEN  # the embedding width is the output's
    artifact = round_trip(model, tmp_path / "pruned.jcz", data)
    attrs = dict((path, values) for path, values in artifact.manifest.attrs)
    edited = attrs["encoder.layer.0.attention.self"]
    assert edited["all_head_size"] == 16
    assert ("num_attention_heads" in edited) == (heads is not None)


def test_pruned_then_quantized_bert_round_trips(tmp_path: Path) -> None:
    data = text_batches()
    model, _, _ = run(trained_bert(), {"prune": {"ratio": 0.25, "heads": 0.5}}, data)
    model, _, _ = run(
        model, {"quantize": {"ptq": {"gptq": {"batches": 2}}, "bits": ALL_BITS}}, data
    )
    round_trip(model, tmp_path / "pq.jcz", data)


# --- decompose -----------------------------------------------------------------------------


@pytest.mark.parametrize("sparse", [0.0, 0.05], ids=["svd", "lr+s"])
def test_decompose_linear_layers_round_trips(tmp_path: Path, sparse: float) -> None:
    """SVD (and low-rank + sparse) of every encoder Linear, fine-tuned without labels, its
    execution timed on the dict example; the file loads bit-exactly."""
    data = text_batches()
    model = trained_bert()
    stage = {
        "decompose": {
            "rank": 0.25,
            "sparse": sparse,
            "scope": {"include": ["encoder.*"]},
            "timing_seconds": 0.002,
        }
    }
    model, record, _ = run(model, stage, data, train={"epochs": 1, "lr": 1e-3})
    assert len(record["layers"]) == 12 and not record["skipped"]
    assert record["params_after"] < record["params_before"]
    assert {i["format"] for i in record["layers"]} == {"svd+sparse" if sparse else "svd"}
    assert all(i["execution"] in ("factorized", "dense") for i in record["layers"])
    assert record["finetune_loss"] > 0
    round_trip(model, tmp_path / "svd.jcz", data)


# --- share ---------------------------------------------------------------------------------


def test_share_tbasis_across_encoder_blocks_round_trips(tmp_path: Path) -> None:
    """Every encoder Linear becomes a tensor ring drawn from one basis, the two identical
    blocks' layers also sharing their leading cores (coupled); quantized, the file holds the
    basis once and loads bit-exactly."""
    data = text_batches()
    stage = {
        "share": {
            "basis": 8,
            "rank": 4,
            "mode": 4,
            "coupled": True,
            "fit_steps": 10,
            "fit_batches": 1,
            "bn_batches": 0,
            "scope": {"include": ["encoder.*"]},
        }
    }
    model, record, _ = run(trained_bert(), stage, data)
    assert len(record["layers"]) == 12
    assert record["summary"]["params_after"] < 0.4 * record["summary"]["params_before"]
    blocks = model.encoder.layer
    assert blocks[0].intermediate.dense.basis is blocks[1].attention.self.query.basis
    config = {"ptq": {}, "bits": {"factors": 6, **ALL_BITS}}
    model, quantized, _ = run(model, {"quantize": config}, data)
    assert not quantized["float"]
    artifact = round_trip(model, tmp_path / "shared.jcz", data)
    stored = {e["n"] for e in artifact.entries}
    assert not any(".basis." in n and n.startswith("encoder.layer.1.") for n in stored)


# --- factorized embeddings -----------------------------------------------------------------


def test_low_rank_embeddings_quantize_and_round_trip(tmp_path: Path) -> None:
    """The word embedding table becomes E ≈ A·B (its truncated SVD: near-exact on a table near
    a 6-dimensional subspace), Linear layers left alone; quantized (A per token, B as a factor),
    the file holds the factorized table and loads bit-exactly."""
    from jointcomp.nn import LowRankEmbedding

    data = text_batches()
    reference = trained_bert()
    stage = {"decompose": {"embeddings": {"rank": 8, "scope": {"include": ["*word_embeddings"]}}}}
    model, record, _ = run(copy.deepcopy(reference), stage, data)
    table = model.embeddings.word_embeddings
    assert isinstance(table, LowRankEmbedding) and table.rank == 8
    assert [r["name"] for r in record["embeddings"]] == ["embeddings.word_embeddings"]
    assert record["embeddings"][0]["rel_error"] < 0.1 and not record["layers"]
    assert record["params_after"] == 8 * (VOCAB + HIDDEN) < record["params_before"]
    assert error(model, reference, data) < 1e-2
    model, quantized, _ = run(model, {"quantize": {"ptq": {}, "bits": ALL_BITS}}, data)
    kinds = {r["tensor"]: r["kind"] for r in quantized["layers"]}
    assert kinds["embeddings.word_embeddings.first.weight"] == "embeddings"
    assert kinds["embeddings.word_embeddings.second.weight"] == "factors"
    artifact = round_trip(model, tmp_path / "lowrank.jcz", data)
    edits = {path: kind for path, kind, _ in artifact.manifest.edits}
    assert edits["embeddings.word_embeddings"] == "LowRankEmbedding"


def test_embedding_rank_is_checked() -> None:
    with pytest.raises(jointcomp.RecipeError, match=r"embeddings\.rank.*energy:2"):
        jointcomp.decompose(tiny_bert(), {"embeddings": {"rank": "energy:2"}})
