"""Hostile .jcz files: semantic attacks on real small files, their checksums recomputed (so
only the reader's validation can catch them), and a runner that opens each one measuring its
time and memory. tests/test_hostile_files.py runs every case in one subprocess
(``python -m tests.hostile``); tools/fuzz_jcz.py uses the same resealing helpers.

Each case says which item of issue 30 it covers and what a correct reader does: refuse it with
a FormatError ("error") or, for a harmless edit, load the very same model ("same": every tensor
bit for bit, the same outputs).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import re
import signal
import sys
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parent / "golden"
LIMIT_SECONDS = 2.0  # CPU seconds of the reader's process per case
HANG_SECONDS = 20  # wall clock: a case still running then is a hang, however loaded the machine
LIMIT_MB = 256.0


# ----------------------------------------------------------------------------------- resealing


def parts(image: bytes) -> tuple[dict[str, Any], bytes]:
    """The header (plain JSON data) and the payload bytes of a file image."""
    from jointcomp.container.framing import unpack

    frame = unpack(image)
    return copy.deepcopy(frame.header), bytes(frame.payload)


def reseal(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """A file image of ``header`` and ``payload`` with every checksum recomputed, as a
    malicious writer would make it."""
    from jointcomp.container.framing import pack

    return pack(header, [payload])


def reseal_text(text: str | bytes, payload: bytes = b"") -> bytes:
    """Like ``reseal`` for header text no JSON writer makes (5000-digit integers, NaN, deep
    nesting, huge arrays): DEFLATEd with the header dictionary, framed, checksummed."""
    import hashlib
    import struct

    from jointcomp.container.framing import FORMAT_MAJOR, FORMAT_MINOR, MAGIC
    from jointcomp.container.header_dict import HEADER_DICT

    raw = text.encode() if isinstance(text, str) else text
    deflater = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, HEADER_DICT)
    compressed = deflater.compress(raw) + deflater.flush()
    prefix = struct.pack(
        "<8sHHII", MAGIC, FORMAT_MAJOR, FORMAT_MINOR, len(compressed), zlib.crc32(compressed)
    )
    body = prefix + compressed + payload
    return body + hashlib.sha256(body).digest()


def table(image: bytes) -> list[dict[str, Any]]:
    """The file's table as a reader resolves it (names, shapes, lengths; packed scalars
    expanded at the end), each entry with its payload offset ``o``."""
    from jointcomp.container import read_header

    _, _, entries, _ = read_header(image)
    offset = 0
    out = []
    for e in entries:
        out.append({**e, "o": offset})
        offset += e["b"]
    return out


def locate(image: bytes, name: str) -> tuple[int, dict[str, Any]]:
    """(index in the header's table, resolved entry) of the stored tensor ``name`` (not a
    packed scalar)."""
    for i, e in enumerate(table(image)):
        if e["n"] == name:
            return i, e
    raise KeyError(name)


# ------------------------------------------------------------------------------- base files


def golden(name: str) -> bytes:
    return (GOLDEN / f"{name}.jcz").read_bytes()


def built_lenet300() -> bytes:
    """zoo:lenet300 with fc1 at 6 bits per channel (huffman), fc2 a 16-entry codebook (ans) and
    fc3 at 4 bits per tensor (raw, its parameters implied by the quantizer)."""
    import torch

    from jointcomp.container import TensorChoice, encode_model
    from jointcomp.models import build_model
    from jointcomp.nn.quantized import Codebook, IntQuantized, attach

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("zoo:lenet300", {}).eval()
        w = model.fc1.weight.detach()
        scale = w.abs().amax(dim=1, keepdim=True) / 31
        q = torch.round(w / scale)
        attach(
            model.fc1, "weight", IntQuantized.from_ints(q, scale, bits=6, narrow_range=True, axis=0)
        )
        idx = torch.randint(0, 16, model.fc2.weight.shape)
        attach(model.fc2, "weight", Codebook.from_assignment(idx, torch.linspace(-0.2, 0.2, 16)))
        w = model.fc3.weight.detach()
        scale = w.abs().amax() / 7
        attach(
            model.fc3,
            "weight",
            IntQuantized.from_ints(torch.round(w / scale), scale, bits=4, narrow_range=True),
        )
    coders = {"fc1": "huffman", "fc2": "ans", "fc3": "raw"}

    def choose(name: str, t: torch.Tensor) -> TensorChoice:
        if t.is_floating_point():
            return TensorChoice("plain")
        return TensorChoice(coders[name.split(".")[0]])

    image, _ = encode_model(model, "zoo:lenet300", {}, choose=choose)
    return image


def bases() -> dict[str, bytes]:
    return {
        "quickstart": golden("quickstart"),
        "lenet300": golden("lenet300-fashion-joint"),
        "built": built_lenet300(),
    }


# ------------------------------------------------------------------------------------ cases

Make = Callable[[dict[str, bytes]], bytes]


@dataclass(frozen=True)
class Case:
    name: str
    item: str  # the item and its words
    make: Make
    expect: str = "error"  # "same": the base file's model, bit for bit; "loaded": opens cleanly
    base: str = "quickstart"  # the file "same" compares with
    mode: str = "load"  # or "inspect": read_header + decode_tensors, as `jointcomp inspect`


def _edit(base: str, change: Callable[[dict[str, Any]], Any]) -> Make:
    """A case that changes the base file's header (in place) and reseals it."""

    def make(files: dict[str, bytes]) -> bytes:
        header, payload = parts(files[base])
        change(header)
        return reseal(header, payload)

    return make


