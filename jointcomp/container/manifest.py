"""The manifest: how a compressed module is described as plain JSON plus tensors, and rebuilt.

A model is described relative to what its builder makes: the builder reference, then the
*structural edits* — registered module types (with JSON constructor arguments) that replace what
the builder put at a path, and scalar attributes that differ — then every tensor of the state
dict, with tied tensors (one Parameter used at several names) stored once. A module object that
appears at several paths (a T-Basis layer's shared basis) is described once, at its first path,
and rebuilt as one object at all of them (``shared``). An edit leaves out the arguments a
reader can infer (``implied_arguments``: the replaced layer's shape, the previous edit of the
same type), a quantizer the shape of the tensor it holds, and the manifest the sharing of
children a type declares shared with its previous layer (``implied_shared``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import FormatError, ModelError
from ..nn.modules import set_module
from ..registry import MODULE_TYPES, ModuleType, module_type_of
from . import implied_shared

_SCALARS = (int, float, bool, str, type(None))
_SKIP_ATTRS = {"training"}
PARAMETRIZE = "@parametrize"  # edit type: quantized (parametrized) tensors of the module at path
_MISSING = object()


@dataclass
class Manifest:
    """Everything needed to rebuild a module, except the tensors' values."""

    builder: str
    kwargs: dict[str, Any]
    edits: list[list[Any]] = field(default_factory=list)  # [path, type name, config]
    attrs: list[list[Any]] = field(default_factory=list)  # [path, {attr: value}]
    ties: dict[str, str] = field(default_factory=dict)  # alias name -> stored name
    shared: dict[str, str] = field(default_factory=dict)  # alias module path -> first path
    # as read from a header: ``shared`` holds only what implied_shared does not infer, and these
    # declared children are their layer's own; None once ``shared`` is complete
    own: list[str] | None = None

    def complete_shared(self) -> None:
        """Fill ``shared`` with what a header leaves for the reader to infer."""
        if self.own is not None:
            self.shared = implied_shared.expand(self.edits, self.shared, self.own)
            self.own = None

    def to_json(self) -> dict[str, Any]:
        self.complete_shared()
        out: dict[str, Any] = {"builder": self.builder, "kwargs": self.kwargs}
        if self.edits:
            out["edits"] = self.edits
        if self.attrs:
            out["attrs"] = self.attrs
        ties = {a: t for a, t in self.ties.items() if _implied_tie(a, self.shared) != t}
        if ties:
            out["ties"] = ties  # those inside a shared module follow from ``shared``
        shared, own = implied_shared.compact(self.edits, self.shared)
        if shared:
            out["shared"] = shared
        if own:
            out["own"] = own
        return out


def _implied_tie(name: str, shared: dict[str, str]) -> str | None:
    """The stored name a tensor inside a shared module's alias path is tied to, if any."""
    for alias, first in shared.items():
        if name.startswith(f"{alias}."):
            return first + name[len(alias) :]
    return None


def _is_scalar_value(v: Any) -> bool:
    if isinstance(v, _SCALARS):
        return not (isinstance(v, float) and v != v)  # NaN never compares equal
    if isinstance(v, (tuple, list)):
        return all(isinstance(x, _SCALARS) for x in v)
    return False


