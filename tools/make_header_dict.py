"""Build the preset DEFLATE dictionary of .jcz headers from synthetic headers of models and stage
mixes that no reported figure uses.

    python tools/make_header_dict.py            # synthesize, build, write the module
    python tools/make_header_dict.py --list     # list the samples (builder, stage mix) only
    python tools/make_header_dict.py --check    # build and compare with the bundled module
    python tools/make_header_dict.py -o FILE    # write the module elsewhere

A header depends on a model's structure, the stages' settings and the codec choice, not on
trained values, so no sample is trained: each builder of SAMPLES is built with random weights
(a fixed seed), put through its stage mix with the Python API (``jointcomp.prune``,
``decompose``, ``share``, ``fold``, ``quantize``; quantization-aware training runs no epoch) on
two tiny random batches and written with ``jointcomp.save``; its header is read back from the
file. No builder of a reported figure (REPORTED: the bundled recipes' and studies' models) is
among the samples, so the dictionary is measured, in tests/test_header_dict.py, on headers it
was not fitted to. Every sample is made single-threaded from fixed seeds (in one of ``--jobs``
worker processes), so a rerun writes the same bytes.

Building: each header is split into records (one edit, one table entry, ...); payload lengths
are zeroed (noise to a dictionary); records that differ only in their numbers are one
candidate, in its most frequent spelling. Records are then taken greedily by what they add to
those already taken (zstd's COVER idea, on whole records): a record is worth, over its 8-byte
substrings not yet covered, the number of samples holding each. Up to MAX_BYTES; the first
taken go last, where DEFLATE reaches them with the shortest distances. Leaving each builder's
samples out in turn, they DEFLATE to 0.73 of their size without a dictionary, against 0.77
with records ranked by their count, as the 1.6 dictionary was built: the greedy choice takes
fewer near-copies. The result is frozen: a file written with one dictionary cannot be read
with another, so change it only with a new format version (FORMAT_MINOR in
jointcomp/container/framing.py).
"""

from __future__ import annotations

import argparse
import base64
import heapq
import json
import re
import sys
import tempfile
import textwrap
import time
import warnings
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "jointcomp" / "container" / "header_dict.py"
MAX_BYTES = 24 * 1024  # the rest of the 32 KiB window stays for the header itself
GRAM = 8  # bytes of the substrings a record's worth counts
SEED = 0

# The builders of every reported figure (bundled recipes and studies, docs/RESULTS.md): never
# a sample, so that the dictionary's gain is measured on files it was not fitted to.
REPORTED = ("zoo:small_cnn", "zoo:lenet5", "zoo:lenet300", "zoo:resnet20", "zoo:resnet32")

# Builders: name -> (builder, kwargs, per-sample input shape).
GRAY28 = {"in_channels": 1, "num_classes": 10, "image_size": 28}
BUILDERS: dict[str, tuple[str, dict[str, Any], tuple[int, ...]]] = {
    "resnet56": ("zoo:resnet56", GRAY28, (1, 8, 8)),  # any input size: a global pool
    "resnet56-w.5": ("zoo:resnet56", {"num_classes": 10, "width": 0.5}, (3, 8, 8)),
    "vit": ("zoo:vit", GRAY28, (1, 28, 28)),
    "vit-small": ("zoo:vit", {"dim": 48, "depth": 3, "heads": 3, "image_size": 16}, (1, 16, 16)),
    "mobilenet_v2": (
        "torchvision:mobilenet_v2",
        {"num_classes": 10, "width_mult": 0.35},
        (3, 32, 32),
    ),
    "mobilenet_v3_small": (
        "torchvision:mobilenet_v3_small",
        {"num_classes": 10, "width_mult": 0.5},
        (3, 32, 32),
    ),
    "mnasnet0_5": ("torchvision:mnasnet0_5", {"num_classes": 10}, (3, 32, 32)),
    "shufflenet_v2_x0_5": ("torchvision:shufflenet_v2_x0_5", {"num_classes": 10}, (3, 32, 32)),
    "squeezenet1_1": ("torchvision:squeezenet1_1", {"num_classes": 10}, (3, 64, 64)),
    "resnet18": ("torchvision:resnet18", {"num_classes": 10}, (3, 32, 32)),
    "efficientnet_b0": ("torchvision:efficientnet_b0", {"num_classes": 10}, (3, 32, 32)),
    "regnet_x_400mf": ("torchvision:regnet_x_400mf", {"num_classes": 10}, (3, 32, 32)),
}


