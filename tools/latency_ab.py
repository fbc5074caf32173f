"""Batch-1 CPU latency of a run's baseline against its written file, measured interleaved.

    python tools/latency_ab.py runs/resnet20-fashion-budget [--rounds 7] [--batch 1]

On a shared or virtual machine the speed drifts within seconds, so one timing of the baseline
at the start of a run and one of the file at its end can disagree by 2×. This alternates the
two models, ``--rounds`` times each (torch.utils.benchmark, one thread, inference mode), and
prints every round and the medians; the verdict uses the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run folder (holds recipe.json and model.jcz)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=1.0, help="timing per model per round")
    args = ap.parse_args(argv)

    from jointcomp.audit.measure import latency_ms
    from jointcomp.baseline import get_baseline, recipe_data
    from jointcomp.container import open_artifact
    from jointcomp.recipe import validate_recipe

    torch.set_num_threads(1)
    raw = json.loads((args.run / "recipe.json").read_text(encoding="utf-8"))
    recipe = validate_recipe(raw, raw.get("name"))
    data, kwargs = recipe_data(recipe)
    base, _ = get_baseline(recipe, data, kwargs, device=torch.device("cpu"), log=lambda *_: None)
    final = open_artifact(args.run / "model.jcz", trust=True).model.eval()
    x = torch.randn(args.batch, *data.input_shape)
    times: dict[str, list[float]] = {"baseline": [], "file": []}
    for i in range(args.rounds):
        for name, model in (("baseline", base.eval()), ("file", final)):
            times[name].append(latency_ms(model, x, min_run_time=args.seconds))
        print(
            f"round {i + 1}: baseline {times['baseline'][-1]:.3f} ms, "
            f"file {times['file'][-1]:.3f} ms",
            flush=True,
        )
    b, f = statistics.median(times["baseline"]), statistics.median(times["file"])
    print(
        f"median batch-{args.batch} latency: baseline {b:.3f} ms, file {f:.3f} ms "
        f"({b / f:.2f}× {'faster' if f <= b else 'slower'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
