"""The rules of the format: one version is read, and an older or newer one is refused saying
what to do; scales on a log grid are stored as integer codes, T-Basis sharing is implied by the
layer order, and raw-coder parameters by the quantizer's range — each exact, each smaller, and
each refused clearly when a file is malformed."""

from __future__ import annotations

import copy
import hashlib
import json
import struct
from pathlib import Path

import pytest
import torch

from jointcomp.container import open_artifact, save
from jointcomp.container.choose import StoragePolicy
from jointcomp.container.framing import FORMAT_MAJOR, FORMAT_MINOR, pack, unpack
from jointcomp.errors import FormatError
from jointcomp.nn.quantized import IntQuantized, attach, quantized_tensors
from jointcomp.tensor.log_grid import exact_codes, snap

from .test_tbasis_layers import KW, shared_small_cnn

SCALE = "block2.0.coefficients.parametrizations.coef.0.scale"


def _rewrite(image: bytes, edit) -> bytes:
    """The file with its header changed by ``edit`` (framing, CRC and digest made valid)."""
    frame = unpack(image)
    header = json.loads(json.dumps(frame.header))
    edit(header)
    return pack(header, [bytes(frame.payload)])


def _versioned(major: int, minor: int) -> bytes:
    """A valid file that says it is format ``major.minor`` (its digest made valid)."""
    image = bytearray(pack({"model": {"builder": "zoo:lenet300", "kwargs": {}}, "tensors": []}, []))
    struct.pack_into("<HH", image, 8, major, minor)
    body = bytes(image[:-32])
    return body + hashlib.sha256(body).digest()


def test_this_version_is_read() -> None:
    assert (FORMAT_MAJOR, FORMAT_MINOR) == (1, 7)  # files users have are 1.7: keep reading them
    assert open_artifact(_versioned(1, 7)).manifest.builder == "zoo:lenet300"


@pytest.mark.parametrize(
    "major,minor", [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (1, 6), (0, 9)]
)
def test_older_versions_are_pre_release_formats_to_write_again(major: int, minor: int) -> None:
    message = (
        rf"format {major}\.{minor}, a pre-release format this jointcomp no longer reads: "
        r"re-run the recipe that wrote it .* to write it again"
    )
    with pytest.raises(FormatError, match=message):
        open_artifact(_versioned(major, minor))


@pytest.mark.parametrize("major,minor", [(1, 8), (1, 65535), (2, 0), (2, 7)])
def test_newer_versions_say_upgrade(major: int, minor: int) -> None:
    message = rf"format {major}\.{minor}, newer than this jointcomp's 1\.7: upgrade jointcomp"
    with pytest.raises(FormatError, match=message):
        open_artifact(_versioned(major, minor))


def test_the_version_is_checked_before_the_rest_of_the_file() -> None:
    """An old file is refused for its version, not for whatever else differs in it."""
    image = bytearray(_versioned(1, 3))
    image[-1] ^= 0xFF  # its digest no longer matches either
    with pytest.raises(FormatError, match="pre-release format"):
        open_artifact(bytes(image))


def _quantized_tables(scales: torch.Tensor) -> torch.nn.Module:
    model, _, table = shared_small_cnn()
    gen = torch.Generator().manual_seed(0)
    rows = table.coef.shape[0]
    coef = torch.randint(-7, 8, tuple(table.coef.shape), generator=gen)
    attach(table, "coef", IntQuantized.from_ints(coef, scales.reshape(rows, 1), bits=4, axis=0))
    return model


def _save(model: torch.nn.Module, path: Path, float_storage: str = "f16") -> bytes:
    policy = StoragePolicy(float_storage=float_storage)  # the encode stage's, codec auto
    save(path, model, "zoo:small_cnn", KW, choose=policy.choose)
    return path.read_bytes()


def test_row_scales_on_a_log_grid_are_stored_as_codes_exactly(tmp_path: Path) -> None:
    _, _, table = shared_small_cnn()
    rows = table.coef.shape[0]
    raw = torch.linspace(0.10, 0.11, rows)
    on_grid = _quantized_tables(snap(raw, 64))
    off_grid = _quantized_tables(raw)
    image = _save(on_grid, tmp_path / "grid.jcz")
    plain = _save(off_grid, tmp_path / "f16.jcz")
    entries = {e["n"]: e for e in open_artifact(image).entries}
    assert entries[SCALE]["st"] == "l64" and entries[SCALE]["b"] <= rows // 2  # ≤ 4 bits
    assert {e["n"]: e for e in open_artifact(plain).entries}[SCALE]["st"] == "f16"
    assert len(image) < len(plain)  # 2 bytes a row as f16, 4 bits as codes (+ their entry)
    loaded = open_artifact(image).model
    ours = quantized_tensors(on_grid)["block2.0.coefficients.coef"].scale
    theirs = quantized_tensors(loaded)["block2.0.coefficients.coef"].scale
    assert torch.equal(ours, theirs)  # exact, where f16 would have rounded them


