"""Replaying the part of a forward pass a one-layer change cannot reach.

A sensitivity sweep changes one layer at a time and runs the model on the same fixed batches
hundreds of times. Every module that finished before that layer first ran computes exactly
what it computed in the unchanged model, so ``PrefixReplay`` records those outputs once and,
while one layer is measured, makes the outermost of them return their recorded output
instead of running: on a deep network a layer halfway down costs half a forward pass.

Only modules called exactly once per batch, in the same order on every batch, are replayed
(a module run twice, or a forward whose call order depends on the data, runs as usual), and
none that holds a tensor of the measured layer (a tied embedding changes with its head). A
replayed output is a clone: the consumer may modify it in place (``ReLU(inplace=True)``).
When the recorded outputs would take more than ``max_bytes``, nothing is recorded and every
measurement runs the whole model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

MAX_BYTES = 1 << 30  # recorded outputs beyond this are not worth the memory


def _nbytes(value: Any) -> int:
    leaves, _ = tree_flatten(value)
    return sum(x.numel() * x.element_size() for x in leaves if isinstance(x, torch.Tensor))


def _clone(value: Any) -> Any:
    return tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, value)


class PrefixReplay:
    """Records ``model``'s call order while ``run()`` measures it, then the outputs of the
    modules that can stand in for everything computed before each of ``layers`` starts.

    ``run``: measures the unchanged model on the fixed batches (its value is returned by
    ``record`` as the base); ``layers``: the modules the sweep will change. Use
    ``with replay.before(layer): run()`` for every measurement of a change to ``layer``.

    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 2)).eval()
    >>> x = torch.randn(3, 4)
    >>> run = lambda: float(model(x).sum())
    >>> replay = PrefixReplay(model, [model[2]])
    >>> base = replay.record(run)
    >>> with replay.before(model[2]):
    ...     replayed = run()
    >>> replayed == base, replay.skipped(model[2])
    (True, ['0', '1'])
    """

    def __init__(self, model: nn.Module, layers: list[nn.Module], max_bytes: int = MAX_BYTES):
        self.model = model
        self.layers = layers
        self.max_bytes = max_bytes
        self._names = {m: n for n, m in model.named_modules(remove_duplicate=False) if n}
        self._skip: dict[nn.Module, list[nn.Module]] = {}
        self._outputs: dict[nn.Module, list[Any]] = {}
        self._shapes: dict[nn.Module, list[Any]] = {}

    def record(self, run: Callable[[], Any]) -> Any:
        """Run ``run`` twice: once recording the call order (its value is returned), once the
        outputs of the modules some layer can replay."""
        modules = list(self._names)
        calls: list[list[tuple[nn.Module, int, int]]] = []  # per batch: (module, start, end)
        starts: dict[nn.Module, int] = {}
        clock = [0]
        root = self.model

        def pre(module, _args):
            if module is root:
                calls.append([])
            starts[module] = clock[0]
            clock[0] += 1

        def post(module, _args, _out):
            if module is not root and calls:
                calls[-1].append((module, starts[module], clock[0]))
            clock[0] += 1

        handles = [m.register_forward_pre_hook(pre) for m in [root, *modules]]
        handles += [m.register_forward_hook(post) for m in modules]
        try:
            base = run()
        finally:
            for h in handles:
                h.remove()
        self._skip = self._plan(calls)
        wanted = {m for ms in self._skip.values() for m in ms}
        if wanted:
            self._capture(run, wanted)
        return base

    def _plan(self, calls: list[list[tuple[nn.Module, int, int]]]) -> dict[nn.Module, list]:
        """Per layer, the outermost modules that ended before it first started."""
        if not calls or not calls[0]:
            return {}
        order = [m for m, _, _ in calls[0]]
        if any([m for m, _, _ in batch] != order for batch in calls[1:]):
            return {}  # the call order depends on the batch: replay nothing
        counts = Counter(order)
        once = {m for m in order if counts[m] == 1}
        parent: dict[nn.Module, nn.Module | None] = {}
        stack: list[tuple[nn.Module, int, int]] = []
        for m, s, e in sorted(calls[0], key=lambda c: c[1]):  # calls nest: a tree by span
            while stack and stack[-1][2] < s:
                stack.pop()
            parent.setdefault(m, stack[-1][0] if stack else None)
            stack.append((m, s, e))
        first = {}
        for m, s, e in calls[0]:
            first.setdefault(m, (s, e))
        held = {m: _storages(m) for m in once}
        out = {}
        for layer in self.layers:
            if layer not in first:
                continue
            begin = first[layer][0]
            shared = _storages(layer)  # a tied weight changes modules that ran earlier too
            done = {m for m in once if first[m][1] < begin and not held[m] & shared}
            outer = [m for m in done if parent[m] not in done]  # the outermost finished ones
            if outer:
                out[layer] = sorted(outer, key=lambda m: first[m][0])
        return out

    def _capture(self, run: Callable[[], Any], wanted: set[nn.Module]) -> None:
        outputs: dict[nn.Module, list[Any]] = {m: [] for m in wanted}
        shapes: dict[nn.Module, list[Any]] = {m: [] for m in wanted}
        used = [0]

        def post(module, args, kwargs, out):
            outputs[module].append(_clone(out))
            shapes[module].append(_shape((args, kwargs)))
            used[0] += _nbytes(out)

        handles = [m.register_forward_hook(post, with_kwargs=True) for m in wanted]
        try:
            run()
        finally:
            for h in handles:
                h.remove()
        if used[0] > self.max_bytes or len({len(v) for v in outputs.values()}) != 1:
            self._skip = {}  # too large to keep, or not one call per batch after all
            return
        self._outputs, self._shapes = outputs, shapes

    def skipped(self, layer: nn.Module) -> list[str]:
        """Names of the modules replayed while ``layer`` is measured."""
        return [self._names[m] for m in self._skip.get(layer, [])]

    @contextmanager
    def before(self, layer: nn.Module) -> Iterator[None]:
        """Within the block, the modules that finished before ``layer`` started return their
        recorded outputs (in batch order, one per call) instead of running."""
        skip = self._skip.get(layer, [])
        saved = {m: m.__dict__.get("forward") for m in skip}
        for m in skip:
            m.forward = _replaying(m, self._outputs[m], self._shapes[m], self._names[m])
        try:
            yield
        finally:
            for m, original in saved.items():
                if original is None:
                    del m.forward
                else:
                    m.forward = original


def _storages(module: nn.Module) -> set[int]:
    tensors = [*module.parameters(), *module.buffers()]
    return {t.untyped_storage().data_ptr() for t in tensors if t.numel()}


def _shape(args: Any) -> tuple:
    leaves, _ = tree_flatten(args)
    return tuple(tuple(x.shape) for x in leaves if isinstance(x, torch.Tensor))


def _replaying(module: nn.Module, outputs: list[Any], shapes: list[Any], name: str):
    count = [0]

    def forward(*args: Any, **kwargs: Any) -> Any:
        i = count[0] % len(outputs)
        count[0] += 1
        if _shape((args, kwargs)) != shapes[i]:
            # a different batch than the one recorded: the measurement would be wrong
            raise RuntimeError(f"plan: replaying {name}: the batches changed since recording")
        return _clone(outputs[i])

    return forward
