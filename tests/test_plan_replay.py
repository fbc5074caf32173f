"""Prefix replay in the planner's sensitivity sweep: with the modules that ran before a layer
replaced by their recorded outputs, the loss of every change to that layer is the one the whole
model gives (residual blocks with in-place ReLUs, a BERT encoder, a tied head), and the replayed
modules really do not run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jointcomp.plan.replay import PrefixReplay


def _layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m) in (nn.Linear, nn.Conv2d)]


def _check_every_layer(model: nn.Module, run) -> int:
    """Each layer's weight halved: replayed loss == full loss; returns the replayed count."""
    layers = _layers(model)
    replay = PrefixReplay(model, layers)
    base = replay.record(run)
    replayed = 0
    for layer in layers:
        saved = layer.weight.detach().clone()
        with torch.no_grad():
            layer.weight.mul_(0.5)
        try:
            full = run()
            with replay.before(layer):  # twice: a sweep measures many settings per layer
                fast, again = run(), run()
        finally:
            with torch.no_grad():
                layer.weight.copy_(saved)
        assert fast == pytest.approx(full, rel=1e-6, abs=1e-9) and again == fast
        assert full != pytest.approx(base, rel=1e-9, abs=1e-12)  # the change is seen
        replayed += bool(replay.skipped(layer))
    assert run() == base  # nothing left changed
    return replayed


class Block(nn.Module):
    """torchvision's BasicBlock: in-place ReLUs, and the shortcut (run after the main branch)
    added in place to the main branch's output."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.downsample(x)  # bn2's output, replayed while downsample is measured
        return self.relu(out)


def test_replayed_losses_equal_full_ones_in_residual_blocks_with_inplace_relu() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(inplace=True), Block(8), Block(8),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    ).eval()  # fmt: skip
    batches = [(torch.randn(4, 1, 12, 12), torch.randint(0, 10, (4,))) for _ in range(2)]

    @torch.no_grad()
    def run() -> float:
        return sum(float(F.cross_entropy(model(x), y)) for x, y in batches)

    replayed = _check_every_layer(model, run)
    assert replayed == len(_layers(model)) - 1  # every layer but the stem


def test_replay_skips_the_work_before_the_layer() -> None:
    calls = []

    class Counted(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(0)
            return super().forward(x)

    torch.manual_seed(0)
    model = nn.Sequential(Counted(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Linear(16, 2))
    x = torch.randn(5, 8)
    replay = PrefixReplay(model, [model[3]])
    replay.record(lambda: model(x))
    calls.clear()
    with replay.before(model[3]):
        model(x)
    assert calls == [] and replay.skipped(model[3]) == ["0", "1", "2"]
    model(x)  # restored: runs again
    assert calls == [0]
    with replay.before(model[3]), pytest.raises(RuntimeError, match="batches changed"):
        model(torch.randn(7, 8))


def test_replay_in_a_bert_encoder_and_with_a_tied_head() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=48, max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(0)
    bert = transformers.BertModel(config).eval()
    ids = [torch.randint(0, 60, (3, 10)) for _ in range(2)]
    probe = torch.randn(32)  # layer norms keep the mean square: project instead

    @torch.no_grad()
    def run() -> float:
        outs = [bert(input_ids=i) for i in ids]
        return sum(float((o.last_hidden_state @ probe).sum() + o.pooler_output.sum()) for o in outs)

    assert _check_every_layer(bert, run) >= 10

    class Tied(nn.Module):  # the head's weight is the embedding table
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(20, 8)
            self.mix = nn.Linear(8, 8)
            self.head = nn.Linear(8, 20, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, i: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.mix(self.embed(i))))

    tied = Tied().eval()
    tokens = torch.randint(0, 20, (4, 6))
    replay = PrefixReplay(tied, [tied.head])
    replay.record(lambda: tied(tokens))
    assert replay.skipped(tied.head) == ["mix"]  # not the embedding: it changes with the head
