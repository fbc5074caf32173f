"""Writing and opening .jcz files: a module in, a module out, bit for bit."""

from __future__ import annotations

import copy
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import FormatError, JointcompError
from ..nn.quantized import Codebook, IntQuantized
from ..registry import module_type_of
from .framing import Frame, pack, unpack
from .grid_params import RAW, fill_grid_params, quantizer_grids, rebase_raw
from .limits import MAX_TENSORS, OverBudget, bounded_build, budget, nbytes, steps, work
from .manifest import (
    Manifest,
    _get,
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
from .tensors import DTYPES, check_entry, decode_tensor, encode_tensor


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
    """The complete file image of ``model`` and a report of its tensor table. A model folder's
    builder (``hf:DIR``) is stored as its portable form, which rebuilds it without the folder."""
    from ..models import file_builder

    builder, kwargs = file_builder(builder, kwargs)
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


UNEXPECTED = "the reader failed unexpectedly on this file"


@contextmanager
def _boundary() -> Iterator[None]:
    """Whatever goes wrong reading a file leaves as a FormatError. Any other exception is a
    check missing before it (the fuzz tests and tools/fuzz_jcz.py count these, by the
    message's UNEXPECTED prefix): the last line of defence, never the design."""
    try:
        yield
    except FormatError:
        raise
    except JointcompError as exc:
        raise FormatError(str(exc)) from None
    except Exception as exc:  # RecursionError, MemoryError, a constructor's RuntimeError, ...
        text = str(exc)
        text = text if len(text) <= 300 else text[:297] + "..."
        raise FormatError(f"{UNEXPECTED} ({type(exc).__name__}: {text})") from exc


def read_header(
    data: bytes | bytearray | memoryview, *, trust: bool = False
) -> tuple[Frame, Manifest, list[dict[str, Any]], dict[str, Any]]:
    """Check the framing and the header of a file image; no tensor is decoded. A table whose
    names come from the model's structure has it rebuilt (placeholders, no weights), which
    needs an allow-listed builder unless ``trust``."""
    with _boundary():
        frame, manifest, entries, meta, _, _ = _read(data, trust)
    return frame, manifest, entries, meta


def _read(
    data: bytes | bytearray | memoryview, trust: bool, structure: bool = False
) -> tuple[Frame, Manifest, list[dict[str, Any]], dict[str, Any], tuple | None, set[str]]:
    """read_header, plus the rebuilt (module, state dict) when the table needed them or
    ``structure`` asks for them, and the names of the raw entries whose parameters their
    quantizer's range implied."""
    frame = unpack(data)
    header = frame.header
    manifest = manifest_from_json(header.get("model"))
    entries = header.get("tensors")
    if not isinstance(entries, list) or len(entries) > MAX_TENSORS:
        raise FormatError("header: missing or oversized tensor table")
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise FormatError("header: meta is not an object")
    built = None
    implied_raw: set[str] = set()
    if structure or needs_structure(entries):
        built = _structure(manifest, trust, frame.file_bytes)
        entries = resolve_table(entries, stored_tensors(built[1], manifest))
        grids = quantizer_grids(built[0])
        implied_raw = {
            e["n"]
            for e in entries
            if isinstance(e, dict)
            and e.get("c") == RAW
            and "p" not in e
            and isinstance(e.get("n"), str)
            and e["n"] in grids
        }
        entries = fill_grid_params(entries, grids)
    entries = expand_scalars(fill_lengths(entries))
    if len(entries) > MAX_TENSORS:
        raise FormatError("header: oversized tensor table")
    _check_table(entries, len(frame.payload))
    return frame, manifest, entries, meta, built, implied_raw


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


def _structure(
    manifest: Manifest, trust: bool, file_bytes: int
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The manifest's module with placeholder tensors, and its state dict (ties resolved),
    within the budget of a file of ``file_bytes`` (see ``limits``): built first on the meta
    device, where an oversized or overlong build is refused before anything is allocated,
    then for real under guards (the dry run is skipped where the builder cannot run on meta;
    anything else it finds wrong the real build finds again)."""
    from ..models import is_allowed_builder

    if not trust and not is_allowed_builder(manifest.builder):
        raise FormatError(
            f"the file names builder {manifest.builder!r}, which is not on the allow-list "
            "(zoo:NAME, torchvision:NAME, timm:NAME, transformers:ARCH); open it with "
            "trust=True / --trust only if you trust where it came from"
        )
    limit, max_steps = budget(file_bytes), steps(file_bytes)
    what = "the file's model"
    try:
        with bounded_build(limit, what, max_steps=max_steps, max_work=work(file_bytes), meta=True):
            root, _ = rebuild_structure(
                build_reference(manifest.builder, manifest.kwargs, trust=trust),
                copy.deepcopy(manifest),
            )
            dense = dense_bytes(root)
        if dense > limit:
            raise OverBudget(
                f"{what} holds {dense:,} bytes of tensors, more than the {limit:,} a file of "
                f"{file_bytes:,} bytes may describe"
            )
    except OverBudget:
        raise
    except Exception:
        pass  # the real build below reports what is wrong, if anything
    finally:
        root = None
    try:
        with bounded_build(limit, what, max_steps=max_steps):
            base = build_reference(manifest.builder, manifest.kwargs, trust=trust)
            return rebuild_structure(base, manifest)
    except JointcompError as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"cannot build the file's model: {exc}") from None


def dense_bytes(root: nn.Module) -> int:
    """Bytes of every parameter and buffer of ``root`` (a shared one once)."""
    seen: set[int] = set()
    total = 0
    for module in root.modules():
        for t in (*module._parameters.values(), *module._buffers.values()):
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                total += nbytes(t.shape, t.dtype)
    return total


def _match_structure(
    entries: list[dict[str, Any]],
    root: nn.Module,
    expected: dict[str, torch.Tensor],
    manifest: Manifest,
) -> None:
    """Before anything is decoded: every table entry names a stored tensor of the rebuilt
    module, of its dtype, and of its shape (a registered module's constructor fixes it) or,
    in a plain container (a pruned ViT's position embedding), of at most as many elements; so
    decoding never makes more than the module already holds."""
    stored = stored_tensors(expected, manifest)
    bad_ties = [t for t in manifest.ties if t not in expected][:5]
    if bad_ties:
        raise FormatError(f"ties name tensors the model does not have: {bad_ties}")
    owners: dict[str, nn.Module | None] = {}
    for entry in entries:
        name, shape = entry["n"], entry["s"]
        built = stored.get(name)
        if built is None:
            raise FormatError(
                f"tensor table does not match the model structure: {name!r} is not a stored "
                "tensor of the file's model"
            )
        if DTYPES[entry["d"]][0] != built.dtype:
            raise FormatError(
                f"tensor {name!r}: dtype {entry['d']} differs from the module's {built.dtype}"
            )
        owner_path = name.rpartition(".")[0]
        if owner_path not in owners:
            owners[owner_path] = _get(root, owner_path)
        owner = owners[owner_path]
        fixed = owner is None or module_type_of(owner) is not None
        if fixed and list(built.shape) != shape:
            raise FormatError(
                f"tensor {name!r}: shape {shape} does not fit its module ({list(built.shape)})"
            )
        if math.prod(shape) > built.numel():
            raise FormatError(
                f"tensor {name!r}: shape {shape} holds more elements than the module's "
                f"({list(built.shape)})"
            )


def decode_tensors(frame: Frame, entries: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Decode every payload (offsets are the running sum of the table's lengths), after
    checking that what they decode to fits the file's budget."""
    with _boundary():
        total = 0
        for i, entry in enumerate(entries):
            _, shape, code, _, _ = check_entry(entry, i)
            total += nbytes(shape, DTYPES[code][0])
        limit = budget(frame.file_bytes)
        if total > limit:
            raise OverBudget(
                f"the tensor table decodes to {total:,} bytes, more than the {limit:,} a file "
                f"of {frame.file_bytes:,} bytes may describe"
            )
        tensors: dict[str, torch.Tensor] = {}
        offset = 0
        for i, entry in enumerate(entries):
            length = entry["b"]
            tensors[entry["n"]] = decode_tensor(entry, frame.payload[offset : offset + length], i)
            offset += length
        return tensors


def check_values(root: nn.Module, implied: set[str], tensors: dict[str, torch.Tensor]) -> None:
    """Decoded values a writer never makes, behind a recomputed checksum: a quantizer's
    integers outside its range (or, packed raw from its range without parameters, not
    needing its width, as the writer only then leaves them out), NaN anywhere, ±inf in a
    parameter or in a registered module's tensor."""
    grids = {}
    for path, module in root.named_modules(remove_duplicate=False):  # a shared one's first path
        if isinstance(module, IntQuantized):
            grids[f"{path}.int_repr" if path else "int_repr"] = module
    for name, quantizer in grids.items():
        t = tensors.get(name)
        if t is None or not t.numel():
            continue
        lo, hi = quantizer.int_range()
        vmin, vmax = int(t.min()), int(t.max())
        if vmin < lo or vmax > hi:
            raise FormatError(
                f"tensor {name!r}: integers in [{vmin}, {vmax}], outside its {quantizer.bits}-bit "
                f"quantizer's range [{lo}, {hi}]"
            )
        if name in implied and (vmax - vmin).bit_length() != (hi - lo).bit_length():
            raise FormatError(
                f"tensor {name!r}: packed at its quantizer's full width without parameters, "
                "but its values do not need that width"
            )
    for name, t in tensors.items():
        if not t.is_floating_point() or not t.numel():
            continue
        if bool(torch.isnan(t).any()):
            raise FormatError(f"tensor {name!r} holds NaN")
        owner_path, _, attr = name.rpartition(".")
        owner = _get(root, owner_path)
        strict = owner is not None and (
            attr in owner._parameters or module_type_of(owner) is not None
        )
        if strict and not bool(torch.isfinite(t).all()):
            raise FormatError(f"tensor {name!r} holds an infinite value")


def _check_codebooks(model: nn.Module) -> None:
    """Every codebook index names one of its centroids (a payload whose damage still decodes,
    behind a recomputed checksum, must not load a module that fails only when it runs), and
    the centroid its zero_index pins holds 0."""
    for name, module in model.named_modules():
        if not isinstance(module, Codebook) or not module.indices.numel():
            continue
        if int(module.indices.min()) < 0 or int(module.indices.max()) >= module.size:
            raise FormatError(f"{name}: codebook indices outside its {module.size} centroids")
        pinned = module.zero_index
        centroids = module.centroids.detach()  # a Parameter: read, not differentiated
        if pinned is not None and float(centroids[pinned]) != 0.0:
            # the writer stores the pinned centroid as the 0 it is; another value means the
            # file's zero_index was changed, and would load another model
            raise FormatError(
                f"{name}: codebook centroid {pinned}, pinned to 0 by zero_index, holds "
                f"{float(centroids[pinned])!r}"
            )


def open_artifact(source: str | Path | bytes, *, trust: bool = False) -> Artifact:
    """Open a .jcz file (a path or its bytes), check it completely, and rebuild its module.

    Raises FormatError for anything wrong with the file, including a builder outside the
    allow-list when ``trust`` is False; it never spends more than the file's budget (see
    docs/FORMAT.md, "Resource bounds"): the module is built and the table checked against it
    before any tensor is decoded.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise FormatError(f"{path}: no such file")
        data = path.read_bytes()
    with _boundary():
        frame, manifest, entries, meta, structure, implied = _read(data, trust, structure=True)
        root, expected = structure
        _match_structure(entries, root, expected, manifest)
        tensors = decode_tensors(frame, entries)
        check_values(root, implied, tensors)
        model = load_tensors(root, expected, manifest, tensors)
        _check_codebooks(model)
        model.eval()
    return Artifact(model, manifest, entries, meta, frame.header_bytes, frame.file_bytes)


def load(path: str | Path | bytes, *, trust: bool = False) -> nn.Module:
    """The runnable module stored in a .jcz file, in eval mode."""
    return open_artifact(path, trust=trust).model
