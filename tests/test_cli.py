"""The command line, end to end on the quickstart recipe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import jointcomp
from jointcomp.cli import cli

from .conftest import Encoded, assert_file_holds, assert_learned, spy_encode

ROOT = Path(__file__).resolve().parent.parent
QUICK = [
    "--set",
    "train.epochs=2",
    "--set",
    "stages.0.prune.finetune.epochs=1",
    "--set",
    "stages.1.decompose.finetune.epochs=1",
    "--set",
    "stages.2.quantize.qat.finetune.epochs=1",
    "--set",
    "audit.min_run_time=0.02",
]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Encoded]:
    """The quickstart's run folder, and the model its encode was given."""
    out = tmp_path_factory.mktemp("cli") / "quickstart"
    with spy_encode() as seen:
        result = CliRunner().invoke(
            cli, ["run", str(ROOT / "recipes/quickstart.yaml"), "-q", "-o", str(out), *QUICK]
        )
    assert result.exit_code == 0, result.output
    assert "model.jcz" in result.output and "× vs fp32" in result.output
    (before,) = seen
    return out, before


@pytest.fixture(scope="module")
def quickstart_run(quickstart: tuple[Path, Encoded]) -> Path:
    return quickstart[0]


def test_quickstart_file_holds_the_compressed_model(quickstart: tuple[Path, Encoded]) -> None:
    out, before = quickstart
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert_file_holds(before, x, out / "model.jcz")
    report = json.loads((out / "report.json").read_text())
    assert report["final"]["bytes"] == (out / "model.jcz").stat().st_size
    # small_cnn after 2 epochs on digits: ~87% test top-1; pruned, factorized, 4-6 bits: ~84%
    assert_learned(report, baseline_floor=0.75, final_floor=0.7, max_drop=0.15)


def test_run_writes_everything(quickstart_run: Path) -> None:
    for name in ("model.jcz", "report.json", "report.md", "report.html"):
        assert (quickstart_run / name).is_file()


def test_inspect_lists_tensors(quickstart_run: Path) -> None:
    # what the header says, without building anything: names come from the structure
    header = CliRunner().invoke(cli, ["inspect", str(quickstart_run / "model.jcz")])
    assert header.exit_code == 0, header.output
    assert "header" in header.output and "payload" in header.output
    assert "zoo:small_cnn" in header.output and "edit block1.0" in header.output
    assert "(implied)" in header.output and "--structure" in header.output
    result = CliRunner().invoke(cli, ["inspect", "--structure", str(quickstart_run / "model.jcz")])
    assert result.exit_code == 0, result.output
    assert "block1.0." in result.output and "zoo:small_cnn" in result.output
    as_json = CliRunner().invoke(
        cli, ["inspect", "--json", "--structure", str(quickstart_run / "model.jcz")]
    )
    info = json.loads(as_json.output)
    assert info["bytes"] == (quickstart_run / "model.jcz").stat().st_size
    assert info["header_bytes"] + info["payload_bytes"] == info["bytes"]
    assert all(
        {"name", "shape", "codec", "bytes", "bits_per_element"} <= set(t) for t in info["tensors"]
    )
    # the quickstart quantizes its weights: the file holds their integers
    names = {t["name"] for t in info["tensors"]}
    assert "block1.0.parametrizations.weight.0.int_repr" in names


def test_decode_to_safetensors(quickstart_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "dense.safetensors"
    result = CliRunner().invoke(
        cli, ["decode", str(quickstart_run / "model.jcz"), "--to", str(target)]
    )
    assert result.exit_code == 0, result.output
    state = load_file(str(target))
    model = jointcomp.load(str(quickstart_run / "model.jcz"))
    assert set(state) == set(model.state_dict())


def test_audit_remeasures_the_file(quickstart_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "audit",
            str(quickstart_run / "model.jcz"),
            "--recipe",
            str(ROOT / "recipes/quickstart.yaml"),
            *QUICK,
            "--out",
            str(tmp_path / "audit"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    saved = json.loads((quickstart_run / "report.json").read_text())
    assert report["final"]["accuracy"] == saved["final"]["accuracy"]
    assert report["final"]["bytes"] == saved["final"]["bytes"]


def test_validate_and_recipes() -> None:
    ok = CliRunner().invoke(cli, ["validate", str(ROOT / "recipes/quickstart.yaml")])
    assert ok.exit_code == 0 and "prune → decompose → quantize → encode" in ok.output
    listed = CliRunner().invoke(cli, ["recipes"])
    assert "quickstart.yaml" in listed.output


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jcz"
    bad.write_bytes(b"not a jcz file at all, just some bytes" * 3)
    proc = subprocess.run(
        [sys.executable, "-m", "jointcomp", "inspect", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "error: not a .jcz file (bad magic bytes)" in proc.stderr
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jointcomp",
            "validate",
            str(ROOT / "recipes/quickstart.yaml"),
            "--set",
            "stages.0.prune.ratio=7",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "stages.0.prune.ratio" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_refuses_existing_output(quickstart_run: Path) -> None:
    result = CliRunner().invoke(
        cli, ["run", str(ROOT / "recipes/quickstart.yaml"), "-q", "-o", str(quickstart_run), *QUICK]
    )
    assert result.exit_code == 2
    assert "already exists" in result.output


def test_inspect_of_an_untrusted_builder_needs_trust(tmp_path: Path) -> None:
    """A table names its tensors through the model's structure: inspecting a file whose
    builder is outside the allow-list shows its header and builds nothing; --structure needs
    --trust."""
    from torch import nn

    from jointcomp.container import save

    path = tmp_path / "m.jcz"
    save(path, nn.Sequential(nn.Linear(4, 2)), "torch.nn:Sequential", {})
    header = CliRunner().invoke(cli, ["inspect", str(path)])
    assert header.exit_code == 0, header.output
    assert "torch.nn:Sequential" in header.output and "--structure --trust" in header.output
    refused = CliRunner().invoke(cli, ["inspect", "--structure", str(path)])
    assert refused.exit_code == 2 and "not on the allow-list" in refused.output
    trusted = CliRunner().invoke(cli, ["inspect", "--json", "--trust", str(path)])
    assert trusted.exit_code == 0, trusted.output
    assert [t["name"] for t in json.loads(trusted.output)["tensors"]] == ["0.weight", "0.bias"]
