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
import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import FormatError, ModelError
from ..nn.modules import set_module
from ..registry import MODULE_TYPES, ModuleType, module_type_of
from . import implied_shared
from .limits import MAX_ATTRS, MAX_EDITS, MAX_KWARGS_BYTES, MAX_MODULES, MAX_PATH, MAX_PATH_DEPTH

MAX_NAME = 1024  # characters of a state-dict name

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
        order = {a: i for i, a in enumerate(self.shared)}
        ties = {a: t for a, t in self.ties.items() if _implied_tie(a, self.shared, order) != t}
        if ties:
            out["ties"] = ties  # those inside a shared module follow from ``shared``
        shared, own = implied_shared.compact(self.edits, self.shared)
        if shared:
            out["shared"] = shared
        if own:
            out["own"] = own
        return out


def _implied_tie(
    name: str, shared: dict[str, str], order: dict[str, int] | None = None
) -> str | None:
    """The stored name a tensor inside a shared module's alias path is tied to, if any (the
    first alias in ``shared``'s order that holds it; ``order``: alias → position, for speed)."""
    order = order if order is not None else {a: i for i, a in enumerate(shared)}
    best = None
    for i, ch in enumerate(name):
        if ch == "." and name[:i] in order:
            alias = name[:i]
            if best is None or order[alias] < order[best]:
                best = alias
    return None if best is None else shared[best] + name[len(best) :]


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
            entry = MODULE_TYPES.get(type_name) if isinstance(type_name, str) else None
            if entry is None or not entry.parametrization or not isinstance(config, dict):
                raise FormatError(
                    f"{path}.{tensor_name}: {_short(type_name)} is not a parametrization type"
                )
            short = config
            if i == 0 and _shape_implied(entry):
                if "shape" not in config:
                    config = {**config, "shape": shape}
                if config.get("shape") == shape:
                    short = {k: v for k, v in config.items() if k != "shape"}
            stored[tensor_name].append([type_name, short])
            _check_quantizer(type_name, config, shape, f"{path}.{tensor_name}")
            try:
                p = entry.build(config)
                parametrize.register_parametrization(module, tensor_name, p, unsafe=True)
            except FormatError:
                raise
            except (TypeError, ValueError, RuntimeError) as exc:
                raise FormatError(
                    f"{path}.{tensor_name}: cannot build {type_name} from {_short(config)} ({exc})"
                ) from None
    return stored


_QUANTIZER_ARGS = {
    "IntQuantized": {
        "shape",
        "bits",
        "signed",
        "narrow_range",
        "axis",
        "scale_shape",
        "zero_point_shape",
    },
    "Codebook": {"shape", "size", "zero_index"},
}


