"""The recipe: a validated description of one compression run, loaded from YAML.

Every key is checked: unknown keys and bad values raise :class:`RecipeError` whose lines name the
key path (``stages.0.prune.ratio``) and what is allowed. Stage parameters are validated by each
stage's own schema (``jointcomp.stages``).
"""

from __future__ import annotations

import copy
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import RecipeError


class Strict(BaseModel):
    """Base for every recipe section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


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
    """The dataset, its split and its batching."""

    dataset: str = Field(
        description="digits | fashion-mnist | mnist | cifar10 | pkg.module:callable"
    )
    root: str | None = Field(None, description="directory holding the dataset files")
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    val_split: float | Literal["test"] = Field(
        0.1,
        description="fraction of the training set held out, or 'test' for the official test set",
    )
    seed: int = Field(0, description="seed of the validation carve")
    limit: int | None = Field(None, ge=1, description="use only the first N training samples")

    @field_validator("val_split")
    @classmethod
    def _fraction(cls, v: float | str) -> float | str:
        if isinstance(v, float) and not 0.0 < v < 1.0:
            raise ValueError("a fraction must lie strictly between 0 and 1")
        return v


class DistillSpec(Strict):
    """Knowledge distillation from the uncompressed (baseline) model, or from the model as the
    stage received it."""

    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the distillation term")
    teacher: Literal["baseline", "input"] | None = Field(
        None,
        description="baseline (unset): the uncompressed model; input: a frozen copy of the model "
        "as the stage received it (e.g. the float network that QAT quantizes)",
    )


class AugmentSpec(Strict):
    """Random changes to each training image, drawn anew every epoch (image datasets only). The
    teacher of distillation sees the same changed image, so it teaches on new inputs each epoch."""

    shift: int = Field(
        0,
        ge=0,
        le=16,
        description="translate by up to this many pixels each way (edges replicated)",
    )
    flip: bool = Field(False, description="mirror left-right with probability 1/2")


Optimizer = Literal["adam", "adamw", "sgd"]
Schedule = Literal["cosine", "constant", "step"]


class TrainSpec(Strict):
    """Training settings: the baseline uses them as they are; stages fine-tune with them unless a
    stage's own ``finetune`` overrides some."""

    epochs: int = Field(5, ge=0)
    optimizer: Optimizer = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Schedule = "cosine"
    step_size: int = Field(10, ge=1, description="epochs per lr step (schedule: step)")
    gamma: float = Field(0.1, gt=0, le=1, description="lr factor per step (schedule: step)")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    distill: DistillSpec | None = None
    augment: AugmentSpec | None = Field(None, description="training-image augmentation")
    max_batches: int | None = Field(None, ge=1, description="stop each epoch after N batches")


class FinetuneSpec(Strict):
    """A stage's overrides of the recipe's ``train`` settings; unset keys inherit."""

    epochs: int | None = Field(None, ge=0)
    optimizer: Optimizer | None = None
    lr: float | None = Field(None, gt=0)
    momentum: float | None = Field(None, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    schedule: Schedule | None = None
    step_size: int | None = Field(None, ge=1)
    gamma: float | None = Field(None, gt=0, le=1)
    label_smoothing: float | None = Field(None, ge=0, lt=1)
    distill: DistillSpec | Literal[False] | None = None
    augment: AugmentSpec | Literal[False] | None = None
    max_batches: int | None = Field(None, ge=1)

    def merged(self, base: TrainSpec) -> TrainSpec:
        """``base`` with this spec's set keys applied (``distill: false`` and ``augment: false``
        turn those off)."""
        data = base.model_dump()
        for key, value in self.model_dump(exclude_none=True).items():
            data[key] = None if (key in ("distill", "augment") and value is False) else value
        return TrainSpec.model_validate(data)


class AuditSpec(Strict):
    """What the audit measures."""

    latency: bool = True
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 32])
    threads: int = Field(1, ge=1, description="torch threads while timing")
    min_run_time: float = Field(0.3, gt=0, description="seconds of timing per measurement")
    macs: bool = True
    html: bool = True


class StageSpec(BaseModel):
    """One validated stage entry: its name, its parameters, and its index in the recipe."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    index: int
    name: str
    params: Any


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
        default_factory=list, description="ordered stages, each {name: {params}} (see Stages)"
    )
    output: str | None = Field(None, description="output directory; default runs/NAME")
    audit: AuditSpec = Field(default_factory=AuditSpec)

    @field_validator("device")
    @classmethod
    def _device_form(cls, v: str) -> str:
        if v not in ("cpu", "cuda", "auto") and not (v.startswith("cuda:") and v[5:].isdigit()):
            raise ValueError("expected cpu, cuda, cuda:N or auto")
        return v


# --- validation and error messages -------------------------------------------------------------


def _unwrap(annotation: Any) -> list[Any]:
    """The members of a (possibly Optional / Union) annotation."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _unwrap(a)]
    return [annotation]


