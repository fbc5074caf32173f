"""Stage ``encode``: write the model into ``OUTPUT/model.jcz`` and hand on the module decoded from
that file, so every later measurement is of the artifact a user ships."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.distributed as dist
from pydantic import Field
from torch import nn

from ..container import TensorChoice, open_artifact, save
from ..container.choose import StoragePolicy
from ..errors import JointcompError
from ..train import is_main_process
from .base import Stage, StageContext, StageParams

CodecName = Literal["auto", "plain", "raw", "huffman", "tunstall", "ans", "range", "sparse"]


class EncodeParams(StageParams):
    codec: CodecName = Field("auto", description="coder for integer tensors and sparse positions")
    layers: dict[str, CodecName] = Field(
        default_factory=dict, description="per-tensor overrides by name pattern, e.g. {'fc*': ans}"
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="coder options, e.g. {k: 12} for tunstall"
    )
    float_storage: Literal["f32", "f16"] = Field(
        "f32", description="storage of tensors that stay float (f16 rounds them: lossy)"
    )
    filename: str = "model.jcz"


class EncodeStage(Stage):
    name = "encode"
    Params = EncodeParams
    terminal = True

    def choose(self, name: str, tensor: torch.Tensor, sparse: set[str]) -> TensorChoice:
        p: EncodeParams = self.params  # type: ignore[assignment]
        policy = StoragePolicy(p.codec, p.layers, p.options, p.float_storage)
        return policy.choose(name, tensor, sparse)

    def apply(self, model: nn.Module, ctx: StageContext) -> nn.Module:
        p: EncodeParams = self.params  # type: ignore[assignment]
        path = ctx.out_dir / p.filename
        sparse = set(ctx.meta.get("sparse", []))
        model = model.to("cpu").eval()
        if is_main_process():
            report = save(
                path,
                model,
                ctx.builder,
                ctx.builder_kwargs,
                meta=ctx.meta,
                choose=lambda n, t: self.choose(n, t, sparse),
            )
            ctx.record.update(
                file=str(path),
                file_bytes=report.file_bytes,
                header_bytes=report.header_bytes,
                tensors={e["n"]: {"codec": e["c"], "bytes": e["b"]} for e in report.entries},
            )
            ctx.log(f"wrote {path} ({report.file_bytes:,} bytes)")
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        artifact = open_artifact(path, trust=True)
        exact = {e["n"] for e in artifact.entries if e.get("st", "").startswith("l")}
        exact |= {alias for alias, name in artifact.manifest.ties.items() if name in exact}
        _check_bit_exact(model, artifact.model, p.float_storage, exact)
        loaded = artifact.model
        return loaded.to(ctx.device)


def _check_bit_exact(
    model: nn.Module, loaded: nn.Module, float_storage: str, exact: set[str]
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
