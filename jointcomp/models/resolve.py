"""Turn a builder string into an ``nn.Module``: ``zoo:NAME``, ``torchvision:NAME`` or, only when
trusted, ``package.module:callable``.

A .jcz file names its builder; loading it must not import arbitrary code, so only the zoo and
torchvision forms are on the allow-list. Anything else runs a user's code and needs trust.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..errors import ModelError
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
_FORMS = "'zoo:NAME', 'torchvision:NAME' or 'package.module:callable'"

# Keyword arguments that the data determine; see data_kwargs().
_DATA_ARGS = ("in_channels", "num_classes", "image_size")


def list_zoo() -> list[str]:
    """The names usable as ``zoo:NAME``, sorted."""
    return sorted(ZOO)


def _zoo_names() -> str:
    return ", ".join(list_zoo())


def is_allowed_builder(builder: str) -> bool:
    """True for the allow-listed forms (``zoo:NAME``, ``torchvision:NAME``), which import no
    user code; False for ``package.module:callable`` and for anything malformed."""
    return isinstance(builder, str) and bool(
        _ZOO_RE.fullmatch(builder) or _TV_RE.fullmatch(builder)
    )


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
                f"{label} got unknown argument(s) {', '.join(map(repr, unknown))}; "
                f"it accepts: {', '.join(accepted[0]) or '(none)'}"
            )
    try:
        return fn(**kwargs)
    except (TypeError, ValueError) as e:
        # Constructors report bad values (and, behind **kwargs, bad names) this way.
        raise ModelError(f"{label} rejected its arguments {kwargs!r}: {e}") from e


def _check_kwargs(builder: str, kwargs: dict[str, Any] | None) -> dict[str, Any]:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ModelError(f"model kwargs for {builder!r} must be a mapping of names to values")
    return dict(kwargs)


def _build_torchvision(name: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        import torchvision.models
    except ImportError as e:
        raise ModelError(
            f"torchvision:{name} needs torchvision: pip install 'jointcomp[vision]'"
        ) from e
    if kwargs.pop("weights", None) is not None:
        raise ModelError(
            f"torchvision:{name}: pretrained weights cannot be fetched here; build with "
            "weights=None and start from your own trained checkpoint"
        )
    available = torchvision.models.list_models()
    if name not in available:
        raise ModelError(
            f"unknown torchvision model {name!r}; torchvision.models.list_models() has "
            f"{len(available)} names, e.g. {', '.join(available[:8])}, ..."
        )
    return _call(
        f"torchvision:{name}",
        lambda **kw: torchvision.models.get_model(name, weights=None, **kw),
        kwargs,
    )


def build_model(
    builder: str, kwargs: dict[str, Any] | None = None, *, trust: bool = True
) -> nn.Module:
    """Build an untrained model from a builder string and keyword arguments.

    ``zoo:NAME`` uses :data:`ZOO`; ``torchvision:NAME`` calls
    ``torchvision.models.get_model(NAME, weights=None, **kwargs)``; ``package.module:callable``
    imports and calls the callable with ``kwargs``, only when ``trust`` is True. Every failure
    (unknown name, bad or unknown kwargs, malformed string, untrusted builder) is a
    :class:`ModelError` whose message names the problem and what is allowed.
    """
    if not isinstance(builder, str):
        raise ModelError(f"model builder must be a string like {_FORMS}, got {builder!r}")
    kwargs = _check_kwargs(builder, kwargs)
    scheme, _, name = builder.partition(":")
    if scheme == "zoo":
        if name not in ZOO:
            raise ModelError(f"unknown zoo model {name!r}; the zoo has: {_zoo_names()}")
        return _call(builder, ZOO[name], kwargs)
    if scheme == "torchvision":
        if not _TV_RE.fullmatch(builder):
            raise ModelError(f"malformed model builder {builder!r}: expected 'torchvision:NAME'")
        return _build_torchvision(name, kwargs)
    if not _CALLABLE_RE.fullmatch(builder):
        raise ModelError(
            f"malformed model builder {builder!r}: expected {_FORMS} (zoo names: {_zoo_names()})"
        )
    if not trust:
        raise ModelError(
            f"model builder {builder!r} is not on the allow-list (zoo:NAME, torchvision:NAME) "
            "and would import and run your code; trust it with --trust on the command line "
            "or trust=True in Python"
        )
    model = _call(builder, import_callable(builder, ModelError, "model builder"), kwargs)
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"model builder {builder!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def data_kwargs(builder: str, input_shape: Sequence[int], num_classes: int) -> dict[str, Any]:
    """The keyword arguments a builder takes from the data: ``in_channels``, ``num_classes``
    and ``image_size`` for zoo models (those their signature accepts), ``num_classes`` for
    torchvision, nothing for a user's callable. Merge a recipe's own kwargs over these."""
    if _TV_RE.fullmatch(builder or ""):
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
            _ZOO_RE.fullmatch(builder)
            or _TV_RE.fullmatch(builder)
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
