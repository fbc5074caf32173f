"""How far a fast module's outputs stray from the exact module's on the same inputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..batches import inputs_of, run_model
from ..tasks.base import Output, select_output

__all__ = ["Deviation", "deviation"]


@dataclass(frozen=True)
class Deviation:
    """Outputs of a fast module against the exact one's: the largest absolute difference, the
    mean and smallest cosine similarity per sample (each sample's output flattened), and, for
    2-D outputs (classifier logits), the share of samples whose arg-max agrees (None
    otherwise)."""

    max_abs_error: float
    mean_cosine: float
    min_cosine: float
    top1_agreement: float | None
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _batch_list(batches: Any) -> list[Any]:
    # one batch (a tensor, a dict, an (inputs, labels) tuple) or a list of them
    return list(batches) if isinstance(batches, list) else [batches]


@torch.inference_mode()
def deviation(
    fast: nn.Module, exact: nn.Module, batches: Any, *, output: Output = None
) -> Deviation:
    """Run ``fast`` and ``exact`` (eval mode) on ``batches`` — one batch or a list; each model
    inputs (a tensor, a dict) or ``(inputs, labels)`` — and compare the output tensor
    ``output`` selects (tasks' selector: a key, attribute or index of a tuple, dict or
    ModelOutput; None: the first tensor).

    >>> import torch
    >>> a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    >>> _ = b.load_state_dict(a.state_dict())
    >>> d = deviation(a, b, [torch.randn(5, 4)])
    >>> d.max_abs_error, d.top1_agreement
    (0.0, 1.0)
    """
    items = _batch_list(batches)
    if not items:
        raise ValueError("deviation needs at least one batch")
    fast.eval()
    exact.eval()
    worst, cosines, agree, rows_2d, n = 0.0, [], 0, True, 0
    for batch in items:
        x = inputs_of(batch)
        got = select_output(run_model(fast, x), output).float()
        want = select_output(run_model(exact, x), output).float()
        if got.shape != want.shape:
            raise ValueError(
                f"the fast module's output has shape {tuple(got.shape)}, the exact module's "
                f"{tuple(want.shape)}"
            )
        worst = max(worst, float((got - want).abs().max())) if got.numel() else worst
        g, w = got.reshape(got.shape[0], -1), want.reshape(want.shape[0], -1)
        cosines.append(F.cosine_similarity(g.double(), w.double(), dim=1, eps=1e-12))
        rows_2d = rows_2d and got.dim() == 2
        if got.dim() == 2:
            agree += int((got.argmax(dim=1) == want.argmax(dim=1)).sum())
        n += got.shape[0]
    cos = torch.cat(cosines)
    return Deviation(
        max_abs_error=worst,
        mean_cosine=float(cos.mean()),
        min_cosine=float(cos.min()),
        top1_agreement=agree / n if rows_2d and n else None,
        samples=n,
    )
