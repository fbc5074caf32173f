"""Log-grid values (``tensor.log_grid``): exact float32 of 2^(k/steps) on any machine, nested
grids, snapping within half a step, and exact codes only for values truly on a grid."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from jointcomp.tensor.log_grid import exact_codes, snap, values_of


def _is_nearest_float32(value: float, code: int, steps: int) -> bool:
    """Whether float32 ``value`` is the one nearest 2^(code/steps): the power lies strictly
    between the midpoints to its float32 neighbours (decided with exact rationals)."""
    v = np.float32(value)
    below = Fraction(float(np.nextafter(v, np.float32(0))))
    above = Fraction(float(np.nextafter(v, np.float32(np.inf))))
    power = Fraction(2) ** code  # compare x^steps with 2^code instead of x with 2^(code/steps)
    low, high = (below + Fraction(float(v))) / 2, (Fraction(float(v)) + above) / 2
    return low**steps < power < high**steps


@pytest.mark.parametrize("steps", [1, 16, 64, 1024])
def test_values_are_the_nearest_float32_of_the_power(steps: int) -> None:
    codes = np.arange(-3 * steps, 3 * steps, max(1, steps // 32))
    values = values_of(codes, steps)
    assert values.dtype == np.float32
    if steps <= 64:  # exact rationals of x^steps stay small enough
        for code, value in zip(codes.tolist(), values.tolist(), strict=True):
            assert _is_nearest_float32(value, code, steps)
    # and the rest agree with float64 arithmetic rounded once
    assert np.array_equal(values, (2.0 ** (codes / steps)).astype(np.float32))


def test_grids_nest_and_codes_outside_float32_are_refused() -> None:
    codes = np.arange(-200, 200)
    assert np.array_equal(values_of(codes, 64), values_of(codes * 16, 1024))
    with pytest.raises(ValueError, match="not a normal float32"):
        values_of(np.array([128 * 4]), 4)
    with pytest.raises(ValueError, match="one of"):
        values_of(np.array([1]), 3)


def test_snap_moves_at_most_half_a_step_onto_the_grid() -> None:
    x = torch.rand(500, generator=torch.Generator().manual_seed(0)) * 3 + 1e-3
    moved = snap(x, 64)
    assert float((moved.double() / x.double() - 1).abs().max()) <= 2 ** (1 / 128) - 1
    found = exact_codes(moved)
    assert found is not None and found[1] <= 64
    codes, steps = found
    assert torch.equal(torch.from_numpy(values_of(codes, steps)), moved)
    with pytest.raises(ValueError, match="positive finite"):
        snap(torch.tensor([1.0, 0.0]), 64)


def test_exact_codes_find_the_coarsest_grid_and_only_exact_values() -> None:
    codes, steps = exact_codes(torch.tensor([0.5, 1.0, 4.0]))
    assert steps == 1 and codes.tolist() == [-1, 0, 2]
    on_64 = snap(torch.tensor([0.1, 0.2, 0.3]), 64)
    assert exact_codes(on_64)[1] == 64
    assert exact_codes(torch.tensor([0.1, 0.2])) is None  # not on any grid
    assert exact_codes(on_64 * (1 + 2**-20)) is None
    assert exact_codes(torch.tensor([1.0, -2.0])) is None
    assert exact_codes(on_64.double()) is None  # only float32
    assert exact_codes(torch.tensor([math.inf])) is None
