"""Values on a logarithmic grid: 2^(k / steps) for integer codes k, rounded to float32.

A quantizer's scales are positive and smooth across channels, so on this grid they are small
integers (a 150-row coefficient table's scales span 8 codes at 64 steps per octave) where f16
spends 16 bits on each. The float32 of every code is computed with integer arithmetic only,
rounded to nearest, so writer and reader agree bit for bit on any machine (no libm ``exp2``).
Grids nest: a value on the grid of ``steps`` lies on every grid of a multiple of ``steps``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)  # the grids a file may use
MAX_STEPS = STEPS[-1]
_MANTISSA = 23  # float32 significand bits after the leading one
MIN_EXP, MAX_EXP = -126, 127  # normal float32 binades: a code's value must be a normal number


def check_steps(steps: int) -> int:
    if isinstance(steps, bool) or steps not in STEPS:
        raise ValueError(f"log-grid steps per octave must be one of {STEPS}, got {steps!r}")
    return steps


@lru_cache(maxsize=8192)
def _significand(fraction: int, steps: int) -> int:
    """round(2^(23 + fraction/steps)) for 0 <= fraction < steps, exactly (in [2^23, 2^24])."""
    power = _MANTISSA * steps + fraction  # m^steps compared with 2^power
    m = int(2.0 ** (power / steps))  # a float estimate, corrected exactly below
    while m**steps > 1 << power:
        m -= 1
    while (m + 1) ** steps <= 1 << power:
        m += 1
    # round half up: m + 1/2 < 2^(power/steps)  ⟺  (2m + 1)^steps < 2^(power + steps)
    return m + 1 if (2 * m + 1) ** steps < 1 << (power + steps) else m


def values_of(codes: np.ndarray, steps: int) -> np.ndarray:
    """float32 2^(code / steps) of each integer code. Raises ValueError for a code whose value is
    not a normal float32."""
    check_steps(steps)
    codes = np.asarray(codes)
    if codes.dtype.kind not in "iu":
        raise ValueError(f"log-grid codes must be integers, got {codes.dtype}")
    flat = codes.reshape(-1).astype(np.int64)
    unique, inverse = np.unique(flat, return_inverse=True)
    table = np.empty(len(unique), dtype=np.float32)
    for i, code in enumerate(unique.tolist()):
        octave, fraction = divmod(code, steps)
        m = _significand(fraction, steps)
        # 2^octave ≤ value ≤ 2^(octave+1): a normal float32 unless past either end
        if not MIN_EXP <= octave <= MAX_EXP or (octave == MAX_EXP and m >> (_MANTISSA + 1)):
            raise ValueError(f"log-grid code {code} (steps {steps}) is not a normal float32")
        table[i] = math.ldexp(m, octave - _MANTISSA)  # exact: m has at most 25 bits
    return table[inverse].reshape(codes.shape)


def nearest_codes(x: torch.Tensor, steps: int) -> torch.Tensor:
    """The int64 code of the grid value nearest each positive finite value of ``x`` (in the
    log domain)."""
    check_steps(steps)
    x64 = x.detach().to(torch.float64)
    if x64.numel() and not bool(((x64 > 0) & torch.isfinite(x64)).all()):
        raise ValueError("only positive finite values lie near a log grid")
    return torch.round(torch.log2(x64) * steps).to(torch.int64)


def snap(x: torch.Tensor, steps: int) -> torch.Tensor:
    """``x`` (positive, finite) moved to the nearest grid value: float32, same shape; the
    relative change is at most 2^(1/(2·steps)) − 1 (0.54% at 64 steps)."""
    codes = nearest_codes(x, steps).cpu().numpy()
    lo, hi = MIN_EXP * steps, (MAX_EXP + 1) * steps - 1
    values = values_of(np.clip(codes, lo, hi), steps)
    return torch.from_numpy(values).to(x.device)


def exact_codes(x: torch.Tensor, max_steps: int = MAX_STEPS) -> tuple[np.ndarray, int] | None:
    """(int32 codes, steps) of the coarsest grid holding every value of float32 ``x`` exactly,
    or None where some value lies on no grid up to ``max_steps``."""
    if x.dtype != torch.float32 or x.numel() == 0:
        return None
    flat = x.detach().reshape(-1).cpu()
    if not bool(((flat > 0) & torch.isfinite(flat)).all()):
        return None
    codes = nearest_codes(flat[:1], max_steps).numpy()  # the first value rejects most tensors
    if not np.array_equal(values_of(codes, max_steps), flat[:1].numpy()):
        return None
    codes = nearest_codes(flat, max_steps).numpy()
    if not np.array_equal(values_of(codes, max_steps), flat.numpy()):
        return None
    # the coarsest grid: the largest power of two dividing every code (and max_steps)
    common = math.gcd(max_steps, *(int(c) for c in np.unique(codes)))
    steps = max_steps // common
    return (codes // common).astype(np.int32), steps
