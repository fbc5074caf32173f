"""The closed loop's arithmetic, between two runs of the stages: per layer, how far the written
file missed the plan's prediction (``corrections``, which the next plans multiply their byte
estimates by), and what the next run aims for (``next_try``): a size target keeps its size and
lets the corrections move the allocation; a max_drop target learns from the first run how much
of the one-shot drop the fine-tuning won back (``recovery``), then bisects the file size
between the smallest passing and the largest failing run; a bit width whose quantization-aware
training lost most of a failed run's drop is left out of the later plans (``bit_floor``). Pure
functions of plain data."""

from __future__ import annotations

from typing import Any

UNDER_TARGET = 0.95  # a file under this fraction of a size target is re-planned larger
CLAMP = (0.2, 5.0)  # a correction outside this is a plan gone wrong, not an estimate to scale
MARGIN = 0.9  # a learned recovery aims this far inside max_drop
BITS_SHARE = 0.5  # a failed run whose quantize stage lost more than this share of its drop
CONVERGED = 1.04  # bisection stops when the passing and failing sizes are this close
SHRINK = (0.5, 0.9)  # a passing run's next size, as a fraction of its own (by the slack left)


def layer_bytes(tensors: dict[str, dict[str, Any]], names: list[str]) -> dict[str, int]:
    """Bytes in the file of each layer in ``names``: its tensors' (``name.*``) coded bytes, from
    the encode stage's record (``tensors``: name → {"bytes": ...}).

    >>> layer_bytes({"fc1.weight": {"bytes": 90}, "fc1.bias": {"bytes": 10},
    ...              "fc10.weight": {"bytes": 5}}, ["fc1"])
    {'fc1': 100}
    """
    out = dict.fromkeys(names, 0)
    for name, info in tensors.items():
        owner = next((n for n in names if name == n or name.startswith(n + ".")), None)
        if owner is not None:
            out[owner] += int(info["bytes"])
    return out


def corrections(
    previous: dict[str, float], plan: dict[str, Any], tensors: dict[str, Any], file_bytes: int
) -> dict[str, float]:
    """Per layer of ``plan`` (the last plan of a run, as ``Plan.to_dict``), the factor between
    the bytes the written file spends on it and those the plan predicted, composed with the
    factor the plan already used (``previous``); ``""``: everything else (header, unplanned
    tensors). Layers the file does not show keep their factor.

    >>> plan = {"predicted_bytes": 1100, "layers": [{"name": "fc", "predicted_bytes": 1000}]}
    >>> corrections({"fc": 2.0}, plan, {"fc.w": {"bytes": 500}}, 620)
    {'fc': 1.0, '': 1.2}
    """
    out = dict(previous)
    names = [layer["name"] for layer in plan["layers"]]
    measured = layer_bytes(tensors, names)
    lo, hi = CLAMP
    for layer in plan["layers"]:
        got, predicted = measured[layer["name"]], layer["predicted_bytes"]
        if got > 0 and predicted > 0:
            factor = previous.get(layer["name"], 1.0) * got / predicted
            out[layer["name"]] = round(min(hi, max(lo, factor)), 4)
    rest = file_bytes - sum(measured.values())
    rest_predicted = plan["predicted_bytes"] - sum(
        layer["predicted_bytes"] for layer in plan["layers"]
    )
    if rest > 0 and rest_predicted > 0:
        out[""] = round(min(hi, max(lo, previous.get("", 1.0) * rest / rest_predicted)), 4)
    return out


def learned_recovery(attempt: dict[str, Any], units: float) -> float | None:
    """The one-shot drop the run's first plan measured per point of drop its file ended with
    (in ``max_drop``'s unit; ``units``: from the metric to that unit); None when the one-shot
    drop was nil (nothing to learn from). A file that lost nothing doubles what was allowed.

    >>> learned_recovery({"drop": 2.0, "recovery": 1.0,
    ...     "plans": [{"base_metric": 0.9, "oneshot_metric": 0.87}]}, 100.0)
    1.5
    """
    first = attempt["plans"][0] if attempt["plans"] else {}
    if first.get("base_metric") is None or first.get("oneshot_metric") is None:
        return None
    oneshot = (first["base_metric"] - first["oneshot_metric"]) * units
    if oneshot <= 0:
        return None
    if attempt["drop"] is None or attempt["drop"] <= 0:
        return attempt["recovery"] * 2
    return round(oneshot / attempt["drop"], 4)