def _bare(header: dict[str, Any], payload: bytes = b"") -> Make:
    return lambda files: reseal(header, payload)


def _text(text: str) -> Make:
    return lambda files: reseal_text(text)


LENET = {"builder": "zoo:lenet300", "kwargs": {}}


def _raw_entry(name: str, shape: list[int]) -> dict[str, Any]:
    return {"n": name, "s": shape, "d": "f32", "c": "raw", "p": {"min": 0, "bits": 0}, "b": 0}


def _kwargs(builder: str, **kwargs: Any) -> Make:
    return _bare({"model": {"builder": builder, "kwargs": kwargs}, "tensors": []})


def _implied_first(builder: str, **kwargs: Any) -> dict[str, Any]:
    """A header whose one table entry names nothing (the first tensor of the built module,
    zero bits): reading its table, even for `inspect`, builds the module."""
    return {
        "model": {"builder": builder, "kwargs": kwargs},
        "tensors": [{"c": "raw", "p": {"min": 0, "bits": 0}}],
    }


def _add_edits(*edits: list[Any], base: str = "quickstart") -> Make:
    return _edit(base, lambda h: h["model"].setdefault("edits", []).extend(edits))


def _set_edit(index: int, **config: Any) -> Make:
    return _edit("quickstart", lambda h: h["model"]["edits"][index][2].update(config))


def _quantizer(base: str, path: str, tensor: str, **config: Any) -> Make:
    """Change the arguments of the quantizer of ``path``'s ``tensor``."""

    def change(h: dict[str, Any]) -> None:
        for p, kind, cfg in h["model"]["edits"]:
            if p == path and kind == "@parametrize":
                cfg[tensor][0][1].update(config)
                return
        raise KeyError(path)

    return _edit(base, change)


def _entry(base: str, name: str, **fields: Any) -> Make:
    """Change the table entry of stored tensor ``name``."""

    def make(files: dict[str, bytes]) -> bytes:
        image = files[base]
        i, _ = locate(image, name)
        header, payload = parts(image)
        header["tensors"][i].update(fields)
        return reseal(header, payload)

    return make


def _huffman_block_n(files: dict[str, bytes]) -> bytes:
    """fc1's 235,200 6-bit integers re-coded by Huffman in one block of every symbol: a decoder
    that allowed it would take one Python step per symbol."""
    import numpy as np

    from jointcomp.codec import huffman

    image = files["built"]
    name = "fc1.parametrizations.weight.0.int_repr"
    i, entry = locate(image, name)
    header, payload = parts(image)
    ints = np.asarray(_decoded(image)[name]).reshape(-1)
    bound = huffman.max_block_size
    huffman.max_block_size = lambda n: n  # the encoder's own cap, lifted
    try:
        data = huffman.HuffmanCoder(block_size=ints.size).encode(ints).data
    finally:
        huffman.max_block_size = bound
    start, end = entry["o"], entry["o"] + entry["b"]
    header["tensors"][i]["b"] = len(data)
    return reseal(header, payload[:start] + data + payload[end:])


def _decoded(image: bytes) -> dict[str, Any]:
    from jointcomp.container import open_artifact

    return open_artifact(image).model.state_dict()


