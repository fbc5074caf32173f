"""Build the preset DEFLATE dictionary of .jcz headers (format 1.1) from sample files.

    python tools/make_header_dict.py FILE.jcz ... > jointcomp/container/header_dict.py
    python tools/make_header_dict.py --extend FILE.jcz ... > jointcomp/container/header_dict_1_5.py

Each file is re-encoded with this jointcomp (same codecs per tensor) so the samples have the
current header layout; payload lengths and CRCs are zeroed (they are noise to a dictionary) and
records that differ only in their numbers are kept once. The most common records go last,
where DEFLATE reaches them with the shortest distances. The result is frozen: a file written
with one dictionary cannot be read with another, so change it only with a new format version.
The bundled dictionary was made from runs of quickstart, lenet5-fashion-prune,
lenet5-fashion-lrs, lenet300-fashion-joint, deep-compression-lenet300,
resnet20-fashion-budget and the T-Basis bench (B16/R16) — not from the LeNet-5 joint or Deep
Compression files whose header overhead the README reports.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import textwrap
import zlib
from collections import Counter
from pathlib import Path

MAX_BYTES = 16 * 1024  # the rest of the 32 KiB window stays for the header itself
MAX_EXTENSION_BYTES = 8 * 1024  # 1.5: 24 KiB in all, 8 KiB of window left for the header


def sample_header(path: Path) -> str:
    from jointcomp.container import TensorChoice, open_artifact
    from jointcomp.container.artifact import encode_model
    from jointcomp.container.framing import unpack

    art = open_artifact(path, trust=True)
    codecs = {e["n"]: e["c"] for e in art.entries}

    def choose(name, tensor):
        codec = codecs.get(name, "plain")
        if tensor.is_floating_point() and codec != "plain":
            return TensorChoice("sparse", {"value_codecs": ("raw",)})  # as the encode stage
        return TensorChoice(codec)

    image, _ = encode_model(art.model, art.manifest.builder, art.manifest.kwargs, choose=choose)
    header = unpack(image).header
    header.pop("meta", None)
    return json.dumps(header, separators=(",", ":"))


def records(text: str) -> list[str]:
    text = re.sub(r'"(k|b)":\d+', r'"\1":0', text)
    return re.split(r"(?<=[}\]]),(?=[{\[])", text)


def _shape(record: str) -> str:
    return re.sub(r"\d+", "#", record)


def build(paths: list[Path], known: bytes = b"", limit: int = MAX_BYTES) -> bytes:
    """Records of the sample headers, one per shape (numbers aside), most common last, at
    most ``limit`` bytes; with ``known`` (a dictionary to extend), only the shapes it lacks."""
    skip = {_shape(r) for r in records(known.decode())} if known else set()
    counts: Counter[str] = Counter()
    first: dict[str, str] = {}
    for path in paths:
        for rec in records(sample_header(path)):
            shape = _shape(rec)
            if shape in skip:
                continue
            counts[shape] += 1
            first.setdefault(shape, rec)
    ordered = sorted(first, key=lambda s: (counts[s], -len(s)))  # most common last
    out = b""
    for shape in reversed(ordered):
        rec = first[shape].encode()
        if len(out) + len(rec) + 1 > limit:
            break
        out = rec + b"," + out
    return out


def _frozen_parts(data: bytes, sources: list[Path]) -> tuple[str, str]:
    """(``data`` as the lines of a compressed base85 string literal, the sample names)."""
    blob = base64.b85encode(zlib.compress(data, 9)).decode()
    lines = [blob[i : i + 88] for i in range(0, len(blob), 88)]
    body = "\n".join(f'    "{line}"' for line in lines)
    names = textwrap.fill(", ".join(p.parent.name for p in sources), 96, break_on_hyphens=False)
    return body, names


def extension_text(extension: bytes, sources: list[Path]) -> str:
    """header_dict_1_5.py: the 1.5 dictionary, the bundled one with ``extension`` after it."""
    body, names = _frozen_parts(extension, sources)
    full = bundled_dictionary() + b"," + extension
    return f'''"""The preset DEFLATE dictionary of .jcz headers from format 1.5 on (docs/FORMAT.md):
the 1.1 dictionary, then the records of quantized T-Basis headers it lacked (quantizer
edits, folded batch norms, shared tables), nearest to the header, where DEFLATE reaches them
cheapest.

Frozen: made once by tools/make_header_dict.py --extend from the headers of sample files
{names}.
A new dictionary needs a new format version."""

import base64
import zlib

from .header_dict import HEADER_DICT

EXTENSION: bytes = zlib.decompress(
    base64.b85decode(
{textwrap.indent(body, "    ")}
    )
)
HEADER_DICT_1_5: bytes = HEADER_DICT + b"," + EXTENSION
HEADER_DICT_1_5_ADLER32 = {zlib.adler32(full)}  # zlib's dictionary id in every 1.5 header
'''


def bundled_dictionary() -> bytes:
    """The 1.1 dictionary (imported late: the tool runs from a checkout)."""
    from jointcomp.container.header_dict import HEADER_DICT

    return HEADER_DICT


def module_text(dictionary: bytes, sources: list[Path]) -> str:
    body, names = _frozen_parts(dictionary, sources)
    return f'''"""The preset DEFLATE dictionary of .jcz headers, format 1.1 (docs/FORMAT.md).

Frozen: made once by tools/make_header_dict.py from the headers of sample files
{names}.
A new dictionary needs a new format version."""

import base64
import zlib

HEADER_DICT: bytes = zlib.decompress(
    base64.b85decode(
{textwrap.indent(body, "    ")}
    )
)
HEADER_DICT_ADLER32 = {zlib.adler32(dictionary)}  # zlib's dictionary id in every 1.1 header
'''


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="sample .jcz files")
    ap.add_argument(
        "--extend",
        action="store_true",
        help="write header_dict_1_5.py: the bundled 1.1 dictionary followed by the records of "
        "these files' headers that it lacks (at most 8 KiB)",
    )
    args = ap.parse_args(argv)
    if args.extend:
        extension = build(args.files, bundled_dictionary(), MAX_EXTENSION_BYTES)
        print(f"extension: {len(extension):,} bytes from {len(args.files)} files", file=sys.stderr)
        sys.stdout.write(extension_text(extension, args.files))
        return 0
    dictionary = build(args.files)
    print(f"dictionary: {len(dictionary):,} bytes from {len(args.files)} files", file=sys.stderr)
    sys.stdout.write(module_text(dictionary, args.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