def _ptq(bits: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"quantize": {"ptq": more.pop("ptq", {}), "bits": bits, "calibration": "absmax", **more}}


def _qat(bits: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"quantize": {"qat": {"bn_batches": 1, **more.pop("qat", {})}, "bits": bits, **more}}


_FIT = {
    "init": "pca",
    "fit_steps": 2,
    "fit_batches": 0,
    "bn_batches": 0,
}  # the structure, not a good fit
_ROUND = {"round": {"scales": {"bits": 6, "symmetric": False}, "biases": {"bits": 6}}}
_DEEP = {
    "codec": "sparse",
    "options": {"gap_codecs": ["huffman"], "value_codecs": ["huffman"], "bitmask": False},
}

# Stage mixes: name -> (stages, encode settings). Generic: every scope is the default one.
MIXES: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {
    "ptq8": ([_ptq({"weights": 8})], {}),
    "ptq4-tensor-asym-f16": (
        [_ptq({"weights": 4, "biases": None}, granularity="tensor", symmetric=False)],
        {"float_storage": "f16"},
    ),
    "prune-ptq6": (
        [{"prune": {"ratio": 0.5}}, _ptq({"weights": 6, "biases": 16}, granularity="auto")],
        {},
    ),
    "prune-fold-qat4": (
        [
            {"prune": {"ratio": 0.3, "importance": "l2"}},
            _qat({"weights": 4, "biases": 16}, fold={}, granularity="auto"),
        ],
        {},
    ),
    "prune75-float": ([{"prune": {"ratio": 0.75, "target": "params", "round_to": 4}}], {}),
    "prune75-qat6-norms": (
        [
            {"prune": {"ratio": 0.75}},
            _qat({"weights": 6, "biases": 8, "norms": 8}, granularity="channel"),
        ],
        {"codec": "ans"},
    ),
    "tucker-fold-qat": (
        [
            {"decompose": {"rank": 0.5, "execution": "dense"}},
            _qat({"factors": 4, "weights": 6, "biases": 16}, fold={}, granularity="auto"),
        ],
        {},
    ),
    "prune-tucker-ptq": (
        [
            {"prune": {"ratio": 0.5}},
            {"decompose": {"rank": 0.75, "execution": "factorized"}},
            _ptq({"factors": 5, "weights": 8, "biases": 16}),
        ],
        {},
    ),
    "svd_spatial-budget": (
        [
            {
                "decompose": {
                    "format": "svd_spatial",
                    "budget": {"params": 0.3, "batches": 1, "levels": 2},
                    "execution": "factorized",
                }
            }
        ],
        {},
    ),
    "svd_spatial-ptq": (
        [
            {"decompose": {"format": "svd_spatial", "rank": 0.25, "execution": "dense"}},
            _ptq({"factors": 6, "weights": 8, "biases": 16}, granularity="auto"),
        ],
        {},
    ),
    "lrs-qat": (
        [
            {"decompose": {"rank": 0.5, "sparse": 0.02, "execution": "dense"}},
            _qat(
                {"factors": 4, "sparse_values": 6, "weights": 6, "biases": 16}, granularity="auto"
            ),
        ],
        {},
    ),
    "prune-lrs-float": (
        [
            {"prune": {"ratio": 0.4, "target": "params"}},
            {
                "decompose": {
                    "format": "svd",
                    "rank": 0.3,
                    "sparse": 0.05,
                    "execution": "factorized",
                }
            },
        ],
        {},
    ),
    "cp-ptq": (
        [
            {"decompose": {"format": "cp", "rank": 0.2, "cp_iters": 5, "execution": "factorized"}},
            _ptq({"factors": 8, "weights": 8}),
        ],
        {},
    ),
    "tt-refit": (
        [
            {"decompose": {"format": "tt", "rank": 0.3, "execution": "factorized"}},
            _ptq({"factors": 5, "weights": 6, "biases": 16}, ptq={"refit": True}),
        ],
        {},
    ),
    "tbasis-qat-fold": (
        [
            {"share": {"basis": 8, "rank": 8, "mode": 9, **_FIT}},
            _qat(
                {"factors": 4, "weights": 8, "biases": 6},
                granularity="auto",
                overrides={"*.coef": {"granularity": "channel", "scale_grid": 64}},
            ),
            {"fold": _ROUND},
        ],
        {"float_storage": "f16"},
    ),
    "tbasis-foldbn-ptq": (
        [
            {"share": {"basis": 12, "rank": 6, "mode": 4, "fold_bn": True, **_FIT}},
            _ptq({"factors": 6, "weights": 8, "biases": 8}),
        ],
        {},
    ),
    "tbasis-coupled-qat": (
        [
            {"share": {"basis": 16, "rank": 8, "mode": 9, "coupled": True, **_FIT}},
            _qat(
                {"factors": 5, "weights": 6, "biases": 8},
                granularity="channel",
                overrides={"*.coef": {"scale_grid": 16}},
            ),
            {"fold": {"round": {"scales": {"bits": 8}, "biases": {"bits": 8}}}},
        ],
        {},
    ),
    "tbasis-float": ([{"share": {"basis": 8, "rank": 4, "mode": 4, **_FIT}}], {}),
    "sparse-kmeans": (
        [
            {"prune": {"structured": False, "ratio": 0.8}},
            {"quantize": {"kmeans": {"iters": 3}, "bits": {"weights": 5, "biases": 16}}},
        ],
        {**_DEEP, "overrides": {"*.bias.*": "auto"}},
    ),
    "sparse-ptq8": (
        [
            {"prune": {"structured": False, "ratio": 0.6, "global_ranking": True}},
            _ptq({"weights": 8, "biases": 16}),
        ],
        {},
    ),
    "qat-codebook": (
        [
            _qat(
                {"weights": 4, "biases": 16},
                granularity="tensor",
                overrides={"*": {"codebook": True}},
            )
        ],
        {},
    ),
    "bits-budget": (
        [
            _ptq(
                {
                    "weights": 8,
                    "biases": 16,
                    "budget": {"bytes": 30000, "batches": 1, "options": [2, 4, 6, 8]},
                }
            )
        ],
        {},
    ),
    "fold-ptq-codecs": (
        [{"fold": {}}, _ptq({"weights": 5, "biases": 12}, granularity="auto")],
        {"codec": "range", "overrides": {"*.bias*": "huffman"}},
    ),
}

