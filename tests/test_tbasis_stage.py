"""Stage ``share`` end to end: the T-Basis recipe (shrunk to small_cnn on digits) runs share →
quantize → encode; the basis is quantized and stored once and counted once; the file decodes
bit-exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from jointcomp.audit.measure import count_params
from jointcomp.cli import cli
from jointcomp.container import open_artifact
from jointcomp.models import build_model
from jointcomp.nn.tbasis import TBasisConv2d, TBasisLinear, shared_modules
from jointcomp.recipe import load_recipe
from jointcomp.stages.share import ShareParams, ShareStage

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes/resnet32-fashion-tbasis.yaml"
SMALL = [
    "model.builder=zoo:small_cnn",
    "data.dataset=digits",
    "data.val_split=0.2",
    "train.epochs=2",
    "train.lr=0.02",
    "stages.0.share.basis=8",
    "stages.0.share.rank=8",
    "stages.0.share.fit_steps=10",
    "stages.0.share.finetune.epochs=1",
    "stages.1.quantize.finetune.epochs=1",
    "audit.latency=false",
    "audit.html=false",
]


def test_recipe_validates_as_written() -> None:
    recipe = load_recipe(RECIPE, ["data.limit=2000", "train.epochs=1"])
    assert [s.name for s in recipe.stages] == ["share", "quantize", "encode"]
    assert recipe.model.builder == "zoo:resnet32" and recipe.data.dataset == "fashion-mnist"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tbasis") / "run"
    args = ["run", str(RECIPE), "-q", "-o", str(out)]
    for s in SMALL:
        args += ["--set", s]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return out


def _recipe_quantize() -> dict:
    from jointcomp.recipe import load_recipe_data

    return load_recipe_data(RECIPE)["stages"][1]["quantize"]


def _stages(run_dir: Path) -> dict[str, dict]:
    state = json.loads((run_dir / "state.json").read_text())
    return {s["name"]: s for s in state["stages"]}


def test_share_records_layers_and_accounting(run_dir: Path) -> None:
    share = _stages(run_dir)["share"]
    record = share["record"]
    rows = record["layers"]
    assert {r["name"] for r in rows} == {"block1.0", "block2.0", "block3.0", "fc"}
    for r in rows:
        assert {"shape", "padded", "cores", "coefficients", "rel_error_init"} <= set(r)
        assert r["coefficients"] == r["cores"] * (8 + 8)
    summary = record["summary"]
    assert summary["basis_params"] == 8 * 8 * 9 * 8
    n_rows = sum(r["cores"] for r in rows)
    assert summary["coefficient_params"] == n_rows * (8 + 8)
    # the stage's total counts the basis once, as the pipeline's own count does
    assert summary["params_after"] == share["params"]
    assert summary["rest_params"] == (
        summary["params_after"] - summary["basis_params"] - summary["coefficient_params"]
    )


def test_quantize_quantizes_the_shared_basis_once(run_dir: Path) -> None:
    rows = _stages(run_dir)["quantize"]["record"]["layers"]
    tensors = [r["tensor"] for r in rows]
    assert sum(t.endswith(".basis.basis") for t in tensors) == 1
    assert sum(t.endswith(".coefficients.coef") for t in tensors) == 1
    bits = {r["tensor"].rpartition(".")[2]: r["bits"] for r in rows}
    assert bits["basis"] == bits["coef"] == bits["rank_scale"] == 4
    assert bits["out_scale"] == _recipe_quantize()["layers"]["*.out_scale"]["bits"]
    grain = {r["tensor"].rpartition(".")[2]: r["granularity"] for r in rows}
    # the recipe's granularity: tensor, or auto (a scale per basis element, whose 8×9×8
    # values are enough; one for each table of short coefficient rows)
    spec = _recipe_quantize()
    want = {"tensor": "tensor", "auto": "channel"}[spec["granularity"]]
    assert grain["basis"] == want and grain["rank_scale"] == "tensor"
    # a layer override may give the coefficient table a scale per row (per core)
    rows = spec["layers"].get("*.coef", {}).get("granularity", "tensor")
    assert grain["coef"] == {"channel": "channel", "auto": "tensor", "tensor": "tensor"}[rows]


def test_batch_norms_are_folded_after_qat(run_dir: Path) -> None:
    """The recipe's quantize ``fold_bn: after``: QAT trains with the batch norms, then they go
    into the T-Basis layers' output scales and biases, which train on their grids for
    ``fold_epochs`` more epochs (or are rounded, without them)."""
    stages = _stages(run_dir)
    assert "bn_folded" not in stages["share"]["record"]
    quantize = stages["quantize"]["record"]
    assert quantize["summary"]["bn_folded"] == ["block1.1", "block2.1", "block3.1"]
    assert quantize["summary"]["bn_folded_first"] == []  # small_cnn has no plain conv → BN
    rows = {r["tensor"]: r for r in quantize["layers"]}
    spec = _recipe_quantize()
    assert rows["block2.0.out_scale"]["bits"] == spec["layers"]["*.out_scale"]["bits"]
    assert rows["block2.0.bias"]["bits"] == spec["bits"]["biases"]
    # fold_epochs: the folded scales and biases were trained on their grids, not rounded
    trained = "qat" if spec.get("fold_epochs") else "ptq"
    assert rows["block2.0.out_scale"]["method"] == rows["block2.0.bias"]["method"] == trained
    assert quantize["summary"].get("fold_epochs", 0) == spec.get("fold_epochs", 0)
    # accuracy before the fold is recorded; batch norms re-estimated only when asked
    assert "accuracy_trained" in quantize["summary"]
    assert ("accuracy_reestimated" in quantize["summary"]) == bool(spec.get("bn_reestimate"))
    model = open_artifact(run_dir / "model.jcz", trust=True).model
    assert isinstance(model.block2[1], torch.nn.Identity)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_quantize_records_its_training_steps_and_time(run_dir: Path) -> None:
    """The QAT record says how many steps it trained and how long they took (what a user
    needs to size a longer run)."""
    from jointcomp.data import load_data

    summary = _stages(run_dir)["quantize"]["record"]["summary"]
    train = load_data("digits", None, 0.2, 0, None).train
    assert summary["finetune_steps"] == -(-len(train) // 64)  # 1 epoch, batches of 64
    assert summary["finetune_seconds"] > 0


def test_quantize_equalizes_the_tables_first(run_dir: Path) -> None:
    summary = _stages(run_dir)["quantize"]["record"]["summary"]
    moved = summary["equalized"]["layers"]
    # each conv's magnitude went into its batch norm; the classifier has none to take it
    assert moved == {"block1.0": "block1.1", "block2.0": "block2.1", "block3.0": "block3.1"} | {
        "fc": "cores"
    }
    # re-estimated batch norms: right after the quantizers go in, the network is not at chance
    assert summary["accuracy_quantized"] > 0.15


def test_share_fits_in_the_input_metric_and_recalibrates(run_dir: Path) -> None:
    record = _stages(run_dir)["share"]["record"]
    assert record["fit"]["metric"] == "inputs"
    assert record["fit"]["mean_rel_error"] < record["fit"]["mean_rel_error_start"]


def test_file_decodes_bit_exactly_with_one_basis(run_dir: Path) -> None:
    art = open_artifact(run_dir / "model.jcz", trust=True)
    again = open_artifact(run_dir / "model.jcz", trust=True).model.eval()
    model = art.model.eval()
    bases, tables = shared_modules(model)
    assert len(bases) == 1 and len(tables) == 1
    layers = [m for m in model.modules() if isinstance(m, (TBasisConv2d, TBasisLinear))]
    assert len(layers) == 4 and all(m.basis is bases[0] for m in layers)
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    report = json.loads((run_dir / "report.json").read_text())
    assert count_params(model) == _stages(run_dir)["share"]["params"]
    layer_rows = {r["name"]: r for r in report["layers"]}
    basis_row = next(r for n, r in layer_rows.items() if n.endswith(".basis"))
    assert basis_row["type"] == "TBasis+IntQuantized" and basis_row["params"] == 8 * 8 * 9 * 8
    table_row = next(r for n, r in layer_rows.items() if n.endswith(".coefficients"))
    assert table_row["type"].startswith("TBasisCoefficients")


def test_coupled_layers_share_leading_rows() -> None:
    model = build_model("zoo:resnet20", {"in_channels": 1, "num_classes": 10, "image_size": 8})
    params = ShareParams(basis=4, rank=4, coupled=True, coupled_cores=2, skip=["conv1"])
    stage = ShareStage(params)
    candidates, _ = stage._plan(model, params)
    n_rows = stage._assign_rows(candidates, params)
    by_name = {c.name: c.rows for c in candidates}
    # the 3×3 convs of stage 1 all read 16→16: their first two rows are one pair of rows
    stage1 = [by_name[f"layer1.{b}.conv{k}"] for b in range(3) for k in (1, 2)]
    assert all(r[:2] == stage1[0][:2] for r in stage1)
    assert len({tuple(r[2:]) for r in stage1}) == len(stage1)  # the rest their own
    # a layer alone in its layout keeps every row to itself
    assert not set(by_name["fc"]) & {r for n, rr in by_name.items() if n != "fc" for r in rr}
    assert n_rows == len({r for rr in by_name.values() for r in rr})


def test_checkpoint_reloads_with_one_basis_for_a_resumed_quantize(run_dir: Path) -> None:
    """A resumed run quantizes the model read back from the share checkpoint: it must hold
    one basis object again, so the quantizer finds it once."""
    from jointcomp.quant import find_targets

    model = open_artifact(run_dir / "checkpoints/00-share.jcz", trust=True).model
    targets, _ = find_targets(model, set())
    names = [t.name for t in targets]
    assert sum(n.endswith("basis.basis") for n in names) == 1
    assert sum(n.endswith("coefficients.coef") for n in names) == 1


def test_codebook_tables_train_beside_uniform_qat(tmp_path: Path) -> None:
    """A layer override ``method: kmeans`` under QAT: the matched coefficient table gets a
    16-value codebook trained with the uniform grids of the rest, and the file holds it."""
    import yaml

    from jointcomp.nn.quantized import Codebook

    raw = yaml.safe_load(RECIPE.read_text())
    raw["stages"][1]["quantize"]["layers"]["*.coef"] = {"method": "kmeans"}
    recipe = tmp_path / "codebooks.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    args = ["run", str(recipe), "-q", "-o", str(out)]
    for s in SMALL:
        args += ["--set", s]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = {r["tensor"].rpartition(".")[2]: r for r in _stages(out)["quantize"]["record"]["layers"]}
    assert rows["coef"]["method"] == "kmeans" and rows["coef"]["granularity"] == "codebook"
    assert rows["basis"]["method"] == rows["rank_scale"]["method"] == "qat"
    model = open_artifact(out / "model.jcz", trust=True).model
    table = shared_modules(model)[1][0]
    (codebook,) = table.parametrizations["coef"]
    assert isinstance(codebook, Codebook) and table.coef.unique().numel() <= 16


def test_codebook_overrides_need_training() -> None:
    from jointcomp.errors import RecipeError

    sets = [
        "stages.1.quantize.method=ptq",
        "stages.1.quantize.fold_bn=true",
        'stages.1.quantize.layers={"*.coef": {"method": "kmeans"}}',
    ]
    with pytest.raises(RecipeError, match="kmeans fine-tunes codebooks"):
        load_recipe(RECIPE, sets)


def test_layer_overrides_without_a_method_keep_their_fingerprint() -> None:
    """``method`` came after runs were fingerprinted: unset, it is left out of the hash, so
    those runs still resume; set, the stage is another one."""
    from jointcomp.pipeline import _stage_fingerprint
    from jointcomp.recipe import recipe_to_data, without_unset_added

    plain = load_recipe(RECIPE)
    hashed = without_unset_added(recipe_to_data(plain))["stages"][1]["quantize"]["layers"]
    assert hashed["*.out_scale"] and all("method" not in o for o in hashed.values())
    assert hashed["*.out_scale"].get("keep_float") is False  # other defaults are still hashed
    codebooks = load_recipe(RECIPE, ['stages.1.quantize.layers={"*.coef": {"method": "kmeans"}}'])
    assert _stage_fingerprint(plain.stages[1]) != _stage_fingerprint(codebooks.stages[1])
