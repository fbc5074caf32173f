"""jointcomp export: ONNX files that run in onnxruntime as the exact module does, with the file's
own integers as their QDQ weights; torch.export programs that load back; dense safetensors under
the original architecture's keys; transformers folders that from_pretrained loads; the CLI's
command and its refusals."""

from __future__ import annotations

import builtins
import copy
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

import jointcomp
from jointcomp.cli import cli
from jointcomp.export import (
    ExportCheckError,
    ExportError,
    check_onnx,
    dense_state_dict,
    examples_for,
    export_file,
    to_onnx,
    to_program,
)
from jointcomp.export.common import PREFIX
from jointcomp.export.onnx import onnx_grid
from jointcomp.models import build_model
from jointcomp.runtime import materialize

from .quantize_util import KWARGS, factorized_small_cnn, uneven_tbasis_model

GOLDEN = Path(__file__).resolve().parent / "golden"
SHAPES = {"quickstart.jcz": "1,1,8,8", "lenet300-fashion-joint.jcz": "1,1,28,28"}
IMAGE = {"input": torch.randn(1, 1, 8, 8)}
IMAGES = {"input": torch.randn(6, 1, 8, 8)}
DYNAMIC = {"input": {0: "batch"}}


def _initializers(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}


@pytest.mark.parametrize("weights", ["qdq", "dynamic", "float"])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_golden_files_run_in_onnxruntime(tmp_path: Path, name: str, weights: str) -> None:
    report = export_file(GOLDEN / name, tmp_path / "m.onnx", weights=weights,
                         input_shape=SHAPES[name])  # fmt: skip
    assert report["cosine"] > 0.999 and report["top1_agreement"] == 1.0
    if weights != "dynamic":  # exact weights: only the kernels' summation order differs
        assert report["exact_max_abs_err"] < 1e-4
    assert report["tensors"][weights] > 0
    graph = onnx.load(str(tmp_path / "m.onnx"))
    assert graph.opset_import[0].version >= 17
    ops = {n.op_type for n in graph.graph.node}
    convs = "Conv" in ops and weights != "float"  # conv weights stay QDQ in the dynamic form
    assert ("DequantizeLinear" in ops) == (weights == "qdq" or convs)
    assert ("MatMulInteger" in ops) == (weights == "dynamic")


def test_qdq_weights_are_the_files_integers(tmp_path: Path) -> None:
    artifact = jointcomp.open_file(GOLDEN / "quickstart.jcz")
    to_onnx(artifact.model, tmp_path / "m.onnx", IMAGE, weights="qdq")
    stored = _initializers(tmp_path / "m.onnx")
    _, grids = materialize(artifact.model)
    checked = 0
    for key, grid in grids.items():
        name = PREFIX + key
        if grid is None or onnx_grid(grid) is None or f"{name}_quantized" not in stored:
            continue
        ints = stored[f"{name}_quantized"]
        assert ints.dtype in (np.int8, np.uint8)
        assert np.array_equal(ints.astype(np.int64), grid.ints.to(torch.int64).numpy())
        scale = stored[f"{name}_scale"]
        assert np.array_equal(scale.reshape(-1), grid.per_channel()[0].numpy().reshape(-1))
        assert name not in stored  # no float copy beside the integers
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("layout", ["svd-tucker-cp", "spatial-tt", "lowrank-sparse", "tbasis"])
@pytest.mark.parametrize("bits", [2, 8])
def test_factorized_layers_export_as_factors(tmp_path: Path, layout: str, bits: int) -> None:
    model = uneven_tbasis_model() if layout == "tbasis" else factorized_small_cnn(layout)
    config = {"ptq": {}, "bits": {"weights": bits, "factors": bits, "sparse_values": bits}}
    model, _ = jointcomp.quantize(model, config)
    report = to_onnx(model, tmp_path / "m.onnx", IMAGE, samples=IMAGES, dynamic=DYNAMIC,
                     weights="qdq")  # fmt: skip
    assert report.tensors["qdq"] >= 3
    assert report.check["exact_max_abs_err"] < 1e-4 * max(1.0, _scale(model))
    # the factors, not rebuilt dense weights: fewer stored numbers than the dense layers
    stored = sum(a.size for a in _initializers(tmp_path / "m.onnx").values())
    dense = sum(t.numel() for t in dense_state_dict(model).values())
    assert stored < dense or layout == "lowrank-sparse"


def _scale(model: torch.nn.Module) -> float:
    with torch.no_grad():
        return float(model(IMAGES["input"]).abs().max())