def _raw_min(files: dict[str, bytes], shift: int) -> bytes:
    """fc3's raw 4-bit integers (implied parameters: from -7, 3 bits... of its range) given
    explicit parameters ``shift`` codes lower: the same payload now decodes to other codes."""
    image = files["built"]
    name = "fc3.parametrizations.weight.0.int_repr"
    i, entry = locate(image, name)
    header, payload = parts(image)
    header["tensors"][i]["p"] = {"min": entry["p"]["min"] - shift, "bits": entry["p"]["bits"]}
    return reseal(header, payload)


def _cycle(h: dict[str, Any]) -> None:
    h["model"]["shared"] = {"block1.3": "block2", "block2.3": "block1"}


def _chain(h: dict[str, Any]) -> None:
    # each block's children x and y are the next block: a graph of 20 modules, 2**20 paths
    h["model"]["edits"] = h["model"]["edits"] + [
        [".".join(["block1"] + ["x"] * k), "Identity", {}] for k in range(1, 21)
    ]
    h["model"]["shared"] = {
        ".".join(["block1"] + ["x"] * k + ["y"]): ".".join(["block1"] + ["x"] * (k + 1))
        for k in range(0, 20)
    }


def _many_new_modules(h: dict[str, Any], count: int = 16000) -> None:
    h["model"]["edits"] += [[f"extra{i}", "Identity", {}] for i in range(count)]


def _deep_path(h: dict[str, Any]) -> None:
    h["model"]["edits"] += [[".".join(["d"] * k), "Identity", {}] for k in range(1, 40)]


def _tie_huge(h: dict[str, Any]) -> None:
    h["model"]["ties"] = {"fc.weight": "block1.0.weight"}


def _gigantic_kwargs(h: dict[str, Any]) -> None:
    h["model"]["kwargs"]["junk"] = "x" * 200_000


def _state_implied(files: dict[str, bytes]) -> bytes:
    """Every implied name, shape, dtype, length and raw parameter spelled out."""
    from jointcomp.container.framing import unpack

    image = files["quickstart"]
    header = unpack(image).header
    entries = table(image)
    packed = [e for e in header["tensors"] if isinstance(e.get("n"), list)]
    plain = [
        {k: v for k, v in e.items() if k != "o"}
        for e in entries[: len(header["tensors"]) - len(packed)]
    ]
    header = copy.deepcopy(header)
    header["tensors"] = plain + packed
    _, payload = parts(image)
    return reseal(header, payload)


def _nested(depth: int) -> str:
    inner = "[" * depth + "]" * depth
    return '{"model": {"builder": "zoo:lenet300", "kwargs": {"x": ' + inner + '}}, "tensors": []}'


def _objects(count: int) -> str:
    return (
        '{"model": {"builder": "zoo:lenet300", "kwargs": {}}, "tensors": ['
        + ",".join(["{}"] * count)
        + "]}"
    )


