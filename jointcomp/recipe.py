"""The recipe: a validated description of one compression run, loaded from YAML.

Every key is checked: unknown keys and bad values raise :class:`RecipeError` whose lines name the
key path (``stages.0.prune.ratio``) and what is allowed. A stage's parameters are its config,
the same pydantic model the Python API takes (``jointcomp.stages``' registry), so a recipe and a
Python call say the same thing with the same names.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .config import StageConfig, Strict, format_validation_error, short
from .data.bundle import TEST_SELECTION
from .errors import RecipeError
from .plan.target import Target
from .stages import STAGES
from .tasks import TaskSpec
from .training import TrainSpec

# --- YAML, bounded ----------------------------------------------------------------------

MAX_RECIPE_BYTES = 1 << 20
# A recipe as plain data: values counted as a reader sees them (an alias counts its whole
# anchored value each time), and nesting depth. Real recipes hold a few hundred values.
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 64


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a document whose aliases would expand past
    MAX_YAML_NODES values ("billion laughs"), that refers to itself, or that nests deeper than
    MAX_YAML_DEPTH — checked on the composed node graph, before any Python object exists."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.YAMLError(f"nested more than {MAX_YAML_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node)
        return node


def _expanded_size(root: yaml.Node) -> int:
    """The number of values ``root`` stands for once every alias is expanded, memoised per
    node (linear in the document); YAMLError past the bound or on a node that contains itself."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return []

    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children(node))
            if sizes[key] > MAX_YAML_NODES:
                raise yaml.YAMLError(
                    f"aliases expand to more than {MAX_YAML_NODES:,} values (an alias bomb?)"
                )
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise yaml.YAMLError("an alias refers to a value that contains it")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children(node) if id(c) not in sizes)
    return sizes[id(root)]