def test_malformed_log_grid_entries_are_refused(tmp_path: Path) -> None:
    _, _, table = shared_small_cnn()
    scales = snap(torch.full((table.coef.shape[0],), 0.1), 64)
    image = _save(_quantized_tables(scales), tmp_path / "m.jcz")

    def entry_of(header: dict) -> dict:
        return next(e for e in header["tensors"] if e.get("st") == "l64")

    def storage(value: str):
        return lambda h: entry_of(h).__setitem__("st", value)

    with pytest.raises(FormatError, match="invalid storage dtype 'l63'"):
        open_artifact(_rewrite(image, storage("l63")))
    with pytest.raises(FormatError, match="needs an f32 tensor and a coder"):
        open_artifact(_rewrite(image, lambda h: entry_of(h).update(c="plain", b=4)))
    with pytest.raises(FormatError, match="not a normal float32"):
        # codes far past float32's range: the raw minimum moved
        far = {"p": {"min": 1 << 20, "bits": 0}, "b": 0}
        open_artifact(_rewrite(image, lambda h: entry_of(h).update(far)))


def test_t_basis_sharing_is_implied_and_exceptions_are_listed(tmp_path: Path) -> None:
    model, basis, _ = shared_small_cnn()
    image = _save(model, tmp_path / "shared.jcz", "f32")
    assert "shared" not in unpack(image).header["model"]
    loaded = open_artifact(image).model
    assert loaded.block3[0].basis is loaded.block2[0].basis is loaded.fc.basis
    assert loaded.block3[0].coefficients is loaded.fc.coefficients
    # the classifier on a basis of its own: the rule would share it, so the file says "own"
    model.fc.basis = copy.deepcopy(basis)
    image = _save(model, tmp_path / "own.jcz", "f32")
    assert unpack(image).header["model"]["own"] == ["fc.basis"]
    loaded = open_artifact(image).model
    assert loaded.fc.basis is not loaded.block2[0].basis
    assert loaded.fc.coefficients is loaded.block2[0].coefficients
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    with pytest.raises(FormatError, match="malformed list of own modules"):
        open_artifact(_rewrite(image, lambda h: h["model"].update(own="fc.basis")))


def test_raw_parameters_follow_from_the_quantizer_range(tmp_path: Path) -> None:
    model, _, _ = shared_small_cnn()
    gen = torch.Generator().manual_seed(0)
    full = torch.randint(-31, 32, (16, 1, 3, 3), generator=gen)
    full[:2, 0, 0, 0] = torch.tensor([-31, 31])  # the values need the grid's whole 6-bit width
    narrow = torch.randint(0, 4, (10,), generator=gen)  # 2 bits: packed tighter than the grid
    six = {"bits": 6, "narrow_range": True}
    attach(model.block1[0], "weight", IntQuantized.from_ints(full, 0.01, **six))
    attach(model.fc, "bias", IntQuantized.from_ints(narrow, 0.01, **six))
    image = _save(model, tmp_path / "m.jcz", "f32")
    raw = [e for e in unpack(image).header["tensors"] if e.get("c") == "raw"]
    assert any("p" not in e for e in raw)  # the full-width biases: implied
    assert any(e.get("p") == {"min": 0, "bits": 2} for e in raw)  # the narrow ones: stated
    loaded = open_artifact(image).model
    q = quantized_tensors(loaded)
    assert torch.equal(q["block1.0.weight"].int_repr, full.to(torch.int8))
    assert torch.equal(q["fc.bias"].int_repr, narrow.to(torch.int8))


def test_quantize_stage_puts_row_scales_on_the_grid(tmp_path: Path) -> None:
    from jointcomp.stages.quantize import QuantizeConfig, quantize

    from .stage_util import bundle_context, digits_bundle
    from .test_tbasis_equalize import _uneven_model

    config = QuantizeConfig(
        qat={"finetune": {"epochs": 1, "max_batches": 1, "lr": 1e-6}},
        bits={"factors": 4, "weights": 8, "norms": 8, "biases": 8},
        overrides={"*.coef": {"granularity": "channel", "scale_grid": 64}},
    )
    context = bundle_context(digits_bundle(), train={"epochs": 1})
    model, record = quantize(_uneven_model(), config, context)
    moved = record["summary"]["scales_on_grid"]
    assert moved["tensors"] == 1 and moved["max_relative_change"] <= 2 ** (1 / 128) - 1
    scale = quantized_tensors(model)["block2.0.coefficients.coef"].scale
    assert scale.numel() > 1 and exact_codes(scale)[1] <= 64
    image = _save(model, tmp_path / "m.jcz", "f32")
    assert {e["n"]: e for e in open_artifact(image).entries}[SCALE]["st"].startswith("l")
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), open_artifact(image).model(x))
    with pytest.raises(ValueError, match="scale_grid"):
        QuantizeConfig(overrides={"*.coef": {"scale_grid": 48}})