# (builder, stage mix): every builder through several mixes, every mix on several builders.
SAMPLES: tuple[tuple[str, str], ...] = (
    ("resnet56", "tbasis-qat-fold"),
    ("resnet56", "svd_spatial-budget"),
    ("resnet56", "prune-fold-qat4"),
    ("resnet56", "sparse-kmeans"),
    ("resnet56-w.5", "tucker-fold-qat"),
    ("resnet56-w.5", "tbasis-coupled-qat"),
    ("resnet56-w.5", "svd_spatial-ptq"),
    ("resnet56-w.5", "lrs-qat"),
    ("resnet56-w.5", "tbasis-foldbn-ptq"),
    ("resnet56-w.5", "ptq8"),
    ("vit", "prune-ptq6"),
    ("vit", "lrs-qat"),
    ("vit", "tbasis-qat-fold"),
    ("vit", "sparse-kmeans"),
    ("vit", "qat-codebook"),
    ("vit-small", "tt-refit"),
    ("vit-small", "prune-lrs-float"),
    ("vit-small", "bits-budget"),
    ("vit-small", "ptq4-tensor-asym-f16"),
    ("vit-small", "sparse-ptq8"),
    ("vit-small", "tbasis-foldbn-ptq"),
    ("vit-small", "tbasis-float"),
    ("mobilenet_v2", "prune-fold-qat4"),
    ("mobilenet_v2", "tucker-fold-qat"),
    ("mobilenet_v2", "fold-ptq-codecs"),
    ("mobilenet_v3_small", "prune-ptq6"),
    ("mobilenet_v3_small", "ptq4-tensor-asym-f16"),
    ("mobilenet_v3_small", "svd_spatial-ptq"),
    ("mnasnet0_5", "prune-tucker-ptq"),
    ("mnasnet0_5", "sparse-ptq8"),
    ("shufflenet_v2_x0_5", "ptq8"),
    ("shufflenet_v2_x0_5", "tbasis-float"),
    ("squeezenet1_1", "prune-fold-qat4"),
    ("squeezenet1_1", "tt-refit"),
    ("squeezenet1_1", "qat-codebook"),
    ("squeezenet1_1", "cp-ptq"),
    ("resnet18", "prune75-float"),
    ("resnet18", "prune75-qat6-norms"),
    ("resnet18", "prune-tucker-ptq"),
    ("efficientnet_b0", "prune75-qat6-norms"),
    ("regnet_x_400mf", "prune75-float"),
)


