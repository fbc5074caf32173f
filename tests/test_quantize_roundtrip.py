"""The quantize stage on every factorized layer type, by every method, into a file that loads
bit-exactly; k-means codebooks keep pruned zeros; the record lists every quantized tensor."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import jointcomp
from jointcomp.nn.bnfold import fold_batchnorms
from jointcomp.nn.modules import count_params
from jointcomp.nn.quantized import Codebook, IntQuantized, quantized_tensors
from jointcomp.nn.sparsity import fixed_zero_names, mark_fixed_zeros
from jointcomp.quant import kmeans_codebook
from jointcomp.stages import quantize as quantize_module

from .quantize_util import KWARGS, LAYOUTS, factorized_small_cnn, run_quantize, small_cnn

FINETUNE = {"epochs": 1, "max_batches": 2}


def _method(method: str) -> dict:
    """The method's config, fine-tuning briefly where it trains."""
    return {method: {} if method == "ptq" else {"finetune": FINETUNE}}


def _round_trip(model: nn.Module, path: Path) -> nn.Module:
    jointcomp.save(model, path, builder="zoo:small_cnn", kwargs=KWARGS)
    loaded = jointcomp.load(path)
    assert fixed_zero_names(loaded) == fixed_zero_names(model)
    x = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    for name, p in quantized_tensors(model).items():
        assert torch.equal(_value(loaded, name), _value(model, name))
        assert isinstance(p, (IntQuantized, Codebook))
    return loaded


def _value(model: nn.Module, name: str) -> torch.Tensor:
    path, _, tensor = name.rpartition(".")
    return getattr(model.get_submodule(path), tensor).detach()


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("method", ["ptq", "kmeans", "qat"])
def test_every_layer_type_round_trips_bit_exactly(tmp_path: Path, layout: str, method: str) -> None:
    model = factorized_small_cnn(layout)
    reference = copy.deepcopy(model)
    fold = layout != "spatial-tt"
    if fold:
        fold_batchnorms(reference)
    bits = {"factors": 4, "sparse_values": 6, "weights": 5, "biases": 16}
    model, record = run_quantize(
        model, {**_method(method), "fold": {} if fold else None, "bits": bits}
    )
    quantized = quantized_tensors(model)
    rows = record["layers"]
    assert {r["tensor"] for r in rows} == set(quantized)
    assert {r["kind"] for r in rows} >= {"factors", "biases"}
    for r in rows:
        want = bits[r["kind"]]
        assert r["bits"] <= want if method == "kmeans" else r["bits"] == want
        assert r["est_bytes"] > 0 and r["params"] > 0
        assert r["method"] == ("ptq" if r["kind"] == "biases" else method)
    summary = record["summary"]
    assert summary["method"] == method and 0 <= summary["metric_after"] <= 1
    if fold:
        assert len(summary["bn_folded"]) == 3
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    else:
        assert "bn_folded" not in summary
        assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    # parameters are counted as the values the model computes with, not integers + scales
    assert count_params(model) == count_params(reference)
    _round_trip(model, tmp_path / "q.jcz")


def test_sparse_residual_keeps_its_zero_pattern() -> None:
    model = factorized_small_cnn("lowrank-sparse")
    before = {
        n: m.sparse.detach() != 0
        for n, m in model.named_modules()
        if hasattr(m, "jc_sparse_tensors")
    }
    model, _ = run_quantize(model, {**_method("qat"), "bits": {"factors": 4, "sparse_values": 3}})
    for name, mask in before.items():
        p = quantized_tensors(model)[f"{name}.sparse"]
        assert isinstance(p, IntQuantized) and p.scale.numel() == 1 and p.zero_point.item() == 0
        value = model.get_submodule(name).sparse.detach()
        assert not bool((value[~mask] != 0).any())
        assert int((p.int_repr != 0).sum()) <= int(mask.sum())


