"""Example inputs for tracing an export and samples for checking it.

Where they come from, first match wins:

- an explicit shape (``--input-shape 1,3,32,32``, optional dtype): a tensor of that shape — or,
  for a transformers / sentence-embedder model, token ids and an attention mask of that
  ``[batch, tokens]`` shape;
- the run folder the file sits in (its ``recipe.json``): samples of the recipe's test split;
- a transformers / sentence-embedder builder: ``input_ids`` and ``attention_mask`` of shape
  ``[1, 128]`` (at most the model's position table);

otherwise an ExportError asks for ``--input-shape``. The traced example has batch size 1; the
check runs a few samples at once (so the batch axis is checked dynamic).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .common import INPUT, ExportError, Inputs

TOKEN_BUILDERS = ("transformers:", "sentence-embedder:")
DEFAULT_TOKENS = 128
CHECK_SAMPLES = 4
DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "uint8": torch.uint8,
}


@dataclass
class Examples:
    """``example``: batch-1 inputs to trace; ``samples``: a batch to check on; ``dynamic``:
    per input, its axes that may vary (name → {axis: label}); ``source``: where they came
    from, for messages."""

    example: Inputs
    samples: Inputs
    source: str
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,32,32"`` (or ``1x3x32x32``) as a shape; ExportError for anything else."""
    parts = text.replace("x", ",").replace(" ", "").strip("()[]").split(",")
    try:
        shape = tuple(int(p) for p in parts if p)
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape) or len(shape) > 8:
        raise ExportError(f"--input-shape {text!r}: expected positive integers like 1,3,32,32")
    return shape


def is_token_model(builder: str) -> bool:
    """True for the builders whose models take token ids (transformers, sentence-embedder)."""
    return builder.startswith(TOKEN_BUILDERS)


def token_inputs(config: dict[str, Any], batch: int, length: int, seed: int = 0) -> Inputs:
    """``input_ids`` (random ids of the model's vocabulary) and ``attention_mask`` of shape
    ``[batch, length]``; past the first row, every other row is padded after its first half,
    so a check sees the mask at work."""
    vocab = int(config.get("vocab_size") or 100)
    limit = config.get("max_position_embeddings")
    if isinstance(limit, int) and length > limit:
        raise ExportError(f"{length} tokens exceed the model's {limit} positions")
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(5, vocab - 1), vocab, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.int64)
    mask[1::2, max(1, length // 2) :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _tensor(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=generator).to(dtype)
    return torch.randint(0, 10, shape, generator=generator).to(dtype)


def _token_examples(config: dict[str, Any], batch: int, length: int, source: str) -> Examples:
    dynamic = {name: {0: "batch", 1: "tokens"} for name in ("input_ids", "attention_mask")}
    return Examples(
        example=token_inputs(config, batch, length, seed=0),
        samples=token_inputs(config, max(batch, CHECK_SAMPLES), length, seed=1),
        source=source,
        dynamic=dynamic,
    )


def _as_inputs(inputs: Any, where: str) -> Inputs:
    if isinstance(inputs, torch.Tensor):
        return {INPUT: inputs}
    if isinstance(inputs, dict) and all(isinstance(v, torch.Tensor) for v in inputs.values()):
        return dict(inputs)
    raise ExportError(f"{where}: inputs of type {type(inputs).__name__} cannot be exported; "
                      "pass --input-shape")  # fmt: skip


def run_folder_recipe(file: str | Path) -> Any:
    """The validated recipe of the run folder ``file`` sits in, or None when it sits in none."""
    from ..recipe import validate_recipe

    path = Path(file).resolve().parent / "recipe.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: not a readable recipe ({exc}); pass --input-shape") from None
    return validate_recipe(raw, source=str(path))


def _recipe_examples(recipe: Any, path: Path) -> Examples:
    from ..baseline import recipe_data
    from ..batches import first_batches, inputs_of

    data, _ = recipe_data(recipe)
    split = data.test if len(data.test) else data.val  # type: ignore[arg-type]
    batches = first_batches(split, CHECK_SAMPLES, 1)
    if not batches:
        raise ExportError(f"{path}: the recipe's data hold no samples; pass --input-shape")
    samples = _as_inputs(inputs_of(batches[0]), str(path))
    example = {k: v[:1] for k, v in samples.items()}
    dynamic: dict[str, dict[int, str]] = {k: {0: "batch"} for k in samples}
    if INPUT not in samples:  # tokenized text: the token count varies too
        dynamic = {k: {0: "batch", 1: "tokens"} for k in samples if samples[k].dim() == 2}
    return Examples(example, samples, f"the recipe of {path.parent}", dynamic)


def examples_for(
    builder: str,
    kwargs: dict[str, Any],
    *,
    file: str | Path | None = None,
    input_shape: tuple[int, ...] | str | None = None,
    dtype: str | torch.dtype | None = None,
) -> Examples:
    """Example inputs and check samples for a model built by ``builder`` with ``kwargs`` (a
    file's manifest), as the module docstring orders them.

    >>> ex = examples_for("zoo:lenet300", {}, input_shape="1,1,28,28")
    >>> tuple(ex.example["input"].shape), tuple(ex.samples["input"].shape)
    ((1, 1, 28, 28), (4, 1, 28, 28))
    """
    config = kwargs.get("config") if isinstance(kwargs.get("config"), dict) else {}
    if input_shape is not None:
        shape = parse_shape(input_shape) if isinstance(input_shape, str) else tuple(input_shape)
        if is_token_model(builder):
            if len(shape) != 2:
                raise ExportError(f"{builder} takes token ids: --input-shape BATCH,TOKENS "
                                  f"(got {len(shape)} numbers)")  # fmt: skip
            return _token_examples(config, shape[0], shape[1], "--input-shape")
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise ExportError(f"--input-dtype {dtype!r}: one of {', '.join(DTYPES)}")
            dtype = DTYPES[dtype]
        dtype = dtype or torch.float32
        batch = max(shape[0], CHECK_SAMPLES)
        dynamic = {INPUT: {0: "batch"}}
        return Examples(
            {INPUT: _tensor(shape, dtype, 0)},
            {INPUT: _tensor((batch, *shape[1:]), dtype, 1)},
            "--input-shape",
            dynamic,
        )
    if file is not None:
        recipe = run_folder_recipe(file)
        if recipe is not None:
            return _recipe_examples(recipe, Path(file).resolve())
    if is_token_model(builder):
        limit = config.get("max_position_embeddings")
        length = min(DEFAULT_TOKENS, limit) if isinstance(limit, int) else DEFAULT_TOKENS
        return _token_examples(config, 1, length, f"{builder}'s default [1, {length}] tokens")
    raise ExportError(
        f"no example input for {builder}: the file sits in no run folder (recipe.json) and its "
        "builder takes no token ids; pass --input-shape (e.g. --input-shape 1,3,32,32)"
    )