def label(sample: tuple[str, str]) -> str:
    """``builder kwargs | mix``: how a sample is listed here and in the module."""
    key, mix = sample
    builder, kwargs, _ = BUILDERS[key]
    return f"{builder} {json.dumps(kwargs, separators=(',', ':'))} | {mix}"


def _batches(shape: tuple[int, ...], classes: int, seed: int) -> list[tuple[Any, Any]]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(4, *shape, generator=generator),
            torch.randint(0, classes, (4,), generator=generator),
        )
        for _ in range(2)
    ]


def _as_trained(model: Any) -> None:
    """Give a freshly built model's state what training gives any model: no float tensor all
    zeros or constant (initial biases, batch-norm statistics and affines, position embeddings:
    a file leaves all-zero tensors out and stores constant ones as a few codes), batch-norm
    step counters above 0. Random values: a header does not depend on which."""
    import torch

    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor), alpha=0.02)  # running_var stays > 0
            elif tensor.dtype == torch.int64 and tensor.dim() == 0:
                tensor.fill_(1000)  # num_batches_tracked


def synthesize(
    builder: str,
    kwargs: dict[str, Any],
    input_shape: tuple[int, ...],
    stages: list[dict[str, Any]],
    encode: dict[str, Any] | None = None,
    seed: int = SEED,
) -> str:
    """The header text (the JSON a .jcz file DEFLATEs) of ``builder(**kwargs)`` with random
    weights after ``stages`` (``{technique: config}``, run with jointcomp's Python API on two
    random batches of ``input_shape``, no fine-tuning), written with ``jointcomp.save``."""
    import torch

    import jointcomp
    from jointcomp.container.framing import unpack
    from jointcomp.models import build_model

    torch.manual_seed(seed)
    model = build_model(builder, dict(kwargs)).eval()
    _as_trained(model)
    data = _batches(input_shape, kwargs.get("num_classes", 10), seed)
    for index, stage in enumerate(stages):
        ((name, config),) = stage.items()
        model, _ = getattr(jointcomp, name)(model, config, data=data, seed=seed + index)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sample.jcz"
        jointcomp.save(model, path, encode or {}, builder=builder, kwargs=kwargs)
        header = unpack(path.read_bytes()).header
    return json.dumps(header, separators=(",", ":"), allow_nan=False)


def _sample_header(sample: tuple[str, str]) -> str:
    import random

    import numpy as np
    import torch

    warnings.filterwarnings("ignore")
    random.seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(1)  # the same float arithmetic on any machine
    builder, kwargs, shape = BUILDERS[sample[0]]
    stages, encode = MIXES[sample[1]]
    return synthesize(builder, kwargs, shape, stages, encode)


def sample_headers(jobs: int = 2) -> list[str]:
    """The header text of every sample, in SAMPLES order (``jobs`` worker processes)."""
    if jobs <= 1:
        return [_sample_header(s) for s in SAMPLES]
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        return pool.map(_sample_header, SAMPLES, chunksize=1)


# -- building ----------------------------------------------------------------------------------


def records(text: str) -> list[str]:
    """A header's records (an edit, a table entry, ...), payload lengths zeroed."""
    text = re.sub(r'"b":\d+', '"b":0', text)
    return re.split(r"(?<=[}\]]),(?=[{\[])", text)


def _shape(record: str) -> str:
    return re.sub(r"\d+", "#", record)


def _grams(record: str) -> set[str]:
    return {record[i : i + GRAM] for i in range(len(record) - GRAM + 1)}


def build(headers: list[str], limit: int = MAX_BYTES) -> bytes:
    """The dictionary of ``headers``, at most ``limit`` bytes: records chosen greedily by what
    they add (zstd's COVER idea, on whole records). Records that differ only in their numbers
    are one candidate, in its most frequent spelling. A candidate's worth is, over its
    substrings of GRAM bytes that no chosen record holds yet, the number of headers holding
    each; the worthiest is taken, the others' worth recomputed, until nothing fits. The first
    taken go last, nearest the header, where DEFLATE reaches them cheapest."""
    spellings: dict[str, Counter[str]] = {}
    holders: Counter[str] = Counter()  # substring -> number of headers holding it
    for text in headers:
        recs = records(text)
        for rec in recs:
            spellings.setdefault(_shape(rec), Counter())[rec] += 1
        holders.update(set().union(*map(_grams, recs)))
    candidates = {}
    for counts in spellings.values():
        spelling = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        candidates[spelling] = _grams(spelling)
    covered: set[str] = set()

    def worth(rec: str) -> int:
        return sum(holders[g] for g in candidates[rec] - covered)

    heap = [(-worth(rec), rec) for rec in candidates]
    heapq.heapify(heap)
    kept: list[bytes] = []
    size = 0
    while heap:
        _, rec = heapq.heappop(heap)
        value = worth(rec)  # worth only falls as records are taken: recompute lazily
        if heap and (-value, rec) > heap[0]:
            heapq.heappush(heap, (-value, rec))
            continue
        if value == 0:
            break
        data = rec.encode()
        if size + len(data) + 1 > limit:
            continue  # a shorter record may still fit
        kept.append(data)
        size += len(data) + 1
        covered |= candidates[rec]
    return b",".join(reversed(kept))