def test_kmeans_and_mixed_bit_tensors_export(tmp_path: Path) -> None:
    model = factorized_small_cnn("svd-tucker-cp")
    model, _ = jointcomp.quantize(model, {"kmeans": {}, "bits": {"factors": 3, "weights": 4}})
    report = to_onnx(model, tmp_path / "k.onnx", IMAGE, samples=IMAGES, weights="qdq")
    assert report.tensors["float"] > 0  # codebooks lie on no uniform grid: float
    model = factorized_small_cnn("spatial-tt")
    bits = {"factors": 5, "weights": 3, "biases": 16}
    model, _ = jointcomp.quantize(model, {"ptq": {}, "bits": bits})
    report = to_onnx(model, tmp_path / "m.onnx", IMAGE, samples=IMAGES, weights="dynamic")
    assert report.check["cosine"] > 0.99


def test_a_mismatch_is_a_clear_failure(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    to_onnx(model, tmp_path / "m.onnx", {"input": torch.randn(1, 8)}, weights="float")
    with torch.no_grad():
        model[0].weight.add_(0.5)
    with pytest.raises(ExportCheckError, match="does not match"):
        check_onnx(tmp_path / "m.onnx", model, {"input": torch.randn(3, 8)})


def test_torch_export_round_trip(tmp_path: Path) -> None:
    model, _ = jointcomp.quantize(factorized_small_cnn("svd-tucker-cp"), {"ptq": {}})
    report = to_program(model, tmp_path / "m.pt2", IMAGE, samples=IMAGES, dynamic=DYNAMIC)
    loaded = torch.export.load(str(tmp_path / "m.pt2")).module()
    plain, _ = materialize(model)
    with torch.no_grad():
        assert torch.equal(loaded(IMAGES["input"])[0], plain(IMAGES["input"]))
    assert report["max_abs_err"] < 1e-5


def test_dense_safetensors_load_into_the_original_architecture(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    model = factorized_small_cnn("lowrank-sparse")
    model, _ = jointcomp.quantize(model, {"ptq": {}, "bits": {"factors": 6}})
    path = tmp_path / "m.jcz"
    jointcomp.save(model, path, builder="zoo:small_cnn", kwargs=KWARGS)
    report = export_file(path, tmp_path / "dense.safetensors")
    state = load_file(tmp_path / "dense.safetensors")
    assert report["tensors"] == len(state)
    assert "fc.weight" in state and not any("lowrank" in k or "sparse" in k for k in state)
    original = build_model("zoo:small_cnn", KWARGS).eval()
    original.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.allclose(original(IMAGES["input"]), model(IMAGES["input"]), atol=1e-4)


# --- transformers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny sentence-transformers folder and a 4-bit file of it with its word embeddings
    factorized and its intermediate size pruned alike in every layer."""
    from .tiny_transformers import tiny_batch, write_tiny_sentence_transformer

    root = tmp_path_factory.mktemp("export")
    folder = write_tiny_sentence_transformer(root / "st")
    batch = tiny_batch(folder)
    model = build_model(f"sentence-transformers:{folder}").eval()
    prune = {"ratio": 0.5, "scope": {"include": ["*intermediate.dense"]}}
    model, _ = jointcomp.prune(model, prune, data=[batch], task="distill")
    embeddings = {"rank": 8, "scope": {"include": ["*word_embeddings"]}}
    model, _ = jointcomp.decompose(model, {"embeddings": embeddings}, data=[batch], task="distill")
    model, _ = jointcomp.quantize(model, {"ptq": {}, "bits": {"weights": 4}})
    path = root / "st.jcz"
    jointcomp.save(model, path, builder=f"sentence-transformers:{folder}")
    return folder, path


def test_tiny_bert_onnx_runs_in_onnxruntime(tmp_path: Path, embedder: tuple[Path, Path]) -> None:
    _, path = embedder
    for weights in ("dynamic", "qdq"):
        report = export_file(path, tmp_path / f"{weights}.onnx", weights=weights)
        assert report["input_shapes"] == {"input_ids": [1, 64], "attention_mask": [1, 64]}
        assert report["cosine"] > 0.99
    assert report["exact_max_abs_err"] < 1e-4


def test_transformers_folder_loads_and_matches(tmp_path: Path, embedder: tuple[Path, Path]) -> None:
    import transformers

    from .tiny_transformers import tiny_batch

    folder, path = embedder
    report = export_file(path, tmp_path / "hf", fmt="transformers")
    assert report["max_abs_err"] < 1e-4
    hf = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.intermediate_size == 32  # pruned from 64 in every layer
    model = jointcomp.load(path)
    batch = tiny_batch(folder)
    with torch.no_grad():
        got = hf(**batch).last_hidden_state
        want = model.transformer(**batch).last_hidden_state
        assert torch.allclose(got, want, atol=1e-4)
        # the folder is a sentence-transformers folder too
        embedder_again = build_model(f"sentence-transformers:{tmp_path / 'hf'}")
        assert torch.allclose(embedder_again(**batch), model(**batch), atol=1e-4)


def test_per_layer_intermediate_sizes_are_refused(tmp_path: Path) -> None:
    from .tiny_transformers import tiny_batch, write_tiny_bert

    folder = write_tiny_bert(tmp_path / "bert")
    model = build_model(f"hf:{folder}").eval()
    scope = {"include": ["encoder.layer.0.intermediate.dense"]}
    model, _ = jointcomp.prune(model, {"ratio": 0.5, "scope": scope}, data=[tiny_batch(folder)],
                               task="distill")  # fmt: skip
    assert model.encoder.layer[1].intermediate.dense.out_features == 64
    path = tmp_path / "m.jcz"
    jointcomp.save(model, path, builder=f"hf:{folder}")
    with pytest.raises(ExportError, match="intermediate sizes differ"):
        export_file(path, tmp_path / "hf", fmt="transformers")


def test_pruned_heads_are_refused(tmp_path: Path) -> None:
    from .tiny_transformers import tiny_batch, write_tiny_bert

    folder = write_tiny_bert(tmp_path / "bert")
    model = build_model(f"hf:{folder}").eval()
    prune = {"ratio": 0.5, "heads": 0.5, "scope": {"include": ["*attention.self*"]}}
    model, _ = jointcomp.prune(model, prune, data=[tiny_batch(folder)], task="distill")
    path = tmp_path / "m.jcz"
    jointcomp.save(model, path, builder=f"hf:{folder}")
    with pytest.raises(ExportError, match="attention heads were pruned"):
        export_file(path, tmp_path / "hf", fmt="transformers")
    assert export_file(path, tmp_path / "m.onnx")["cosine"] > 0.99  # ONNX has no such limit


# --- inputs and the command line ---------------------------------------------------------------


def test_inputs_from_a_run_folder(tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(GOLDEN / "quickstart.jcz", run / "model.jcz")
    import jointcomp.recipe

    recipe = jointcomp.recipe.load_recipe(
        Path(__file__).resolve().parent.parent / "recipes" / "quickstart.yaml"
    )
    (run / "recipe.json").write_text(json.dumps(jointcomp.recipe.recipe_to_data(recipe)))
    examples = examples_for("zoo:small_cnn", {}, file=run / "model.jcz")
    assert tuple(examples.example["input"].shape) == (1, 1, 8, 8)
    assert "recipe" in examples.source


def test_cli_export_and_refusals(tmp_path: Path) -> None:
    runner = CliRunner()
    source = tmp_path / "q.jcz"
    source.write_bytes((GOLDEN / "quickstart.jcz").read_bytes())
    target = tmp_path / "q.onnx"
    args = ["export", str(source), "--to", str(target), "--input-shape", "1,1,8,8"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "check: max abs err" in result.output and target.is_file()
    result = runner.invoke(cli, args)  # exists
    assert result.exit_code == 2 and "--force" in result.output
    assert runner.invoke(cli, [*args, "--force"]).exit_code == 0
    result = runner.invoke(cli, ["export", str(source), "--to", str(tmp_path / "q.xyz")])
    assert result.exit_code == 2 and "unknown suffix" in result.output
    result = runner.invoke(cli, ["export", str(source), "--to", str(tmp_path / "n.onnx")])
    assert result.exit_code == 2 and "--input-shape" in result.output
    before = source.read_bytes()
    same = ["export", str(source), "--to", str(source), "--format", "onnx", "--force"]
    result = runner.invoke(cli, same)
    assert result.exit_code == 2 and "input file itself" in result.output
    assert source.read_bytes() == before


def test_missing_onnx_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = builtins.__import__

    def no_onnx(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name in ("onnx", "onnxruntime"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    monkeypatch.setattr("importlib.import_module", lambda name: no_onnx(name))
    model = copy.deepcopy(torch.nn.Linear(2, 2))
    with pytest.raises(ExportError, match=r'pip install "jointcomp\[export\]"'):
        to_onnx(model, tmp_path / "m.onnx", {"input": torch.randn(1, 2)})
