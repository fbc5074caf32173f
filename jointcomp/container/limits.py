"""What a reader spends on a file, bounded before it spends it (docs/FORMAT.md, "Resource
bounds").

A hostile file can recompute every checksum, so the bounds come from the file itself: its size
fixes a *budget* (``budget(file_bytes)``: 32 MiB, or 1024 bytes per byte of file above 32 KiB)
that the module it describes, everything the reader decodes and every single allocation while
building must fit; a count of *steps* (``steps(file_bytes)``: 2048 modules, parameters and
buffers registered, or one per 32 bytes of file) and of *work* (``work(file_bytes)``: 2^28
operations the builder computes, or 8192 per byte of file) bound the build's time; the header
has fixed caps (inflated size, JSON values, nesting, integer size, number of edits, path depth).
The module is built twice: first on torch's ``meta`` device (no storage: shapes only), counting
every module, parameter and buffer registered, the size of every tensor an operation makes and
the operations, which refuses an oversized or overlong build before a byte of it is allocated;
then for real, under guards that refuse a factory call larger than what is left of the budget
and count what is registered, in case the builder cannot run on ``meta``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import FormatError

MIN_BUDGET = 32 << 20  # bytes any file may make a reader spend on its tensors ...
BUDGET_PER_FILE_BYTE = 1024  # ... or this many per byte of the file, if that is more
MAX_HEADER_BYTES = 4 << 20  # inflated JSON header
MAX_JSON_VALUES = 1 << 18  # values (keys included) in the header: bounds its Python objects
MAX_JSON_DEPTH = 32  # nesting of arrays and objects
MAX_JSON_INT = 1 << 63  # |integer| in the header
MAX_KWARGS_BYTES = 64 << 10  # the builder's keyword arguments, as JSON text
MAX_EDITS = 1 << 12  # structural edits (each path at most once per kind; bounds time)
MAX_ATTRS = 1 << 14  # attribute edits (each path at most once)
MAX_MODULES = 1 << 14  # paths/4 the rebuilt module tree may have (state_dict walks them)
MIN_WORK = 1 << 28  # operations (FLOPs; elements made, for other ops) a build may run ...
WORK_PER_FILE_BYTE = 8192  # ... or this many per byte of the file, if that is more
MIN_STEPS = 1 << 11  # modules, parameters and buffers any file's build may register ...
BYTES_PER_STEP = 32  # ... or one per this many bytes of the file, if that is more
MAX_PATH = 512  # characters of a module path
MAX_PATH_DEPTH = 32  # dotted components of a module path
MAX_TENSORS = 1 << 16  # tensor table entries (packed scalars expanded)


def budget(file_bytes: int) -> int:
    """Bytes of tensors (the module's, the decoded ones, any one allocation while building) a
    file of ``file_bytes`` may make a reader hold."""
    return max(MIN_BUDGET, BUDGET_PER_FILE_BYTE * file_bytes)


def work(file_bytes: int) -> int:
    """Operations the dry run of a build of a file of ``file_bytes`` may count: a builder that
    runs its module to size it (torchvision's SSDlite runs its backbone on a 320×320 image)
    costs time no allocation bound sees."""
    return max(MIN_WORK, WORK_PER_FILE_BYTE * file_bytes)


def steps(file_bytes: int) -> int:
    """Registrations (modules, parameters, buffers) a build of a file of ``file_bytes`` may
    make: each costs a constructor call and an initialisation, so this bounds a build's time
    the way ``budget`` bounds its memory (a builder's keyword arguments cost the file nothing)."""
    return max(MIN_STEPS, file_bytes // BYTES_PER_STEP)


class OverBudget(FormatError):
    """The file describes more than its budget allows."""


def nbytes(shape: Any, dtype: torch.dtype | None = None) -> int:
    """Bytes of a tensor of ``shape`` (a torch.Size or list) and ``dtype``."""
    n = 1
    for d in shape:
        n *= int(d)
    itemsize = (dtype or torch.get_default_dtype()).itemsize
    return n * itemsize


class _Meter:
    """Counts what a build registers and refuses it beyond the limits (one owning thread)."""

    def __init__(self, limit: int, max_steps: int, max_work: int, what: str) -> None:
        self.limit, self.max_steps, self.max_work, self.what = limit, max_steps, max_work, what
        self.bytes = 0
        self.steps = 0
        self.work = 0
        self.owner = threading.get_ident()

    def mine(self) -> bool:
        return threading.get_ident() == self.owner

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise OverBudget(
                f"{self.what} registers more than {self.max_steps:,} modules, parameters and "
                "buffers, the most a file of this size may describe"
            )

    def tensor(self, t: Any) -> None:
        # type(), not isinstance(): Parameter's instance check is slow and this runs per tensor
        if t is None or not issubclass(type(t), torch.Tensor) or not self.mine():
            return
        self.step()
        self.bytes += nbytes(t.shape, t.dtype)
        if self.bytes > self.limit:
            raise OverBudget(
                f"{self.what} registers more than {self.limit:,} bytes of tensors, the most a "
                "file of this size may describe"
            )

    def module(self) -> None:
        if self.mine():
            self.step()

    def operation(self, count: int) -> None:
        self.work += count
        if self.work > self.max_work:
            raise OverBudget(
                f"{self.what}: its builder computes more than {self.max_work:,} operations, "
                "the most a file of this size may make a reader run"
            )

    def single(self, size: int, what: str) -> None:
        if self.mine() and size > self.limit:
            raise OverBudget(
                f"{self.what}: {what} of {size:,} bytes, more than the {self.limit:,} a file of "
                "this size may make a reader allocate"
            )


_FACTORIES = {
    torch.empty,
    torch.zeros,
    torch.ones,
    torch.full,
    torch.rand,
    torch.randn,
    torch.randint,
    torch.empty_strided,
}
_NEW = {
    torch.Tensor.new_empty,
    torch.Tensor.new_zeros,
    torch.Tensor.new_ones,
    torch.Tensor.new_full,
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _shape(v: Any) -> list[int] | None:
    """``v`` as a size (an int or a sequence of ints), or None."""
    if _is_int(v):
        return [v]
    if isinstance(v, (tuple, list, torch.Size)) and all(_is_int(d) for d in v):
        return [int(d) for d in v]
    return None


def _requested(func: Any, args: tuple, kwargs: dict) -> list[int] | None:
    """The size a factory call asks for, where ``func`` is one."""
    if "size" in kwargs:
        return _shape(kwargs["size"])
    if func in _NEW:
        return _shape(args[1]) if len(args) > 1 else None
    if func is torch.full:
        return _shape(args[0]) if args else None
    if func is torch.randint:  # randint(high, size) or randint(low, high, size)
        seqs = [a for a in args if isinstance(a, (tuple, list, torch.Size))]
        return _shape(seqs[0]) if seqs else None
    if func in _FACTORIES:
        if len(args) == 1:
            return _shape(args[0])
        return [int(a) for a in args] if args and all(_is_int(a) for a in args) else None
    return None


class _FactoryGuard(TorchFunctionMode):
    """Refuses a factory call (torch.empty, zeros, randn, …, Tensor.new_*) for more bytes than
    the budget before it allocates."""

    def __init__(self, meter: _Meter) -> None:
        super().__init__()
        self.meter = meter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FACTORIES or func in _NEW:
            size = _requested(func, args, kwargs)
            if size is not None:
                if any(d < 0 for d in size):
                    raise OverBudget(f"{self.meter.what}: a tensor of negative size {size}")
                dtype = kwargs.get("dtype")
                dtype = dtype if isinstance(dtype, torch.dtype) else None
                name = getattr(func, "__name__", "a factory")
                self.meter.single(nbytes(size, dtype), f"{name}{tuple(size)}")
        return func(*args, **kwargs)


class _OutputGuard(TorchDispatchMode):
    """On the meta device: refuses any operation whose output is larger than the budget, so the
    real build (the same operations on real storage) never makes one."""

    def __init__(self, meter: _Meter) -> None:
        super().__init__()
        self.meter = meter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        made = 0
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.meter.single(nbytes(t.shape, t.dtype), f"{func} makes a tensor")
                made += t.numel()
        formula = _flop_formulas().get(getattr(func, "overloadpacket", None))
        if formula is not None:
            # a formula that does not know these arguments: elements made only
            with suppress(Exception):
                made = max(made, int(formula(*args, **kwargs, out_val=out)))
        if self.meter.mine():
            self.meter.operation(made)
        return out


def _flop_formulas() -> dict[Any, Any]:
    """torch's FLOP formulas by operator (convolutions, matrix products, attention)."""
    from torch.utils.flop_counter import flop_registry

    return flop_registry


@contextmanager
def bounded_build(
    limit: int,
    what: str,
    *,
    max_steps: int = MIN_STEPS,
    max_work: int = MIN_WORK,
    meta: bool = False,
) -> Iterator[_Meter]:
    """Run a build (a builder call, a manifest's edits) that registers at most ``limit`` bytes
    of parameters and buffers and ``max_steps`` modules, parameters and buffers (see
    ``steps``), and allocates no tensor over ``limit`` bytes; with ``meta``, on torch's meta
    device (nothing is allocated), where every operation's output is checked too and their
    operations (see ``work``) add up to at most ``max_work``. Raises OverBudget."""
    from torch.nn.modules import module as module_mod

    meter = _Meter(limit, max_steps, max_work, what)
    hooks = [
        module_mod.register_module_parameter_registration_hook(lambda _m, _n, p: meter.tensor(p)),
        module_mod.register_module_buffer_registration_hook(lambda _m, _n, b: meter.tensor(b)),
        module_mod.register_module_module_registration_hook(lambda _m, _n, _s: meter.module()),
    ]
    try:
        with _FactoryGuard(meter):
            if meta:
                with torch.device("meta"), _OutputGuard(meter):
                    yield meter
            else:
                yield meter
    finally:
        for h in hooks:
            h.remove()
