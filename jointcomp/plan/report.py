"""The plan's section of a run's report: per try, the byte target, the file's bytes and the
validation drop; per layer of the final plan, the predicted bytes beside those the written file
measures; planning seconds beside the stages' seconds."""

from __future__ import annotations

from typing import Any


def planned_vs_measured(planning: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """``planning`` (the closed loop's tries and plans) joined with the audit's ``report``
    (its ``layers`` and ``final`` row).

    >>> planning = {"tries": [{"plans": [{"layers": [{"name": "fc", "predicted_bytes": 90,
    ...     "what": "4-bit"}], "predicted_bytes": 150, "seconds": 1.0}],
    ...     "planning_seconds": 1.0, "stage_seconds": 9.0}], "best_try": 1}
    >>> report = {"layers": [{"name": "fc", "bytes": 100}], "final": {"bytes": 170}}
    >>> out = planned_vs_measured(planning, report)
    >>> out["layers"][0]["measured_bytes"], out["file"]["measured_bytes"]
    (100, 170)
    """
    out = dict(planning)
    best = planning["tries"][planning["best_try"] - 1]
    layers = report.get("layers", [])

    def measured(name: str) -> int | None:  # a factorized layer's rows are its sub-layers'
        mine = [r["bytes"] for r in layers if r["name"] == name or r["name"].startswith(name + ".")]
        return sum(mine) if mine else None

    last = best["plans"][-1] if best["plans"] else None
    rows = []
    if last is not None:
        for layer in last["layers"]:
            rows.append(
                {
                    "name": layer["name"],
                    "what": layer["what"],
                    "predicted_bytes": layer["predicted_bytes"],
                    "measured_bytes": measured(layer["name"]),
                }
            )
    out["layers"] = rows
    out["file"] = {
        "predicted_bytes": last["predicted_bytes"] if last else None,
        "first_plan_bytes": best["plans"][0]["predicted_bytes"] if best["plans"] else None,
        "measured_bytes": report.get("final", {}).get("bytes"),
    }
    out["planning_seconds"] = round(sum(t["planning_seconds"] for t in planning["tries"]), 3)
    out["stage_seconds"] = round(sum(t["stage_seconds"] for t in planning["tries"]), 3)
    return out