def _json_scalar(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _get(root: nn.Module, path: str) -> nn.Module | None:
    if not path:
        return root
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def _set(root: nn.Module, path: str, module: nn.Module) -> nn.Module:
    """Put ``module`` at ``path`` (the root itself when path is empty); returns the new root."""
    if not path:
        return module
    if _get(root, path.rpartition(".")[0]) is None:  # a file's path may name anything
        raise ModelError(f"cannot place a module at {path!r}: its parent does not exist")
    set_module(root, path, module)
    return root


def _public_attrs(module: nn.Module) -> dict[str, Any]:
    return {
        k: v
        for k, v in vars(module).items()
        if not k.startswith("_") and k not in _SKIP_ATTRS and _is_scalar_value(v)
    }


def _base_class(module: nn.Module) -> type:
    """The class before torch's parametrize subclassed it."""
    cls = type(module)
    return cls.__bases__[0] if parametrize.is_parametrized(module) else cls


def _own_signature(entry: ModuleType) -> set[str]:
    """Constructor arguments of torch's and jointcomp's registered types (whose configs list
    every argument they take); empty for other types, which imply nothing."""
    if not entry.default_build or not entry.cls.__module__.startswith(("torch.nn", "jointcomp.")):
        return set()
    return set(inspect.signature(entry.cls).parameters)


def implied_arguments(
    entry: ModuleType, replaced: nn.Module | None, previous: dict[str, Any] | None
) -> dict[str, Any]:
    """The constructor arguments an edit that puts an ``entry`` module where ``replaced`` was
    may leave out: the replaced module's arguments that the new type also takes (a factorized
    conv keeps the conv's channels, kernel, stride and padding), over those of the previous edit
    of the same type (the layers of one network share most settings) as the type's
    ``jc_follows(previous config)`` carries them on (a T-Basis layer's table rows start after
    the previous layer's)."""
    implied = dict(previous or {})
    rule = getattr(entry.cls, "jc_follows", None)
    if previous and rule is not None:
        implied.update(rule(previous))
    ref_entry = module_type_of(replaced) if replaced is not None else None
    accepted = _own_signature(entry)
    if ref_entry is not None and accepted:
        implied.update({k: v for k, v in ref_entry.config(replaced).items() if k in accepted})
    return implied


def _stored_arguments(
    entry: ModuleType, config: dict[str, Any], implied: dict[str, Any]
) -> dict[str, Any]:
    """The arguments a new-type edit must list: those differing from ``implied`` or, where
    nothing is implied, from the constructor's defaults — or every one, where the rebuilt
    module would not come out the same."""
    non_default = entry.without_defaults(config)
    stored = {
        k: v for k, v in config.items() if (implied[k] != v if k in implied else k in non_default)
    }
    if entry.config(entry.build({**implied, **stored})) != config:
        stored = dict(config)  # a constructor whose defaults do not round-trip
    return stored


def _shape_implied(entry: ModuleType | None) -> bool:
    """A quantizer (parametrization) type whose ``shape`` argument a file leaves out: it is the
    shape of the tensor it parametrizes."""
    return entry is not None and "shape" in _own_signature(entry)


def parametrization_spec(module: nn.Module, path: str) -> dict[str, list[list[Any]]]:
    """``{tensor: [[type, config], ...]}`` for the module's parametrized tensors."""
    if not parametrize.is_parametrized(module):
        return {}
    spec: dict[str, list[list[Any]]] = {}
    for tensor_name, plist in module.parametrizations.items():
        chain = []
        for p in plist:
            entry = module_type_of(p)
            if entry is None or not entry.parametrization:
                raise ModelError(
                    f"{path}.{tensor_name}: parametrization {type(p).__qualname__} is not a "
                    "registered parametrization type"
                )
            chain.append([entry.name, entry.config(p)])
        spec[tensor_name] = chain
    return spec


def apply_parametrizations(module: nn.Module, spec: dict[str, Any], path: str) -> dict[str, Any]:
    """Register the parametrizations of ``spec`` on ``module`` (replacing any it has); a chain's
    first quantizer without a ``shape`` takes the shape of the tensor it parametrizes. Returns
    ``spec`` as a file stores it (such shapes left out)."""
    for tensor_name in list(getattr(module, "parametrizations", {}) or {}):
        parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=False)
    stored: dict[str, Any] = {}
    for tensor_name, chain in spec.items():
        if tensor_name not in module._parameters and tensor_name not in module._buffers:
            raise FormatError(f"{path}: has no tensor {tensor_name!r} to parametrize")
        if not isinstance(chain, list) or not all(
            isinstance(link, list) and len(link) == 2 for link in chain
        ):
            raise FormatError(f"{path}.{tensor_name}: malformed parametrization chain")
        tensor = getattr(module, tensor_name)
        if tensor is None:
            raise FormatError(f"{path}: tensor {tensor_name!r} is None and cannot be parametrized")
        shape = list(tensor.shape)
        stored[tensor_name] = []
        for i, (type_name, config) in enumerate(chain):
            entry = MODULE_TYPES.get(type_name)
            if entry is None or not entry.parametrization or not isinstance(config, dict):
                raise FormatError(
                    f"{path}.{tensor_name}: {type_name!r} is not a parametrization type"
                )
            short = config
            if i == 0 and _shape_implied(entry):
                if "shape" not in config:
                    config = {**config, "shape": shape}
                if config.get("shape") == shape:
                    short = {k: v for k, v in config.items() if k != "shape"}
            stored[tensor_name].append([type_name, short])
            try:
                p = entry.build(config)
                parametrize.register_parametrization(module, tensor_name, p, unsafe=True)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise FormatError(
                    f"{path}.{tensor_name}: cannot build {type_name} from {config} ({exc})"
                ) from None
    return stored