def _model_at(root: type[BaseModel], path: list[str | int]) -> type[BaseModel] | None:
    """The schema class reached by following ``path`` from ``root`` (for listing allowed keys)."""
    current: Any = root
    for key in path:
        if isinstance(key, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(key)
        if field is None:
            return None
        models = [
            m for m in _unwrap(field.annotation) if isinstance(m, type) and issubclass(m, BaseModel)
        ]
        current = models[0] if models else None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


_UNION_TAGS = {"float", "int", "str", "bool", "list", "dict", "none"}


def _clean_loc(loc: tuple[Any, ...]) -> list[str | int]:
    """Drop pydantic's union-member tags (``'float'``, ``"literal['test']"``, ``'DistillSpec'``,
    ``'function-after[...]'``) from an error location, keeping keys and list indices."""
    out: list[str | int] = []
    for part in loc:
        if isinstance(part, int) or not ("[" in part or part in _UNION_TAGS or part[:1].isupper()):
            out.append(part)
    return out


def format_validation_error(
    error: ValidationError, root: type[BaseModel], prefix: str = ""
) -> list[str]:
    """One line per offending key: ``path: what is wrong (got X)``, unions merged into one line."""
    grouped: dict[str, list[str]] = {}
    for err in error.errors():
        loc = _clean_loc(err["loc"])
        path = ".".join(str(p) for p in loc)
        full = f"{prefix}.{path}" if prefix and path else (prefix or path or "(top level)")
        if err["type"] == "extra_forbidden":
            model = _model_at(root, loc[:-1])
            allowed = ", ".join(model.model_fields) if model else "none"
            grouped.setdefault(full, []).append(f"unknown key; allowed keys here: {allowed}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required key is missing"
        elif "input" in err and err["type"] != "missing":
            shown = repr(err["input"])
            msg = f"{msg} (got {shown[:60]})"
        grouped.setdefault(full, []).append(msg)
    lines = []
    for path, msgs in grouped.items():
        unique = list(dict.fromkeys(msgs))
        lines.append(f"{path}: " + "; or ".join(unique))
    return lines


def _validate_stages(raw_stages: list[Any]) -> tuple[list[StageSpec], list[str]]:
    from .stages import STAGES  # stages import recipe types, so import lazily

    specs: list[StageSpec] = []
    errors: list[str] = []
    for i, entry in enumerate(raw_stages):
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
        params_cls = STAGES[name].Params
        try:
            parsed = params_cls.model_validate(params or {})
        except ValidationError as exc:
            errors.extend(format_validation_error(exc, params_cls, prefix=f"stages.{i}.{name}"))
            continue
        specs.append(StageSpec(index=i, name=name, params=parsed))
    return specs, errors


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


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """Parse ``a.b.0.c=value`` (the value is YAML) into a key path and a value."""
    if "=" not in text:
        raise RecipeError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. stages.0.prune.ratio=0.3")
    key, _, value_text = text.partition("=")
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in key.strip().split(".")]
    if not key.strip() or any(p == "" for p in parts):
        raise RecipeError(f"--set {text!r}: empty key path")
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


# keys added after baselines were cached and runs fingerprinted: hashes leave them out while
# null, so those caches stay valid and those runs resume ("method": quantize layer overrides)
ADDED_KEYS = (
    "augment",
    "rate",
    "teacher",
    "method",
    "bias_correction",
    "include_zero",
    "scale_grid",
)


def without_unset_added(data: Any) -> Any:
    """``data`` (plain recipe data) without the ADDED_KEYS whose value is null, for hashing."""
    if isinstance(data, dict):
        return {
            k: without_unset_added(v)
            for k, v in data.items()
            if not (k in ADDED_KEYS and v is None)
        }
    if isinstance(data, list):
        return [without_unset_added(v) for v in data]
    return data


def recipe_to_data(recipe: Recipe) -> dict[str, Any]:
    """Plain data of a validated recipe (stages back in their ``{name: params}`` form)."""
    data = recipe.model_dump(exclude={"stages"})
    data["stages"] = [{s.name: s.params.model_dump(mode="json")} for s in recipe.stages]
    return data
