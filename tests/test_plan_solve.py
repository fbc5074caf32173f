"""The joint allocation's solver: a multiple-choice knapsack over per-layer options, solved by
its Lagrangian relaxation with a greedy top-up (jointcomp.plan.solve)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jointcomp.allocate import Ladder, allocate
from jointcomp.plan.solve import frontier, solve_budget, solve_loss, total


def _brute(costs, losses, budget):
    best = None
    for choice in itertools.product(*[range(len(c)) for c in costs]):
        if total(costs, choice) <= budget:
            key = (total(losses, choice), total(costs, choice))
            if best is None or key < best[0]:
                best = (key, list(choice))
    return best[1]


def _random_case(rng, layers=4, options=5):
    costs, losses = [], []
    for _ in range(layers):
        c = np.sort(rng.uniform(10, 100, options))
        v = np.sort(rng.uniform(0, 1, options))[::-1]  # larger options lose less
        costs.append(c.tolist())
        losses.append(v.tolist())
    return costs, losses


def test_fits_the_budget_and_is_close_to_the_exact_optimum():
    rng = np.random.default_rng(0)
    gaps = []
    for _ in range(30):
        costs, losses = _random_case(rng)
        low, high = sum(min(c) for c in costs), sum(max(c) for c in costs)
        budget = float(rng.uniform(low, high))
        exact = _brute(costs, losses, budget)
        found = solve_budget(costs, losses, budget)
        assert total(costs, found) <= budget
        gaps.append(total(losses, found) - total(losses, exact))
    assert min(gaps) >= -1e-9  # never better than exact (sanity of the brute force)
    assert np.mean(gaps) < 0.05 and sum(g < 1e-9 for g in gaps) >= 20


def test_a_tighter_budget_never_costs_more():
    rng = np.random.default_rng(1)
    costs, losses = _random_case(rng, layers=6, options=8)
    low = sum(min(c) for c in costs)
    budgets = [low * f for f in (3.0, 2.5, 2.0, 1.5, 1.2, 1.0)]
    spent = [total(costs, solve_budget(costs, losses, b)) for b in budgets]
    assert all(s <= b for s, b in zip(spent, budgets))
    assert spent == sorted(spent, reverse=True)


def test_impossible_budget_is_refused():
    with pytest.raises(ValueError, match="cheapest options still cost"):
        solve_budget([[5, 9]], [[1, 0]], 4)


def test_loss_allowance_picks_the_smallest_within_it():
    costs, losses = [[1, 4, 9], [1, 4, 9]], [[3, 1, 0], [0.5, 0.2, 0]]
    choice = solve_loss(costs, losses, 1.5)
    assert total(losses, choice) <= 1.5
    assert total(costs, choice) == 5  # [1, 0]: 4 + 1, the cheapest within 1.5


def test_frontier_runs_from_most_accurate_to_cheapest():
    costs, losses = [[1, 4, 9], [1, 4, 9]], [[3, 1, 0], [0.5, 0.2, 0]]
    front = frontier(costs, losses)
    assert front[0] == [2, 2] and front[-1] == [0, 0]
    sizes = [total(costs, c) for c in front]
    assert sizes == sorted(sizes, reverse=True)


def test_joint_choice_beats_per_stage_greedy():
    """Two layers; options keep ∈ {1, .5} × bits ∈ {8, 4}; bytes = 1000·keep·bits/8. Pruning
    layer A costs a lot of loss, 4-bit rounding costs little everywhere. A per-stage pipeline
    (prune first to its share of the budget, bits chosen afterwards) must prune; the joint
    choice reaches the same budget with bits alone."""
    keep_loss = {"A": {1.0: 0.0, 0.5: 1.0}, "B": {1.0: 0.0, 0.5: 0.6}}
    bits_loss = {"A": {8: 0.0, 4: 0.02}, "B": {8: 0.0, 4: 0.03}}
    options = list(itertools.product([1.0, 0.5], [8, 4]))

    def size(keep, bits):
        return 1000 * keep * bits / 8

    budget = 1000.0
    costs = [[size(k, b) for k, b in options] for _ in "AB"]
    losses = [[keep_loss[n][k] + bits_loss[n][b] for k, b in options] for n in "AB"]
    joint = solve_budget(costs, losses, budget)
    # per stage: prune meets a params share (3/4 of the dense size at 8 bits), then bits
    prune_ladders = [
        Ladder(n, [size(0.5, 8), size(1.0, 8)], [keep_loss[n][0.5], 0.0]) for n in "AB"
    ]
    pos, _ = allocate(prune_ladders, 1500)
    keeps = {n: [0.5, 1.0][pos[n]] for n in "AB"}
    bit_ladders = [
        Ladder(n, [size(keeps[n], 4), size(keeps[n], 8)], [bits_loss[n][4], 0.0]) for n in "AB"
    ]
    pos, spent = allocate(bit_ladders, budget)
    staged = sum(keep_loss[n][keeps[n]] + (bits_loss[n][4] if pos[n] == 0 else 0) for n in "AB")
    assert spent <= budget and total(costs, joint) <= budget
    assert total(losses, joint) < staged
    assert [options[j] for j in joint] == [(1.0, 4), (1.0, 4)]


def _brute_capped(costs, losses, macs, budget, cap):
    best = None
    for choice in itertools.product(*[range(len(c)) for c in costs]):
        if total(costs, choice) <= budget and total(macs, choice) <= cap:
            key = total(losses, choice)
            if best is None or key < best:
                best = key
    return best


def test_a_macs_cap_is_honoured_as_a_second_constraint():
    rng = np.random.default_rng(7)
    for _ in range(10):
        costs, losses = _random_case(rng, layers=4, options=5)
        # MACs not ordered like bytes: a cap binds choices the byte budget alone would take
        macs = [rng.permutation(np.linspace(10, 60, 5)).tolist() for _ in costs]
        budget = 0.7 * sum(max(c) for c in costs)
        cap = 0.55 * sum(max(m) for m in macs)
        if _brute_capped(costs, losses, macs, budget, cap) is None:
            continue
        free = solve_budget(costs, losses, budget)
        choice = solve_budget(costs, losses, budget, macs=macs, macs_cap=cap)
        assert total(costs, choice) <= budget and total(macs, choice) <= cap
        assert total(losses, choice) <= _brute_capped(costs, losses, macs, budget, cap) + 0.35
        if total(macs, free) > cap:  # the cap changed the answer
            assert choice != free
        for point in frontier(costs, losses, macs=macs, macs_cap=cap):
            assert total(macs, point) <= cap


def test_an_impossible_macs_cap_is_refused():
    with pytest.raises(ValueError, match="MACs"):
        solve_budget([[1, 2]], [[1, 0]], 10, macs=[[5, 6]], macs_cap=4)
    with pytest.raises(ValueError, match="as many options"):
        solve_budget([[1, 2]], [[1, 0]], 10, macs=[[5]], macs_cap=40)
