"""The allow-list of module types a .jcz file may name.

A module type is described by plain-JSON constructor arguments (its *config*) and rebuilt from
them; loading a file only ever instantiates types registered here. (The stages a recipe may use
are registered in ``jointcomp.stages``.)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

ConfigFn = Callable[[nn.Module], dict[str, Any]]
BuildFn = Callable[[dict[str, Any]], nn.Module]
CheckFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ModuleType:
    """One allow-listed module type: how to describe an instance and how to rebuild it."""

    name: str
    cls: type[nn.Module]
    config: ConfigFn
    build: BuildFn
    parametrization: bool = False  # used through torch.nn.utils.parametrize, not as a submodule
    default_build: bool = True  # rebuilt as cls(**config): a left-out argument is the default
    # validates a config from a file before it is built (ValueError/TypeError naming the
    # problem): values a constructor accepts but that make a module that cannot run
    check: CheckFn | None = None

    def without_defaults(self, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` less the arguments the constructor would take by default anyway, so a
        header lists only what a reader must be told. For torch's and jointcomp's own layers
        an int default also stands for a list of that int (``stride=1`` is ``[1, 1]``)."""
        if not self.default_build:
            return config
        params = inspect.signature(self.cls).parameters
        own = self.cls.__module__.startswith(("torch.nn", "jointcomp."))
        return {k: v for k, v in config.items() if not _is_default(params.get(k), v, own)}


def _is_default(param: inspect.Parameter | None, value: Any, pairs: bool) -> bool:
    if param is None or param.default is inspect.Parameter.empty:
        return False
    default = list(param.default) if isinstance(param.default, tuple) else param.default
    if type(default) is type(value) and default == value:
        return True
    return (
        pairs
        and type(default) is int
        and isinstance(value, list)
        and bool(value)
        and all(type(v) is int and v == default for v in value)
    )


MODULE_TYPES: dict[str, ModuleType] = {}
_BY_CLASS: dict[type, ModuleType] = {}


def register_module(
    name: str,
    cls: type[nn.Module],
    config: ConfigFn,
    build: BuildFn | None = None,
    *,
    parametrization: bool = False,
    check: CheckFn | None = None,
) -> ModuleType:
    """Allow ``cls`` in files under ``name``. ``build`` defaults to ``cls(**config)``;
    ``check(config)`` validates a file's arguments before they are built."""
    if name in MODULE_TYPES and MODULE_TYPES[name].cls is not cls:
        raise ValueError(f"module type name {name!r} is already registered")
    entry = ModuleType(
        name,
        cls,
        config,
        build or (lambda cfg: cls(**cfg)),
        parametrization,
        build is None,
        check,
    )
    MODULE_TYPES[name] = entry
    _BY_CLASS[cls] = entry
    return entry


def registered_module(name: str) -> Callable[[type], type]:
    """Class decorator for jointcomp's own layers: they implement ``jc_config() -> dict`` and
    accept that dict as constructor keyword arguments."""

    def wrap(cls: type) -> type:
        register_module(name, cls, lambda m: m.jc_config())
        return cls

    return wrap


def module_type_of(module: nn.Module) -> ModuleType | None:
    """The registered entry for ``module``'s exact class (for a module with parametrized tensors,
    the class it was before torch's parametrize subclassed it), or None."""
    cls = type(module)
    if getattr(cls, "__module__", "") == "torch.nn.utils.parametrize" and cls.__bases__:
        cls = cls.__bases__[0]
    return _BY_CLASS.get(cls)


