"""Stage ``encode`` (always last): write the model into one .jcz file and hand on the module
decoded from that file, so every later measurement is of the artifact a user ships.

``save`` checks what it wrote: the file is read back and every tensor must equal the one
written, bit for bit (after the requested ``float_storage``).

Record: ``file``, ``file_bytes``, ``header_bytes`` and per tensor its codec and bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from pydantic import Field
from torch import nn

from ..codec import CODECS
from ..config import StageConfig
from ..container import WriteReport, open_artifact
from ..container import save as write_file
from ..container.choose import StoragePolicy
from ..errors import JointcompError
from ..models import builder_reference
from ..nn.sparsity import fixed_zero_names
from ..training import is_main_process

CodecName = Literal[("plain", *CODECS)]  # the codec registry's names, plus no coding at all


class EncodeConfig(StageConfig):
    """How tensors are stored: a coder for integers and sparse positions, float storage."""

    stage = "encode"

    codec: CodecName = Field("auto", description="coder for integer tensors and sparse positions")
    overrides: dict[str, CodecName] = Field(
        default_factory=dict,
        description="per-tensor coders by tensor-name pattern, e.g. {'fc*': ans}",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="coder options, e.g. {k: 12} for tunstall"
    )
    float_storage: Literal["f32", "f16"] = Field(
        "f32", description="storage of tensors that stay float (f16 rounds them: lossy)"
    )
    filename: str = Field("model.jcz", description="the file's name in the run's folder")

    def policy(self) -> StoragePolicy:
        return StoragePolicy(self.codec, self.overrides, self.options, self.float_storage)


def save(
    model: nn.Module,
    path: str | Path,
    config: EncodeConfig | None = None,
    *,
    builder: str | Callable[..., nn.Module],
    kwargs: dict[str, Any] | None = None,
) -> WriteReport:
    """Write ``model`` to ``path`` (atomically) and check the file holds it bit for bit.

    ``builder`` (``zoo:NAME``, ``torchvision:NAME``, ``package.module:callable`` or the function
    itself) with ``kwargs`` builds the model's architecture before compression; the file records
    how ``model`` differs from it (pruned widths, factorized layers, quantizers)."""
    return _write(model, path, config or EncodeConfig(), builder, kwargs)[0]


def _write(
    model: nn.Module,
    path: str | Path,
    config: EncodeConfig,
    builder: str | Callable[..., nn.Module],
    kwargs: dict[str, Any] | None,
) -> tuple[WriteReport, nn.Module]:
    reference = builder_reference(builder)
    model = model.to("cpu").eval()
    sparse = fixed_zero_names(model)
    policy = config.policy()
    report = write_file(
        path,
        model,
        reference,
        dict(kwargs or {}),
        meta={"sparse": sparse} if sparse else None,
        choose=lambda name, tensor: policy.choose(name, tensor, sparse),
    )
    return report, check_file(model, path, config.float_storage)


def check_file(model: nn.Module, path: str | Path, float_storage: str = "f32") -> nn.Module:
    """The module decoded from ``path``, after checking every tensor equals ``model``'s (after
    ``float_storage``; log-grid codes exactly). Raises JointcompError on any difference."""
    artifact = open_artifact(path, trust=True)
    exact = {e["n"] for e in artifact.entries if e.get("st", "").startswith("l")}
    exact |= {alias for alias, name in artifact.manifest.ties.items() if name in exact}
    check_bit_exact(model, artifact.model, float_storage, exact)
    return artifact.model


def check_bit_exact(
    model: nn.Module, loaded: nn.Module, float_storage: str = "f32", exact: set[str] = frozenset()
) -> None:
    """Every tensor read back must equal the one written (after the requested float storage;
    the ``exact`` ones, stored as log-grid codes, exactly)."""
    theirs = loaded.state_dict()
    for name, ours in model.state_dict().items():
        expect = ours
        if float_storage == "f16" and ours.dtype == torch.float32 and name not in exact:
            expect = ours.to(torch.float16).to(torch.float32)
        if name not in theirs or not torch.equal(expect.cpu(), theirs[name]):
            raise JointcompError(f"encode: tensor {name!r} did not survive the file bit-exactly")


def encode(
    model: nn.Module,
    config: EncodeConfig,
    *,
    path: str | Path,
    builder: str | Callable[..., nn.Module],
    kwargs: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The stage: ``save`` on the main process (every process under torchrun then reads the
    file), and the module decoded from the file with the record."""
    record: dict[str, Any] = {"file": str(path)}
    loaded = None
    if is_main_process():
        report, loaded = _write(model, path, config, builder, kwargs)
        record.update(
            file_bytes=report.file_bytes,
            header_bytes=report.header_bytes,
            tensors={e["n"]: {"codec": e["c"], "bytes": e["b"]} for e in report.entries},
        )
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    if loaded is None:
        loaded = open_artifact(path, trust=True).model
    return loaded, record
