"""Fuzzing a real .jcz: every single-byte flip and every truncation is a FormatError; behind
valid checksums (a crafted file), a lying header is a FormatError or changes nothing, and payload
corruption is a FormatError or a whole module that runs — never another exception, never a
hang."""

from __future__ import annotations

import json
import random
import signal

import pytest
import torch

from jointcomp.container import TensorChoice, open_artifact, save
from jointcomp.container.artifact import read_header
from jointcomp.container.framing import pack, unpack
from jointcomp.errors import FormatError
from jointcomp.models import build_model
from jointcomp.nn.quantized import Codebook, IntQuantized, attach

from .conftest import assert_same_tensors

CODERS = ["ans", "huffman", "tunstall", "range", "raw", "sparse", "auto"]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small_cnn with 4-bit weights, one codebook layer and a sparse layer, each int tensor
    coded by a different coder."""
    torch.manual_seed(0)
    model = build_model("zoo:small_cnn", {"widths": [8, 8, 8]}).eval()
    for i, block in enumerate((model.block1, model.block2, model.block3)):
        w = block[0].weight.detach()
        if i == 2:
            w = torch.where(w.abs() > w.abs().quantile(0.8), w, torch.zeros_like(w))
        scale = w.abs().amax() / 7
        attach(block[0], "weight", IntQuantized.from_ints(torch.round(w / scale), scale, bits=4))
    idx = torch.randint(0, 8, model.fc.weight.shape)
    attach(model.fc, "weight", Codebook.from_assignment(idx, torch.linspace(-1, 1, 8)))
    choices = iter(CODERS * 10)

    def choose(name: str, t: torch.Tensor) -> TensorChoice:
        return TensorChoice("plain") if t.is_floating_point() else TensorChoice(next(choices))

    path = tmp_path_factory.mktemp("fuzz") / "m.jcz"
    report = save(path, model, "zoo:small_cnn", {"widths": [8, 8, 8]}, choose=choose)
    assert len({e["c"] for e in report.entries}) >= 5  # several decoders are exercised
    return path.read_bytes()


class _Hang(Exception):
    pass


def _open_within(data: bytes, seconds: int = 10):
    def alarm(*_):
        raise _Hang

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        return open_artifact(data)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_valid_image_opens(image: bytes) -> None:
    assert open_artifact(image).model(torch.randn(1, 1, 8, 8)).shape == (1, 10)


def test_every_single_byte_flip(image: bytes) -> None:
    for pos in range(len(image)):
        corrupted = bytearray(image)
        corrupted[pos] ^= 0xFF
        with pytest.raises(FormatError):
            open_artifact(bytes(corrupted))


def test_every_truncation(image: bytes) -> None:
    for n in range(len(image)):
        with pytest.raises(FormatError):
            open_artifact(image[:n])


def _parts(image: bytes) -> tuple[dict, bytes]:
    frame = unpack(image)
    return frame.header, bytes(frame.payload)


def _reseal(header: dict, payload: bytes) -> bytes:
    """Recompute the file's checksums, as a malicious writer would."""
    return pack(header, [payload])


def _original(image: bytes) -> dict[str, torch.Tensor]:
    return open_artifact(image).model.state_dict()


def test_resealed_payload_corruption_never_crashes(image: bytes) -> None:
    """Behind a recomputed checksum a coded payload's damage may still decode (no coder can
    tell every wrong symbol from a right one): then the module is whole — the file's tensors,
    shapes and dtypes — and runs; with the bytes unchanged it is the original, tensor for
    tensor. Anything else is a FormatError."""
    header, payload = _parts(image)
    original = _original(image)
    rng = random.Random(0)
    _, _, entries, _ = read_header(image)  # the table leaves implied lengths out
    coded = [
        (e, sum(x["b"] for x in entries[:i]))
        for i, e in enumerate(entries)
        if e["c"] != "plain" and e["b"]
    ]
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    outcomes = {"format_error": 0, "same": 0, "changed": 0}
    for case in range(400):
        entry, start = rng.choice(coded)
        mutated = bytearray(payload)
        pos = start + rng.randrange(entry["b"])
        mutated[pos] = rng.choice(
            [mutated[pos] ^ (1 << rng.randrange(8)), 0, 0xFF, rng.randrange(256)]
        )
        try:
            model = _open_within(_reseal(json.loads(json.dumps(header)), bytes(mutated))).model
        except FormatError:
            outcomes["format_error"] += 1
            continue
        theirs = model.state_dict()
        where = f"case {case}: {entry['n']} byte {pos - start} ({entry['c']})"
        assert list(theirs) == list(original), where
        for name, tensor in original.items():
            assert (theirs[name].shape, theirs[name].dtype) == (tensor.shape, tensor.dtype), where
        if bytes(mutated) == payload:
            assert_same_tensors(original, theirs)
            outcomes["same"] += 1
        else:
            outcomes["changed"] += 1
        with torch.no_grad():
            y = model(x)
        assert y.shape == (2, 10) and bool(torch.isfinite(y).all()), where
    assert outcomes["format_error"] > 100 and outcomes["changed"] > 0, outcomes


def test_resealed_header_lies_are_format_errors(image: bytes) -> None:
    """A header that lies about a tensor (shape, dtype, codec, parameters, length), resealed:
    a FormatError, or — where the lie changes nothing the reader uses (a plain entry's unused
    parameters, the shape of a scalar) — the original model, every tensor bit for bit."""
    header, payload = _parts(image)
    original = _original(image)
    rng = random.Random(1)
    mutations = [
        # the table leaves out shapes and dtypes the structure implies: a lie adds one back
        lambda e: e.__setitem__("s", [d + 1 for d in e.get("s", [0])]),
        lambda e: e.__setitem__("s", e.get("s", [1, 1])[:-1] or [2]),
        lambda e: e.__setitem__("d", "i32" if e.get("d") != "i32" else "i8"),
        lambda e: e.__setitem__("c", rng.choice(["ans", "huffman", "tunstall", "range", "raw"])),
        lambda e: e.__setitem__("p", {"min": 10**12, "bits": 64}),
        # the table leaves out lengths the entry implies: a lie states one
        lambda e: e.__setitem__("b", e.get("b", 0) + 1),
    ]
    errors = 0
    for i in range(60):
        h = json.loads(json.dumps(header))
        entry = rng.choice([e for e in h["tensors"] if e.get("b", 1)])
        mutations[i % len(mutations)](entry)
        try:
            model = _open_within(_reseal(h, payload)).model
        except FormatError:
            errors += 1
            continue
        assert_same_tensors(original, model.state_dict())  # a clean load must not lie
    assert errors >= 50  # nearly every lie is caught; the rest change nothing
