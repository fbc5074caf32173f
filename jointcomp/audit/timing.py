"""Latency of several runnables of the same model, measured interleaved.

On a shared or virtual machine the speed drifts within seconds: the baseline timed at the start
of a run and the file at its end can disagree by 2× for reasons that have nothing to do with the
models. Here every round times each runnable once, in turn, at each batch size, and a
runnable's figure is the median over rounds, so drifting load hits all of them alike.

A runnable is anything called with the batch inputs (``run_model(module, inputs)`` for a torch
module; an onnxruntime session wrapper for an exported graph).
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..batches import run_model


def _timer_ms(fn: Callable[[Any], Any], inputs: Any, *, threads: int, min_run_time: float) -> float:
    # torch.utils.benchmark pulls in cpp_extension, which warns on CUDA builds without a GPU
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    timer = benchmark.Timer(stmt="fn(x)", globals={"fn": fn, "x": inputs}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def as_runnable(model: Any) -> Callable[[Any], Any]:
    """A torch module as a one-argument callable on batch inputs (dicts as keyword
    arguments); any other callable as it is."""
    if isinstance(model, torch.nn.Module):
        model.eval()
        return lambda inputs: run_model(model, inputs)
    return model


@torch.inference_mode()
def time_interleaved(
    runnables: Mapping[str, Any],
    inputs_by_batch: Mapping[int, Any],
    *,
    rounds: int = 3,
    threads: int = 1,
    min_run_time: float = 0.3,
) -> dict[str, dict[str, float]]:
    """``{name: {str(batch): median ms over rounds}}``: each round times every runnable once at
    every batch size, in turn (torch.utils.benchmark, ``threads`` torch threads, inference
    mode). Every runnable is called once on each input before the first round (first calls
    allocate and pick kernels).

    >>> import torch
    >>> times = time_interleaved({"a": torch.nn.Identity(), "b": torch.nn.ReLU()},
    ...                          {1: torch.ones(1, 4)}, rounds=2, min_run_time=0.01)
    >>> sorted(times), sorted(times["a"])
    (['a', 'b'], ['1'])
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    fns = {name: as_runnable(r) for name, r in runnables.items()}
    for fn in fns.values():
        for inputs in inputs_by_batch.values():
            fn(inputs)
    samples: dict[str, dict[str, list[float]]] = {
        name: {str(b): [] for b in inputs_by_batch} for name in fns
    }
    for _ in range(rounds):
        for batch, inputs in inputs_by_batch.items():
            for name, fn in fns.items():
                ms = _timer_ms(fn, inputs, threads=threads, min_run_time=min_run_time)
                samples[name][str(batch)].append(ms)
    return {
        name: {b: round(statistics.median(v), 4) for b, v in per_batch.items()}
        for name, per_batch in samples.items()
    }


def throughput(ms_by_batch: Mapping[str, float]) -> dict[str, float]:
    """Samples per second at each batch size from ``{str(batch): ms}``."""
    return {b: round(int(b) * 1e3 / ms, 2) for b, ms in ms_by_batch.items() if ms > 0}
