"""The recipe: a validated description of one compression run, loaded from YAML.

Every key is checked: unknown keys and bad values raise :class:`RecipeError` whose lines name the
key path (``stages.0.prune.ratio``) and what is allowed. A stage's parameters are its config,
the same pydantic model the Python API takes (``jointcomp.stages``' registry), so a recipe and a
Python call say the same thing with the same names.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from .config import StageConfig, Strict, format_validation_error
from .data.bundle import TEST_SELECTION
from .errors import RecipeError
from .stages import STAGES
from .training import TrainSpec


class ModelSpec(Strict):
    """Which network to compress and where its trained weights come from."""

    builder: str = Field(description="zoo:NAME | torchvision:NAME | pkg.module:callable")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="builder keyword arguments")
    weights: str = Field(
        "train", description="'train' (train and cache a baseline) or a .safetensors path"
    )
    input_shape: list[int] | None = Field(
        None, description="per-sample input shape, e.g. [1, 28, 28]; default: the dataset's"
    )

    @field_validator("builder")
    @classmethod
    def _builder_form(cls, v: str) -> str:
        if ":" not in v or v.startswith(":") or v.endswith(":"):
            raise ValueError("expected zoo:NAME, torchvision:NAME or pkg.module:callable")
        return v

    @field_validator("weights")
    @classmethod
    def _weights_form(cls, v: str) -> str:
        if v != "train" and not v.endswith(".safetensors"):
            raise ValueError("expected 'train' or a path ending in .safetensors")
        return v


class DataSpec(Strict):
    """The dataset in three roles: train (what models train on), val (carved from the training
    data; every choice a stage makes is judged on it) and test (held out; the audit's reported
    figures, and nothing else, are measured on it)."""

    dataset: str = Field(
        description="digits | fashion-mnist | mnist | cifar10 | pkg.module:callable"
    )
    root: str | None = Field(None, description="directory holding the dataset files")
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    val_split: float = Field(
        0.1,
        description="fraction of the training data held out for validation (the stages' "
        "choices), carved with a seeded permutation",
    )
    test_split: float | None = Field(
        None,
        description="the reported figures' split: null for the dataset's official test split; "
        "a fraction held out of the training data instead (needed where there is none: "
        "digits), always the same samples whatever the seed",
    )
    seed: int = Field(0, description="seed of the carves")
    limit: int | None = Field(None, ge=1, description="use only the first N training samples")

    @field_validator("val_split", mode="before")
    @classmethod
    def _no_test_selection(cls, v: object) -> object:
        if isinstance(v, str) and v.strip().lower() == "test":
            raise ValueError(TEST_SELECTION)
        return v

    @field_validator("val_split", "test_split")
    @classmethod
    def _fraction(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 < v < 1.0:
            raise ValueError("a fraction must lie strictly between 0 and 1")
        return v


class AuditSpec(Strict):
    """What the audit measures."""

    latency: bool = True
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 32])
    threads: int = Field(1, ge=1, description="torch threads while timing")
    min_run_time: float = Field(0.3, gt=0, description="seconds of timing per measurement")
    macs: bool = True
    html: bool = True


class Recipe(Strict):
    """A whole run: the top level of a recipe file."""

    name: str | None = Field(None, description="run name; default: the file's stem")
    seed: int = Field(
        0, description="seeds the baseline and every stage (each stage: its own seed)"
    )
    device: str = Field("cpu", description="cpu | cuda | cuda:N | auto")
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads for training (default: torch's choice)"
    )
    model: ModelSpec
    data: DataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    stages: list[Any] = Field(
        default_factory=list,
        description="ordered stages, each {name: {params}} (see Stages); validated into their "
        "configs",
    )
    output: str | None = Field(None, description="output directory; default runs/NAME")
    audit: AuditSpec = Field(default_factory=AuditSpec)

    @field_validator("device")
    @classmethod
    def _device_form(cls, v: str) -> str:
        if v not in ("cpu", "cuda", "auto") and not (v.startswith("cuda:") and v[5:].isdigit()):
            raise ValueError("expected cpu, cuda, cuda:N or auto")
        return v


def _validate_stages(raw_stages: list[Any]) -> tuple[list[StageConfig], list[str]]:
    configs: list[StageConfig] = []
    errors: list[str] = []
    for i, entry in enumerate(raw_stages):
        if isinstance(entry, StageConfig):
            configs.append(entry)
            continue
        if not isinstance(entry, dict) or len(entry) != 1:
            errors.append(
                f"stages.{i}: each stage is a mapping with one key, the stage name "
                f"(one of: {', '.join(STAGES)}), e.g. '- prune: {{ratio: 0.5}}'"
            )
            continue
        ((name, params),) = entry.items()
        if name not in STAGES:
            errors.append(f"stages.{i}.{name}: unknown stage; allowed: {', '.join(STAGES)}")
            continue
        config_cls = STAGES[name].config
        try:
            configs.append(config_cls.model_validate(params or {}))
        except ValidationError as exc:
            errors.extend(format_validation_error(exc, config_cls, prefix=f"stages.{i}.{name}"))
    last = len(raw_stages) - 1
    for i, entry in enumerate(raw_stages[:last]):
        if isinstance(entry, StageConfig):
            name = entry.stage
        elif isinstance(entry, dict) and len(entry) == 1:
            name = next(iter(entry))
        else:
            continue
        if isinstance(name, str) and name in STAGES and STAGES[name].terminal:
            errors.append(f"stages.{i}.{name}: must be the last stage")
    return configs, errors


def validate_recipe(raw: Any, source: str = "recipe") -> Recipe:
    """Validate a recipe given as plain data (the parsed YAML). Raises RecipeError."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe is a mapping of keys (model, data, stages, ...)")
    errors: list[str] = []
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        errors.extend(format_validation_error(exc, Recipe))
        recipe = None
    specs, stage_errors = _validate_stages(raw.get("stages") or [])
    errors.extend(stage_errors)
    if errors or recipe is None:
        raise RecipeError(f"{source}: invalid recipe\n  " + "\n  ".join(errors))
    recipe.stages = specs
    return recipe


