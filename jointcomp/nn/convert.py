"""Conversion: a trained nn.Linear / nn.Conv2d → its factorized (optionally low-rank + sparse)
replacement, initialized from the dense weight. Pure: no training, the input is not modified.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from ..tensor import lowrank_sparse
from .execution import FactorizedModule
from .formats import Format, Unsupported, dense_params, make_format
from .lowrank_sparse import LowRankPlusSparse
from .ranks import RankRule, parse_rank


def rel_error(ref: torch.Tensor, approx: torch.Tensor) -> float:
    """‖ref − approx‖_F / ‖ref‖_F in float64."""
    ref64, approx64 = ref.detach().double().cpu(), approx.detach().double().cpu()
    den = float(torch.linalg.vector_norm(ref64))
    num = float(torch.linalg.vector_norm(ref64 - approx64))
    return num / den if den else num


def build_factorized(
    fmt: Format,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    ranks: list[int],
    sparse: float = 0.0,
    sparse_rounds: int = 3,
) -> FactorizedModule:
    """The factorized module of ``fmt`` at ``ranks`` for ``weight`` (CPU float), with a sparse
    residual holding ``sparse`` (a density) of the entries when it is > 0."""
    w = weight.detach().to("cpu", torch.float32)
    if sparse > 0:

        def lowrank_fn(x: torch.Tensor) -> tuple[FactorizedModule, torch.Tensor]:
            m = fmt.build(x, ranks)
            with torch.no_grad():
                return m, m.reconstruct_weight()

        low, s = lowrank_sparse(w, lowrank_fn, sparse, n_rounds=sparse_rounds)
        module: FactorizedModule = LowRankPlusSparse.wrap(low, s)
    else:
        module = fmt.build(w, ranks)
    if bias is not None:
        with torch.no_grad():
            module.dense_bias.copy_(bias.detach())  # type: ignore[union-attr]
    return module


def decompose(
    module: nn.Module,
    format: str,
    rank: Any,
    sparse: float = 0.0,
    *,
    name: str = "layer",
    options: dict[str, Any] | None = None,
) -> tuple[FactorizedModule, dict[str, Any]]:
    """Factorize a Linear or Conv2d. ``rank``: an int, a fraction, a list, or a measure
    (see ``jointcomp.nn.ranks``); ``sparse``: density of the sparse residual (0 = pure low
    rank). ``options``: ``tt_cores``, ``cp_iters``, ``sparse_rounds``, ``seed``.

    Returns the new module (same device and dtype as ``module``) and its info: name, format,
    ranks, density, params_before, params_after, rel_error. Raises ModelError naming the layer
    for a format that does not apply, a rank larger than the layer allows, or a bad rank.
    """
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        raise ModelError(
            f"{name}: cannot decompose a {type(module).__name__} (only Linear and Conv2d)"
        )
    if not 0.0 <= sparse < 1.0:
        raise ModelError(f"{name}: sparse density must lie in [0, 1), got {sparse}")
    options = dict(options or {})
    try:
        rule = rank if isinstance(rank, RankRule) else parse_rank(rank)
        fmt = make_format(module, format, options)
        weight = module.weight.detach().to("cpu", torch.float32)
        ranks = fmt.resolve(weight, rule)
    except ValueError as exc:  # Unsupported is a ValueError too
        raise ModelError(
            f"{name} ({type(module).__name__} {tuple(module.weight.shape)}), format {format}: {exc}"
        ) from None
    return decompose_at(
        module, fmt, ranks, sparse, name=name, sparse_rounds=int(options.get("sparse_rounds", 3))
    )


def decompose_at(
    module: nn.Module,
    fmt: Format,
    ranks: list[int],
    sparse: float = 0.0,
    *,
    name: str = "layer",
    sparse_rounds: int = 3,
) -> tuple[FactorizedModule, dict[str, Any]]:
    """``decompose`` with the format object and ranks already chosen."""
    weight = module.weight.detach()
    bias = module.bias.detach().cpu() if module.bias is not None else None
    try:
        new = build_factorized(fmt, weight, bias, ranks, sparse, sparse_rounds)
    except ValueError as exc:
        raise ModelError(f"{name}: {fmt.name} at ranks {ranks}: {exc}") from None
    new = new.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        approx = new.reconstruct_weight()
    info = {
        "name": name,
        "format": fmt.name + ("+sparse" if sparse > 0 else ""),
        "ranks": list(ranks),
        "density": round(new.density, 6) if isinstance(new, LowRankPlusSparse) else 0.0,
        "params_before": dense_params(module),
        "params_after": new.factor_params(),
        "rel_error": round(rel_error(weight, approx), 6),
    }
    return new, info


def decompose_linear(
    module: nn.Linear, format: str = "svd", rank: Any = 0.5, sparse: float = 0.0, **kwargs: Any
) -> tuple[FactorizedModule, dict]:
    """``decompose`` for a Linear (formats: svd, tt)."""
    if not isinstance(module, nn.Linear):
        raise ModelError(
            f"{kwargs.get('name', 'layer')}: expected nn.Linear, got {type(module).__name__}"
        )
    return decompose(module, format, rank, sparse, **kwargs)


def decompose_conv2d(
    module: nn.Conv2d, format: str = "tucker2", rank: Any = 0.5, sparse: float = 0.0, **kwargs: Any
) -> tuple[FactorizedModule, dict]:
    """``decompose`` for a Conv2d (formats: svd, svd_spatial, tucker2, cp, tt)."""
    if not isinstance(module, nn.Conv2d):
        raise ModelError(
            f"{kwargs.get('name', 'layer')}: expected nn.Conv2d, got {type(module).__name__}"
        )
    return decompose(module, format, rank, sparse, **kwargs)


__all__ = [
    "Unsupported",
    "build_factorized",
    "decompose",
    "decompose_at",
    "decompose_conv2d",
    "decompose_linear",
    "rel_error",
]
