"""The Python API on models a user builds in their own script: each technique alone, chained by
``compress``, written by ``save`` and read back by ``load`` bit for bit."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import jointcomp
from jointcomp import DataError, FormatError, JointcompError, RecipeError

from .conftest import assert_file_holds, assert_same_tensors


def make_net(width: int = 16) -> nn.Module:
    """A user's own model, built by a function jointcomp cannot know (needs trust to load)."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, 5),
    )


def _batches(n: int = 4, size: int = 12, classes: int = 5) -> list:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(8, 3, size, size, generator=g), torch.randint(0, classes, (8,), generator=g))
        for _ in range(n)
    ]


def _trained(model: nn.Module) -> nn.Module:
    """Batch-norm statistics that are not the identity, so folding matters."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_each_technique_on_a_users_own_model(tmp_path):
    torch.manual_seed(0)
    model = _trained(make_net())
    data = _batches()
    model, rec = jointcomp.prune(model, {"ratio": 0.5}, data=data)
    assert model[0].out_channels == 8 and rec["params_after"] < rec["params_before"]
    model, _ = jointcomp.fold(model)
    assert isinstance(model[1], nn.Identity)
    model, rec = jointcomp.decompose(
        model, {"rank": 4, "scope": {"include": ["3"]}, "execution": "factorized"}, data=data
    )
    assert type(model[3]).__name__ == "TuckerConv2d"
    model, rec = jointcomp.quantize(model, {"ptq": {}, "bits": {"factors": 4, "weights": 6}})
    assert rec["summary"]["tensors"] >= 4
    path = tmp_path / "mine.jcz"
    jointcomp.save(model, path, builder=make_net)  # the function itself
    with pytest.raises(FormatError, match="allow-list"):
        jointcomp.load(path)  # a user's builder runs their code: only with trust
    restored = jointcomp.load(path, trust=True)
    x = torch.randn(3, 3, 12, 12)
    assert torch.equal(model(x), restored(x))


def test_a_config_object_and_its_dict_say_the_same_thing():
    torch.manual_seed(0)
    base = make_net()
    data = _batches(1)
    config = jointcomp.PruneConfig(ratio=0.5, scope={"exclude": ["3"]})
    a, _ = jointcomp.prune(_copy(base), config, data=data)
    b, _ = jointcomp.prune(_copy(base), {"ratio": 0.5, "scope": {"exclude": ["3"]}}, data=data)
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert a[3].out_channels == 16  # excluded by scope: left whole


def _copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


@pytest.mark.parametrize(
    "form",
    ["list of batches", "list of tensors", "dataset", "dataloader"],
)
def test_plain_data_in_any_form(form):
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 12, 12), torch.randint(0, 5, (16,))
    data = {
        "list of batches": [(x[:8], y[:8]), (x[8:], y[8:])],
        "list of tensors": [x[:8], x[8:]],
        "dataset": TensorDataset(x, y),
        "dataloader": DataLoader(TensorDataset(x, y), batch_size=8),
    }[form]
    model, _ = jointcomp.prune(make_net(), {"ratio": 0.25}, data=data)
    assert model[0].out_channels == 12


def test_unusable_data_and_configs_are_clear_errors():
    model = make_net()
    with pytest.raises(DataError, match="one-shot iterator"):
        jointcomp.prune(model, {"ratio": 0.5}, data=(b for b in _batches()))
    with pytest.raises(DataError, match="needs data"):
        jointcomp.prune(model, {"ratio": 0.5})  # tracing channels needs an example input
    with pytest.raises(RecipeError, match=r"prune\.ratoi: unknown key; allowed keys here: ratio"):
        jointcomp.prune(model, {"ratoi": 0.5}, data=_batches())
    with pytest.raises(DataError, match="labeled batches"):
        jointcomp.prune(model, {"importance": "taylor"}, data=[torch.randn(4, 3, 12, 12)])
    with pytest.raises(JointcompError, match="builder"):
        jointcomp.compress(model, [{"fold": {}}], path="x.jcz")


def test_finetune_settings_train_on_the_data_and_distil_from_the_input():
    torch.manual_seed(0)
    data = _batches(6)
    model = make_net()
    before = [p.detach().clone() for p in model.parameters()]
    model, rec = jointcomp.quantize(
        model,
        {"qat": {"finetune": {"epochs": 2}}, "bits": {"weights": 4}},
        data=data,
        finetune={"epochs": 1, "lr": 0.01, "distill": {"alpha": 0.5}},
    )
    assert rec["summary"]["finetune_steps"] == 2 * len(data)
    weights = dict(model.named_parameters())
    changed = weights["7.bias"].detach()  # float: trained, not rounded (biases: null)
    assert not torch.equal(changed, before[-1])


def test_compress_runs_a_recipe_file_and_writes_the_file(tmp_path, encoded):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {builder: zoo:small_cnn}\n"
        "data: {dataset: digits}\n"
        "train: {epochs: 1, lr: 0.003}\n"
        "stages:\n"
        "  - prune: {ratio: 0.5}\n"
        "  - quantize: {qat: {}, bits: {weights: 6}}\n"
        "  - encode: {codec: ans}\n"
    )
    kwargs = {"in_channels": 1, "num_classes": 10, "image_size": 8}
    torch.manual_seed(0)
    model = jointcomp.models.build_model("zoo:small_cnn", kwargs).eval()
    data = [(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))) for _ in range(3)]
    path = tmp_path / "small.jcz"
    out, record = jointcomp.compress(
        model, recipe, data=data, path=path, builder="zoo:small_cnn", kwargs=kwargs
    )
    names = [s["name"] for s in record["stages"]]
    assert names == ["prune", "quantize", "encode"]
    assert record["stages"][1]["record"]["summary"]["finetune_steps"] == 3  # the recipe's epochs
    assert {e["codec"] for e in record["stages"][2]["record"]["tensors"].values()} >= {"ans"}
    (before,) = encoded  # ``out`` is decoded from the file: compare with what went in
    loaded = assert_file_holds(before, torch.randn(2, 1, 8, 8), path)
    assert_same_tensors(loaded.state_dict(), out.state_dict())
