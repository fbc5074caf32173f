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


@dataclass(frozen=True)
class ModuleType:
    """One allow-listed module type: how to describe an instance and how to rebuild it."""

    name: str
    cls: type[nn.Module]
    config: ConfigFn
    build: BuildFn
    parametrization: bool = False  # used through torch.nn.utils.parametrize, not as a submodule
    default_build: bool = True  # rebuilt as cls(**config): a left-out argument is the default

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
) -> ModuleType:
    """Allow ``cls`` in files under ``name``. ``build`` defaults to ``cls(**config)``."""
    if name in MODULE_TYPES and MODULE_TYPES[name].cls is not cls:
        raise ValueError(f"module type name {name!r} is already registered")
    entry = ModuleType(
        name, cls, config, build or (lambda cfg: cls(**cfg)), parametrization, build is None
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


for _cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_module(_cls.__name__, _cls, _conv_config)
for _cls in (nn.ConvTranspose1d, nn.ConvTranspose2d):
    register_module(_cls.__name__, _cls, _conv_t_config)
register_module("Linear", nn.Linear, _linear_config)
for _cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
    register_module(_cls.__name__, _cls, _bn_config)
register_module("LayerNorm", nn.LayerNorm, _ln_config)
register_module("GroupNorm", nn.GroupNorm, _gn_config)
register_module("Embedding", nn.Embedding, _embedding_config)
register_module("PReLU", nn.PReLU, _prelu_config)
register_module("Identity", nn.Identity, lambda m: {}, lambda cfg: nn.Identity())
