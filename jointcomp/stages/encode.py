"""Stage ``encode``: write the model into ``OUTPUT/model.jcz`` and hand on the module decoded from
that file, so every later measurement is of the artifact a user ships."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.distributed as dist
from pydantic import Field
from torch import nn

from ..container import TensorChoice, open_artifact, save
from ..errors import JointcompError
from ..tensor.log_grid import exact_codes
from ..train import is_main_process
from .base import Stage, StageContext, StageParams, first_match

CodecName = Literal["auto", "plain", "raw", "huffman", "tunstall", "ans", "range", "sparse"]
SPARSE_FLOAT_THRESHOLD = 0.5  # zero fraction above which a float tensor's positions are coded
MIN_PARTS, MAX_PARTS, MIN_PART_SIZE = 2, 1024, 64  # range_parts: slices worth a table each
# log-grid codes pay where the values outweigh a coder's header entry (a scalar does not)
MIN_LOG_VALUES = 8


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


def parts_option(tensor: torch.Tensor) -> dict[str, Any]:
    """auto's range_parts candidate for ``tensor``: a table per leading slice (a quantized
    T-Basis basis has a scale per basis core, so each core's values have their own spread).
    auto keeps it only where the smaller stream pays for the extra tables."""
    if tensor.dim() < 2:
        return {}
    parts = tensor.shape[0]
    if not MIN_PARTS <= parts <= MAX_PARTS or tensor.numel() // parts < MIN_PART_SIZE:
        return {}
    return {"range_parts": {"parts": parts}}


class EncodeStage(Stage):
    name = "encode"
    Params = EncodeParams
    terminal = True

    def choose(self, name: str, tensor: torch.Tensor, sparse: set[str]) -> TensorChoice:
        p: EncodeParams = self.params  # type: ignore[assignment]
        codec = first_match(name, p.layers) or p.codec
        if codec == "plain":  # no coding at all: every tensor's own bytes
            return TensorChoice(
                "plain", {}, p.float_storage if tensor.dtype == torch.float32 else None
            )
        if tensor.is_floating_point():
            storage = p.float_storage if tensor.dtype == torch.float32 else None
            found = exact_codes(tensor) if tensor.numel() >= MIN_LOG_VALUES else None
            if found is not None:  # scales a scale_grid put on a log grid: codes, exactly
                return TensorChoice(codec, {}, f"l{found[1]}")
            zeros = float((tensor == 0).float().mean()) if tensor.numel() else 0.0
            if name in sparse or zeros > SPARSE_FLOAT_THRESHOLD:
                # positions entropy-coded, values kept as exact bit patterns
                return TensorChoice("sparse", {"value_codecs": ("raw",)}, storage)
            return TensorChoice("plain", {}, storage)
        if codec != "auto":
            return TensorChoice(codec, dict(p.options), None)
        return TensorChoice(codec, parts_option(tensor), None)

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