def describe(
    model: nn.Module, builder: str, kwargs: dict[str, Any], reference: nn.Module
) -> Manifest:
    """Describe ``model`` as edits on ``reference`` (a fresh build of ``builder``; it is modified
    in place to mirror the edits). Raises ModelError for a module type that is not registered."""
    manifest = Manifest(builder=builder, kwargs=dict(kwargs))
    ref_root = reference
    first_path: dict[int, str] = {}  # id(module) -> the path it was described at
    previous: dict[str, dict[str, Any]] = {}  # type name -> arguments of its last edit

    def walk(path: str, module: nn.Module) -> None:
        nonlocal ref_root
        if id(module) in first_path:
            # the same object again: rebuilt as one object, so training and quantizing it
            # once reaches every path (its tensors become ties below)
            manifest.shared[path] = first_path[id(module)]
            ref_root = _set(ref_root, path, _get(ref_root, first_path[id(module)]))
            return
        first_path[id(module)] = path
        ref = _get(ref_root, path)
        entry = module_type_of(module)
        if entry is not None:
            config = entry.config(module)
            ref_entry = module_type_of(ref) if ref is not None else None
            ref_config = ref_entry.config(ref) if ref_entry is entry else None
            if ref_config != config:
                # same type as the builder's: store only the arguments that changed; another
                # type: those that differ from the constructor's defaults
                if ref_config is not None:
                    stored = {k: v for k, v in config.items() if ref_config.get(k, _MISSING) != v}
                else:
                    implied = implied_arguments(entry, ref, previous.get(entry.name))
                    stored = _stored_arguments(entry, config, implied)
                manifest.edits.append([path, entry.name, stored])
                previous[entry.name] = config
                ref = entry.build(config)
                ref_root = _set(ref_root, path, ref)
        elif ref is None or _base_class(ref) is not _base_class(module):
            raise ModelError(
                f"module {path or '(root)'} of type {type(module).__qualname__} is not a "
                "registered module type and is not what the model's builder creates there; "
                "register it with jointcomp.registry.register_module to store it"
            )
        if entry is None:
            mine, theirs = _public_attrs(module), _public_attrs(ref)
            diff = {k: _json_scalar(v) for k, v in mine.items() if theirs.get(k, object()) != v}
            if diff:
                manifest.attrs.append([path, diff])
                for k in diff:
                    setattr(ref, k, mine[k])
        spec = parametrization_spec(module, path)
        if spec != parametrization_spec(ref, path):
            manifest.edits.append([path, PARAMETRIZE, apply_parametrizations(ref, spec, path)])
        # _modules, not named_children(): the latter hides a child object met twice
        ref_children = _children(ref)
        my_children = _children(module)
        missing = set(ref_children) - set(my_children)
        if missing:
            raise ModelError(
                f"module {path or '(root)'} lost children {sorted(missing)} relative to its "
                "builder; replace them with nn.Identity instead of deleting them"
            )
        for name, child in my_children.items():
            walk(f"{path}.{name}" if path else name, child)

    walk("", model)
    mine = model.state_dict(keep_vars=True)
    theirs = ref_root.state_dict(keep_vars=True)
    if set(mine) != set(theirs):
        only_mine = sorted(set(mine) - set(theirs))[:5]
        only_ref = sorted(set(theirs) - set(mine))[:5]
        raise ModelError(
            "the model's tensors do not match its description "
            f"(only in the model: {only_mine}; only in the rebuilt structure: {only_ref})"
        )
    seen: dict[int, str] = {}
    for name, tensor in mine.items():
        key = id(tensor)
        if key in seen:
            manifest.ties[name] = seen[key]
        else:
            seen[key] = name
    return manifest


def _children(module: nn.Module) -> dict[str, nn.Module]:
    return {n: c for n, c in module._modules.items() if c is not None and n != "parametrizations"}