def test_kmeans_codebook_pins_zero_and_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    w = torch.randn(40, 30)
    w[torch.rand_like(w) < 0.6] = 0.0
    cb = kmeans_codebook(w, 3, pin_zero=True)
    assert cb.zero_index == 0 and cb.size <= 8 and cb.centroids[0] == 0
    value = cb(torch.empty(0))
    assert torch.equal(value == 0, w == 0)
    assert bool((cb.indices[w != 0] != 0).all())
    # each nonzero is represented by its nearest centroid
    nearest = (w.reshape(-1, 1) - cb.centroids.detach()[1:]).abs().argmin(1) + 1
    assert torch.equal(
        cb.indices.reshape(-1)[w.reshape(-1) != 0].long(), nearest[w.reshape(-1) != 0]
    )
    # fine-tuning moves centroids, never the pinned zero
    opt = torch.optim.SGD(cb.parameters(), lr=0.5)
    cb(torch.empty(0)).sum().backward()
    opt.step()
    assert cb(torch.empty(0))[w == 0].abs().sum() == 0
    # a pruned model's codebooks survive the file; indices are coded as integers
    model = factorized_small_cnn("svd-tucker-cp")
    with torch.no_grad():
        model.fc.first.weight[:, ::2] = 0
    mark_fixed_zeros(model, ["fc.first.weight"])
    model, _ = run_quantize(model, {**_method("kmeans"), "bits": {"factors": 4}})
    p = quantized_tensors(model)["fc.first.weight"]
    assert isinstance(p, Codebook) and p.zero_index == 0
    assert bool((model.fc.first.weight[:, ::2] == 0).all())
    loaded = _round_trip(model, tmp_path / "k.jcz")
    assert "fc.first.weight" in fixed_zero_names(loaded)
    assert torch.equal(loaded.fc.first.parametrizations.weight[0].indices, p.indices)


def test_scope_and_overrides() -> None:
    model = factorized_small_cnn("svd-tucker-cp")
    model, record = run_quantize(
        model,
        {
            "ptq": {},
            "scope": {"exclude": ["block1.*", "block3*"]},
            "overrides": {"fc*": {"bits": 6, "granularity": "tensor"}},
            "bits": {"factors": 3, "weights": 8},
        },
    )
    q = quantized_tensors(model)
    assert not any(n.startswith(("block1.", "block3.")) for n in q)
    assert q["fc.first.weight"].bits == 6 and q["fc.first.weight"].scale.numel() == 1
    assert q["block2.0.core.weight"].bits == 3 and q["block2.0.core.weight"].scale.numel() > 1
    reasons = {f["name"]: f["reason"] for f in record["float"]}
    assert reasons["block1.0.first.weight"] == "out of scope"
    assert reasons["block3.0.first.weight"] == "out of scope"
    assert reasons["fc.second.bias"] == "bits.biases is null"


@pytest.mark.parametrize(
    "build,classifier",
    [
        (small_cnn, {"fc.weight", "fc.bias"}),
        (  # an SVD classifier: both of its sub-layers are the output layer
            lambda: factorized_small_cnn("svd-tucker-cp"),
            {"fc.first.weight", "fc.second.weight", "fc.second.bias"},
        ),
    ],
    ids=["plain", "svd"],
)
def test_classifier_can_be_left_float(build, classifier: set[str]) -> None:
    model, record = run_quantize(build(), {"ptq": {}, "scope": {"exclude_classifier": True}})
    q = quantized_tensors(model)
    assert "block3.0.weight" in q or "block3.0.first.weight" in q
    assert not any(n.startswith("fc.") for n in q)
    reason = "classifier (scope.exclude_classifier)"
    assert {f["name"] for f in record["float"] if f["reason"] == reason} == classifier


def test_auto_granularity_keeps_per_channel_scales_for_long_channels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(quantize_module, "AUTO_MIN_PER_CHANNEL", 20)
    model = factorized_small_cnn("svd-tucker-cp")
    params = {"ptq": {}, "granularity": "auto", "bits": {"factors": 4}}
    model, _ = run_quantize(model, params)
    q = quantized_tensors(model)
    assert q["block2.0.core.weight"].scale.numel() == 8  # 4·3·3 = 36 values per channel
    assert q["block2.0.first.weight"].scale.numel() == 1  # 16 values per channel
    assert q["fc.second.weight"].scale.numel() == 1  # 4 values per channel