def deflated(text: str | bytes, dictionary: bytes = b"") -> int:
    """Bytes of ``text`` DEFLATEd as a .jcz header is (level 9, window 15, memLevel 9)."""
    data = text.encode() if isinstance(text, str) else text
    args = (9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY)
    deflater = zlib.compressobj(*args, dictionary) if dictionary else zlib.compressobj(*args)
    return len(deflater.compress(data) + deflater.flush())


def module_text(dictionary: bytes, samples: list[str]) -> str:
    """The source of jointcomp/container/header_dict.py holding ``dictionary``."""
    blob = base64.b85encode(zlib.compress(dictionary, 9)).decode()
    body = "\n".join(f'        "{blob[i : i + 88]}"' for i in range(0, len(blob), 88))
    names = "\n".join(f"    {s!r}," for s in samples)
    doc = textwrap.fill(
        f"The preset DEFLATE dictionary of .jcz headers (docs/FORMAT.md): {len(dictionary):,} "
        "bytes of typical header records, the first chosen last, nearest the header, where "
        "DEFLATE reaches them cheapest.",
        96,
    )
    made = textwrap.fill(
        f"Made by tools/make_header_dict.py from the {len(samples)} synthetic headers of "
        "SAMPLES ('builder kwargs | stage mix'; the tool defines the mixes): each model built "
        "with random weights, put through its stage mix with jointcomp's Python API (no "
        "training) and written with jointcomp.save. No model of a reported figure is among "
        f"them ({', '.join(REPORTED)}): tests/test_header_dict.py measures the dictionary on "
        "those, as held-out files.",
        96,
    )
    return f'''"""{doc}

{made}

Frozen: a file written with one dictionary cannot be read with another, so a new dictionary
needs a new format version."""

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
    ap.add_argument("--list", action="store_true", help="list the samples and stop")
    ap.add_argument(
        "--check",
        action="store_true",
        help="fail unless the bundled module is what this build writes (writes nothing)",
    )
    ap.add_argument("-o", "--output", type=Path, default=MODULE, help="module to write")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="worker processes (default 2)")
    args = ap.parse_args(argv)
    labels = [label(s) for s in SAMPLES]
    reported = [name for name in labels if name.split()[0] in REPORTED]
    if reported:
        raise SystemExit(f"reported models among the samples: {reported}")
    if args.list:
        for i, name in enumerate(labels, 1):
            print(f"{i:3}  {name}")
        builders = len({b for b, _, _ in BUILDERS.values()})
        settings = f"{builders} builders ({len(BUILDERS)} settings), {len(MIXES)} stage mixes"
        print(f"{len(labels)} samples: {settings}")
        return 0
    start = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    headers = sample_headers(args.jobs)
    dictionary = build(headers)
    print(f"{'#':>3}  {'json':>6} {'deflate':>7} {'+dict':>6}  sample")
    for i, (name, text) in enumerate(zip(labels, headers), 1):
        print(f"{i:3}  {len(text):6} {deflated(text):7} {deflated(text, dictionary):6}  {name}")
    plain = sum(deflated(t) for t in headers)
    with_dict = sum(deflated(t, dictionary) for t in headers)
    print(
        f"dictionary: {len(dictionary):,} bytes, adler32 {zlib.adler32(dictionary)}, from "
        f"{len(headers)} samples; their headers {plain:,} → {with_dict:,} DEFLATEd bytes; "
        f"{time.perf_counter() - start:.0f} s"
    )
    text = module_text(dictionary, labels)
    if args.check:
        same = args.output.is_file() and args.output.read_text() == text
        print(f"{args.output}: {'the same' if same else 'DIFFERENT'}")
        return 0 if same else 1
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
