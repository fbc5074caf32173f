"""The closed loop between two runs of a target's stages (jointcomp.plan.loop): per-layer
corrections from the written file, and what the next run aims for."""

from __future__ import annotations

import pytest

from jointcomp.plan import Target
from jointcomp.plan.loop import bit_floor, corrections, learned_recovery, next_try, stage_drops

PLAN = {
    "predicted_bytes": 26_150,
    "layers": [
        {"name": "conv1", "predicted_bytes": 552},
        {"name": "fc1", "predicted_bytes": 17_509},
        {"name": "fc2", "predicted_bytes": 3_501},
    ],
}
TENSORS = {  # what encode recorded: fc1's factors came out far smaller than predicted
    "conv1.weight": {"bytes": 379},
    "conv1.bias": {"bytes": 44},
    "fc1.lowrank.first.parametrizations.weight.0.int_repr": {"bytes": 2502},
    "fc1.lowrank.second.weight": {"bytes": 1506},
    "fc1.sparse": {"bytes": 6706},
    "fc2.weight": {"bytes": 3444},
}


def test_corrections_are_per_layer_and_compose_with_the_previous_ones():
    first = corrections({}, PLAN, TENSORS, 19_026)
    assert first["conv1"] == pytest.approx(423 / 552, abs=1e-3)
    assert first["fc1"] == pytest.approx(10_714 / 17_509, abs=1e-3)
    assert first["fc2"] == pytest.approx(3444 / 3501, abs=1e-3)
    # the rest (header, unplanned tensors): measured 19,026 − 14,581 against 26,150 − 21,562
    assert first[""] == pytest.approx((19_026 - 14_581) / (26_150 - 21_562), abs=1e-3)
    # the next plan predicted with these factors; a layer that then lands on its prediction
    # keeps its factor, one still 10% over grows by 10%
    again = {**PLAN, "layers": [{"name": "fc1", "predicted_bytes": 10_000}]}
    second = corrections(first, again, {"fc1.w": {"bytes": 11_000}}, 30_000)
    assert second["fc1"] == pytest.approx(first["fc1"] * 1.1, abs=1e-3)
    assert second["conv1"] == first["conv1"]  # not in that plan: unchanged


def test_a_wild_miss_is_clamped():
    plan = {"predicted_bytes": 200, "layers": [{"name": "fc", "predicted_bytes": 100}]}
    assert corrections({}, plan, {"fc.w": {"bytes": 10_000}}, 10_100)["fc"] == 5.0


def _try(file_bytes, within, drop=None, byte_target=None, plans=(), recovery=1.0):
    return {
        "byte_target": byte_target or file_bytes,
        "wanted_bytes": None,
        "file_bytes": file_bytes,
        "within": within,
        "drop": drop,
        "recovery": recovery,
        "plans": list(plans),
    }


def test_a_size_target_keeps_its_size_and_tightens_after_each_miss():
    target = Target(bytes=1000)
    over = {**_try(1100, False), "wanted_bytes": 1000}
    under = {**_try(700, True), "wanted_bytes": 1000}
    assert next_try(target, [over], 100.0) == {"byte_target": 990, "recovery": None}
    assert next_try(target, [over, over], 100.0)["byte_target"] == 980
    assert next_try(target, [under], 100.0) == {"byte_target": 1000, "recovery": None}
    assert next_try(target, [{**_try(990, True), "wanted_bytes": 1000}], 100.0) is None


def test_max_drop_learns_the_recovery_from_the_first_try():
    target = Target(max_drop=1.0)
    # one-shot 3.8 points, 4.35 after fine-tuning: the next try allows less than one point
    plans = [{"base_metric": 0.879, "oneshot_metric": 0.841}]
    first = _try(8942, False, drop=4.35, plans=plans)
    assert learned_recovery(first, 100.0) == pytest.approx(3.8 / 4.35, abs=1e-3)
    nxt = next_try(target, [first], 100.0)
    assert nxt["byte_target"] is None and nxt["recovery"] == pytest.approx(0.9 * 3.8 / 4.35, 1e-3)
    # a first try well within: a larger allowance
    easy = _try(20_000, True, drop=0.2, plans=plans)
    assert next_try(target, [easy], 100.0)["recovery"] > 1.0
    # nothing to learn from (no one-shot drop): the size moves instead, by the slack left
    flat = _try(20_000, True, drop=0.2, plans=[{"base_metric": 0.9, "oneshot_metric": 0.9}])
    assert next_try(target, [flat], 100.0) == {"byte_target": 12_000, "recovery": None}
    lossless = _try(20_000, True, drop=-0.1, plans=flat["plans"])
    assert next_try(target, [lossless], 100.0)["byte_target"] == 10_000
    nearly = _try(20_000, True, drop=0.99, plans=flat["plans"])
    assert next_try(target, [nearly], 100.0)["byte_target"] == 18_000


def test_max_drop_bisects_between_passing_and_failing_files_then_stops():
    target = Target(max_drop=1.0)
    tries = [_try(10_000, False, drop=2.0), _try(20_000, True, drop=0.5)]
    assert next_try(target, tries, 100.0) == {"byte_target": 14_142, "recovery": None}
    close = [_try(10_000, False, drop=1.2), _try(10_300, True, drop=0.9)]
    assert next_try(target, close, 100.0) is None


def test_stage_drops_are_each_stages_own():
    metrics = [("0-prune", 0.90), ("1-decompose", 0.905), ("2-quantize", 0.86), ("3-encode", None)]
    drops = stage_drops(0.9, metrics, 100.0)
    assert drops == pytest.approx({"0-prune": 0.0, "1-decompose": -0.5, "2-quantize": 4.5})


def test_a_bit_width_that_failed_under_qat_is_not_planned_again():
    plans = [{"layers": [{"bits": 4}]}, {"layers": [{"bits": 2}, {"bits": 3}, {"bits": None}]}]
    failed = {**_try(9000, False, drop=4.0, plans=plans), "stage_drops": {"2-quantize": 4.1}}
    assert bit_floor(failed, None) == 3  # the last plan's lowest width, 2, failed
    assert bit_floor(failed, 5) == 5  # a floor never falls
    # the drop came from elsewhere (pruning), or the run passed: the floor stays
    pruned = {**failed, "stage_drops": {"0-prune": 3.5, "2-quantize": 0.5}}
    assert bit_floor(pruned, None) is None
    assert bit_floor({**failed, "within": True, "drop": 0.5}, 3) == 3
