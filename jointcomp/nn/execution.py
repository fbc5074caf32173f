"""The base of every factorized layer: factorized or reconstructed-dense execution.

A factorized layer computes the same function two ways: through its factors (fewer MACs, more
kernel launches) or through the dense weight rebuilt from them (one big op). Which is faster
depends on the shape and batch; ``choose_execution`` times both once and stores the answer in
``execution``, a constructor argument, so a loaded file runs the same path.

In dense mode the weight is rebuilt deterministically from the factors; in eval mode without
autograd it is cached (keyed on the factors' storage and version counters, dropped by
``train()``), never while training, so the pipeline's model and the file's compute bit-identical
outputs.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

EXECUTIONS = ("factorized", "dense")


def check_execution(execution: str) -> str:
    if execution not in EXECUTIONS:
        raise ValueError(f"execution must be one of {EXECUTIONS}, got {execution!r}")
    return execution


class FactorizedModule(nn.Module):
    """Subclasses implement ``reconstruct_weight``, ``dense_op`` and ``forward_factorized``."""

    def __init__(self, execution: str = "factorized") -> None:
        super().__init__()
        self.execution = check_execution(execution)
        self._caches: dict[str, tuple[list[Any], torch.Tensor]] = {}

    # --- to implement ------------------------------------------------------------------------

    @abstractmethod
    def reconstruct_weight(self) -> torch.Tensor:
        """The dense weight the factors represent (differentiable)."""

    @abstractmethod
    def dense_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """The original layer's operation with ``weight`` and ``bias``."""

    @abstractmethod
    def forward_factorized(self, x: torch.Tensor) -> torch.Tensor:
        """The forward pass through the factors."""

    @abstractmethod
    def jc_config(self) -> dict[str, Any]:
        """Plain-JSON constructor arguments."""

    @property
    def dense_bias(self) -> torch.Tensor | None:
        """The bias of the equivalent dense layer (None if it has none)."""
        return None

    # --- shared ------------------------------------------------------------------------------

    def _cache_key(self) -> list[Any]:
        # A plain walk over _parameters/_buffers/_modules: self.parameters() costs several times
        # more, and this runs on every cached forward. Identity, storage and version counter of
        # every tensor (buffers too: quantized tensors keep their integers there) catch replaced
        # modules/tensors and in-place updates alike.
        key: list[Any] = []
        stack: list[nn.Module] = [self]
        while stack:
            module = stack.pop()
            for t in (*module._parameters.values(), *module._buffers.values()):
                if t is not None:
                    key += (id(t), t._version, t.data_ptr())
            stack.extend(module._modules.values())
        return key

    def can_cache(self) -> bool:
        """True in eval mode when no gradient can be asked for: derived tensors may be reused."""
        return not self.training and not (
            torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        )

    def cached(self, tag: str, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``build()``, reused while the layer's tensors are unchanged (callers check
        ``can_cache`` first)."""
        key = self._cache_key()
        hit = self._caches.get(tag)
        if hit is None or hit[0] != key:
            hit = (key, build().detach())
            self._caches[tag] = hit
        return hit[1]

    def dense_weight(self) -> torch.Tensor:
        """``reconstruct_weight()``, cached while nothing can change it or need its gradient."""
        if not self.can_cache():
            return self.reconstruct_weight()
        return self.cached("dense", self.reconstruct_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.execution == "dense":
            return self.dense_op(x, self.dense_weight(), self.dense_bias)
        return self.forward_factorized(x)

    def train(self, mode: bool = True) -> FactorizedModule:
        self._caches = {}  # weights are about to change
        super().train(mode)
        if not mode:
            # Build what inference reuses now, so the first forward (e.g. under torch's flop
            # counter) runs only the layer's own ops, not the reconstruction.
            with torch.no_grad():
                self.warm_caches()
        return self

    def warm_caches(self) -> None:
        """Fill the caches the current execution uses (no-op while training)."""
        if self.execution == "dense" and self.can_cache():
            self.dense_weight()

    def _apply(self, fn: Any, recurse: bool = True) -> FactorizedModule:
        self._caches = {}  # .to() / .float(): the cache would be on the old device
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_caches"] = {}  # deepcopy / pickle never carry a cache
        return state

    def extra_repr(self) -> str:
        return f"execution={self.execution}"

    @torch.inference_mode()
    def choose_execution(
        self,
        example_input: torch.Tensor,
        *,
        threads: int = 1,
        min_run_time: float = 0.05,
        rounds: int = 2,
    ) -> dict[str, float]:
        """Time both executions on ``example_input`` (median, ``threads`` torch threads, rounds
        interleaved so drifting load hits both alike), keep the faster one in ``execution``, and
        return the best time of each in milliseconds."""
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        from torch.utils import benchmark

        was_training = self.training
        self.eval()
        times = {mode: float("inf") for mode in EXECUTIONS}
        try:
            for _ in range(rounds):
                for mode in EXECUTIONS:
                    self.execution = mode
                    self(example_input)  # warm-up; fills the dense cache
                    timer = benchmark.Timer(
                        stmt="m(x)", globals={"m": self, "x": example_input}, num_threads=threads
                    )
                    t = timer.blocked_autorange(min_run_time=min_run_time).median
                    times[mode] = min(times[mode], t)
        finally:
            self.execution = min(times, key=lambda m: times[m])
            self.train(was_training)
        return {mode: t * 1e3 for mode, t in times.items()}

    def factor_params(self) -> int:
        """Stored numbers: every parameter element (nonzeros only for sparse tensors)."""
        sparse = set(getattr(self, "jc_sparse_tensors", ()))
        total = 0
        for name, p in self.named_parameters():
            total += int((p != 0).sum()) if name in sparse else p.numel()
        return total
