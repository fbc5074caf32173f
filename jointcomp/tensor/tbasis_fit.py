"""Fitting a T-Basis (one basis, one coefficient table) to trained weights."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

import torch

from ._common import check_positive_int
from .tbasis_ring import balance_cores, ring_matrix, tbasis_matrix, tt_to_ring
from .tt import tt_matrix

Init = Literal["packed", "pca"]
INITS = ("packed", "pca")


@dataclass
class TBasisFit:
    """A fitted basis, the coefficient table, and per-layer relative errors (masked Frobenius):
    of each layer's TT-SVD at the ranks the start uses, of the start, and of the result.
    ``block``/``placed``: the packed start's TT rank and how many layers it placed exactly."""

    basis: torch.Tensor
    coef: torch.Tensor
    rank_scale: torch.Tensor
    init: str
    block: int | None = None
    placed: int = 0
    rel_error_tt: list[float] = field(default_factory=list)
    rel_error_start: list[float] = field(default_factory=list)
    rel_error: list[float] = field(default_factory=list)


def _rel_error(
    approx: torch.Tensor, w: torch.Tensor, m: torch.Tensor, s: torch.Tensor | None
) -> torch.Tensor:
    """‖m∘(approx − w)·s‖ / ‖m∘w·s‖: the masked error, in the metric of the layer's inputs
    when ``s`` (a square root of their second moment) is given, else of its weights."""
    err, ref = m * (approx - w), m * w
    if s is not None:
        err, ref = err @ s, ref @ s
    return torch.linalg.vector_norm(err) / torch.linalg.vector_norm(ref)


def _rel_errors(
    basis: torch.Tensor,
    coef: torch.Tensor,
    scale: torch.Tensor,
    targets: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    layouts: Sequence[tuple[Sequence[int], Sequence[int]]],
    rows: Sequence[Sequence[int]],
    metrics: Sequence[torch.Tensor | None] | None = None,
) -> list[torch.Tensor]:
    errs = []
    metrics = metrics if metrics is not None else [None] * len(targets)
    for w, m, (om, im), rr, s in zip(targets, masks, layouts, rows, metrics):
        idx = torch.as_tensor(list(rr), dtype=torch.long)
        approx = tbasis_matrix(basis, coef[idx], scale[idx], om, im)
        errs.append(_rel_error(approx, w, m, s))
    return errs


def _match_norms(
    basis: torch.Tensor,
    coef: torch.Tensor,
    scale: torch.Tensor,
    targets: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    layouts: Sequence[tuple[Sequence[int], Sequence[int]]],
    rows: Sequence[Sequence[int]],
) -> None:
    """Rescale (in place) each layer's own coefficient rows so its masked norm is the
    target's; rows shared with other layers are left alone."""
    uses: dict[int, int] = {}
    for rr in rows:
        for r in rr:
            uses[r] = uses.get(r, 0) + 1
    for w, m, (om, im), rr in zip(targets, masks, layouts, rows):
        own = [r for r in rr if uses[r] == 1]
        if not own:
            continue
        idx = torch.as_tensor(list(rr), dtype=torch.long)
        approx = tbasis_matrix(basis, coef[idx], scale[idx], om, im)
        now = float(torch.linalg.vector_norm(m * approx))
        want = float(torch.linalg.vector_norm(m * w))
        if now > 0 and want > 0:
            coef[torch.as_tensor(own)] *= (want / now) ** (1.0 / len(own))


def _check_fit_inputs(weights, layouts, rows, masks, rank, mode, metrics=None) -> int:
    if not weights or len(layouts) != len(weights) or len(rows) != len(weights):
        raise ValueError("give one layout and one row list per weight (and at least one weight)")
    if masks is not None and len(masks) != len(weights):
        raise ValueError("give one mask per weight")
    if metrics is not None:
        if len(metrics) != len(weights):
            raise ValueError("give one input metric (or None) per weight")
        for j, (w, s) in enumerate(zip(weights, metrics)):
            if s is not None and tuple(s.shape) != (w.shape[1], w.shape[1]):
                raise ValueError(
                    f"layer {j}: input metric of shape {tuple(s.shape)} does not match the "
                    f"{w.shape[1]} columns of its weight"
                )
    n_rows = 1 + max(r for rr in rows for r in rr)
    for j, (w, (om, im), rr) in enumerate(zip(weights, layouts, rows)):
        if len(om) != len(im) or len(rr) != len(om):
            raise ValueError(f"layer {j}: {len(rr)} rows for {len(om)} cores")
        if tuple(w.shape) != (math.prod(om), math.prod(im)):
            raise ValueError(
                f"layer {j}: weight {tuple(w.shape)} is not the [{math.prod(om)}, "
                f"{math.prod(im)}] TT-matrix of its modes"
            )
        if any(o * i > mode for o, i in zip(om, im)):
            raise ValueError(f"layer {j}: a core's modes exceed mode {mode}")
    if sorted({r for rr in rows for r in rr}) != list(range(n_rows)):
        raise ValueError("rows must number the table 0..N-1 without gaps")
    check_positive_int(rank, "rank")
    return n_rows


