"""Choosing TT mode sizes: split n into d factors, padding n up when it factors badly.

Cost model used for both choices: a TT-matrix core k holds r² · m_k · n_k numbers, so with
similar ranks the parameter count grows with the sum of the mode sizes. Among factorizations of
n into d factors we take the one with the smallest sum (by AM–GM, the most balanced one).
"""

from __future__ import annotations

import math

from ._common import check_positive_int


def _factorizations(n: int, d: int, smallest: int = 1):
    """Yield every non-decreasing tuple of d factors ≥ ``smallest`` whose product is n."""
    if d == 1:
        if n >= smallest:
            yield (n,)
        return
    f = smallest
    # The smallest factor of a non-decreasing tuple is at most the d-th root of n.
    while f**d <= n:
        if n % f == 0:
            for rest in _factorizations(n // f, d - 1, f):
                yield (f, *rest)
        f += 1


def _best(n: int, d: int) -> tuple[int, ...]:
    # Ties on the sum go to the tuple with the smaller largest factor, then lexicographically.
    return min(_factorizations(n, d), key=lambda fs: (sum(fs), fs[-1], fs))


def factorize_dim(n: int, d: int) -> list[int]:
    """d factors of n, each ≥ 1, with product n and the smallest possible sum, in ascending order.

    Examples: factorize_dim(784, 2) → [28, 28]; factorize_dim(1000, 3) → [10, 10, 10];
    a prime gives [1, …, 1, n] (see ``pad_to_factorable`` for that case).
    """
    check_positive_int(n, "n")
    check_positive_int(d, "d")
    return list(_best(n, d))


def pad_to_factorable(n: int, d: int, max_pad_fraction: float = 0.1) -> tuple[int, list[int]]:
    """Pick n' in [n, ⌊n·(1 + max_pad_fraction)⌋] whose best d-factorization has the smallest
    sum of modes; ties go to the smallest n' (least padding).

    Returns (padded_n, modes); padded_n == n means no padding was worth it. The caller pads the
    weight with padded_n − n zero rows/columns. Examples: (97, 2) → (99, [9, 11]) rather than
    [1, 97]; (1001, 3) → (1001, [7, 11, 13]) since no n' ≤ 1101 has a smaller mode sum.
    """
    check_positive_int(n, "n")
    check_positive_int(d, "d")
    if not max_pad_fraction >= 0.0:
        raise ValueError(f"max_pad_fraction must be >= 0, got {max_pad_fraction}")
    hi = math.floor(n * (1.0 + max_pad_fraction) + 1e-9)
    best_n, best_modes = n, _best(n, d)
    for m in range(n + 1, hi + 1):
        modes = _best(m, d)
        if sum(modes) < sum(best_modes):
            best_n, best_modes = m, modes
    return best_n, list(best_modes)