def load_module_types() -> None:
    """Import every module that registers types, so files can name them."""
    import importlib

    for name in ("jointcomp.nn", "jointcomp.nn.quantized", "jointcomp.nn.tbasis"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a partial install without the layer package
            if exc.name != name:
                raise


def _pair(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _conv_config(m: nn.Module) -> dict[str, Any]:
    return {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "kernel_size": _pair(m.kernel_size),
        "stride": _pair(m.stride),
        "padding": m.padding if isinstance(m.padding, str) else _pair(m.padding),
        "dilation": _pair(m.dilation),
        "groups": m.groups,
        "bias": m.bias is not None,
        "padding_mode": m.padding_mode,
    }


def _conv_t_config(m: nn.Module) -> dict[str, Any]:
    cfg = _conv_config(m)
    cfg["output_padding"] = _pair(m.output_padding)
    return cfg


def _linear_config(m: nn.Linear) -> dict[str, Any]:
    return {
        "in_features": m.in_features,
        "out_features": m.out_features,
        "bias": m.bias is not None,
    }


def _bn_config(m: nn.modules.batchnorm._BatchNorm) -> dict[str, Any]:
    return {
        "num_features": m.num_features,
        "eps": m.eps,
        "momentum": m.momentum,
        "affine": m.affine,
        "track_running_stats": m.track_running_stats,
    }


def _ln_config(m: nn.LayerNorm) -> dict[str, Any]:
    return {
        "normalized_shape": list(m.normalized_shape),
        "eps": m.eps,
        "elementwise_affine": m.elementwise_affine,
        "bias": m.elementwise_affine and m.bias is not None,
    }


def _gn_config(m: nn.GroupNorm) -> dict[str, Any]:
    return {
        "num_groups": m.num_groups,
        "num_channels": m.num_channels,
        "eps": m.eps,
        "affine": m.affine,
    }


def _embedding_config(m: nn.Embedding) -> dict[str, Any]:
    return {
        "num_embeddings": m.num_embeddings,
        "embedding_dim": m.embedding_dim,
        "padding_idx": m.padding_idx,
    }


def _prelu_config(m: nn.PReLU) -> dict[str, Any]:
    return {"num_parameters": m.num_parameters}


def _int(config: dict[str, Any], key: str, low: int) -> None:
    if key in config:
        v = config[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{key} must be an integer ≥ {low}, got {v!r}")


def _ints(config: dict[str, Any], key: str, low: int, dims: int) -> None:
    """An int ≥ low, or a list of ``dims`` of them."""
    if key not in config:
        return
    v = config[key]
    items = v if isinstance(v, list) else [v]
    if (isinstance(v, list) and len(v) != dims) or not all(
        isinstance(x, int) and not isinstance(x, bool) and x >= low for x in items
    ):
        raise ValueError(f"{key} must be an integer ≥ {low} or {dims} of them, got {v!r}")


def _bool(config: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if key in config and not isinstance(config[key], bool):
            raise ValueError(f"{key} must be true or false, got {config[key]!r}")


def _float(config: dict[str, Any], key: str, low: float, high: float, none: bool = False) -> None:
    if key not in config or (none and config[key] is None):
        return
    v = config[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high:
        raise ValueError(f"{key} must be a number in [{low}, {high}], got {v!r}")


def _conv_check(dims: int, transposed: bool) -> CheckFn:
    def check(config: dict[str, Any]) -> None:
        for key in ("in_channels", "out_channels", "groups"):
            _int(config, key, 1)
        for key in ("kernel_size", "stride", "dilation"):
            _ints(config, key, 1, dims)
        if config.get("padding") not in ("same", "valid") or transposed:
            _ints(config, "padding", 0, dims)
        if transposed:
            _ints(config, "output_padding", 0, dims)
            pad, stride, dil = (
                config.get(k, d) for k, d in (("output_padding", 0), ("stride", 1), ("dilation", 1))
            )

            def each(v: Any) -> list[int]:
                return v if isinstance(v, list) else [v] * dims

            if any(p >= max(s, d) for p, s, d in zip(each(pad), each(stride), each(dil))):
                raise ValueError("output_padding must be smaller than stride or dilation")
        _bool(config, "bias")

    return check


def _bn_check(config: dict[str, Any]) -> None:
    _int(config, "num_features", 1)
    _float(config, "eps", 0.0, 1e30)
    _float(config, "momentum", 0.0, 1.0, none=True)
    _bool(config, "affine", "track_running_stats")


def _ln_check(config: dict[str, Any]) -> None:
    shape = config.get("normalized_shape", [1])
    if not isinstance(shape, list) or not 1 <= len(shape) <= 8:
        raise ValueError(f"normalized_shape must be a list of 1 to 8 sizes, got {shape!r}")
    _ints({"normalized_shape": shape}, "normalized_shape", 1, len(shape))
    _float(config, "eps", 0.0, 1e30)
    _bool(config, "elementwise_affine", "bias")


def _gn_check(config: dict[str, Any]) -> None:
    _int(config, "num_groups", 1)
    _int(config, "num_channels", 1)
    _float(config, "eps", 0.0, 1e30)
    _bool(config, "affine")


def _embedding_check(config: dict[str, Any]) -> None:
    _int(config, "num_embeddings", 1)
    _int(config, "embedding_dim", 1)
    if config.get("padding_idx") is not None:
        _int(config, "padding_idx", -(1 << 62))


for _dims, _cls in enumerate((nn.Conv1d, nn.Conv2d, nn.Conv3d), 1):
    register_module(_cls.__name__, _cls, _conv_config, check=_conv_check(_dims, False))
for _dims, _cls in enumerate((nn.ConvTranspose1d, nn.ConvTranspose2d), 1):
    register_module(_cls.__name__, _cls, _conv_t_config, check=_conv_check(_dims, True))
register_module(
    "Linear",
    nn.Linear,
    _linear_config,
    check=lambda c: (_int(c, "in_features", 1), _int(c, "out_features", 1), _bool(c, "bias")),
)
for _cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
    register_module(_cls.__name__, _cls, _bn_config, check=_bn_check)
register_module("LayerNorm", nn.LayerNorm, _ln_config, check=_ln_check)
register_module("GroupNorm", nn.GroupNorm, _gn_config, check=_gn_check)
register_module("Embedding", nn.Embedding, _embedding_config, check=_embedding_check)
register_module("PReLU", nn.PReLU, _prelu_config, check=lambda c: _int(c, "num_parameters", 1))
register_module("Identity", nn.Identity, lambda m: {}, lambda cfg: nn.Identity())
