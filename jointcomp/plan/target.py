"""What a joint budget asks for: one coded size (``bytes``, or ``ratio`` of the baseline's
float32 bytes) to reach with the least loss, or one metric drop (``max_drop``) within which the
file is to be as small as possible. The stages keep their role (which
techniques run, how they fine-tune); the target decides their per-layer settings."""

from __future__ import annotations

from pydantic import Field, model_validator

from ..config import Strict


class Target(Strict):
    """A joint budget over prune keep ratio, rank and bits per layer (and per embedding table
    its rank, when decompose's ``embeddings`` selects it, and bits), optionally with a cap on
    the MACs per sample (a second constraint the allocation honours; latency has no cheap
    proxy here and is not a target).

        >>> Target(bytes=20000).kind
        'bytes'
        >>> Target(max_drop=1.0, macs=2_000_000).kind
        'max_drop'
    """

    bytes: int | None = Field(None, ge=1, description="the written file's size in bytes")
    ratio: float | None = Field(
        None, gt=1, description="compression ratio against the baseline's float32 bytes"
    )
    max_drop: float | None = Field(
        None,
        gt=0,
        description="largest drop of the task's metric on the validation split, in the "
        "metric's unit (top-1: points); the smallest file within it",
    )
    macs: int | None = Field(
        None,
        ge=1,
        description="at most this many multiply-accumulates per sample (batch 1, as the audit "
        "counts them), with any of bytes, ratio or max_drop; a planned decompose then runs its "
        "layers through their factors (execution: factorized)",
    )
    tries: int = Field(
        3,
        ge=1,
        le=10,
        description="runs of the stages at most: after each, the file is measured and the plan "
        "corrected when it missed (bytes over, or the validation drop over max_drop)",
    )
    keeps: list[float] = Field(
        default_factory=lambda: [1.0, 0.75, 0.6, 0.5, 0.4, 0.3],
        description="prune: fractions of each layer's output channels to keep (candidates)",
    )
    ranks: list[float] = Field(
        default_factory=lambda: [0.6, 0.45, 0.35, 0.25, 0.18, 0.12, 0.08],
        description="decompose: fractions of each layer's full rank (candidates; dense too)",
    )
    bits: list[int] = Field(
        default_factory=lambda: [2, 3, 4, 5, 6, 8],
        description="quantize: bit widths of each layer's weights or factors (candidates)",
    )
    batches: int = Field(2, ge=1, description="validation batches the sensitivities use")
    batch_size: int = Field(256, ge=1)
    recovery: float = Field(
        1.0,
        gt=0,
        le=50,
        description="max_drop, first try: the plan allows a one-shot (before fine-tuning) "
        "validation drop of max_drop × recovery (1: as much as the target, since low-bit "
        "QAT can lose more than the one-shot rounding); the next try uses the ratio of "
        "one-shot to final drop the first one measured, later ones bisect the file size",
    )

    @model_validator(mode="after")
    def _one(self) -> Target:
        given = [k for k in ("bytes", "ratio", "max_drop") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of bytes, ratio or max_drop"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if not self.keeps or any(not 0 < k <= 1 for k in self.keeps):
            raise ValueError("keeps: fractions in (0, 1]")
        if not self.ranks or any(not 0 < r < 1 for r in self.ranks):
            raise ValueError("ranks: fractions in (0, 1)")
        if not self.bits or any(not 2 <= b <= 16 for b in self.bits):
            raise ValueError("bits: widths in 2..16")
        self.keeps = sorted(set(self.keeps) | {1.0}, reverse=True)
        self.ranks = sorted(set(self.ranks), reverse=True)
        self.bits = sorted(set(self.bits))
        return self

    @property
    def kind(self) -> str:
        """Which of bytes, ratio or max_drop is given."""
        return next(k for k in ("bytes", "ratio", "max_drop") if getattr(self, k) is not None)

    def byte_target(self, dense_bytes: int) -> int | None:
        """The file size asked for (None under max_drop)."""
        if self.bytes is not None:
            return self.bytes
        if self.ratio is not None:
            return max(1, int(dense_bytes / self.ratio))
        return None


def drop_units(metric: str) -> float:
    """Factor from a metric's value to the unit ``max_drop`` is given in: points for top-1
    (a fraction ×100), the metric itself otherwise.

    >>> drop_units("top-1"), drop_units("mean cosine")
    (100.0, 1.0)
    """
    return 100.0 if metric == "top-1" else 1.0
