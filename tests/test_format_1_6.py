"""Format 1.6: scales on a log grid stored as integer codes, T-Basis sharing implied by the
layer order, and raw-coder parameters implied by the quantizer's range — each exact, each
smaller, and each refused clearly when a file is malformed."""

from __future__ import annotations

import copy
import hashlib
import json
import struct
import zlib
from pathlib import Path

import pytest
import torch

from jointcomp.container import open_artifact, save
from jointcomp.container.framing import MAGIC, header_dictionary, unpack
from jointcomp.errors import FormatError
from jointcomp.nn.quantized import IntQuantized, attach, quantized_tensors
from jointcomp.stages.encode import EncodeParams, EncodeStage
from jointcomp.tensor.log_grid import exact_codes, snap

from .test_tbasis_layers import KW, shared_small_cnn

SCALE = "block2.0.coefficients.parametrizations.coef.0.scale"


def _rewrite(image: bytes, edit) -> bytes:
    """The file with its header changed by ``edit`` (framing, CRC and digest made valid)."""
    frame = unpack(image)
    header = json.loads(json.dumps(frame.header))
    edit(header)
    deflater = zlib.compressobj(
        9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, header_dictionary(frame.minor)
    )
    body = deflater.compress(json.dumps(header, separators=(",", ":")).encode())
    body += deflater.flush()
    out = struct.pack("<8sHHII", MAGIC, 1, frame.minor, len(body), zlib.crc32(body))
    out += body + bytes(frame.payload)
    return out + hashlib.sha256(out).digest()


def _quantized_tables(scales: torch.Tensor) -> torch.nn.Module:
    model, _, table = shared_small_cnn()
    gen = torch.Generator().manual_seed(0)
    rows = table.coef.shape[0]
    coef = torch.randint(-7, 8, tuple(table.coef.shape), generator=gen)
    attach(table, "coef", IntQuantized.from_ints(coef, scales.reshape(rows, 1), bits=4, axis=0))
    return model


def _save(model: torch.nn.Module, path: Path, float_storage: str = "f16") -> bytes:
    choose = EncodeStage(EncodeParams(float_storage=float_storage)).choose
    save(path, model, "zoo:small_cnn", KW, choose=lambda n, t: choose(n, t, set()))
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
    from jointcomp.stages.quantize import QuantizeParams, QuantizeStage

    from .quantize_util import stage_ctx
    from .test_tbasis_equalize import _uneven_model

    params = QuantizeParams(
        bits={"factors": 4, "weights": 8, "norms": 8, "biases": 8},
        layers={"*.coef": {"granularity": "channel", "scale_grid": 64}},
        finetune={"epochs": 1, "max_batches": 1, "lr": 1e-6},
    )
    ctx = stage_ctx(tmp_path)
    model = QuantizeStage(params).apply(_uneven_model(), ctx)
    moved = ctx.record["summary"]["scales_on_grid"]
    assert moved["tensors"] == 1 and moved["max_relative_change"] <= 2 ** (1 / 128) - 1
    scale = quantized_tensors(model)["block2.0.coefficients.coef"].scale
    assert scale.numel() > 1 and exact_codes(scale)[1] <= 64
    image = _save(model, tmp_path / "m.jcz", "f32")
    assert {e["n"]: e for e in open_artifact(image).entries}[SCALE]["st"].startswith("l")
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), open_artifact(image).model(x))
    with pytest.raises(ValueError, match="scale_grid"):
        QuantizeParams(layers={"*.coef": {"scale_grid": 48}})