def tensors_to_store(model: nn.Module, manifest: Manifest) -> dict[str, torch.Tensor]:
    """The state dict minus tied aliases, detached, in state-dict order."""
    return {
        name: t.detach()
        for name, t in model.state_dict(keep_vars=True).items()
        if name not in manifest.ties
    }


def manifest_from_json(data: Any) -> Manifest:
    """Parse and type-check the manifest part of a header. Raises FormatError."""
    if not isinstance(data, dict):
        raise FormatError("header has no model description")
    builder = data.get("builder")
    kwargs = data.get("kwargs", {})
    if not isinstance(builder, str) or not isinstance(kwargs, dict):
        raise FormatError("header: builder must be a string and kwargs an object")
    edits = data.get("edits", [])
    attrs = data.get("attrs", [])
    ties = data.get("ties", {})
    shared = data.get("shared", {})
    if not isinstance(edits, list) or not all(
        isinstance(e, list)
        and len(e) == 3
        and isinstance(e[0], str)
        and isinstance(e[1], str)
        and isinstance(e[2], dict)
        for e in edits
    ):
        raise FormatError("header: malformed structural edits")
    if not isinstance(attrs, list) or not all(
        isinstance(a, list) and len(a) == 2 and isinstance(a[0], str) and isinstance(a[1], dict)
        for a in attrs
    ):
        raise FormatError("header: malformed attribute edits")
    if not isinstance(ties, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in ties.items()
    ):
        raise FormatError("header: malformed tensor ties")
    if not isinstance(shared, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in shared.items()
    ):
        raise FormatError("header: malformed shared modules")
    own = data.get("own", [])
    if not isinstance(own, list) or not all(isinstance(p, str) and p for p in own):
        raise FormatError("header: malformed list of own modules")
    return Manifest(builder, kwargs, edits, attrs, ties, shared, own=own)