CASES: list[Case] = [
    # --- 3: memory and time amplification before structural checks -------------------------
    Case(
        "raw-2^28-tensor",
        "3: ~200-byte file, raw tensor of shape [2^28]",
        _bare({"model": LENET, "tensors": [_raw_entry("fc1.weight", [2**28])]}),
    ),
    Case(
        "raw-2^31-tensor",
        "3: raw tensor of shape [2^31] (16 GiB asked)",
        _bare({"model": LENET, "tensors": [_raw_entry("fc1.weight", [2**31])]}),
    ),
    Case(
        "raw-2^28-inspect",
        "3: the same file through `jointcomp inspect`",
        _bare({"model": LENET, "tensors": [_raw_entry("x", [2**28])]}),
        mode="inspect",
    ),
    Case(
        "raw-several-add-up",
        "3: several tensors, each decoded before any shape is checked",
        _bare({"model": LENET, "tensors": [_raw_entry(f"x{i}", [2**24]) for i in range(8)]}),
        mode="inspect",
    ),
    Case(
        "raw-unknown-name",
        "3: a huge tensor the module does not have",
        _bare({"model": LENET, "tensors": [_raw_entry("nope", [2**28])]}),
    ),
    Case(
        "kwargs-lenet-width",
        "3: constructor kwargs: layer widths",
        _kwargs("zoo:lenet300", hidden=[2**20, 2**20]),
    ),
    Case(
        "kwargs-lenet-classes",
        "3/4: huge kwargs (allocator RuntimeError)",
        _kwargs("zoo:lenet300", num_classes=2**40),
    ),
    Case(
        "kwargs-lenet-image",
        "3: an input size that makes fc1 2^40 wide",
        _kwargs("zoo:lenet300", image_size=2**20),
    ),
    Case("kwargs-vit-depth", "3: ViT depth", _kwargs("zoo:vit", depth=100_000)),
    Case("kwargs-vit-dim", "3: ViT width", _kwargs("zoo:vit", dim=2**16, heads=1)),
    Case("kwargs-vit-image", "3: ViT position embedding", _kwargs("zoo:vit", image_size=2**16)),
    Case(
        "kwargs-vit-tiny-deep",
        "3: ViT depth of tiny blocks: 10^4 modules within the byte budget",
        _kwargs("zoo:vit", depth=1000, dim=4, heads=1),
    ),
    Case(
        "kwargs-vit-most-steps",
        "3: the deepest tiny ViT a small file may build (time bound, not refused)",
        _kwargs("zoo:vit", depth=85, dim=4, heads=1),
        expect="loaded",
    ),
    Case("kwargs-smallcnn", "3: conv widths", _kwargs("zoo:small_cnn", widths=[2**14] * 3)),
    Case("kwargs-resnet-width", "3: ResNet width", _kwargs("zoo:resnet20", width=2**12)),
    Case(
        "kwargs-tv-classes",
        "3: torchvision classifier width",
        _kwargs("torchvision:resnet18", num_classes=2**31),
    ),
    Case(
        "kwargs-tv-vit-image",
        "3: torchvision ViT image size",
        _kwargs("torchvision:vit_b_16", image_size=2**14),
    ),
    Case(
        "kwargs-tv-regnet",
        "3: a builder that cannot run on meta, huge classes",
        _kwargs("torchvision:regnet_x_400mf", num_classes=2**31),
    ),
    Case("kwargs-huge-text", "3: 200 kB of kwargs", _edit("quickstart", _gigantic_kwargs)),
    Case(
        "edit-huge-linear",
        "3: an edit making a 2^20 x 2^20 Linear",
        _add_edits(["fc", "Linear", {"in_features": 2**20, "out_features": 2**20}]),
    ),
    Case(
        "edit-huge-embedding",
        "3: an edit making a huge Embedding",
        _add_edits(["fc", "Embedding", {"num_embeddings": 2**30, "embedding_dim": 1024}]),
    ),
    Case(
        "edit-huge-tbasis",
        "3: a T-Basis edit with a 2^30-row table",
        _add_edits(
            [
                "fc",
                "TBasisLinear",
                {
                    "in_features": 16,
                    "out_features": 10,
                    "in_modes": [4, 4],
                    "out_modes": [4, 4],
                    "basis_size": 4,
                    "rank": 2,
                    "mode": 16,
                    "rows": 0,
                    "table_rows": 2**30,
                },
            ]
        ),
    ),
    Case(
        "edit-new-huge-linear",
        "3: a new module: a 2^20 x 2^20 Linear",
        _add_edits(["extra", "Linear", {"in_features": 2**20, "out_features": 2**20}]),
    ),
    Case(
        "edit-new-huge-embedding",
        "3: a new module: a 2^30 x 1024 Embedding",
        _add_edits(["extra", "Embedding", {"num_embeddings": 2**30, "embedding_dim": 1024}]),
    ),
    Case(
        "edit-new-huge-tbasis",
        "3: a new T-Basis layer with a 2^30-row table",
        _add_edits(
            [
                "extra",
                "TBasisLinear",
                {
                    "in_features": 16,
                    "out_features": 10,
                    "in_modes": [4, 4],
                    "out_modes": [4, 4],
                    "basis_size": 4,
                    "rank": 2,
                    "mode": 16,
                    "rows": 0,
                    "table_rows": 2**30,
                },
            ]
        ),
    ),
    Case(
        "edit-new-bn-eps",
        "8: a new batch norm of negative eps",
        _add_edits(["extra", "BatchNorm2d", {"num_features": 8, "eps": -1.0}]),
    ),
    Case(
        "edit-huge-quantizer",
        "3: a quantizer buffer of 2^30 integers",
        _quantizer("quickstart", "fc", "weight", shape=[2**30]),
    ),
    Case(
        "edit-huge-scale",
        "3: a quantizer scale of 2^30 values",
        _quantizer("quickstart", "fc", "weight", scale_shape=[2**30, 1]),
    ),
    Case(
        "edits-repeated",
        "3: thousands of repeated edits",
        _add_edits(*[["fc", "Linear", {"in_features": 16}] for _ in range(5000)]),
    ),
    Case(
        "edits-100k",
        "3: 10^5 edits (what the old 64 MiB header allowed, ~10^6)",
        _add_edits(*[["fc", "Identity", {}] for _ in range(100_000)]),
    ),
    Case(
        "edits-many-new-modules",
        "3: 16,000 new modules, each edited once",
        _edit("quickstart", _many_new_modules),
    ),
    Case(
        "edits-1900-new-modules",
        "3: 1,900 new modules, within the edit and step bounds (time bound)",
        _edit("quickstart", lambda h: _many_new_modules(h, 1900)),
        expect="same",
    ),
    Case(
        "json-objects",
        "3: a header that inflates to millions of Python objects",
        _text(_objects(3_000_000)),
    ),
    Case(
        "json-inflate",
        "3: a header that inflates past the cap",
        _text(
            '{"model": {"builder": "zoo:lenet300", "kwargs": {"x": "'
            + "a" * (5 << 20)
            + '"}}, "tensors": []}'
        ),
    ),
    Case(
        "table-2^20", "3: a 2^20-entry table", _bare({"model": LENET, "tensors": [{}] * (1 << 20)})
    ),
    Case(
        "table-40k-names",
        "3: 40,000 explicit entries, the most the header allows",
        _bare(
            {
                "model": LENET,
                "tensors": [
                    {"n": f"x{i}", "s": [1], "d": "f32", "c": "plain"} for i in range(40_000)
                ],
            }
        ),
        mode="inspect",
    ),
    Case("huffman-block-n", "3: a Huffman block size equal to n", _huffman_block_n, base="built"),
    # --- 2: allow-listed torchvision builders that would download (the runner blocks the
    # network: an attempt is outcome "network") ---------------------------------------------
    Case(
        "tv-weights-backbone",
        "2: a detection builder asking for its backbone's weights",
        _kwargs("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", weights_backbone="DEFAULT"),
    ),
    Case(
        "tv-weights",
        "2: a classifier asking for its weights",
        _kwargs("torchvision:mobilenet_v3_small", weights="IMAGENET1K_V1"),
    ),
    Case(
        "tv-pretrained",
        "2: the old pretrained=True spelling",
        _kwargs("torchvision:resnet18", pretrained=True),
    ),
    Case(
        "tv-backbone-default",
        "2: a segmentation builder whose default downloads a backbone (loads, offline)",
        _bare(_implied_first("torchvision:lraspp_mobilenet_v3_large", num_classes=2)),
        expect="loaded",
    ),
    Case(
        "tv-backbone-default-inspect",
        "2: the same file through `jointcomp inspect --structure` (names from the build)",
        _bare(_implied_first("torchvision:lraspp_mobilenet_v3_large", num_classes=2)),
        expect="loaded",
        mode="inspect",
    ),
    # --- 4: exceptions other than FormatError --------------------------------------------------
    Case(
        "int-5000-digits",
        "4: a 5000-digit integer in the header",
        _text(
            '{"model": {"builder": "zoo:lenet300", "kwargs": {"hidden": ['
            + "9" * 5000
            + ', 3]}}, "tensors": []}'
        ),
    ),
    Case("int-2^64", "4: an integer past 2^63", _kwargs("zoo:lenet300", num_classes=2**64)),
    Case(
        "shape-0x2^70",
        "4: shape [0, 2^70] (TypeError from reshape)",
        _bare({"model": LENET, "tensors": [_raw_entry("fc1.weight", [0, 2**70])]}),
    ),
    # no element, yet a dimension no module has (torch's reshape overflows on it): refused
    # like any shape with a dimension past MAX_ELEMENTS, whether loaded or inspected
    Case(
        "shape-0x2^62",
        "4: shape [0, 2^62] (zero elements)",
        _bare({"model": LENET, "tensors": [_raw_entry("fc1.weight", [0, 2**62])]}),
        mode="inspect",
    ),
    Case(
        "shape-0x2^62-load",
        "4: shape [0, 2^62] loaded",
        _bare({"model": LENET, "tensors": [_raw_entry("fc1.weight", [0, 2**62])]}),
    ),
    Case(
        "shape-2^32x0-inspect",
        "4: shape [2^32, 0]",
        _bare({"model": LENET, "tensors": [_raw_entry("x", [2**32, 0])]}),
        mode="inspect",
    ),
    Case(
        "nan-in-header",
        "4: NaN in the header",
        _text('{"model": {"builder": "zoo:lenet300", "kwargs": {"x": NaN}}, "tensors": []}'),
    ),
    Case(
        "float-overflow",
        "4: 1e999 in the header",
        _text('{"model": {"builder": "zoo:lenet300", "kwargs": {"x": 1e999}}, "tensors": []}'),
    ),
    Case(
        "packed-dtype-object",
        "4 (fuzz): a packed-scalar entry's dtype given as an object (TypeError: unhashable)",
        _edit("quickstart", lambda h: h["tensors"][-1].update(d={})),
    ),
    Case("json-deep", "4: arrays nested 100,000 deep (RecursionError)", _text(_nested(100_000))),
    Case("json-depth-40", "4: nesting past the cap, within the JSON parser's", _text(_nested(40))),
    Case(
        "shared-cycle", "4: `shared` forming a cycle (RecursionError)", _edit("quickstart", _cycle)
    ),
    Case(
        "shared-cycle-inspect",
        "4: the cycle through `jointcomp inspect`",
        _edit("quickstart", _cycle),
        mode="inspect",
    ),
    Case(
        "shared-exponential",
        "4: shared modules whose tree has 2^20 paths",
        _edit("quickstart", _chain),
    ),
    Case(
        "shared-self",
        "4: a module shared into its own child",
        _edit("quickstart", lambda h: h["model"].update(shared={"block1.0.x": "block1"})),
    ),
    Case("edit-deep-path", "4: a module tree 40 levels deep", _edit("quickstart", _deep_path)),
    Case(
        "edit-over-parameter",
        "4: a module put in place of a parameter",
        _add_edits(["fc.bias", "Identity", {}]),
    ),
    Case(
        "edit-inside-parametrizations",
        "4: an edit inside a parametrization",
        _add_edits(["fc.parametrizations.weight.0", "Identity", {}]),
    ),
    Case(
        "edit-device",
        "4: a constructor argument no file holds (device)",
        _set_edit(0, device="meta"),
    ),
    Case(
        "edit-float-width",
        "8: a width that the constructor truncates",
        _set_edit(0, out_channels=8.5),
    ),
    Case(
        "tie-shape", "4: a tie between tensors of different shapes", _edit("quickstart", _tie_huge)
    ),
    # --- 8: semantic gaps that pass the hash -----------------------------------------------
    Case(
        "attrs-registered",
        "8: attrs on a registered module (Conv2d stride 0)",
        _edit("quickstart", lambda h: h["model"].update(attrs=[["block1.0", {"stride": [0, 0]}]])),
    ),
    Case(
        "attrs-quantizer-bits",
        "8: attrs changing a quantizer's bits",
        _edit(
            "quickstart",
            lambda h: h["model"].update(attrs=[["fc.parametrizations.weight.0", {"bits": 3}]]),
        ),
    ),
    Case(
        "attrs-pool-zero",
        "8: attrs of an unregistered module with a stride of 0",
        _edit("quickstart", lambda h: h["model"].update(attrs=[["block1.2", {"stride": 0}]])),
    ),
    Case("edit-stride-0", "8: an edit making a Conv2d of stride 0", _set_edit(0, stride=0)),
    Case(
        "edit-bn-eps",
        "8: a batch norm of negative eps (NaN outputs)",
        _add_edits(["block1.1", "BatchNorm2d", {"num_features": 8, "eps": -1.0}]),
    ),
    Case(
        "codes-out-of-range",
        "8: raw integer codes outside the quantizer's range",
        lambda files: _raw_min(files, 9),
        base="built",
    ),
    Case(
        "bits-down-raw",
        "8: a quantizer's bits lowered (raw, implied parameters)",
        _quantizer("built", "fc3", "weight", bits=3),
        base="built",
    ),
    Case(
        "bits-up-raw",
        "8: a quantizer's bits raised (raw, implied parameters)",
        _quantizer("built", "fc3", "weight", bits=5),
        base="built",
    ),
    Case(
        "bits-down-huffman",
        "8: a quantizer's bits lowered below its codes",
        _quantizer("built", "fc1", "weight", bits=5),
        base="built",
    ),
    Case(
        "bits-16-to-8",
        "8: a 16-bit bias quantizer made 8-bit",
        _quantizer("quickstart", "fc", "bias", bits=8),
    ),
    Case(
        "quantizer-signed",
        "8: a quantizer made unsigned under signed codes",
        _quantizer("built", "fc1", "weight", signed=False),
        base="built",
    ),
    Case(
        "quantizer-axis",
        "8: a per-channel scale put on another axis",
        _quantizer("built", "fc1", "weight", scale_shape=[1, 784]),
        base="built",
    ),
    Case(
        "quantizer-scale-rank",
        "8 (fuzz #8321): a per-channel scale of one dimension fewer, broadcasting along the "
        "input channels",
        _quantizer("quickstart", "block3.0.core", "weight", scale_shape=[12, 1, 1]),
    ),
    Case(
        "entry-dtype-dict",
        "4 (fuzz): a table entry's dtype given as an object (TypeError: unhashable)",
        _entry("built", "fc1.parametrizations.weight.0.int_repr", d={"a": 1}),
        base="built",
    ),
    Case(
        "entry-storage-list",
        "4 (fuzz): a table entry's storage dtype given as a list",
        _entry("built", "fc1.parametrizations.weight.0.int_repr", st=["i8"]),
        base="built",
        mode="inspect",
    ),
    Case(
        "entry-name-list-raw",
        "4 (fuzz): a raw entry's implied name turned into a list of names",
        _edit("quickstart", lambda h: h["tensors"][0].update(n=[1])),
    ),
    Case(
        "quantizer-type-object",
        "4 (fuzz): a quantizer's type name given as an object (TypeError: unhashable)",
        _edit(
            "quickstart",
            lambda h: h["model"]["edits"][13][2]["weight"][0].reverse(),  # [config, type]
        ),
    ),
    # the range of a quantizer whose integers are coded raw without parameters says which
    # code the packed zero stands for (container/grid_params.py): flipping narrow_range is a
    # valid file of another model (every code one lower), which no reader can tell apart
    Case(
        "narrow-range-raw-implied",
        "8: narrow_range flipped where the range implies the raw parameters",
        _quantizer("quickstart", "fc", "weight", narrow_range=False),
        expect="loaded",
    ),
    Case(
        "quantizer-bool",
        "8: a quantizer's flag as a string",
        _quantizer("quickstart", "fc", "weight", narrow_range="no"),
    ),
    Case(
        "codebook-size",
        "8: a codebook shrunk below its indices",
        _quantizer("built", "fc2", "weight", size=4),
        base="built",
    ),
    Case(
        "codebook-zero-index",
        "8 (fuzz): a codebook's zero_index set on a centroid that is not 0",
        _quantizer("built", "fc2", "weight", zero_index=1),
        base="built",
    ),
    Case(
        "shared-wrong-kind",
        "8: a module shared where its layer holds another kind",
        _edit("quickstart", lambda h: h["model"].update(shared={"block3.0.first": "fc"})),
    ),
    Case(
        "edit-after-child",
        "8: an edit replacing a module an earlier edit changed",
        _add_edits(
            [
                "block3.0",
                "TuckerConv2d",
                {"in_channels": 16, "out_channels": 16, "ranks": [12, 12], "execution": "dense"},
            ]
        ),
    ),
    # --- harmless edits: the same model ----------------------------------------------------
    Case(
        "same-explicit-fields",
        "every implied table field spelled out",
        _state_implied,
        expect="same",
    ),
    Case(
        "same-raw-params",
        "raw parameters stated, equal to the implied ones",
        lambda files: _raw_min(files, 0),
        expect="same",
        base="built",
    ),
    Case(
        "same-bits-up-huffman",
        "a huffman-coded quantizer's bits raised: same codes",
        _quantizer("built", "fc1", "weight", bits=7),
        expect="same",
        base="built",
    ),
    Case(
        "same-meta",
        "meta annotations a reader ignores",
        _edit("quickstart", lambda h: h.update(meta={"note": "x" * 1000})),
        expect="same",
    ),
]