def _tt_cores(
    targets: Sequence[torch.Tensor],
    layouts: Sequence[tuple[Sequence[int], Sequence[int]]],
    masks: Sequence[torch.Tensor],
    rank: int,
    metrics: Sequence[torch.Tensor | None],
) -> tuple[list[list[torch.Tensor]], list[float]]:
    """Balanced TT-SVD cores [r, o·i, r'] of every layer at ranks ≤ ``rank``, and their
    masked relative errors."""
    cores, errors = [], []
    for w, m, (om, im), s in zip(targets, masks, layouts, metrics):
        tt = balance_cores(tt_matrix(w, list(om), list(im), ranks=rank))
        approx = ring_matrix(tt_to_ring(tt, rank, max(o * i for o, i in zip(om, im))), om, im)
        errors.append(float(_rel_error(approx, w, m, s)))
        cores.append([c.reshape(c.shape[0], -1, c.shape[-1]) for c in tt])
    return cores, errors


def _row_targets(
    cores: list[list[torch.Tensor]],
    rows: Sequence[Sequence[int]],
    n_rows: int,
    rank: int,
    mode: int,
) -> torch.Tensor:
    """Each table row's ring-embedded TT core, flattened (a coupled row: the mean)."""
    stacked = torch.zeros(n_rows, rank * mode * rank, dtype=torch.float64)
    counts = torch.zeros(n_rows, 1, dtype=torch.float64)
    for layer, rr in zip(cores, rows):
        for core, r in zip(layer, rr):
            ring = torch.zeros(rank, mode, rank, dtype=torch.float64)
            ring[: core.shape[0], : core.shape[1], : core.shape[2]] = core
            stacked[r] += ring.reshape(-1)
            counts[r] += 1
    return stacked / counts


