"""Turn a builder string into an ``nn.Module``: ``zoo:NAME``, ``torchvision:NAME``,
``timm:NAME``, a Hugging Face folder (``hf:DIR``, ``sentence-transformers:DIR``) or its portable
form (``transformers:ARCH``, ``sentence-embedder:ARCH`` with the config as kwargs) or, only when
trusted, ``package.module:callable``.

A .jcz file names its builder; loading it must not import arbitrary code, so only the zoo,
torchvision, timm and portable transformers forms are on the allow-list. A file never names a
folder: :func:`file_builder` turns ``hf:DIR`` into what rebuilds it without the folder. Anything
else runs a user's code and needs trust.

Building never touches the network: torchvision builders are called with every weights argument
(``weights``, ``weights_backbone``, ...) forced to None, and a file or recipe asking for
pretrained weights is refused. :func:`check_builder` checks a recipe's model before a run
touches its output: built on the meta device (no memory, no initialisation) and refused when it
would hold more than :data:`MAX_ELEMENTS` elements.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..config import short
from ..errors import JointcompError, ModelError
from . import hf, sentence, timm_models
from .lenet import LeNet5, LeNet300
from .resnet_cifar import resnet20, resnet32, resnet56
from .small_cnn import SmallCNN
from .vit import ViT

ZOO: dict[str, Callable[..., nn.Module]] = {
    "lenet300": LeNet300,
    "lenet5": LeNet5,
    "small_cnn": SmallCNN,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "vit": ViT,
}

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = rf"{_IDENT}(?:\.{_IDENT})*"
_ZOO_RE = re.compile(rf"zoo:({_IDENT})")
_TV_RE = re.compile(rf"torchvision:({_IDENT})")
_CALLABLE_RE = re.compile(rf"({_DOTTED}):({_DOTTED})")
_TIMM_RE = re.compile(rf"timm:({timm_models.NAME_RE.pattern})")
# portable transformers forms: the class named, its config in the kwargs
_CONFIG_RE = re.compile(rf"(transformers|sentence-embedder):({_IDENT})")
_CONFIG_BUILDERS = {
    "transformers": hf.build_from_config,
    "sentence-embedder": sentence.build_from_config,
}
# a local folder: read for the model and its weights; a file names its portable form instead
_FOLDER_RE = re.compile(r"(hf|sentence-transformers):(.+)", re.DOTALL)
_FOLDERS = {"hf": hf, "sentence-transformers": sentence}
_FORMS = (
    "'zoo:NAME', 'torchvision:NAME', 'timm:NAME', 'hf:DIR', 'sentence-transformers:DIR', "
    "'transformers:ARCH' or 'package.module:callable'"
)

# Keyword arguments that the data determine; see data_kwargs().
_DATA_ARGS = ("in_channels", "num_classes", "image_size")

# Parameters and buffers of a model built from an allow-listed builder (1.07e9 elements: 4 GiB
# at fp32; torchvision's largest, vit_h_14 and regnet_y_128gf, hold about 0.64e9).
MAX_ELEMENTS = 1 << 30
# Modules a recipe's model may register (torchvision's largest register a few thousand).
MAX_MODULES = 1 << 15
# Builder keyword arguments: values (counted with repeats, so shared references count each
# time) and nesting depth.
MAX_KWARGS_NODES = 10_000
MAX_KWARGS_DEPTH = 16
# An allow-listed builder that cannot run on the meta device is built for real; its integer
# arguments must then be at most this (torchvision's RegNets compute their widths with tensors).
MAX_UNMEASURED_INT = 1 << 16
# torchvision arguments that would download: any name holding these words (weights,
# weights_backbone, pretrained, pretrained_backbone, ...); and those only about downloading.
_DOWNLOAD_WORDS = ("weights", "pretrained")
_DOWNLOAD_ONLY = ("progress", "check_hash", "model_dir", "file_name")


def list_zoo() -> list[str]:
    """The names usable as ``zoo:NAME``, sorted."""
    return sorted(ZOO)


def _zoo_names() -> str:
    return ", ".join(list_zoo())


def is_allowed_builder(builder: str) -> bool:
    """True for the allow-listed forms (``zoo:NAME``, ``torchvision:NAME``, ``timm:NAME``,
    ``transformers:ARCH``, ``sentence-embedder:ARCH``), which import no user code and read no
    files; False for folders, ``package.module:callable`` and anything malformed."""
    return isinstance(builder, str) and bool(
        _ZOO_RE.fullmatch(builder)
        or _TV_RE.fullmatch(builder)
        or _TIMM_RE.fullmatch(builder)
        or _CONFIG_RE.fullmatch(builder)
    )


def file_builder(builder: str, kwargs: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The builder and keyword arguments a file stores for ``builder``: a Hugging Face folder
    (``hf:DIR``, ``sentence-transformers:DIR``) becomes its portable form, which rebuilds the
    model from its config without the folder; any other builder stays as it is."""
    m = _FOLDER_RE.fullmatch(builder) if isinstance(builder, str) else None
    if m is None:
        return builder, dict(kwargs or {})
    return _FOLDERS[m.group(1)].portable_builder(m.group(2), _check_kwargs(builder, kwargs))


