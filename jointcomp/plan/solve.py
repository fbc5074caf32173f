"""The joint allocation as a multiple-choice knapsack: each layer has options (one combination
of keep ratio × rank × bits) with a cost (coded bytes) and a loss (the predicted increase of
the validation loss); one option per layer. Solved by its Lagrangian relaxation (each layer
takes the option minimizing loss + λ·cost; λ bisected to the budget), then a greedy top-up
spends what the relaxation leaves of the budget. Pure numpy: arrays in, indices out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Table = Sequence[Sequence[float]]


def _pick(
    costs: list[np.ndarray],
    losses: list[np.ndarray],
    lam: float,
    extra: list[np.ndarray] | None = None,
    mu: float = 0.0,
) -> list[int]:
    # ties go to the cheaper option, then to the lower index (determinism)
    out = []
    for i, (c, loss) in enumerate(zip(costs, losses)):
        score = loss + lam * c
        if extra is not None and mu:
            score = score + mu * extra[i]
        best = np.flatnonzero(score <= score.min() + 1e-12)
        out.append(int(best[np.argmin(c[best])]))
    return out


def _capped(cs, ls, lam: float, ms: list[np.ndarray] | None, cap: float | None) -> list[int]:
    """``_pick`` at price ``lam`` with the smallest second price μ (on ``ms``) whose choice
    keeps the total of ``ms`` within ``cap`` (the most constrained choice when none does)."""
    choice = _pick(cs, ls, lam)
    if ms is None or cap is None or total(ms, choice) <= cap:
        return choice
    lo, hi = 0.0, 1.0
    while total(ms, _pick(cs, ls, lam, ms, hi)) > cap and hi < 1e12:
        hi *= 4
    for _ in range(40):
        mid = (lo + hi) / 2
        if total(ms, _pick(cs, ls, lam, ms, mid)) > cap:
            lo = mid
        else:
            hi = mid
    return _pick(cs, ls, lam, ms, hi)


def _arrays(costs: Table, losses: Table) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if len(costs) != len(losses):
        raise ValueError("costs and losses list different numbers of layers")
    cs = [np.asarray(c, dtype=float) for c in costs]
    ls = [np.asarray(v, dtype=float) for v in losses]
    for c, v in zip(cs, ls):
        if c.shape != v.shape or c.ndim != 1 or c.size == 0:
            raise ValueError("each layer needs as many costs as losses, at least one")
    return cs, ls


def total(table: Table, choice: Sequence[int]) -> float:
    """Sum over layers of ``table[layer][choice[layer]]``.

    >>> total([[1, 2], [3, 4]], [1, 0])
    5.0
    """
    return float(sum(float(row[i]) for row, i in zip(table, choice)))


def solve_budget(
    costs: Table,
    losses: Table,
    budget: float,
    *,
    macs: Table | None = None,
    macs_cap: float | None = None,
) -> list[int]:
    """One option per layer with total cost ≤ ``budget`` (and, with ``macs``, total MACs ≤
    ``macs_cap``) and (near-)least total loss: the Lagrangian with one price per constraint,
    bisected to each. ValueError when even the cheapest options exceed either.

    >>> solve_budget([[1, 4], [1, 4]], [[5, 0], [1, 0]], 5)
    [1, 0]
    >>> solve_budget([[1, 4], [1, 4]], [[5, 0], [1, 0]], 5, macs=[[1, 9], [1, 2]], macs_cap=4)
    [0, 1]
    """
    cs, ls = _arrays(costs, losses)
    ms = _second(macs, cs) if macs is not None and macs_cap is not None else None
    cheapest = float(sum(c.min() for c in cs))
    if cheapest > budget:
        raise ValueError(f"the cheapest options still cost {cheapest:,.0f} > budget {budget:,.0f}")
    if ms is not None:
        fewest = float(sum(m.min() for m in ms))
        if fewest > macs_cap:  # type: ignore[operator]
            raise ValueError(
                f"the fewest MACs options still take {fewest:,.0f} > cap {macs_cap:,.0f}"
            )
    lo, hi = 0.0, 1.0
    while total(cs, _capped(cs, ls, hi, ms, macs_cap)) > budget and hi < 1e12:
        hi *= 4
    for _ in range(60):  # λ: the smallest price of cost that fits
        mid = (lo + hi) / 2
        if total(cs, _capped(cs, ls, mid, ms, macs_cap)) > budget:
            lo = mid
        else:
            hi = mid
    choice = _capped(cs, ls, hi, ms, macs_cap)
    if total(cs, choice) > budget:  # λ hit its cap: the cheapest option everywhere
        choice = [int(np.argmin(c)) for c in cs]
    if ms is not None and total(ms, choice) > macs_cap:  # type: ignore[operator]
        raise ValueError(
            f"no choice found within both {budget:,.0f} bytes and {macs_cap:,.0f} MACs"
        )
    return _top_up(cs, ls, choice, budget, ms, macs_cap)


def _second(table: Table, cs: list[np.ndarray]) -> list[np.ndarray]:
    ms = [np.asarray(m, dtype=float) for m in table]
    if len(ms) != len(cs) or any(m.shape != c.shape for m, c in zip(ms, cs)):
        raise ValueError("macs must list as many options per layer as costs")
    return ms


def _top_up(
    cs: list[np.ndarray],
    ls: list[np.ndarray],
    choice: list[int],
    budget: float,
    ms: list[np.ndarray] | None = None,
    cap: float | None = None,
):
    """Spend the slack the relaxation leaves: repeatedly the move to a lower-loss option that
    still fits (both constraints) with the most loss saved per extra byte."""
    choice = list(choice)
    spent = total(cs, choice)
    used = total(ms, choice) if ms is not None else 0.0
    while True:
        best, best_gain = None, 0.0
        for i, (c, v) in enumerate(zip(cs, ls)):
            extra = c - c[choice[i]]
            gain = v[choice[i]] - v
            ok = (gain > 1e-12) & (spent + extra <= budget)
            if ms is not None:
                ok &= used + ms[i] - ms[i][choice[i]] <= cap
            for j in np.flatnonzero(ok):
                rate = gain[j] / max(extra[j], 1e-9)
                if rate > best_gain:
                    best, best_gain = (i, int(j)), rate
        if best is None:
            return choice
        i, j = best
        spent += cs[i][j] - cs[i][choice[i]]
        if ms is not None:
            used += ms[i][j] - ms[i][choice[i]]
        choice[i] = j


def solve_loss(costs: Table, losses: Table, allowance: float) -> list[int]:
    """One option per layer with total loss ≤ ``allowance`` and (near-)least total cost (the
    dual: the smallest file within a loss). The most accurate options when none fit.

    >>> solve_loss([[1, 4], [1, 4]], [[5, 0], [1, 0]], 1.5)
    [1, 0]
    """
    cs, ls = _arrays(costs, losses)
    # the same relaxation with the roles swapped: minimize cost + μ·loss
    best = [int(np.flatnonzero(v <= v.min() + 1e-12)[np.argmin(c[v <= v.min() + 1e-12])])
            for c, v in zip(cs, ls)]  # fmt: skip
    if total(ls, best) > allowance:
        return best
    lo, hi = 0.0, 1.0
    while total(ls, _pick(ls, cs, hi)) > allowance and hi < 1e12:
        hi *= 4
    for _ in range(60):
        mid = (lo + hi) / 2
        if total(ls, _pick(ls, cs, mid)) > allowance:
            lo = mid
        else:
            hi = mid
    choice = _pick(ls, cs, hi)
    if total(ls, choice) > allowance:
        choice = best
    return _top_up(ls, cs, choice, allowance)  # spend the loss slack on smaller options


def frontier(
    costs: Table,
    losses: Table,
    points: int = 24,
    *,
    macs: Table | None = None,
    macs_cap: float | None = None,
) -> list[list[int]]:
    """Choices along the cost–loss trade-off (the relaxation's breakpoints, sampled), from the
    most accurate to the cheapest, without repeats; with ``macs``, only choices within
    ``macs_cap`` (each point with the least MACs price that keeps it there).

    >>> frontier([[1, 4], [1, 4]], [[5, 0], [1, 0]])
    [[1, 1], [1, 0], [0, 0]]
    >>> frontier([[1, 4], [1, 4]], [[5, 0], [1, 0]], macs=[[1, 9], [1, 2]], macs_cap=4)
    [[0, 1], [0, 0]]
    """
    cs, ls = _arrays(costs, losses)
    ms = _second(macs, cs) if macs is not None and macs_cap is not None else None
    out: list[list[int]] = []
    for lam in np.concatenate([[0.0], np.geomspace(1e-9, 1e3, points)]):
        choice = _capped(cs, ls, float(lam), ms, macs_cap)
        if ms is not None and total(ms, choice) > macs_cap:  # type: ignore[operator]
            continue
        if choice not in out:
            out.append(choice)
    if not out:
        raise ValueError(f"no choice takes at most {macs_cap:,.0f} MACs")
    return out