def safe_yaml(text: str) -> Any:
    """``yaml.safe_load`` with alias expansion, self-reference and nesting bounded. Raises
    yaml.YAMLError."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of more than 4300 digits
        raise yaml.YAMLError(
            f"a value cannot be read: {short(str(exc), 120, quote=False)}"
        ) from None
    finally:
        loader.dispose()


# --- the schema ---------------------------------------------------------------------------

MAX_SEED = 1 << 19  # every stage's seed (seed * 7919 + 101 * (i + 1)) stays a 32-bit seed
MAX_BATCH = 1 << 20
MAX_THREADS = 1024
MAX_EPOCHS = 100_000
MAX_TOKENS = 1 << 16  # tokens per text example
MAX_INT = 1 << 53  # any other integer (budgets in bytes or MACs, ...): exact as a float


def _is_plain_name(name: str) -> bool:
    """One path component: not empty, no separator, not '.' or '..', no NUL or control."""
    return (
        bool(name)
        and name not in (".", "..")
        and not any(c in name for c in "/\\\0")
        and name == name.strip()
        and all(c.isprintable() for c in name)
        and not (len(name) > 1 and name[1] == ":")  # C:name on Windows
        and len(name) <= 200
    )


class ModelSpec(Strict):
    """Which network to compress and where its trained weights come from."""

    builder: str = Field(
        description="zoo:NAME | torchvision:NAME | timm:NAME | hf:DIR (a local transformers "
        "folder, with its weights) | sentence-transformers:DIR (one module giving the sentence "
        "embedding) | transformers:ARCH (kwargs: config) | pkg.module:callable"
    )
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
            raise ValueError(
                "expected zoo:NAME, torchvision:NAME, timm:NAME, hf:DIR, "
                "sentence-transformers:DIR or pkg.module:callable"
            )
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
        description="digits | fashion-mnist | mnist | cifar10 | text | wordnet | image-folder | "
        "pkg.module:callable"
    )
    root: str | None = Field(None, description="directory holding the dataset files")
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    eval_batch_size: int = Field(512, ge=1, le=MAX_BATCH)
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
    seed: int = Field(0, ge=0, lt=1 << 32, description="seed of the carves")
    limit: int | None = Field(
        None, ge=1, le=MAX_INT, description="use only the first N training samples"
    )
    tokenizer: str | None = Field(
        None,
        description="text, wordnet: the local model folder whose tokenizer reads the text; "
        "default: the model's own folder (hf:DIR, sentence-transformers:DIR)",
    )
    max_length: int | None = Field(
        None, ge=1, le=MAX_TOKENS, description="text, wordnet: tokens per example (default 128)"
    )
    image_size: int | list[int] | None = Field(
        None, description="image-folder: the size images are fitted to, N or [height, width]"
    )
    mean: float | list[float] | None = Field(
        None, description="image-folder: per-channel mean of x / 255; default: computed"
    )
    std: float | list[float] | None = Field(
        None, description="image-folder: per-channel std of x / 255; default: computed"
    )

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, v: int | list[int] | None) -> int | list[int] | None:
        sizes = [v] if isinstance(v, int) else (v or [])
        if v is not None and (len(sizes) not in (1, 2) or any(not 1 <= n <= 4096 for n in sizes)):
            raise ValueError("an image size is N or [height, width], each between 1 and 4096")
        return v

    @field_validator("std")
    @classmethod
    def _std(cls, v: float | list[float] | None) -> float | list[float] | None:
        if v is not None and any(x <= 0 for x in ([v] if isinstance(v, float) else v)):
            raise ValueError("a standard deviation must be positive")
        return v

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
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 32], max_length=16)
    threads: int = Field(1, ge=1, le=MAX_THREADS, description="torch threads while timing")
    min_run_time: float = Field(0.3, gt=0, le=600, description="seconds of timing per measurement")
    macs: bool = True
    html: bool = True
    runtimes: list[Literal["exact", "fast", "onnxruntime"]] = Field(
        default_factory=lambda: ["exact", "fast", "onnxruntime"],
        description=(
            "how the file's model is timed, beside the baseline and interleaved with it: exact "
            "(the bit-exact decoded module), fast (jointcomp.load(..., runtime='fast')), "
            "onnxruntime (its ONNX export; skipped with a note when onnxruntime is missing)"
        ),
    )
    rounds: int = Field(
        3, ge=1, le=50, description="interleaved timing rounds (each runtime timed once per round)"
    )
    max_latency_ratio: float | None = Field(
        None,
        gt=0,
        description=(
            "latency gate: the run fails (after writing the file and the reports) when the fast "
            "module's batch-1 latency exceeds this × the baseline's"
        ),
    )

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, v: list[int]) -> list[int]:
        if any(not 1 <= b <= 4096 for b in v):
            raise ValueError("each batch size must lie between 1 and 4096")
        return v

    @model_validator(mode="after")
    def _gate_needs_fast(self) -> AuditSpec:
        if self.max_latency_ratio is not None and not (self.latency and "fast" in self.runtimes):
            raise ValueError(
                "max_latency_ratio gates the fast module's latency: it needs latency: true and "
                "'fast' in runtimes"
            )
        return self


class Recipe(Strict):
    """A whole run: the top level of a recipe file."""

    name: str | None = Field(
        None, description="run name (a plain file name); default: the file's stem"
    )
    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="seeds the baseline and every stage (each stage: its own seed)",
    )
    device: str = Field("cpu", description="cpu | cuda | cuda:N | auto")
    threads: int | None = Field(
        None,
        ge=1,
        le=MAX_THREADS,
        description="torch CPU threads for training (default: torch's choice)",
    )
    model: ModelSpec
    data: DataSpec
    task: TaskSpec = Field(
        default_factory=TaskSpec,
        description="what the model's output means: classify, distill or your callable "
        "(see TaskSpec); `task: distill` is short for `task: {kind: distill}`",
    )
    train: TrainSpec = Field(default_factory=TrainSpec)
    stages: list[Any] = Field(
        default_factory=list,
        description="ordered stages, each {name: {params}} (see Stages); validated into their "
        "configs",
    )
    output: str | None = Field(
        None, description="output directory (~ is your home); default runs/NAME"
    )
    audit: AuditSpec = Field(default_factory=AuditSpec)
    target: Target | None = Field(
        None,
        description="one joint budget (bytes, ratio or max_drop) that decides the prune, "
        "decompose and quantize stages' per-layer settings together (jointcomp.plan); the "
        "stages keep their techniques and fine-tuning",
    )

    @field_validator("name")
    @classmethod
    def _name_form(cls, v: str | None) -> str | None:
        if v is not None and not _is_plain_name(v):
            raise ValueError(
                "a run name is a plain file name (no '/', '\\', '..' or control characters): "
                "it names the folder runs/NAME"
            )
        return v

    @field_validator("task", mode="before")
    @classmethod
    def _task_short(cls, v: object) -> object:
        return {"kind": v} if isinstance(v, str) else v

    @field_validator("output")
    @classmethod
    def _output_form(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or "\0" in v):
            raise ValueError("expected a directory path")
        return v

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
        if not isinstance(name, str) or name not in STAGES:
            errors.append(
                f"stages.{i}.{short(name, quote=False)}: unknown stage; "
                f"allowed: {', '.join(STAGES)}"
            )
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


_EPOCH_KEYS = ("epochs", "max_batches", "step_size", "iterative_steps", "iters", "steps")


def _number_errors(data: Any, path: str = "") -> list[str]:
    """Numbers torch and numpy cannot take, anywhere in a validated recipe's plain data (the
    model's kwargs aside: the builder checks those): integers beyond 2**53, counts of epochs or
    steps beyond MAX_EPOCHS, floats that are not finite."""
    errors: list[str] = []
    stack: list[tuple[Any, str]] = [(data, path)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                sub = f"{where}.{key}" if where else str(key)
                if sub != "model.kwargs":
                    stack.append((item, sub))
        elif isinstance(value, (list, tuple)):
            stack.extend((item, f"{where}.{i}") for i, item in enumerate(value))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int):
            key = where.rpartition(".")[2]
            bound = MAX_EPOCHS if key in _EPOCH_KEYS else MAX_INT
            if abs(value) > bound:
                errors.append(f"{where}: at most {bound:,} (got {short(value)})")
        elif isinstance(value, float) and not math.isfinite(value):
            errors.append(f"{where}: must be a finite number (got {value})")
    return sorted(errors)


# builders whose model comes with its weights (a local model folder): no baseline to train
WEIGHTED_BUILDERS = ("hf:", "sentence-transformers:")
UNLABELED_DATASETS = ("text", "wordnet")


def _task_errors(recipe: Recipe) -> list[str]:
    """What the task asks of the model and the data: distillation compresses the model as
    given (its weights, never a baseline trained here); classification needs labels."""
    errors = []
    kind = recipe.task.kind
    weighted = recipe.model.builder.startswith(WEIGHTED_BUILDERS)
    if kind == "distill" and recipe.model.weights == "train" and not weighted:
        errors.append(
            "model.weights: task: distill compresses the model as given, so it needs its "
            "weights: a .safetensors file (or an hf:DIR / sentence-transformers:DIR model "
            "folder), not 'train'"
        )
    dataset = recipe.data.dataset.strip().lower()
    if kind == "classify" and dataset in UNLABELED_DATASETS:
        errors.append(
            f"task: classify needs labels and data.dataset {dataset} is unlabeled text; use "
            "`task: distill` (the compressed model's outputs against the original's)"
        )
    return errors


PLANNED_STAGES = ("prune", "decompose", "quantize")


def _target_errors(recipe: Recipe) -> list[str]:
    """A target allocates the prune, decompose and quantize stages' settings: one must run."""
    if recipe.target is None or any(c.stage in PLANNED_STAGES for c in recipe.stages):
        return []
    return [
        "target: allocates the settings of prune, decompose and quantize stages, and the "
        "recipe has none of them"
    ]


