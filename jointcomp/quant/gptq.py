"""GPTQ (Frantar et al., ICLR 2023): post-training quantization that compensates rounding error.

A layer's weight W [rows, cols] (a conv's flattened to [out, in·window], its columns in the
order of the unfolded input patches) is quantized one column at a time on the grid of its
spec — per-row scales fixed first from the weight itself, exactly as plain PTQ calibrates them —
and each column's rounding error is spread over the columns not yet quantized through the
inverse Hessian of the layer's reconstruction error, H = XᵀX over the inputs X the layer sees
on calibration batches. That minimizes ‖WX − ŴX‖² column by column (Optimal Brain Quantization
with GPTQ's fixed order, lazy block updates and Cholesky form of H⁻¹). The result is the same
``IntQuantized`` a plain PTQ gives — integers, scale, zero point — so the file does not change.

``sequential``: the layers are quantized group by group in the order the model runs them, each
group's H measured on the model whose earlier layers are already quantized (layers fed the very
same input tensor, such as attention's query/key/value, form one group); otherwise every H is
measured once on the float model.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..batches import Batch, inputs_of, run_model, to_device
from ..nn.execution import FactorizedModule
from ..nn.quantized import IntQuantized, attach
from ..tensor.quant import int_range
from .ptq import Calibration, broadcast_shape, calibrate, int_quantized
from .spec import QuantSpec
from .targets import Target


@dataclass(frozen=True)
class GPTQSettings:
    """``damp``: ridge added to H, a fraction of its mean diagonal; ``block``: columns per lazy
    update; ``act_order``: quantize the columns with the largest input energy first."""

    damp: float = 0.01
    block: int = 128
    act_order: bool = False
    sequential: bool = True


def unsupported(module: nn.Module) -> str | None:
    """Why GPTQ cannot take ``module``'s weight (None: it can)."""
    if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        return f"{type(module).__name__} is not a Linear/Conv1d/Conv2d"
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if module.groups != 1:
            return "grouped convolution"
        if module.padding_mode != "zeros":
            return f"padding_mode {module.padding_mode}"
    return None