def rebuild(base: nn.Module, manifest: Manifest, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """Apply the manifest's edits to ``base`` (a fresh build of its builder) and load ``tensors``
    (already decoded, aliases excluded). A stored tensor the table omits is all zeros in the
    shape and dtype the rebuilt module gives it (the writer omits only such tensors: see
    ``omittable``). Raises FormatError on any inconsistency."""
    root, expected = rebuild_structure(base, manifest)
    return load_tensors(root, expected, manifest, tensors)


def stored_tensors(expected: dict[str, torch.Tensor], manifest: Manifest) -> dict[str, Any]:
    """The rebuilt state dict ``expected`` without the aliases (``manifest.ties``): the tensors a
    file's table holds, in its order."""
    return {n: t for n, t in expected.items() if n not in manifest.ties}


def load_tensors(
    root: nn.Module,
    expected: dict[str, torch.Tensor],
    manifest: Manifest,
    tensors: dict[str, torch.Tensor],
) -> nn.Module:
    """Load decoded ``tensors`` into ``root``, the structure ``rebuild_structure`` made (with
    ``expected``, its state dict); see ``rebuild``."""
    stored_names = list(stored_tensors(expected, manifest))
    extra = sorted(set(tensors) - set(stored_names))[:5]
    if extra or any(t not in expected for t in manifest.ties):
        raise FormatError(
            f"tensor table does not match the model structure (unexpected: {extra}; "
            f"ties: {sorted(manifest.ties)[:5]})"
        )
    for name in stored_names:
        value = tensors.get(name)
        if value is None:
            old = expected[name]
            value = torch.zeros(old.shape, dtype=old.dtype)
        _assign(root, name, value, expected[name])
    for alias, target in manifest.ties.items():
        if target not in expected or target in manifest.ties:
            raise FormatError(f"tie {alias!r} -> {target!r}: target is not a stored tensor")
        owner_path, _, attr = target.rpartition(".")
        canonical = _get(root, owner_path)
        value = (
            canonical._parameters.get(attr)
            if attr in canonical._parameters
            else canonical._buffers.get(attr)
        )
        _assign(root, alias, value, expected[alias], share=True)
    return root


def omittable(tensor: torch.Tensor, built: torch.Tensor | None) -> bool:
    """Whether the writer may leave ``tensor`` out of the table: every bit zero (so -0.0 is
    kept) and the same shape and dtype as ``built``, the rebuilt module's tensor there."""
    if built is None or built.shape != tensor.shape or built.dtype != tensor.dtype:
        return False
    if tensor.numel() == 0:
        return True
    bits = tensor.detach().contiguous().reshape(-1)
    if bits.is_floating_point() or bits.is_complex():
        bits = bits.view(torch.uint8)
    return not bool(bits.ne(0).any())


def rebuild_structure(
    base: nn.Module, manifest: Manifest
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The module of the manifest's edits, attributes and shared modules applied to ``base``,
    with placeholder tensors, and its state dict (aliases resolved into ``manifest.ties``)."""
    manifest.complete_shared()
    root = base
    previous: dict[str, dict[str, Any]] = {}  # type name -> arguments of its last edit
    for path, type_name, config in manifest.edits:
        if type_name == PARAMETRIZE:
            target = _get(root, path)
            if target is None:
                raise FormatError(f"edit at {path!r}: no such module to parametrize")
            apply_parametrizations(target, config, path)
            continue
        entry = MODULE_TYPES.get(type_name)
        if entry is None or entry.parametrization:
            raise FormatError(
                f"edit at {path!r} names module type {type_name!r}, which is not registered"
            )
        current = _get(root, path)
        if current is not None and module_type_of(current) is entry:
            config = {**entry.config(current), **config}  # the edit lists changed arguments only
        else:
            implied = implied_arguments(entry, current, previous.get(type_name))
            config = {**implied, **config}
        try:
            module = entry.build(config)
        except Exception as exc:  # a constructor rejecting bad arguments from the file
            raise FormatError(
                f"edit at {path!r}: cannot build {type_name} from {config} "
                f"({type(exc).__name__}: {exc})"
            ) from None
        if path and _get(root, path.rpartition(".")[0]) is None:
            raise FormatError(f"edit at {path!r}: parent module does not exist")
        root = _set(root, path, module)
        previous[type_name] = entry.config(module)
    for path, values in manifest.attrs:
        module = _get(root, path)
        if module is None:
            raise FormatError(f"attribute edit at {path!r}: no such module")
        for key, value in values.items():
            if (
                key.startswith("_")
                or key not in _public_attrs(module)
                or not _is_scalar_value(value)
            ):
                raise FormatError(
                    f"attribute edit at {path!r}: {key!r} is not an editable attribute"
                )
            old = getattr(module, key)
            setattr(module, key, tuple(value) if isinstance(old, tuple) else value)
    for alias, first in manifest.shared.items():
        module = _get(root, first)
        if module is None or alias == first or alias.startswith(f"{first}."):
            raise FormatError(f"shared module {alias!r} -> {first!r}: no such module to share")
        if _get(root, alias.rpartition(".")[0]) is None:
            raise FormatError(f"shared module {alias!r}: parent module does not exist")
        root = _set(root, alias, module)
    expected = root.state_dict(keep_vars=True)
    for name in expected:
        implied = _implied_tie(name, manifest.shared)
        if implied is not None and name not in manifest.ties:
            manifest.ties[name] = implied
    return root, expected


def _assign(
    root: nn.Module, name: str, value: torch.Tensor, old: torch.Tensor, share: bool = False
) -> None:
    owner_path, _, attr = name.rpartition(".")
    owner = _get(root, owner_path)
    if owner is None:
        raise FormatError(f"tensor {name!r}: no module at {owner_path!r}")
    if old.dtype != value.dtype:
        raise FormatError(
            f"tensor {name!r}: stored dtype {value.dtype} differs from the module's {old.dtype}"
        )
    if module_type_of(owner) is not None and old.shape != value.shape:
        # a registered module's constructor fixes its tensors' shapes; only tensors of plain
        # containers (e.g. a pruned ViT's position embedding) may differ from the build
        raise FormatError(
            f"tensor {name!r}: shape {list(value.shape)} does not fit its module "
            f"({list(old.shape)})"
        )
    if attr in owner._parameters:
        if share:
            owner._parameters[attr] = value  # the same Parameter object: training keeps them tied
        else:
            requires_grad = old.requires_grad if old.is_floating_point() else False
            owner._parameters[attr] = nn.Parameter(value, requires_grad=requires_grad)
    elif attr in owner._buffers:
        owner._buffers[attr] = value
    else:
        raise FormatError(f"tensor {name!r} is neither a parameter nor a buffer of its module")
