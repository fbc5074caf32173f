"""Joint planning: one target (a file size, a ratio, or a metric drop) allocated across the
prune keep ratio, the rank and the bits of every layer at once (``make_plan``), written into
the stages' per-layer overrides (``Plan.apply``)."""

from .plan import LayerChoice, Plan, make_plan, oneshot
from .solve import frontier, solve_budget, solve_loss
from .target import Target

__all__ = [
    "LayerChoice",
    "Plan",
    "Target",
    "frontier",
    "make_plan",
    "oneshot",
    "solve_budget",
    "solve_loss",
]