def _file_name_errors(configs: list[StageConfig]) -> list[str]:
    """A stage's ``filename`` names a file inside the run folder: one plain name."""
    errors = []
    for i, config in enumerate(configs):
        name = getattr(config, "filename", None)
        if isinstance(name, str) and not _is_plain_name(name):
            errors.append(
                f"stages.{i}.{config.stage}.filename: a plain file name inside the run folder "
                f"(no '/', '\\', '..' or absolute path; got {short(name)})"
            )
    return errors


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
    raw_stages = raw.get("stages") or []
    if not isinstance(raw_stages, list):
        raw_stages = []  # reported by the schema
    specs, stage_errors = _validate_stages(raw_stages)
    errors.extend(stage_errors)
    errors.extend(_file_name_errors(specs))
    if recipe is not None and not errors:
        recipe.stages = specs
        errors.extend(_number_errors(recipe_to_data(recipe)))
        errors.extend(_task_errors(recipe))
        errors.extend(_target_errors(recipe))
    if errors or recipe is None:
        raise RecipeError(f"{source}: invalid recipe\n  " + "\n  ".join(errors))
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
        raise RecipeError(
            f"--set {short(text)}: expected KEY.PATH=VALUE, e.g. stages.0.prune.ratio=0.3"
        )
    key, _, value_text = text.partition("=")
    try:
        parts = split_key_path(key.strip())
    except ValueError as exc:
        raise RecipeError(f"--set {short(text)}: bad key path: {short(str(exc))}") from None
    try:
        value = safe_yaml(value_text) if value_text.strip() else None
    except yaml.YAMLError as exc:
        raise RecipeError(
            f"--set {short(text)}: value is not valid YAML ({short(str(exc), 300, quote=False)})"
        ) from None
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


TARGET_GOALS = ("bytes", "ratio", "max_drop")  # a target gives exactly one of them


def _replace_goal(raw: dict[str, Any], keys: list[str | int], value: Any) -> None:
    """``--set target.bytes=N`` on a recipe whose target gives ``max_drop`` (or any other goal
    for another) asks for that goal instead: the recipe's own goal is dropped, so a sweep can
    vary the size of a max_drop recipe without also setting ``target.max_drop=null``."""
    if len(keys) != 2 or keys[0] != "target" or keys[1] not in TARGET_GOALS or value is None:
        return
    target = raw.get("target")
    if isinstance(target, dict):
        for other in TARGET_GOALS:
            if other != keys[1]:
                target.pop(other, None)


def load_recipe_data(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Read the YAML at ``path`` and apply ``--set`` overrides; no validation yet."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"{p}: recipe file not found")
    if p.stat().st_size > MAX_RECIPE_BYTES:
        raise RecipeError(f"{p}: {p.stat().st_size:,} bytes; a recipe is at most 1 MiB")
    try:
        raw = safe_yaml(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{p}: not valid YAML: {short(str(exc), 500, quote=False)}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{p}: a recipe is a mapping of keys (model, data, stages, ...)")
    raw = copy.deepcopy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(raw, keys, value)
        _replace_goal(raw, keys, value)
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