def _pca_start(
    cores: list[list[torch.Tensor]],
    rows: Sequence[Sequence[int]],
    n_rows: int,
    basis_size: int,
    rank: int,
    mode: int,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Basis: the top right singular vectors of the stacked cores (PCA without centring);
    coefficients: least squares; rank scalings 1."""
    targets = _row_targets(cores, rows, n_rows, rank, mode)
    _, s, vh = torch.linalg.svd(targets, full_matrices=False)
    k = min(basis_size, vh.shape[0])
    basis = vh[:k] * (s[:k, None] / math.sqrt(n_rows))  # the typical core's scale
    if k < basis_size:  # fewer cores than basis elements: random extra directions
        extra = torch.randn(basis_size - k, vh.shape[1], generator=gen, dtype=torch.float64)
        extra *= float(basis.norm(dim=1).mean()) / math.sqrt(vh.shape[1])
        basis = torch.cat([basis, extra])
    coef = torch.linalg.lstsq(basis.T, targets.T).solution.T
    scale = torch.ones(n_rows, rank, dtype=torch.float64)
    return basis.reshape(basis_size, rank, mode, rank), coef, scale


def packing_block(basis_size: int, rank: int, cores: int) -> int:
    """The TT rank r of the packed start: the largest r whose B·⌊R/r⌋² slots hold every core,
    or (when that is only r = 1) the largest r whose slots hold three quarters of them."""
    for need in (cores, 0.75 * cores):
        for r in range(rank, 1, -1):
            if basis_size * (rank // r) ** 2 >= need:
                return r
    return 1


def _place_ring(
    d: int, m: int, free: dict[tuple[int, int], list[int]], budget: int = 20000
) -> list[tuple[int, int, int]] | None:
    """Blocks ρ₀…ρ_{d−1} (ring: core k sits in rows ρ_k, columns ρ_{k+1 mod d}) and a basis
    element with that slot free for every core: [(b, ρ_k, ρ_{k+1})], or None. A depth-first
    search (at most ``budget`` complete rings) keeps the ring that leaves the most slack."""
    best: tuple[int, list[int]] | None = None
    seen = 0

    def left(pair: tuple[int, int], used: dict[tuple[int, int], int]) -> int:
        return len(free[pair]) - used.get(pair, 0)

    def dfs(seq: list[int], used: dict[tuple[int, int], int]) -> None:
        nonlocal best, seen
        if seen >= budget:
            return
        if len(seq) == d:  # close the ring
            pair = (seq[-1], seq[0])
            if left(pair, used) > 0:
                seen += 1
                counts = {**used, pair: used.get(pair, 0) + 1}
                slack = min(len(free[p]) - n for p, n in counts.items())
                if best is None or slack > best[0]:
                    best = (slack, [*seq, seq[0]])
            return
        for nxt in sorted(range(m), key=lambda r: -left((seq[-1], r), used)):
            pair = (seq[-1], nxt)
            if left(pair, used) <= 0:
                break
            used[pair] = used.get(pair, 0) + 1
            dfs([*seq, nxt], used)
            used[pair] -= 1

    for rho0 in range(m):
        dfs([rho0], {})
    if best is None:
        return None
    return [(free[(a, b)].pop(0), a, b) for a, b in pairwise(best[1])]


def _packed_start(
    cores: list[list[torch.Tensor]],
    rows: Sequence[Sequence[int]],
    n_rows: int,
    basis_size: int,
    rank: int,
    mode: int,
    block: int,
    gen: torch.Generator,
    noise: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Every layer's TT-SVD cores (ranks ≤ ``block``) written into disjoint block slots of the
    basis: core k of a layer is one basis element (coefficient 1) whose rank scaling keeps
    only its row block, so the ring reproduces the TT exactly. R×R holds ⌊R/r⌋² slots per
    element. Layers that do not fit, and coupled rows, start from least squares instead."""
    m = rank // block
    free = {(a, b): list(range(basis_size)) for a in range(m) for b in range(m)}
    basis = torch.zeros(basis_size, rank, mode, rank, dtype=torch.float64)
    coef = torch.zeros(n_rows, basis_size, dtype=torch.float64)
    scale = torch.zeros(n_rows, rank, dtype=torch.float64)
    uses: dict[int, int] = {}
    for rr in rows:
        for r in rr:
            uses[r] = uses.get(r, 0) + 1
    order = sorted(range(len(cores)), key=lambda j: -sum(c.numel() for c in cores[j]))
    done: set[int] = set()
    for j in order:
        if any(uses[r] > 1 for r in rows[j]):
            continue
        slots = _place_ring(len(cores[j]), m, free)
        if slots is None:
            continue
        for core, r, (b, rho, rho_next) in zip(cores[j], rows[j], slots):
            a, c = rho * block, rho_next * block
            basis[b, a : a + core.shape[0], : core.shape[1], c : c + core.shape[2]] = core
            coef[r, b] = 1.0
            scale[r, a : a + block] = 1.0
        done.update(rows[j])
    # small noise everywhere: an exactly zero basis element or coefficient gets no gradient
    rms = float(basis[basis != 0].square().mean().sqrt()) if bool((basis != 0).any()) else 1.0
    basis += noise * rms * torch.randn(basis.shape, generator=gen, dtype=torch.float64)
    coef += noise * torch.randn(coef.shape, generator=gen, dtype=torch.float64)
    rest = [r for r in range(n_rows) if r not in done]
    if rest:
        targets = _row_targets(cores, rows, n_rows, rank, mode)[rest]
        flat = basis.reshape(basis_size, -1)
        coef[rest] = torch.linalg.lstsq(flat.T, targets.T).solution.T
        scale[rest] = 1.0
    placed = sum(1 for rr in rows if all(r in done for r in rr))
    return basis, coef, scale, placed


def _refine(
    params: list[torch.Tensor],
    targets: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    layouts: Sequence[tuple[Sequence[int], Sequence[int]]],
    rows: Sequence[Sequence[int]],
    steps: int,
    metrics: Sequence[torch.Tensor | None],
) -> None:
    """L-BFGS on the mean masked relative squared error of all layers (in place)."""
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=steps,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        errs = _rel_errors(*params, targets, masks, layouts, rows, metrics)
        loss = torch.stack([e.square() for e in errs]).mean()
        loss.backward()
        return loss

    opt.step(closure)


def fit_tbasis(
    weights: Sequence[torch.Tensor],
    layouts: Sequence[tuple[Sequence[int], Sequence[int]]],
    rows: Sequence[Sequence[int]],
    *,
    basis_size: int,
    rank: int,
    mode: int,
    masks: Sequence[torch.Tensor] | None = None,
    init: Init = "packed",
    steps: int = 100,
    seed: int = 0,
    input_metrics: Sequence[torch.Tensor | None] | None = None,
) -> TBasisFit:
    """Fit one basis and a coefficient table to trained weights.

    ``weights[j]`` is layer j's padded TT-matrix [∏out, ∏in] (``pad_weight``), ``layouts[j]``
    its (out_modes, in_modes), ``rows[j]`` the table row of each of its cores (a row used by
    several layers is a coupled core), ``masks[j]`` 1 on the entries that count.

    1. The start, from every layer's TT-SVD:
       ``packed``: TT-SVD at rank r = ``packing_block``, each core written into its own block
       slot of a basis element (the ring then equals the TT; see ``_packed_start``);
       ``pca``: TT-SVD at rank R, the basis the top singular vectors of all stacked cores,
       least-squares coefficients, every layer then brought to its target's norm (PCA leaves
       layers far from the span near 0, where the ring's gradient, a product of the other
       cores, vanishes).
    2. ``steps`` L-BFGS iterations on the mean masked relative squared error of all layers,
       over basis, coefficients and scalings jointly (a core-level alternation could not see
       that cores of different layers sit in different gauges; the weight error does).
    """
    check_positive_int(basis_size, "basis_size")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    n_rows = _check_fit_inputs(weights, layouts, rows, masks, rank, mode, input_metrics)
    dtype = weights[0].dtype if weights[0].is_floating_point() else torch.float32
    targets = [w.detach().to(torch.float64) for w in weights]
    masks64 = [
        (torch.ones_like(w) if masks is None else masks[j].detach().to(torch.float64))
        for j, w in enumerate(targets)
    ]
    metrics64 = [
        None if input_metrics is None or s is None else s.detach().to(torch.float64)
        for s in (input_metrics or [None] * len(targets))
    ]
    gen = torch.Generator().manual_seed(seed)
    block, placed = None, 0
    if init == "packed":
        block = packing_block(basis_size, rank, n_rows)
        cores, rel_tt = _tt_cores(targets, layouts, masks64, block, metrics64)
        basis, coef, scale, placed = _packed_start(
            cores, rows, n_rows, basis_size, rank, mode, block, gen
        )
    else:
        cores, rel_tt = _tt_cores(targets, layouts, masks64, rank, metrics64)
        basis, coef, scale = _pca_start(cores, rows, n_rows, basis_size, rank, mode, gen)
    with torch.no_grad():
        if init == "pca":  # PCA leaves layers far from the span near 0, where gradients vanish
            _match_norms(basis, coef, scale, targets, masks64, layouts, rows)
        errs = _rel_errors(basis, coef, scale, targets, masks64, layouts, rows, metrics64)
        rel_start = [float(e) for e in errs]
    # float32 from here: the start is rough, speed matters more than digits
    params = [p.to(torch.float32).contiguous().requires_grad_(True) for p in (basis, coef, scale)]
    targets32 = [w.to(torch.float32) for w in targets]
    masks32 = [m.to(torch.float32) for m in masks64]
    metrics32 = [None if s is None else s.to(torch.float32) for s in metrics64]
    if steps > 0:
        _refine(params, targets32, masks32, layouts, rows, steps, metrics32)
    with torch.no_grad():
        errs = _rel_errors(*params, targets32, masks32, layouts, rows, metrics32)
        rel = [float(e) for e in errs]
    b, c, sc = (p.detach().to(dtype) for p in params)
    return TBasisFit(b, c, sc, init, block, placed, rel_tt, rel_start, rel)
