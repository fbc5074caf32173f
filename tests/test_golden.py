"""Golden files pin the format's bytes, as CompressAI pins its bitstreams: files that bundled
recipes wrote (tests/golden/) must decode to the tensors pinned in goldens.json — a reader
change fails — and re-encode, through the path a run's encode stage takes, to the very same
bytes — a writer change fails."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from jointcomp.container import Artifact, encode_model, open_artifact
from jointcomp.container.choose import StoragePolicy
from jointcomp.errors import FormatError

GOLDEN = Path(__file__).resolve().parent / "golden"
PINNED = GOLDEN / "goldens.json"  # written by tools/regen_goldens.py, which imports this module
PINS: dict[str, dict] = json.loads(PINNED.read_text())["files"] if PINNED.is_file() else {}
REGEN = (
    "files users already have must keep decoding bit for bit, so this is a bug unless the "
    "format changed on purpose; a deliberate format change must bump FORMAT_MINOR "
    "(jointcomp/container/framing.py), describe the format in docs/FORMAT.md, and regenerate "
    "the golden files with: python tools/regen_goldens.py"
)


def state_digest(model: nn.Module) -> str:
    """SHA-256 of a module's state dict: every entry's name, dtype, shape and bytes, in name
    order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _open(name: str) -> tuple[bytes, Artifact]:
    data = (GOLDEN / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == PINS[name]["file_sha256"], (
        f"tests/golden/{name} is not the file goldens.json pins; {REGEN}"
    )
    try:
        return data, open_artifact(data)
    except FormatError as exc:
        pytest.fail(f"tests/golden/{name} no longer opens ({exc}); {REGEN}")


def test_every_golden_file_is_pinned() -> None:
    files = {p.name for p in GOLDEN.glob("*.jcz")}
    assert files and files == set(PINS), f"tests/golden/ and goldens.json disagree; {REGEN}"


@pytest.mark.parametrize("name", sorted(PINS))
def test_golden_file_decodes_to_its_pinned_tensors(name: str) -> None:
    _, artifact = _open(name)
    assert state_digest(artifact.model) == PINS[name]["state_sha256"], (
        f"tests/golden/{name} decodes to other tensors than it did: the reader changed; {REGEN}"
    )


@pytest.mark.parametrize("name", sorted(PINS))
def test_golden_file_re_encodes_to_its_own_bytes(name: str) -> None:
    """The decoded module written again as the recipe's encode stage wrote it (its codec choice
    policy and settings, the file's meta) is the golden file, byte for byte."""
    data, artifact = _open(name)
    policy = StoragePolicy(**PINS[name]["encode"])
    sparse = set(artifact.meta.get("sparse", []))
    image, _ = encode_model(
        artifact.model,
        artifact.manifest.builder,
        artifact.manifest.kwargs,
        meta=artifact.meta,
        choose=lambda n, t: policy.choose(n, t, sparse),
    )
    first = next((i for i, (a, b) in enumerate(zip(image, data)) if a != b), None)
    assert image == data, (
        f"re-encoding tests/golden/{name} gives {len(image)} bytes, not the file's {len(data)} "
        f"(first difference at byte {first}): the writer changed; {REGEN}"
    )