def _check_quantizer(type_name: str, config: dict[str, Any], shape: list[int], where: str) -> None:
    """A quantizer's arguments as a writer makes them: known names of the right JSON types,
    the shape of the tensor it stands for (its value replaces that tensor's), and scale and
    zero-point shapes that broadcast to it without changing it."""

    def fail(problem: str) -> FormatError:
        return FormatError(f"{where}: {type_name} {problem}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_shape(v: Any) -> bool:
        return isinstance(v, list) and len(v) <= 8 and all(is_int(d) and d >= 0 for d in v)

    allowed = _QUANTIZER_ARGS.get(type_name)
    if allowed is None:
        return
    unknown = set(config) - allowed
    if unknown:
        raise fail(f"takes no arguments {sorted(unknown)}")
    if config.get("shape") != shape:
        raise fail(f"of shape {_short(config.get('shape'))} stands for a tensor of shape {shape}")
    for key in ("signed", "narrow_range"):
        if key in config and not isinstance(config[key], bool):
            raise fail(f"argument {key} must be true or false")
    for key in ("bits", "size"):
        if key in config and not is_int(config[key]):
            raise fail(f"argument {key} must be an integer")
    for key in ("axis", "zero_index"):
        if config.get(key) is not None and not is_int(config[key]):
            raise fail(f"argument {key} must be an integer or null")
    axis = config.get("axis")
    if axis is not None and not -len(shape) <= axis < len(shape):
        raise fail(f"axis {axis} outside a {len(shape)}-d tensor")
    for key in ("scale_shape", "zero_point_shape"):
        if key not in config:
            continue
        part = config[key]
        if not is_shape(part) or len(part) > len(shape):
            raise fail(f"argument {key} must be a shape of at most {len(shape)} dimensions")
        if any(d not in (1, full) for d, full in zip(reversed(part), reversed(shape))):
            raise fail(f"{key} {part} does not broadcast to the tensor's shape {shape}")
        # a writer's scale varies along ``axis`` only (per channel) or nowhere (per tensor):
        # [12, 1, 1] against [12, 12, 3, 3] broadcasts too, but along the input channels,
        # and would dequantize the same payload into other values
        offset = len(shape) - len(part)
        varying = {offset + k for k, d in enumerate(part) if d != 1}
        if varying - ({axis % len(shape)} if axis is not None else set()):
            where_to = f"axis {axis}" if axis is not None else "no axis (per tensor)"
            raise fail(f"{key} {part} varies along another dimension than {where_to}")


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


def _check_path(path: Any, what: str, *, root: bool = True) -> str:
    """A module path from a file: a string of at most MAX_PATH characters and MAX_PATH_DEPTH
    non-empty dotted components ("" is the root, where ``root`` allows it)."""
    if not isinstance(path, str) or len(path) > MAX_PATH:
        raise FormatError(f"header: {what} path must be a string of at most {MAX_PATH} characters")
    if not path:
        if root:
            return path
        raise FormatError(f"header: {what} path is empty")
    parts = path.split(".")
    if len(parts) > MAX_PATH_DEPTH or not all(parts):
        raise FormatError(f"header: {what} path {path!r} is malformed or too deep")
    return path


def manifest_from_json(data: Any) -> Manifest:
    """Parse and type-check the manifest part of a header, within the reader's limits (see
    ``limits``): sizes, counts, paths, and each path edited at most once per kind. Raises
    FormatError."""
    if not isinstance(data, dict):
        raise FormatError("header has no model description")
    builder = data.get("builder")
    kwargs = data.get("kwargs", {})
    if not isinstance(builder, str) or not isinstance(kwargs, dict) or len(builder) > MAX_PATH:
        raise FormatError("header: builder must be a string and kwargs an object")
    if len(json.dumps(kwargs)) > MAX_KWARGS_BYTES:
        raise FormatError(f"header: the builder's kwargs take more than {MAX_KWARGS_BYTES} bytes")
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
    if len(edits) > MAX_EDITS:
        raise FormatError(f"header: more than {MAX_EDITS} structural edits")
    seen: set[tuple[str, bool]] = set()
    for path, type_name, _ in edits:
        _check_path(path, "edit")
        key = (path, type_name == PARAMETRIZE)
        if key in seen:
            raise FormatError(f"header: module {path or '(root)'} is edited twice")
        seen.add(key)
    if not isinstance(attrs, list) or not all(
        isinstance(a, list) and len(a) == 2 and isinstance(a[0], str) and isinstance(a[1], dict)
        for a in attrs
    ):
        raise FormatError("header: malformed attribute edits")
    if len(attrs) > MAX_ATTRS or len({_check_path(a[0], "attribute edit") for a in attrs}) != len(
        attrs
    ):
        raise FormatError("header: too many attribute edits, or a module's attributes twice")
    if not isinstance(ties, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= MAX_NAME and len(v) <= MAX_NAME
        for k, v in ties.items()
    ):
        raise FormatError("header: malformed tensor ties")
    if not isinstance(shared, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in shared.items()
    ):
        raise FormatError("header: malformed shared modules")
    for alias, first in shared.items():
        _check_path(alias, "shared module", root=False)
        _check_path(first, "shared module")
    own = data.get("own", [])
    if not isinstance(own, list) or not all(isinstance(p, str) and p for p in own):
        raise FormatError("header: malformed list of own modules")
    for path in own:
        _check_path(path, "own module", root=False)
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


def _ancestors(path: str) -> list[str]:
    """Every proper ancestor of a module path, the root ("") included."""
    if not path:
        return []
    return [""] + [path[:i] for i, ch in enumerate(path) if ch == "."]


def _check_slot(root: nn.Module, path: str, what: str) -> None:
    """``path`` may hold a module: its parent exists, and its name is a child module of the
    parent or no attribute of it at all (not a parameter, buffer, method or parametrization)."""
    if not path:
        return
    parent_path, _, name = path.rpartition(".")
    if "parametrizations" in path.split("."):
        raise FormatError(f"{what} at {path!r}: inside a module's parametrizations")
    parent = _get(root, parent_path)
    if parent is None:
        raise FormatError(f"{what} at {path!r}: parent module does not exist")
    if name not in parent._modules and hasattr(parent, name):
        raise FormatError(f"{what} at {path!r}: {name!r} is an attribute of its parent")


def _same_argument(given: Any, built: Any) -> bool:
    """A constructor argument survived the build: equal, or an int standing for a list of it."""
    if type(given) is type(built) and given == built:
        return True
    if isinstance(given, (int, float)) and isinstance(built, (int, float)):
        return not isinstance(given, bool) and not isinstance(built, bool) and given == built
    return (
        type(given) is int
        and isinstance(built, list)
        and bool(built)
        and all(type(v) is int and v == given for v in built)
    )


def _build_edit(entry: ModuleType, config: dict[str, Any], path: str) -> nn.Module:
    """The module of a type edit, its arguments checked: the type's own checks, and every
    argument one the type describes itself by, coming out of the constructor unchanged (a
    float width truncated, a string taken as a bool, a device or dtype are refused)."""
    where = f"edit at {path!r}: {entry.name}"
    if entry.check is not None:
        try:
            entry.check(config)
        except (TypeError, ValueError) as exc:
            raise FormatError(f"{where}: cannot build it: {exc}") from None
    try:
        module = entry.build(config)
        built = entry.config(module)
    except FormatError:
        raise
    except Exception as exc:  # a constructor rejecting bad arguments from the file
        raise FormatError(
            f"{where}: cannot build it from {_short(config)} ({type(exc).__name__}: {exc})"
        ) from None
    for key, value in config.items():
        if key not in built or not _same_argument(value, built[key]):
            raise FormatError(
                f"{where}: argument {key}={_short(value)} is not one it is rebuilt from"
            )
    return module


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_attr(path: str, key: str, old: Any, value: Any) -> None:
    """An attribute edit keeps the attribute's kind: a bool stays a bool, an int an int (a
    positive one positive, a non-negative one non-negative), a float a finite float, a list or
    tuple as long with each element so; strings and None are not edited."""
    where = f"attribute edit at {path!r}: {key}={_short(value)}"

    def same(o: Any, v: Any) -> bool:
        if isinstance(o, bool) or isinstance(v, bool):
            return isinstance(o, bool) and isinstance(v, bool)
        if isinstance(o, int):
            return type(v) is int and (v > 0 if o > 0 else v >= 0 if o >= 0 else True)
        if isinstance(o, float):
            return isinstance(v, (int, float)) and math.isfinite(v)
        return o == v  # strings, None: unchanged

    if isinstance(old, (tuple, list)):
        ok = isinstance(value, list) and len(value) == len(old) and all(map(same, old, value))
    else:
        ok = not isinstance(value, list) and same(old, value)
    if not ok:
        raise FormatError(f"{where}: not a valid value for a {type(old).__name__} attribute")


def _count_paths(root: nn.Module, limit: int) -> None:
    """Refuse a module graph with a cycle, deeper than MAX_PATH_DEPTH, or of more than
    ``limit`` paths (shared modules make a graph whose tree, which state_dict walks, can be
    exponentially larger than it)."""
    stack = [(root, 0)]
    paths = 0
    while stack:
        module, depth = stack.pop()
        paths += 1
        if paths > limit:
            raise FormatError(f"the model's modules are reachable by more than {limit} paths")
        if depth > 2 * MAX_PATH_DEPTH:
            raise FormatError("the model's modules form a cycle or nest too deep")
        stack.extend((c, depth + 1) for c in module._modules.values() if c is not None)


def rebuild_structure(
    base: nn.Module, manifest: Manifest
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The module of the manifest's edits, attributes and shared modules applied to ``base``,
    with placeholder tensors, and its state dict (aliases resolved into ``manifest.ties``).
    Refuses (FormatError) whatever a writer never makes and would load a model other than
    the one described: an edit that a later edit undoes or that lands inside a shared
    alias, a module put in place of a parameter or inside parametrizations, arguments that
    do not survive their constructor, attributes of registered modules, attribute values of
    another kind, a shared module where its layer expects another, cycles."""
    manifest.complete_shared()
    aliases = set(manifest.shared)
    if len(aliases) > MAX_ATTRS:
        raise FormatError(f"header: more than {MAX_ATTRS} shared modules")

    def outside_aliases(path: str, what: str) -> None:
        if path in aliases or any(a in aliases for a in _ancestors(path)):
            raise FormatError(f"{what} at {path!r}: inside a shared module's alias path")

    root = base
    previous: dict[str, dict[str, Any]] = {}  # type name -> arguments of its last edit
    edited_below: set[str] = set()  # proper ancestors of every edited path
    parametrized: set[str] = set()
    for path, type_name, config in manifest.edits:
        outside_aliases(path, "edit")
        if type_name == PARAMETRIZE:
            target = _get(root, path)
            if target is None:
                raise FormatError(f"edit at {path!r}: no such module to parametrize")
            if "parametrizations" in path.split("."):
                raise FormatError(f"edit at {path!r}: inside a module's parametrizations")
            apply_parametrizations(target, config, path)
            parametrized.add(path)
            edited_below.update(_ancestors(path))
            continue
        entry = MODULE_TYPES.get(type_name)
        if entry is None or entry.parametrization:
            raise FormatError(
                f"edit at {path!r} names module type {_short(type_name)}, which is not registered"
            )
        if path in edited_below or path in parametrized:
            raise FormatError(f"edit at {path!r} replaces a module that an earlier edit changed")
        _check_slot(root, path, "edit")
        current = _get(root, path)
        if current is not None and module_type_of(current) is entry:
            config = {**entry.config(current), **config}  # the edit lists changed arguments only
        else:
            implied = implied_arguments(entry, current, previous.get(type_name))
            config = {**implied, **config}
        module = _build_edit(entry, config, path)
        root = _set(root, path, module)
        previous[type_name] = entry.config(module)
        edited_below.update(_ancestors(path))
    for path, values in manifest.attrs:
        outside_aliases(path, "attribute edit")
        module = _get(root, path)
        if module is None:
            raise FormatError(f"attribute edit at {path!r}: no such module")
        if "parametrizations" in path.split(".") or any(
            module_type_of(m) is not None for m in _path_modules(root, path)
        ):
            raise FormatError(
                f"attribute edit at {path!r}: a registered module (or inside one) is described "
                "by its constructor arguments, not by attributes"
            )
        for key, value in values.items():
            if (
                key.startswith("_")
                or key not in _public_attrs(module)
                or not _is_scalar_value(value)
            ):
                raise FormatError(
                    f"attribute edit at {path!r}: {_short(key)} is not an editable attribute"
                )
            old = getattr(module, key)
            _check_attr(path, key, old, value)
            setattr(module, key, tuple(value) if isinstance(old, tuple) else value)
    for alias, first in manifest.shared.items():
        module = _get(root, first)
        if (
            module is None
            or alias == first
            or alias.startswith(f"{first}.")
            or first.startswith(f"{alias}.")
        ):
            raise FormatError(f"shared module {alias!r} -> {first!r}: no such module to share")
        _check_slot(root, alias, "shared module")
        parent = _get(root, alias.rpartition(".")[0])
        if module_type_of(parent) is not None:
            # a registered layer's child: the layer was built for the module there
            here = _get(root, alias)
            entry = module_type_of(module)
            if (
                here is None
                or module_type_of(here) is not entry
                or (entry is not None and entry.config(here) != entry.config(module))
            ):
                raise FormatError(
                    f"shared module {alias!r} -> {first!r}: its layer holds another kind of "
                    "module there"
                )
        root = _set(root, alias, module)
    _count_paths(root, 4 * MAX_MODULES)
    expected = root.state_dict(keep_vars=True)
    order = {a: i for i, a in enumerate(manifest.shared)}
    for name in expected:
        implied = _implied_tie(name, manifest.shared, order)
        if implied is not None and name not in manifest.ties:
            manifest.ties[name] = implied
    return root, expected


def _path_modules(root: nn.Module, path: str) -> list[nn.Module]:
    """The modules from the root down to ``path`` (which exists), both included."""
    out = [root]
    if path:
        for part in path.split("."):
            out.append(out[-1]._modules[part])
    return out


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