# ----------------------------------------------------------------------------------- runner


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) for k in ("VmRSS", "VmHWM")}


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _same(model: Any, reference: Any) -> bool:
    import torch

    a, b = model.state_dict(), reference.state_dict()
    if list(a) != list(b):
        return False
    return all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def open_like(image: bytes, mode: str) -> Any:
    """What the user's command does with the file: load it, or inspect it (header and every
    payload decoded, as `jointcomp inspect`)."""
    from jointcomp.container import open_artifact, read_header
    from jointcomp.container.artifact import decode_tensors

    if mode == "inspect":
        frame, _, entries, _ = read_header(image)
        return decode_tensors(frame, entries)
    return open_artifact(image).model


def run(cases: list[Case], files: dict[str, bytes], hang_seconds: int = HANG_SECONDS) -> list[dict]:
    """Open every case's file once, measuring the CPU time the process spent on it (every
    thread's: what the reader costs, whatever else the machine runs), its wall time and its
    peak RSS growth (the high-water mark reset before each case); a case still running after
    ``hang_seconds`` of wall time is a hang."""
    from jointcomp.container import open_artifact
    from jointcomp.container.artifact import UNEXPECTED
    from jointcomp.errors import FormatError

    originals = {name: open_artifact(image).model for name, image in files.items()}

    def alarm(*_: Any) -> None:
        raise TimeoutError("hang")

    signal.signal(signal.SIGALRM, alarm)
    results = []
    for case in cases:
        image = case.make(files)
        gc.collect()
        exact = _reset_peak()
        before = _status()
        start, cpu_start = time.perf_counter(), time.process_time()
        outcome, message = "?", ""
        signal.alarm(hang_seconds)
        try:
            result = open_like(image, case.mode)
            outcome = "loaded"
            if case.mode == "load" and case.expect != "loaded":
                outcome = "same" if _same(result, originals[case.base]) else "different"
            del result
        except FormatError as exc:
            outcome, message = "error", str(exc)
            if message.startswith(UNEXPECTED):
                outcome = "unexpected"
        except TimeoutError:
            outcome = "hang"
        except BaseException as exc:  # what the reader must never let out
            outcome, message = "escaped", f"{type(exc).__name__}: {exc}"[:300]
            message += "\n" + traceback.format_exc(limit=-3)
        finally:
            signal.alarm(0)
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        if NETWORK_ATTEMPTS:
            outcome, message = "network", f"tried to reach {NETWORK_ATTEMPTS[:3]}"
            NETWORK_ATTEMPTS.clear()
        peak = _status()["VmHWM"] if exact else max(_status()["VmHWM"], before["VmRSS"])
        results.append(
            {
                "name": case.name,
                "item": case.item,
                "mode": case.mode,
                "bytes": len(image),
                "expect": case.expect,
                "outcome": outcome,
                "message": message[:400],
                "seconds": round(seconds, 3),
                "cpu_seconds": round(cpu_seconds, 3),
                "mb": round((peak - before["VmRSS"]) / 1024, 1),
                "exact_memory": exact,
            }
        )
    return results


