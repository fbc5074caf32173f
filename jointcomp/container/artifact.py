"""Writing and opening .jcz files: a module in, a module out, bit for bit."""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import FormatError, JointcompError
from ..nn.quantized import Codebook
from .framing import Frame, pack, unpack
from .grid_params import fill_grid_params, quantizer_grids, rebase_raw
from .manifest import (
    Manifest,
    describe,
    load_tensors,
    manifest_from_json,
    omittable,
    rebuild_structure,
    stored_tensors,
    tensors_to_store,
)
from .names import compact_table, fill_lengths, needs_structure, resolve_table
from .scalars import expand_scalars, pack_scalars
from .tensors import check_entry, decode_tensor, encode_tensor

MAX_TENSORS = 1 << 20


@dataclass(frozen=True)
class TensorChoice:
    """How one tensor is stored: "plain" (its little-endian bytes) or a jointcomp.codec coder
    name with options."""

    codec: str = "plain"
    options: dict[str, Any] = field(default_factory=dict)
    storage: str | None = None  # e.g. "f16" to narrow a float tensor


Chooser = Callable[[str, torch.Tensor], TensorChoice]


@dataclass
class Artifact:
    """An opened file: the rebuilt module and everything the header says about it."""

    model: nn.Module
    manifest: Manifest
    entries: list[dict[str, Any]]
    meta: dict[str, Any]
    header_bytes: int
    file_bytes: int

    @property
    def payload_bytes(self) -> int:
        return self.file_bytes - self.header_bytes


@dataclass
class WriteReport:
    """What was written: the table entries with per-tensor stats, and the sizes."""

    entries: list[dict[str, Any]]
    stats: dict[str, dict[str, Any]]
    file_bytes: int
    header_bytes: int


def build_reference(builder: str, kwargs: dict[str, Any], trust: bool) -> nn.Module:
    """A fresh module from ``builder`` without disturbing the caller's random state."""
    from ..models import build_model
    from ..registry import load_module_types

    load_module_types()
    with torch.random.fork_rng(devices=[]):
        return build_model(builder, kwargs, trust=trust)


def encode_model(
    model: nn.Module,
    builder: str,
    kwargs: dict[str, Any],
    *,
    meta: dict[str, Any] | None = None,
    choose: Chooser | None = None,
) -> tuple[bytes, WriteReport]:
    """The complete file image of ``model`` and a report of its tensor table."""
    reference = build_reference(builder, kwargs, trust=True)
    manifest = describe(model, builder, kwargs, reference)
    # what load() will rebuild before it reads a single tensor: all-zero tensors it already
    # gets right (empty parametrization originals, symmetric zero points) need no entry
    rebuilt = copy.deepcopy(manifest)
    _, built = rebuild_structure(build_reference(builder, kwargs, trust=True), rebuilt)
    entries: list[dict[str, Any]] = []
    payloads: list[bytes] = []
    stats: dict[str, dict[str, Any]] = {}
    grids = quantizer_grids(model)
    for name, tensor in tensors_to_store(model, manifest).items():
        if omittable(tensor, built.get(name)):
            continue
        choice = choose(name, tensor) if choose else TensorChoice()
        entry, payload, tensor_stats = encode_tensor(
            name,
            tensor,
            codec_name=choice.codec,
            storage=choice.storage,
            codec_options=choice.options,
        )
        entry, payload = rebase_raw(entry, payload, tensor, grids.get(name))
        entries.append(entry)
        payloads.append(payload)
        stats[name] = tensor_stats
    table, ordered = pack_scalars(entries, payloads)
    header = {
        "model": manifest.to_json(),
        "tensors": compact_table(table, stored_tensors(built, rebuilt), grids),
    }
    if meta:
        header["meta"] = meta
    image = pack(header, ordered)
    payload_total = sum(len(p) for p in payloads)
    return image, WriteReport(entries, stats, len(image), len(image) - payload_total)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers never see a
    half-written file and an existing file is replaced only once the new one is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(
    path: str | Path,
    model: nn.Module,
    builder: str,
    kwargs: dict[str, Any],
    *,
    meta: dict[str, Any] | None = None,
    choose: Chooser | None = None,
) -> WriteReport:
    """Write ``model`` to ``path`` (atomically)."""
    image, report = encode_model(model, builder, kwargs, meta=meta, choose=choose)
    write_atomic(path, image)
    return report