def split_key_path(key: str) -> list[str | int]:
    """``a.b.0.c`` → ``['a', 'b', 0, 'c']``; a key holding dots or brackets goes in brackets,
    taken as written: ``overrides[*.coef].bits`` → ``['overrides', '*.coef', 'bits']``.
    ValueError for an empty or unbalanced path."""
    parts: list[str | int] = []
    i, n = 0, len(key)
    while i < n:
        if key[i] == "[":
            end = key.find("]", i)
            if end < 0:
                raise ValueError("a '[' without its ']'")
            inner = key[i + 1 : end].strip()
            if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
                inner = inner[1:-1]
            if not inner:
                raise ValueError("an empty [] key")
            parts.append(inner)
            i = end + 1
            if i < n and key[i] not in ".[":
                raise ValueError(f"expected '.' or '[' after ']', got {key[i]!r}")
            i += key[i] == "." if i < n else 0
            continue
        stop = min((j for j in (key.find(".", i), key.find("[", i)) if j >= 0), default=n)
        segment = key[i:stop]
        if not segment or "]" in segment:
            raise ValueError("an empty key between dots" if not segment else "a ']' without '['")
        parts.append(int(segment) if segment.isdigit() else segment)
        i = stop + (1 if stop < n and key[stop] == "." else 0)
        if stop < n and key[stop] == "." and i == n:
            raise ValueError("a trailing '.'")
    if not parts:
        raise ValueError("an empty key path")
    return parts


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """Parse ``a.b.0.c=value`` (the value is YAML) into a key path and a value; keys holding
    dots go in brackets (``stages.1.quantize.overrides[*.coef].bits=8``)."""
    if "=" not in text:
        raise RecipeError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. stages.0.prune.ratio=0.3")
    key, _, value_text = text.partition("=")
    try:
        parts = split_key_path(key.strip())
    except ValueError as exc:
        raise RecipeError(f"--set {text!r}: bad key path: {exc}") from None
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else None
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {text!r}: value is not valid YAML ({exc})") from None
    return parts, value


def apply_override(raw: dict[str, Any], path: list[str | int], value: Any) -> None:
    """Set ``value`` at ``path`` inside ``raw``, creating mappings for missing keys."""
    node: Any = raw
    shown = ""
    for j, part in enumerate(path):
        last = j == len(path) - 1
        shown = f"{shown}.{part}" if shown else str(part)
        if isinstance(node, list):
            if not isinstance(part, int) or not 0 <= part < len(node):
                raise RecipeError(f"--set {shown}: index out of range (the list has {len(node)})")
        elif isinstance(node, dict):
            if isinstance(part, int):
                part = str(part)
            if not last and node.get(part) is None:
                node[part] = {}
        else:
            raise RecipeError(f"--set {shown}: cannot set a key inside a {type(node).__name__}")
        if last:
            node[part] = value
        else:
            node = node[part]


def load_recipe_data(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Read the YAML at ``path`` and apply ``--set`` overrides; no validation yet."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"{p}: recipe file not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{p}: a recipe is a mapping of keys (model, data, stages, ...)")
    raw = copy.deepcopy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(raw, keys, value)
    raw.setdefault("name", p.stem)
    return raw


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Load, override and validate a recipe file."""
    return validate_recipe(load_recipe_data(path, overrides), source=str(path))


def recipe_to_data(recipe: Recipe) -> dict[str, Any]:
    """Plain data of a validated recipe (stages back in their ``{name: params}`` form)."""
    data = recipe.model_dump(exclude={"stages"})
    data["stages"] = [config.to_entry() for config in recipe.stages]
    return data
