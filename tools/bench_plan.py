"""What the planner's sensitivity sweep costs, with and without its two shortcuts: prefix replay
(the modules that ran before the measured layer return their recorded outputs) and, under a
distillation task, one run of the reference model per batch list. Each model is planned with
both off, then both on, alternately, ``--rounds`` times; the table gives the fastest of each and
whether the two plans are the same (they must be: the shortcuts change no number).

    python tools/bench_plan.py     # ResNet-20 (classify), a BERT of MiniLM's shape (distill)
    python tools/bench_plan.py --rounds 1 --bert-layers 2

Random weights and inputs: the cost of a sweep depends on the shapes, not on what was learned.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from readme_tables import md_table

from jointcomp.batches import Batches
from jointcomp.context import Context
from jointcomp.plan import Target, make_plan
from jointcomp.plan import replay as replay_module
from jointcomp.stages import DecomposeConfig, PruneConfig, QuantizeConfig
from jointcomp.tasks import DistillTask
from jointcomp.training import evaluate_loss, frozen_copy

HEADERS = ["model", "task", "planned layers", "plain (s)", "shortcuts (s)", "speed-up", "same plan"]


@contextlib.contextmanager
def plain() -> Any:
    """Neither shortcut: every measurement runs the whole model (and the reference)."""
    before, loss = replay_module.PrefixReplay.before, Context.loss
    replay_module.PrefixReplay.before = lambda self, layer: contextlib.nullcontext()
    Context.loss = lambda self, model, batches: evaluate_loss(
        model, batches, self.device, self.task, self.reference
    )
    try:
        yield
    finally:
        replay_module.PrefixReplay.before, Context.loss = before, loss


def resnet20(batch: int) -> tuple[str, str, Any, list, Context]:
    from jointcomp.models import build_model

    model = build_model("zoo:resnet20", {"in_channels": 1, "image_size": 28}).eval()
    data = [(torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))) for _ in range(2)]
    stages = [PruneConfig(ratio=0.3), DecomposeConfig(rank=0.5), QuantizeConfig(ptq={})]
    context = Context(data=Batches(data, data, batch_size=batch))
    return "ResNet-20", "classify", model, stages, context


def bert(batch: int, layers: int) -> tuple[str, str, Any, list, Context]:
    import transformers

    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=layers, num_attention_heads=12,
        intermediate_size=1536,
    )  # fmt: skip
    model = transformers.BertModel(config).eval()
    data = [(torch.randint(0, 30522, (batch, 48)),) for _ in range(2)]
    stages = [
        PruneConfig(ratio=0.5, scope={"include": ["*.intermediate.dense"]}),
        DecomposeConfig(embeddings={"rank": 96, "scope": {"include": ["*.word_embeddings"]}}),
        QuantizeConfig(qat={}),  # as minilm-target: QAT's max-abs grid sizes the bits
    ]
    context = Context(
        data=Batches(data, data, batch_size=batch), task=DistillTask(output="pooler_output"),
        reference=frozen_copy(model),
    )  # fmt: skip
    return f"BERT {layers}×384", "distill", model, stages, context


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32, help="sensitivity batch size")
    ap.add_argument("--bert-layers", type=int, default=6)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for make in (lambda: resnet20(args.batch), lambda: bert(args.batch, args.bert_layers)):
        torch.manual_seed(0)
        name, task, model, stages, context = make()
        dense = sum(p.numel() for p in model.parameters()) * 4
        target = Target(bytes=dense // 10, batches=2, batch_size=args.batch)
        times: dict[bool, list[float]] = {False: [], True: []}
        plans: dict[bool, Any] = {}
        for _ in range(args.rounds):
            for fast in (False, True):
                with contextlib.nullcontext() if fast else plain():
                    start = time.perf_counter()
                    plan = make_plan(model, stages, target, context)
                    times[fast].append(time.perf_counter() - start)
                plans[fast] = [(c.keep, c.rank, c.bits) for c in plan.layers]
                print(f"{name}: {'shortcuts' if fast else 'plain'} {times[fast][-1]:.1f} s",
                      file=sys.stderr)  # fmt: skip
        slow, quick = min(times[False]), min(times[True])
        rows.append(
            [name, task, str(len(plans[True])), f"{slow:.1f}", f"{quick:.1f}",
             f"{slow / quick:.2f}×", "yes" if plans[True] == plans[False] else "NO"]
        )  # fmt: skip
    print(md_table(HEADERS, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