def read_header(
    data: bytes | bytearray | memoryview, *, trust: bool = False
) -> tuple[Frame, Manifest, list[dict[str, Any]], dict[str, Any]]:
    """Check the framing and the header of a file image; no tensor is decoded. A table whose
    names come from the model's structure has it rebuilt (placeholders, no weights), which
    needs an allow-listed builder unless ``trust``."""
    frame, manifest, entries, meta, _ = _read(data, trust)
    return frame, manifest, entries, meta


def _read(
    data: bytes | bytearray | memoryview, trust: bool
) -> tuple[Frame, Manifest, list[dict[str, Any]], dict[str, Any], tuple | None]:
    """read_header, plus the rebuilt (module, state dict) when the table needed them."""
    frame = unpack(data)
    header = frame.header
    manifest = manifest_from_json(header.get("model"))
    entries = header.get("tensors")
    if not isinstance(entries, list) or len(entries) > MAX_TENSORS:
        raise FormatError("header: missing or oversized tensor table")
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise FormatError("header: meta is not an object")
    structure = None
    if needs_structure(entries):
        structure = _structure(manifest, trust)
        entries = resolve_table(entries, stored_tensors(structure[1], manifest))
        entries = fill_grid_params(entries, quantizer_grids(structure[0]))
    entries = expand_scalars(fill_lengths(entries))
    if len(entries) > MAX_TENSORS:
        raise FormatError("header: oversized tensor table")
    _check_table(entries, len(frame.payload))
    return frame, manifest, entries, meta, structure


def _check_table(entries: list[dict[str, Any]], payload_bytes: int) -> None:
    """Every entry valid, no name twice, and the lengths adding up to the payload exactly."""
    total = 0
    names = set()
    for i, entry in enumerate(entries):
        name, _, _, _, length = check_entry(entry, i)
        if name in names:
            raise FormatError(f"tensor {name!r} appears twice in the tensor table")
        names.add(name)
        total += length
    if total != payload_bytes:
        raise FormatError(
            f"payload lengths in the tensor table add up to {total} bytes, "
            f"but the file holds {payload_bytes} payload bytes"
        )


def _structure(manifest: Manifest, trust: bool) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The manifest's module with placeholder tensors, and its state dict (ties resolved)."""
    from ..models import is_allowed_builder

    if not trust and not is_allowed_builder(manifest.builder):
        raise FormatError(
            f"the file names builder {manifest.builder!r}, which is not on the allow-list "
            "(zoo:NAME, torchvision:NAME); open it with trust=True / --trust only if you trust "
            "where it came from"
        )
    try:
        base = build_reference(manifest.builder, manifest.kwargs, trust=trust)
    except JointcompError as exc:
        raise FormatError(f"cannot build the file's model: {exc}") from None
    return rebuild_structure(base, manifest)


def decode_tensors(frame: Frame, entries: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Decode every payload (offsets are the running sum of the table's lengths)."""
    tensors: dict[str, torch.Tensor] = {}
    offset = 0
    for i, entry in enumerate(entries):
        length = entry["b"]
        tensors[entry["n"]] = decode_tensor(entry, frame.payload[offset : offset + length], i)
        offset += length
    return tensors


def _check_codebooks(model: nn.Module) -> None:
    """Every codebook index names one of its centroids: a payload whose damage still decodes
    (behind a recomputed checksum) must not load a module that fails only when it runs."""
    for name, module in model.named_modules():
        if not isinstance(module, Codebook) or not module.indices.numel():
            continue
        if int(module.indices.min()) < 0 or int(module.indices.max()) >= module.size:
            raise FormatError(f"{name}: codebook indices outside its {module.size} centroids")


def open_artifact(source: str | Path | bytes, *, trust: bool = False) -> Artifact:
    """Open a .jcz file (a path or its bytes), check it completely, and rebuild its module.

    Raises FormatError for anything wrong with the file, including a builder outside the
    allow-list when ``trust`` is False.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise FormatError(f"{path}: no such file")
        data = path.read_bytes()
    frame, manifest, entries, meta, structure = _read(data, trust)
    if structure is None:  # the allow-list check comes before any payload is decoded
        structure = _structure(manifest, trust)
    tensors = decode_tensors(frame, entries)
    model = load_tensors(*structure, manifest, tensors)
    _check_codebooks(model)
    model.eval()
    return Artifact(model, manifest, entries, meta, frame.header_bytes, frame.file_bytes)


def load(path: str | Path | bytes, *, trust: bool = False) -> nn.Module:
    """The runnable module stored in a .jcz file, in eval mode."""
    return open_artifact(path, trust=trust).model