def import_callable(spec: str, error: type[Exception], what: str) -> Callable[..., Any]:
    """Import ``package.module:attr[.attr]`` and return the callable, raising ``error`` (a
    jointcomp error type) with a message naming ``what`` and the problem. No trust check here:
    callers check trust first."""
    m = _CALLABLE_RE.fullmatch(spec)
    if not m:
        raise error(f"malformed {what} {spec!r}: expected 'package.module:callable'")
    module_name, attr_path = m.groups()
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise error(f"{what} {spec!r}: cannot import module {module_name!r}: {e}") from e
    for attr in attr_path.split("."):
        if not hasattr(obj, attr):
            raise error(f"{what} {spec!r}: module {module_name!r} has no attribute {attr_path!r}")
        obj = getattr(obj, attr)
    if not callable(obj):
        raise error(f"{what} {spec!r}: {attr_path!r} is not callable")
    return obj


def _accepted(fn: Callable[..., Any]) -> tuple[list[str], bool] | None:
    """The keyword names ``fn`` accepts and whether it takes ``**kwargs``; None if unknowable."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def _call(label: str, fn: Callable[..., nn.Module], kwargs: dict[str, Any]) -> nn.Module:
    accepted = _accepted(fn)
    if accepted is not None and not accepted[1]:
        unknown = [k for k in kwargs if k not in accepted[0]]
        if unknown:
            raise ModelError(
                f"{label} got unknown argument(s) {', '.join(short(k) for k in unknown)}; "
                f"it accepts: {', '.join(accepted[0]) or '(none)'}"
            )
    try:
        return fn(**kwargs)
    except JointcompError:
        raise
    except Exception as e:
        # Constructors report bad values (and, behind **kwargs, bad names) as TypeError or
        # ValueError; sizes too large for the allocator as RuntimeError or MemoryError.
        raise ModelError(
            f"{label} rejected its arguments {short(kwargs, 200)}: "
            f"{type(e).__name__}: {short(str(e), 300, quote=False)}"
        ) from e


def _check_kwargs(builder: str, kwargs: dict[str, Any] | None) -> dict[str, Any]:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ModelError(f"model kwargs for {short(builder)} must be a mapping of names to values")
    # count every value as a builder would see it (shared references once per use), stopping
    # at the bound: an exponential structure of aliases is refused after MAX_KWARGS_NODES steps
    stack: list[tuple[Any, int]] = [(kwargs, 0)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_KWARGS_NODES or depth > MAX_KWARGS_DEPTH:
            raise ModelError(
                f"model kwargs for {short(builder)} are too large (more than "
                f"{MAX_KWARGS_NODES:,} values or {MAX_KWARGS_DEPTH} levels deep)"
            )
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)
    return dict(kwargs)


def _elements(model: nn.Module) -> int:
    return sum(math.prod(t.shape) for t in (*model.parameters(), *model.buffers()))


def _measure(call: Callable[[], nn.Module]) -> int | None:
    """The parameter and buffer elements of the module ``call`` builds, built on the meta device
    (no memory, no initialisation, the caller's random state untouched); None when the builder
    cannot run there. A ModelError for arguments the builder rejects."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = call()
    except ModelError as exc:
        if isinstance(exc.__cause__, (NotImplementedError, RuntimeError)):
            return None  # e.g. .tolist() of a meta tensor: measured by building for real
        raise
    return _elements(model) if isinstance(model, nn.Module) else None


def _ints(value: Any) -> list[int]:
    if isinstance(value, dict):
        return [i for v in value.values() for i in _ints(v)]
    if isinstance(value, (list, tuple)):
        return [i for v in value for i in _ints(v)]
    return [value] if isinstance(value, int) and not isinstance(value, bool) else []


def _check_size(label: str, kwargs: dict[str, Any], elements: int, bound: int) -> None:
    if elements > bound:
        raise ModelError(
            f"{label} with {short(kwargs, 200)} would hold {elements:,} parameter and buffer "
            f"elements, more than the {bound:,} allowed"
        )


def _bounded_build(
    label: str, call: Callable[[], nn.Module], kwargs: dict[str, Any], max_elements: int | None
) -> nn.Module:
    """Build an allow-listed model, measured on the meta device first."""
    if max_elements is None:
        return call()
    if torch.empty(0).device.type == "meta":  # building on the meta device: the build measures
        model = call()
        _check_size(label, kwargs, _elements(model), max_elements)
        return model
    elements = _measure(call)
    if elements is None:
        big = [i for i in _ints(kwargs) if abs(i) > MAX_UNMEASURED_INT]
        if big:
            raise ModelError(
                f"{label}: cannot measure this model before building it, and its "
                f"arguments hold {short(big[0])} (at most {MAX_UNMEASURED_INT:,} here)"
            )
    else:
        _check_size(label, kwargs, elements, max_elements)
    return call()


def _is_download_argument(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _DOWNLOAD_WORDS)


def torchvision_arguments(
    name: str, fn: Callable[..., nn.Module], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The keyword arguments to call torchvision builder ``fn`` with so that nothing is
    downloaded: a weights argument set to anything but None/False is refused (ModelError),
    None/False ones and download options (``progress``) are dropped, and every weights argument
    of ``fn``'s signature is passed as None — torchvision's own defaults download backbones
    (``weights_backbone=IMAGENET1K_V1`` on detection and segmentation models)."""
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if _is_download_argument(key):
            if value is not None and value is not False:
                raise ModelError(
                    f"torchvision:{name}: {key}={short(value)} asks for pretrained weights, "
                    "which are never fetched here; build with weights=None and start from your "
                    "own trained checkpoint"
                )
            continue
        if key in _DOWNLOAD_ONLY:
            continue
        out[key] = value
    accepted = _accepted(fn)
    for param in accepted[0] if accepted else ():
        if _is_download_argument(param):
            out[param] = False if "pretrained" in param.lower() else None
    return out


def _build_torchvision(name: str, kwargs: dict[str, Any], max_elements: int | None) -> nn.Module:
    try:
        import torchvision.models
    except ImportError as e:
        raise ModelError(
            f"torchvision:{name} needs torchvision: pip install 'jointcomp[vision]'"
        ) from e
    available = torchvision.models.list_models()
    if name not in available:
        raise ModelError(
            f"unknown torchvision model {short(name)}; torchvision.models.list_models() has "
            f"{len(available)} names, e.g. {', '.join(available[:8])}, ..."
        )
    fn = torchvision.models.get_model_builder(name)
    arguments = torchvision_arguments(name, fn, kwargs)
    label = f"torchvision:{name}"
    return _bounded_build(label, lambda: _call(label, fn, arguments), kwargs, max_elements)


def build_model(
    builder: str,
    kwargs: dict[str, Any] | None = None,
    *,
    trust: bool = True,
    max_elements: int | None = None,
) -> nn.Module:
    """Build an untrained model from a builder string and keyword arguments.

    ``zoo:NAME`` uses :data:`ZOO`; ``torchvision:NAME`` calls torchvision's builder with every
    weights argument None (nothing is downloaded; asking for pretrained weights is an error);
    ``package.module:callable`` imports and calls the callable with ``kwargs``, only when
    ``trust`` is True. With ``max_elements``, an allow-listed model is built on the meta device
    first and refused when it would hold more than that many parameter and buffer elements
    (the container bounds what a file may build by its own budget; :func:`check_builder` bounds
    a recipe's model by :data:`MAX_ELEMENTS`).
    Every failure (unknown name, bad or unknown kwargs, malformed string, untrusted builder,
    too large) is a :class:`ModelError` whose message names the problem and what is allowed.
    """
    if not isinstance(builder, str):
        raise ModelError(f"model builder must be a string like {_FORMS}, got {short(builder)}")
    kwargs = _check_kwargs(builder, kwargs)
    scheme, _, name = builder.partition(":")
    if scheme in _CONFIG_BUILDERS and _CONFIG_RE.fullmatch(builder):
        fn = _CONFIG_BUILDERS[scheme]
        return _bounded_build(builder, lambda: fn(name, kwargs), kwargs, max_elements)
    if scheme in _FOLDERS and _FOLDER_RE.fullmatch(builder):
        # the folder's model with its weights: its portable form measured first
        if max_elements is not None:
            build_model(*file_builder(builder, kwargs), max_elements=max_elements)
        return _FOLDERS[scheme].load_folder(name, kwargs)
    if scheme == "timm":
        if not _TIMM_RE.fullmatch(builder):
            raise ModelError(f"malformed model builder {short(builder)}: expected 'timm:NAME'")
        fn, arguments = timm_models.timm_call(name, kwargs)
        return _bounded_build(builder, lambda: _call(builder, fn, arguments), kwargs, max_elements)
    if scheme == "zoo":
        if name not in ZOO:
            raise ModelError(f"unknown zoo model {short(name)}; the zoo has: {_zoo_names()}")
        fn = ZOO[name]
        return _bounded_build(builder, lambda: _call(builder, fn, kwargs), kwargs, max_elements)
    if scheme == "torchvision":
        if not _TV_RE.fullmatch(builder):
            raise ModelError(
                f"malformed model builder {short(builder)}: expected 'torchvision:NAME'"
            )
        return _build_torchvision(name, kwargs, max_elements)
    if not _CALLABLE_RE.fullmatch(builder):
        raise ModelError(
            f"malformed model builder {short(builder)}: expected {_FORMS} "
            f"(zoo names: {_zoo_names()})"
        )
    if not trust:
        raise ModelError(
            f"model builder {short(builder)} is not on the allow-list (zoo:NAME, "
            "torchvision:NAME, timm:NAME, transformers:ARCH) and would import and run your "
            "code; trust it with --trust on the command line or trust=True in Python"
        )
    model = _call(builder, import_callable(builder, ModelError, "model builder"), kwargs)
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"model builder {builder!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def check_builder(builder: str, kwargs: dict[str, Any] | None = None) -> None:
    """Check a recipe's builder without running anything heavy: an allow-listed model is built
    on the meta device (its arguments checked, its size bounded by :data:`MAX_ELEMENTS`
    elements and :data:`MAX_MODULES` modules); a user's callable is imported and its keyword
    names checked, not called. Raises ModelError."""
    if not isinstance(builder, str):
        raise ModelError(f"model builder must be a string like {_FORMS}, got {short(builder)}")
    kwargs = _check_kwargs(builder, kwargs)
    if _FOLDER_RE.fullmatch(builder):  # the folder's config, checked in its portable form
        builder, kwargs = file_builder(builder, kwargs)
    if is_allowed_builder(builder):
        from torch.nn.modules import module as module_mod

        registered = 0

        def count(*_: Any) -> None:
            nonlocal registered
            registered += 1
            if registered > MAX_MODULES:
                raise ModelError(
                    f"{builder} with {short(kwargs, 200)} would register more than "
                    f"{MAX_MODULES:,} modules"
                )

        hook = module_mod.register_module_module_registration_hook(count)
        try:
            with torch.random.fork_rng(devices=[]), torch.device("meta"):
                build_model(builder, kwargs, trust=False, max_elements=MAX_ELEMENTS)
        except ModelError as exc:
            if not isinstance(exc.__cause__, (NotImplementedError, RuntimeError)):
                raise
            # a builder that cannot run on the meta device: its arguments bounded instead
            big = [i for i in _ints(kwargs) if abs(i) > MAX_UNMEASURED_INT]
            if big:
                raise ModelError(
                    f"{builder}: cannot measure this model before building it, and its "
                    f"arguments hold {short(big[0])} (at most {MAX_UNMEASURED_INT:,} here)"
                ) from None
        finally:
            hook.remove()
        return
    if not _CALLABLE_RE.fullmatch(builder):
        raise ModelError(f"malformed model builder {short(builder)}: expected {_FORMS}")
    fn = import_callable(builder, ModelError, "model builder")
    accepted = _accepted(fn)
    if accepted is not None and not accepted[1]:
        unknown = [k for k in kwargs if k not in accepted[0]]
        if unknown:
            raise ModelError(
                f"{builder} got unknown argument(s) {', '.join(short(k) for k in unknown)}; "
                f"it accepts: {', '.join(accepted[0]) or '(none)'}"
            )


def data_kwargs(builder: str, input_shape: Sequence[int], num_classes: int) -> dict[str, Any]:
    """The keyword arguments a builder takes from the data: ``in_channels``, ``num_classes``
    and ``image_size`` for zoo models (those their signature accepts), ``num_classes`` for
    torchvision, nothing for a user's callable. Merge a recipe's own kwargs over these."""
    if _TV_RE.fullmatch(builder or "") or _TIMM_RE.fullmatch(builder or ""):
        return {"num_classes": num_classes}
    m = _ZOO_RE.fullmatch(builder or "")
    if not m or m.group(1) not in ZOO:
        return {}
    hw = tuple(input_shape[1:])
    values: dict[str, Any] = {
        "in_channels": input_shape[0],
        "num_classes": num_classes,
        "image_size": hw[0] if len(hw) == 2 and hw[0] == hw[1] else list(hw),
    }
    accepted = _accepted(ZOO[m.group(1)])
    names = accepted[0] if accepted else []
    return {k: values[k] for k in _DATA_ARGS if k in names}


def builder_reference(builder: str | Callable[..., nn.Module]) -> str:
    """The builder string of ``builder``: a string is checked and returned; a function becomes
    ``zoo:NAME`` or ``torchvision:NAME`` when it is one of those (allow-listed: files naming it
    load without trust), else ``package.module:qualname`` (loading then needs trust)."""
    if isinstance(builder, str):
        if not (
            is_allowed_builder(builder)
            or _FOLDER_RE.fullmatch(builder)
            or _CALLABLE_RE.fullmatch(builder)
        ):
            raise ModelError(f"malformed model builder {builder!r}: expected {_FORMS}")
        return builder
    if not callable(builder):
        raise ModelError(f"model builder must be a string like {_FORMS} or a function")
    for name, fn in ZOO.items():
        if fn is builder:
            return f"zoo:{name}"
    module = getattr(builder, "__module__", "") or ""
    qualname = getattr(builder, "__qualname__", "") or ""
    if module.startswith("torchvision.models"):
        import torchvision.models

        name = getattr(builder, "__name__", "")
        if (
            name in torchvision.models.list_models()
            and torchvision.models.get_model_builder(name) is builder
        ):
            return f"torchvision:{name}"
    reference = f"{module}:{qualname}"
    if "<" in qualname or not _CALLABLE_RE.fullmatch(reference) or module == "__main__":
        raise ModelError(
            f"cannot name builder {builder!r} so that a file can rebuild it: pass a function "
            "defined at the top level of an importable module, or a builder string"
        )
    return reference