def _padding(module: nn.Conv1d | nn.Conv2d) -> tuple[int, ...]:
    if isinstance(module.padding, str):  # "valid", or "same" (symmetric: close enough for H)
        if module.padding == "valid":
            return (0,) * len(module.kernel_size)
        return tuple(d * (k - 1) // 2 for d, k in zip(module.dilation, module.kernel_size))
    return tuple(module.padding)


def input_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as rows [n, cols], columns in its flattened weight's order."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        pad, kernel = _padding(module), module.kernel_size
        stride, dilation = module.stride, module.dilation
        if isinstance(module, nn.Conv1d):  # as a conv over a height-1 image
            x = x.unsqueeze(-2)
            kernel, pad = (1, *kernel), (0, *pad)
            stride, dilation = (1, *stride), (1, *dilation)
        cols = F.unfold(x, kernel, dilation=dilation, padding=pad, stride=stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


@contextmanager
def _factorized_execution(model: nn.Module):
    """Factorized layers run through their sub-layers (dense execution would bypass the
    sub-layers' forward, and so their hooks)."""
    saved = {}
    for m in model.modules():
        if isinstance(m, FactorizedModule):
            saved[m] = m.execution
            m.execution = "factorized"
    try:
        yield
    finally:
        for m, execution in saved.items():
            m.execution = execution


class _Enough(Exception):
    """Raised by a hook once every layer of interest has seen this batch: the rest of the
    forward pass would only cost time."""


@torch.no_grad()
def _run(
    model: nn.Module,
    hooks: dict[nn.Module, Any],
    batches: Sequence[Batch],
    device: Any,
    stop_after: set[nn.Module] | None = None,
) -> None:
    """Run ``batches`` through ``model`` with forward ``hooks``; with ``stop_after``, each
    batch's pass ends as soon as every module in it has run once."""
    fired: set[nn.Module] = set()

    def wrap(module: nn.Module, hook: Any) -> Any:
        def call(m: nn.Module, args: tuple, out: Any) -> None:
            hook(m, args, out)
            if stop_after is not None and module in stop_after:
                fired.add(module)
                if fired >= stop_after:
                    raise _Enough

        return call

    handles = [m.register_forward_hook(wrap(m, h)) for m, h in hooks.items()]
    was_training = model.training
    try:
        model.eval()
        with _factorized_execution(model):
            for batch in batches:
                fired.clear()
                with suppress(_Enough):
                    run_model(model, to_device(inputs_of(batch), device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def execution_groups(
    model: nn.Module, modules: dict[str, nn.Module], batch: Batch, device: Any
) -> tuple[list[list[str]], set[str]]:
    """The named layers in the order the model first runs them on ``batch``, consecutive ones
    fed the very same input tensor grouped (layers it never runs are left out), and the names
    of those it runs more than once per pass (their inputs need the whole pass)."""
    groups: list[list[str]] = []
    seen: set[str] = set()
    again: set[str] = set()
    last: list[Any] = [None]  # the previous call's input, held so identity means the same tensor

    def hook(name: str):
        def record(_m: nn.Module, args: tuple, _out: Any) -> None:
            x = args[0] if args else None
            if name in seen:
                again.add(name)
            else:
                seen.add(name)
                if groups and x is not None and x is last[0]:
                    groups[-1].append(name)
                else:
                    groups.append([name])
            last[0] = x

        return record

    _run(model, {m: hook(n) for n, m in modules.items()}, [batch], device)
    return groups, again


def input_hessians(
    model: nn.Module,
    modules: dict[str, nn.Module],
    batches: Sequence[Batch],
    device: Any,
    whole_pass: bool = True,
) -> dict[str, tuple[torch.Tensor, int]]:
    """Per named layer, (Σ XᵀX in float64, rows seen) over its inputs on ``batches``; unless
    ``whole_pass``, each batch's forward stops once every layer has seen it (sequential GPTQ
    on a deep model: the later layers' work would be thrown away)."""
    found: dict[str, tuple[torch.Tensor, int]] = {}

    def hook(name: str):
        def record(module: nn.Module, args: tuple, _out: Any) -> None:
            rows = input_rows(module, args[0].detach().float())
            h = (rows.T @ rows).double()
            if name in found:
                total, n = found[name]
                found[name] = (total + h, n + len(rows))
            else:
                found[name] = (h, len(rows))

        return record

    stop = None if whole_pass else set(modules.values())
    _run(model, {m: hook(n) for n, m in modules.items()}, batches, device, stop)
    return found


def _cholesky_inverse_upper(h: torch.Tensor, damp: float) -> torch.Tensor:
    """The upper Cholesky factor of (H + λI)⁻¹, λ = damp·mean(diag H), damped more until H is
    positive definite."""
    eye = torch.eye(len(h), dtype=h.dtype, device=h.device)
    mean = float(h.diagonal().mean().clamp_min(1e-12))
    for extra in (1.0, 10.0, 100.0, 1000.0):
        low, info = torch.linalg.cholesky_ex(h + damp * extra * mean * eye)
        if int(info) == 0:
            return torch.linalg.cholesky(torch.cholesky_inverse(low), upper=True)
    raise ValueError("the inputs' Hessian is not positive definite even after damping")


def gptq_codes(
    w: torch.Tensor,
    h: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    qmin: int,
    qmax: int,
    settings: GPTQSettings,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integer codes [rows, cols] of ``w`` on the grid ``(q − zero)·scale`` (per row: ``scale``,
    ``zero`` of shape [rows]) chosen column by column with the error spread by H⁻¹. Entries
    outside ``mask`` are the code of 0."""
    w = w.to(torch.float64).clone()
    h = h.to(torch.float64).clone()
    scale, zero = scale.to(w), zero.to(w)
    cols = w.shape[1]
    dead = h.diagonal() == 0  # inputs always 0: any value does, no error to spread
    h[dead, dead] = 1.0
    perm = None
    if settings.act_order:
        perm = torch.argsort(h.diagonal(), descending=True)
        w, h = w[:, perm], h[perm][:, perm]
        mask = None if mask is None else mask[:, perm]
    hinv = _cholesky_inverse_upper(h, settings.damp)
    codes = torch.zeros_like(w)
    for i1 in range(0, cols, settings.block):
        i2 = min(i1 + settings.block, cols)
        w1, err1, hinv1 = w[:, i1:i2].clone(), torch.zeros_like(w[:, i1:i2]), hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = w1[:, i]
            q = torch.round(col / scale + zero).clamp(qmin, qmax)
            if mask is not None:
                q = torch.where(mask[:, i1 + i], q, zero)
            codes[:, i1 + i] = q
            e = (col - (q - zero) * scale) / hinv1[i, i]
            w1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    if perm is not None:
        codes = codes[:, torch.argsort(perm)]
    return codes


def output_error(w: torch.Tensor, w_hat: torch.Tensor, h: torch.Tensor) -> float:
    """‖(W − Ŵ)X‖² / ‖WX‖² from H = XᵀX: the layer's relative output error on the inputs."""
    d = (w - w_hat).to(torch.float64)
    w64 = w.to(torch.float64)
    den = float(((w64 @ h) * w64).sum())
    return float(((d @ h) * d).sum()) / den if den > 0 else 0.0


def gptq_weight(
    weight: torch.Tensor,
    h: torch.Tensor,
    spec: QuantSpec,
    axis: int | None,
    calibration: Calibration,
    settings: GPTQSettings,
    fixed_zeros: bool = False,
) -> tuple[IntQuantized, dict[str, float]]:
    """``weight`` (output channels on axis 0) GPTQ-quantized as an IntQuantized, with the
    layer's relative output error under round-to-nearest on the same grid (``rtn_error``) and
    under what it returns (``error``): GPTQ's codes (``gptq`` 1.0), or round-to-nearest's where
    GPTQ's are worse on these inputs (``gptq`` 0.0)."""
    if axis not in (0, None):
        raise ValueError("GPTQ quantizes with per-output-channel or per-tensor scales")
    if fixed_zeros:
        spec = spec.for_fixed_zeros()
    x = weight.detach()
    mask = (x != 0) if fixed_zeros else None
    scale, zero = calibrate(x, spec, axis, calibration, mask)
    rows = x.shape[0]
    w = x.reshape(rows, -1).to(torch.float64)
    s = scale.to(torch.float64).reshape(-1).expand(rows) if axis is None else scale.double()
    z = zero.to(torch.float64).reshape(-1).expand(rows) if axis is None else zero.double()
    qmin, qmax = int_range(spec.bits, spec.symmetric, spec.narrow_range)
    flat_mask = None if mask is None else mask.reshape(rows, -1)
    codes = gptq_codes(w, h, s, z, qmin, qmax, settings, flat_mask)
    nearest = torch.round(w / s[:, None] + z[:, None]).clamp(qmin, qmax)
    if flat_mask is not None:
        nearest = torch.where(flat_mask, nearest, z[:, None].expand_as(nearest))
    errors = {
        "error": output_error(w, (codes - z[:, None]) * s[:, None], h),
        "rtn_error": output_error(w, (nearest - z[:, None]) * s[:, None], h),
    }
    # GPTQ's greedy order is no guarantee (fixed zeros that cannot absorb error, inputs with
    # little correlation): where it loses to rounding on the calibration inputs, round instead
    errors["gptq"] = float(errors["error"] <= errors["rtn_error"])
    if not errors["gptq"]:
        codes, errors["error"] = nearest, errors["rtn_error"]
    shape = broadcast_shape(x, axis)
    q = int_quantized(codes.reshape(x.shape), scale, zero, spec, axis, shape)
    return q, errors


def gptq_layers(
    model: nn.Module,
    plan: Sequence[tuple[Target, QuantSpec]],
    batches: Sequence[Batch],
    device: Any,
    calibration: Calibration,
    settings: GPTQSettings,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """GPTQ-quantize every planned Conv/Linear weight in place (IntQuantized parametrizations);
    returns a row per layer done (name, relative output error of its codes and under
    round-to-nearest, ``method``: gptq, or ptq where rounding to nearest did better) and the
    targets left to the caller, with the reason."""
    left: list[dict[str, str]] = []
    todo: dict[str, tuple[Target, QuantSpec]] = {}
    for t, s in plan:
        if t.module_level and t.tensor == "weight":
            why = unsupported(t.module(model))
        else:
            why = "not a Conv/Linear weight"
        if why is not None:
            left.append({"name": t.name, "reason": why})
        else:
            todo[t.module_path] = (t, s)
    if not todo:
        return [], left
    modules = {path: model.get_submodule(path) for path in todo}
    groups, again = execution_groups(model, modules, batches[0], device)
    ran = {n for g in groups for n in g}
    for path in todo:
        if path not in ran:
            left.append({"name": todo[path][0].name, "reason": "never ran on the data"})
    if not settings.sequential:
        groups = [[n for g in groups for n in g]]
    done: list[dict[str, Any]] = []
    for group in groups:
        hessians = input_hessians(
            model,
            {n: modules[n] for n in group},
            batches,
            device,
            whole_pass=not settings.sequential or any(n in again for n in group),
        )
        for path in group:
            target, spec = todo[path]
            h, n = hessians[path]
            module = modules[path]
            q, errors = gptq_weight(
                module.weight,
                h / n,
                spec,
                spec.axis(target.channel_axis),
                calibration,
                settings,
                target.fixed_zeros,
            )
            attach(module, "weight", q.to(module.weight.device))
            done.append(
                {
                    "name": target.name,
                    "error": round(errors["error"], 6),
                    "rtn_error": round(errors["rtn_error"], 6),
                    "method": "gptq" if errors["gptq"] else "ptq",
                }
            )
    return done, left
