"""A transformers folder (config.json + model.safetensors) of a decoded ``transformers:`` or
``sentence-embedder:`` file, which ``AutoModel.from_pretrained(DIR)`` loads without jointcomp.

The weights are :func:`dense_state_dict`'s: quantized tensors as their float values, factorized
layers and factorized embedding tables dense. The config is the model's own, with what pruning
changed written into it where transformers can say it: an intermediate (feed-forward) size
pruned alike in every layer becomes the config's. Anything else the config cannot express —
per-layer different intermediate sizes, pruned attention heads (transformers builds every
layer with ``num_attention_heads`` heads of ``hidden_size / heads`` channels), a pruned hidden
size — is an ExportError naming the tensors. A sentence-embedder also gets the
sentence-transformers files (modules.json, the pooling config, Normalize), so the folder loads
as ``sentence-transformers:DIR`` too. No tokenizer is written (the .jcz file holds none): copy
the original folder's tokenizer files next to these.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.hf import _quiet, require_transformers
from .common import ExportError, Inputs, compare, flat_outputs
from .safetensors_dense import dense_state_dict

# config keys of the feed-forward width, as transformers' architectures name it
# names of attention projections, whose shapes change when heads are pruned
ATTENTION_NAMES = (".query.", ".key.", ".value.", ".q_proj.", ".k_proj.", ".v_proj.", ".qkv.")
FFN_KEYS = ("intermediate_size", "ffn_dim", "encoder_ffn_dim", "d_ff", "n_inner", "hidden_dim")


def hf_part(model: nn.Module, builder: str) -> nn.Module:
    """The transformers PreTrainedModel inside ``model`` (itself, or a SentenceEmbedder's)."""
    if builder.startswith("sentence-embedder:"):
        model = getattr(model, "transformer", model)
    elif not builder.startswith("transformers:"):
        raise ExportError(f"a transformers folder is written for transformers: and "
                          f"sentence-embedder: models only, not {builder}")  # fmt: skip
    if not hasattr(model, "config") or not hasattr(model, "save_pretrained"):
        raise ExportError(f"{builder}: the model holds no transformers PreTrainedModel")
    return model


def _mismatches(fresh: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, tuple]:
    expected = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    return {k: (expected[k], tuple(v.shape)) for k, v in state.items()
            if k in expected and expected[k] != tuple(v.shape)}  # fmt: skip


def _listing(mismatches: dict[str, tuple], n: int = 3) -> str:
    shown = [f"{k}: {list(a)} → {list(b)}" for k, (a, b) in list(mismatches.items())[:n]]
    more = f" and {len(mismatches) - n} more" if len(mismatches) > n else ""
    return "; ".join(shown) + more


def fit_config(config: Any, cls: type, state: dict[str, torch.Tensor]) -> Any:
    """A copy of ``config`` under which ``cls`` has ``state``'s shapes (a uniformly pruned
    intermediate size written in), or an ExportError naming what no config can say."""
    config = copy.deepcopy(config)
    fresh = _build(cls, config)
    mismatches = _mismatches(fresh, state)
    if not mismatches:
        return config
    heads = {k: v for k, v in mismatches.items() if any(p in k for p in ATTENTION_NAMES)}
    if heads:
        raise ExportError(
            "attention heads were pruned (" + _listing(heads) + "); transformers builds every "
            "layer with config.num_attention_heads heads of hidden_size / heads channels and "
            "has no per-layer head counts: export ONNX or .pt2 instead"
        )
    ffn = [k for k in FFN_KEYS if isinstance(getattr(config, k, None), int)]
    pairs = {(x, y) for a, b in mismatches.values() for x, y in zip(a, b, strict=False) if x != y}
    sizes = {b for _, b in pairs}
    if ffn and pairs and all(a == getattr(config, ffn[0]) for a, _ in pairs):
        if len(sizes) == 1:  # every pruned layer alike: try that size for all layers
            width = sizes.pop()
            setattr(config, ffn[0], width)
            mismatches = _mismatches(_build(cls, config), state)
            if not mismatches:
                return config
            left = {(x, y) for a, b in mismatches.values() for x, y in zip(a, b, strict=False)
                    if x != y}  # fmt: skip
            sizes = {width} | {y for x, y in left if x == width}
        if len(sizes) > 1:
            raise ExportError(
                f"the layers' intermediate sizes differ ({', '.join(map(str, sorted(sizes)))}); "
                f"a transformers config has one {ffn[0]} for all layers: export ONNX or .pt2 "
                "instead"
            )
    raise ExportError("the model's shapes cannot be written as a transformers config: "
                      + _listing(mismatches))  # fmt: skip


def _build(cls: type, config: Any) -> nn.Module:
    with torch.device("meta"):
        return cls(config)


def _sentence_files(folder: Path, model: nn.Module, width: int) -> None:
    """modules.json, the pooling config and Normalize of a sentence-transformers folder."""
    modes = tuple(getattr(model, "pooling", ("mean",)))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
    ]  # fmt: skip
    if getattr(model, "normalize", False):
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})  # fmt: skip
        (folder / "2_Normalize").mkdir(exist_ok=True)
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pooling = {"word_embedding_dimension": width, "pooling_mode": list(modes)}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    length = getattr(model, "max_seq_length", None)
    settings = {"max_seq_length": length} if length else {}
    (folder / "sentence_bert_config.json").write_text(json.dumps(settings))


def to_transformers(
    model: nn.Module,
    folder: str | Path,
    builder: str,
    *,
    samples: Inputs | None = None,
) -> dict[str, Any]:
    """Write ``model`` (a decoded ``transformers:`` / ``sentence-embedder:`` file's module,
    ``builder`` its manifest's builder) as a transformers folder at ``folder`` (see the module
    docstring), and check it: loaded back with ``from_pretrained``, its outputs on ``samples``
    equal the module's within float error. Returns ``tensors`` and the check."""
    hf = hf_part(model, builder)
    state = dense_state_dict(hf)
    cls = type(hf)
    config = fit_config(hf.config, cls, state)
    fresh = cls(config).eval()
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in _tied(fresh)]
    if unexpected or missing:
        raise ExportError(f"the weights do not fit {cls.__name__}: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}")  # fmt: skip
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    transformers = require_transformers("a transformers folder")
    with _quiet(transformers):
        fresh.save_pretrained(out, safe_serialization=True)
    if builder.startswith("sentence-embedder:"):
        _sentence_files(out, model, int(getattr(config, "hidden_size", 0) or 0))
    report: dict[str, Any] = {"tensors": len(state)}
    if samples is not None:
        with _quiet(transformers):
            loaded = cls.from_pretrained(str(out), local_files_only=True, dtype=torch.float32)
        loaded.eval()
        with torch.no_grad():
            got = flat_outputs(loaded(**samples))
            expected = flat_outputs(hf.eval()(**samples))
        report.update(compare(expected[: len(got)], got[: len(expected)]))
    return report


def _tied(model: nn.Module) -> set[str]:
    """Keys transformers fills by tying (an output embedding sharing the input table)."""
    tied = getattr(model, "all_tied_weights_keys", None)
    tied = tied or getattr(model, "_tied_weights_keys", None)
    if isinstance(tied, dict):
        return set(tied)
    return set(tied or [])
