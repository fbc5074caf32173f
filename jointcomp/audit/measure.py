"""Measurements of a module: parameters, dense bytes, MACs (torch's flop counter) and CPU latency
(torch.utils.benchmark, fixed threads, median), on inputs of any shape a model takes: a tensor,
a tuple of them or a dict (tokenized text)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..batches import run_model
from ..nn.modules import count_nonzero, count_params, logical_tensors


def _repeat(example: Any, batch: int) -> Any:
    """Batch-1 inputs ``example`` repeated to ``batch`` samples (every tensor inside alike)."""
    if isinstance(example, torch.Tensor):
        return example.repeat(batch, *([1] * (example.dim() - 1)))
    if isinstance(example, dict):
        return {k: _repeat(v, batch) for k, v in example.items()}
    if isinstance(example, (tuple, list)):
        return type(example)(_repeat(v, batch) for v in example)
    return example


def _to_cpu(example: Any) -> Any:
    if isinstance(example, torch.Tensor):
        return example.to("cpu")
    if isinstance(example, dict):
        return {k: _to_cpu(v) for k, v in example.items()}
    if isinstance(example, (tuple, list)):
        return type(example)(_to_cpu(v) for v in example)
    return example


def dense_bytes(model: nn.Module) -> int:
    """Bytes of the model as a dense fp32 state dict (tied tensors once, quantized tensors at
    their float size): the plain checkpoint a user would ship without jointcomp."""
    return sum(
        t.numel() * (4 if t.is_floating_point() else t.element_size())
        for t, _ in logical_tensors(model).values()
    )


@torch.no_grad()
def count_macs(model: nn.Module, example: Any) -> int:
    """Multiply-accumulates of one forward pass on ``example`` (batch 1: a tensor, or a tuple or
    dict of them), from torch's counter."""
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        run_model(model, example)
    return int(counter.get_total_flops() // 2)


@torch.inference_mode()
def latency_ms(
    model: nn.Module, example: Any, *, threads: int = 1, min_run_time: float = 0.3
) -> float:
    """Median wall time of one forward pass in milliseconds (torch.utils.benchmark)."""
    # torch.utils.benchmark pulls in cpp_extension, which warns on CUDA builds without a GPU
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    model.eval()
    run_model(model, example)  # warm-up outside the timer: first calls allocate, pick kernels
    timer = benchmark.Timer(
        stmt="run(model, x)",
        globals={"run": run_model, "model": model, "x": example},
        num_threads=threads,
    )
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def measure(
    model: nn.Module,
    example: Any,
    *,
    batch_sizes: list[int],
    threads: int,
    min_run_time: float,
    with_latency: bool = True,
    with_macs: bool = True,
) -> dict[str, Any]:
    """Params, dense bytes, MACs and latency of ``model`` on CPU for the inputs ``example`` (one
    sample with its batch dimension: a tensor, or a tuple or dict of them)."""
    model = model.to("cpu").eval()
    example = _to_cpu(example)
    out: dict[str, Any] = {
        "params": count_params(model),
        "nonzero_params": count_nonzero(model),
        "dense_bytes": dense_bytes(model),
    }
    if with_macs:
        out["macs"] = count_macs(model, example)
    if with_latency:
        per_batch = {}
        for b in batch_sizes:
            x = _repeat(example, b)
            per_batch[str(b)] = round(
                latency_ms(model, x, threads=threads, min_run_time=min_run_time), 4
            )
        out["latency_ms_by_batch"] = per_batch
        out["latency_ms"] = per_batch.get("1", next(iter(per_batch.values()), None))
    return out
