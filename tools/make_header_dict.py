"""Build the preset DEFLATE dictionary of .jcz headers from sample files.

    python tools/make_header_dict.py FILE.jcz ... > jointcomp/container/header_dict.py
    python tools/make_header_dict.py --extend FILE.jcz ... > jointcomp/container/header_dict.py

Each file is re-encoded with this jointcomp (same codecs per tensor) so the samples have the
current header layout; payload lengths are zeroed (they are noise to a dictionary) and records
that differ only in their numbers are kept once. The most common records go last, where DEFLATE
reaches them with the shortest distances. ``--extend`` keeps the bundled dictionary and appends
the records of the samples that it lacks. The result is frozen: a file written with one
dictionary cannot be read with another, so change it only with a new format version.
The bundled dictionary was made from runs of quickstart, lenet5-fashion-prune,
lenet5-fashion-lrs, lenet300-fashion-joint, deep-compression-lenet300,
resnet20-fashion-budget and the T-Basis bench (B16/R16), then extended with quantized T-Basis
files — not from the LeNet-5 joint or Deep Compression files of the anchors study
(docs/RESULTS.md).
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

MAX_BYTES = 24 * 1024  # the rest of the 32 KiB window stays for the header itself


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
    text = re.sub(r'"b":\d+', '"b":0', text)
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


def extended(known: bytes, paths: list[Path]) -> bytes:
    """``known``, then the records of ``paths`` it lacks (nearest the header: they are the
    ones the samples need and ``known`` does not give)."""
    extension = build(paths, known, MAX_BYTES - len(known) - 1)
    return known + b"," + extension if extension else known


def module_text(dictionary: bytes, samples: list[str]) -> str:
    """The source of jointcomp/container/header_dict.py holding ``dictionary``."""
    blob = base64.b85encode(zlib.compress(dictionary, 9)).decode()
    body = "\n".join(f'        "{blob[i : i + 88]}"' for i in range(0, len(blob), 88))
    names = textwrap.indent("\n".join(f'"{name}",' for name in samples), "    ")
    return f'''"""The preset DEFLATE dictionary of .jcz headers (docs/FORMAT.md): typical
header records, the most common last, nearest the header, where DEFLATE reaches them cheapest.

Frozen: made by tools/make_header_dict.py from the headers of the runs in SAMPLES. A file
written with one dictionary cannot be read with another: a new dictionary needs a new format
version."""

import base64
import zlib

SAMPLES = (
{names}
)
HEADER_DICT: bytes = zlib.decompress(
    base64.b85decode(
{body}
    )
)
HEADER_DICT_ADLER32 = {zlib.adler32(dictionary)}  # zlib's dictionary id in every header
'''


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="sample .jcz files (RUN/model.jcz)")
    ap.add_argument(
        "--extend",
        action="store_true",
        help="keep the bundled dictionary and append the records of these files' headers that "
        f"it lacks (at most {MAX_BYTES:,} bytes in all)",
    )
    args = ap.parse_args(argv)
    samples = [p.parent.name for p in args.files]
    if args.extend:
        from jointcomp.container import header_dict  # late: the tool runs from a checkout

        dictionary = extended(header_dict.HEADER_DICT, args.files)
        samples = [*header_dict.SAMPLES, *samples]
    else:
        dictionary = build(args.files)
    print(f"dictionary: {len(dictionary):,} bytes from {len(samples)} files", file=sys.stderr)
    sys.stdout.write(module_text(dictionary, samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