def stage_drops(base: float | None, metrics: list[tuple[str, float | None]], units: float):
    """Per stage (``metrics``: its name and the validation metric it ended with, in order),
    the drop it added to the one before it (the first: to ``base``), in ``max_drop``'s unit.

    >>> stage_drops(0.9, [("0-prune", 0.9), ("1-decompose", 0.89), ("2-quantize", 0.85)], 100)
    {'0-prune': 0.0, '1-decompose': 1.0, '2-quantize': 4.0}
    """
    out, before = {}, base
    for name, metric in metrics:
        if before is not None and metric is not None:
            out[name] = round((before - metric) * units, 4)
        before = metric
    return out


def bit_floor(attempt: dict[str, Any], floor: int | None) -> int | None:
    """The least bit width later plans may choose after run ``attempt`` (``floor``: the one it
    ran under): when the run missed its max_drop and its quantize stage lost most of the drop
    (more than ``BITS_SHARE``), the lowest width that run's last plan chose failed under
    training; the floor rises above it. Otherwise ``floor`` stays.

    >>> run = {"within": False, "drop": 4.0, "stage_drops": {"1-decompose": -0.1,
    ...        "2-quantize": 4.1}, "plans": [{"layers": [{"bits": 2}, {"bits": 4}]}]}
    >>> bit_floor(run, None), bit_floor({**run, "within": True}, None), bit_floor(run, 4)
    (3, None, 4)
    """
    if attempt["within"] or not attempt["drop"] or not attempt["plans"]:
        return floor
    lost = sum(v for k, v in attempt.get("stage_drops", {}).items() if k.endswith("-quantize"))
    if lost <= BITS_SHARE * attempt["drop"]:
        return floor
    chosen = [c["bits"] for c in attempt["plans"][-1]["layers"] if c.get("bits") is not None]
    if not chosen:
        return floor
    return max(floor or 0, min(chosen) + 1)


def next_try(target: Any, tries: list[dict[str, Any]], units: float) -> dict[str, Any] | None:
    """What the next run aims for, from the runs so far (each: ``byte_target``, ``wanted_bytes``,
    ``file_bytes``, ``drop``, ``within``, ``recovery``, ``plans``): {"byte_target": bytes or None,
    "recovery": the one-shot allowance per point of max_drop or None}, or None to stop.

    A size target stops when the file is within it and uses at least 95% of it; otherwise it
    keeps its size (the corrections move the allocation), 1% tighter for every run that went
    over. Under max_drop, the second run re-plans with the recovery the first one measured
    (times a margin); later runs bisect the file size between the smallest passing and the
    largest failing run, or, with only passing runs, shrink it by the slack the last one left
    (``shrink``: to half when it lost nothing), with only failing ones grow it.

    >>> from jointcomp.plan import Target
    >>> t = Target(bytes=1000)
    >>> next_try(t, [{"byte_target": 1000, "wanted_bytes": 1000, "file_bytes": 1100,
    ...               "within": False}], 100.0)
    {'byte_target': 990, 'recovery': None}
    >>> next_try(t, [{"byte_target": 1000, "wanted_bytes": 1000, "file_bytes": 980,
    ...               "within": True}], 100.0) is None
    True
    """
    last = tries[-1]
    if target.max_drop is None:
        used = last["file_bytes"] / last["wanted_bytes"]
        if UNDER_TARGET <= used <= 1:
            return None  # within the target and close to it
        over = sum(1 for t in tries if t["file_bytes"] > t["wanted_bytes"])
        return {"byte_target": int(last["wanted_bytes"] * 0.99**over), "recovery": None}
    passed = [t["file_bytes"] for t in tries if t["within"]]
    failed = [t["file_bytes"] for t in tries if not t["within"]]
    if passed and failed and min(passed) > max(failed):
        low, high = max(failed), min(passed)
        if high / low < CONVERGED:
            return None  # close enough: the smallest passing file is the answer
        return {"byte_target": int((low * high) ** 0.5), "recovery": None}
    if len(tries) == 1:
        learned = learned_recovery(last, units)
        if learned is not None:
            return {"byte_target": None, "recovery": round(learned * MARGIN, 4)}
    size = last["byte_target"] or last["file_bytes"]
    if not last["within"]:
        over = (last["drop"] or 0) / target.max_drop
        return {"byte_target": int(size * min(2.0, max(1.25, over**0.5))), "recovery": None}
    return {"byte_target": int(size * shrink(last["drop"], target.max_drop)), "recovery": None}


def shrink(drop: float | None, max_drop: float) -> float:
    """The size factor after a passing run that lost ``drop`` of ``max_drop``: by the slack it
    left, from half the size (nothing lost) to 0.9 (almost all of it used).

    >>> shrink(-0.1, 1.0), shrink(0.5, 1.0), shrink(0.95, 1.0)
    (0.5, 0.75, 0.9)
    """
    used = max(0.0, drop or 0.0) / max_drop
    return round(min(SHRINK[1], max(SHRINK[0], 0.5 + 0.5 * used)), 4)