NETWORK_ATTEMPTS: list[str] = []


def block_network() -> None:
    """Make every way out of this process fail, and record the attempt: a reader that tries to
    download (a torchvision backbone's weights) shows as outcome "network" whatever it then
    does with the error."""
    import socket
    import urllib.request

    def refuse(what: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            NETWORK_ATTEMPTS.append(f"{what}{args[1:2] if what == 'connect' else args[:1]}")
            raise OSError(f"network blocked by tests/hostile.py ({what})")

        return call

    socket.socket.connect = refuse("connect")  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse("connect")  # type: ignore[method-assign]
    socket.create_connection = refuse("create_connection")
    socket.getaddrinfo = refuse("getaddrinfo")
    urllib.request.urlopen = refuse("urlopen")
    try:
        import torch.hub

        torch.hub.urlopen = refuse("urlopen")  # bound at torch.hub's import
        torch.hub.download_url_to_file = refuse("download_url_to_file")
        torch.hub.load_state_dict_from_url = refuse("load_state_dict_from_url")
    except ImportError:
        pass


def _limit_memory(extra_gb: float) -> None:
    """A safety net: the process may grow by ``extra_gb`` GiB of address space at most (a
    reader that asks for more fails inside the case instead of taking the machine down)."""
    import resource

    size = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = size + int(extra_gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    import torchvision.models  # noqa: F401  (imported once, not timed in a case)

    files = bases()
    block_network()
    chosen = [c for c in CASES if not args.cases or c.name in args.cases]
    run(chosen[:1], files)  # warm: first calls load lazy modules
    _limit_memory(3.0)
    for row in run(chosen, files):
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(
                f"{row['name']:28} {row['outcome']:10} {row['cpu_seconds']:6.2f} s CPU "
                f"{row['seconds']:6.2f} s "
                f"{row['mb']:7.1f} MB  {row['message'][:90]}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
