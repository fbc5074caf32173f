"""Shared fixtures. Tests run with one torch thread: the CI machine has two cores and pytest-xdist
runs two workers, and oversubscribed OpenMP threads slow training by an order of magnitude."""

from __future__ import annotations

import atexit
import copy
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
# Baselines cache into a per-process folder, never the user's ~/.cache — set at import so that
# module- and session-scoped fixtures see it too.
_CACHE = tempfile.mkdtemp(prefix="jointcomp-test-cache-")
os.environ["JOINTCOMP_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)

import torch  # noqa: E402  (after OMP_NUM_THREADS is set)

torch.set_num_threads(1)

from torch import nn  # noqa: E402

# .ci/run sets JOINTCOMP_CI=1 after installing Fashion-MNIST and Chromium: there a test that
# needs one runs (and fails if it is missing) instead of skipping; elsewhere it skips, saying why.
IN_CI = os.environ.get("JOINTCOMP_CI") == "1"
FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION_ROOT / "train-images-idx3-ubyte.gz").exists() and not IN_CI,
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not IN_CI,
    reason="Debian's chromium is not installed (apt-get install chromium)",
)


def tiny_recipe(tmp_path: Path, stages: list | None = None, **overrides: object) -> dict:
    """A recipe that runs in seconds: small_cnn on digits, one training epoch."""
    recipe = {
        "name": "tiny",
        "seed": 0,
        "threads": 1,
        "model": {"builder": "zoo:small_cnn", "weights": "train"},
        "data": {"dataset": "digits", "test_split": 0.2, "val_split": 0.1, "batch_size": 64},
        "train": {"epochs": 2, "lr": 0.003, "distill": {"temperature": 4.0, "alpha": 0.5}},
        "stages": stages
        if stages is not None
        else [{"prune": {"ratio": 0.5, "finetune": {"epochs": 1}}}, {"encode": {"codec": "auto"}}],
        "output": str(tmp_path / "run"),
        # the deployed runtimes (fast, onnxruntime) are timed by tests/test_audit_runtimes.py
        "audit": {"batch_sizes": [1], "min_run_time": 0.02, "rounds": 1, "runtimes": ["exact"]},
    }
    recipe.update(overrides)
    return recipe


# ----------------------------------------------------------------------------- the file holds it


@dataclass
class Encoded:
    """What ``encode`` was given: a CPU copy of the model (eval mode), taken before encoding,
    the float storage its config asked for, and the file it wrote."""

    model: nn.Module
    float_storage: str
    path: Path


@contextmanager
def spy_encode() -> Iterator[list[Encoded]]:
    """While open, every ``encode`` a pipeline run or ``jointcomp.compress`` calls is recorded
    in the list it yields.

    ``RunResult.model`` and what ``compress`` returns are decoded from the file, so comparing a
    load with them proves nothing: compare with the model encode was given
    (:func:`assert_file_holds`)."""
    import jointcomp.api
    import jointcomp.pipeline
    from jointcomp.stages.encode import encode as real

    seen: list[Encoded] = []

    def spy(model: nn.Module, config, *, path, **kwargs):
        before = copy.deepcopy(model).to("cpu").eval()
        seen.append(Encoded(before, config.float_storage, Path(path)))
        return real(model, config, path=path, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jointcomp.pipeline, "encode", spy)
        mp.setattr(jointcomp.api, "encode", spy)
        yield seen


@pytest.fixture
def encoded() -> Iterator[list[Encoded]]:
    """The models a pipeline run in this test handed to ``encode`` (see :func:`spy_encode`)."""
    with spy_encode() as seen:
        yield seen


def _log_grid_names(path: Path) -> set[str]:
    """Tensors the file stores as log-grid codes (exact even under f16 storage)."""
    from jointcomp.container import open_artifact

    artifact = open_artifact(path, trust=True)
    exact = {e["n"] for e in artifact.entries if e.get("st", "").startswith("l")}
    return exact | {alias for alias, name in artifact.manifest.ties.items() if name in exact}


def promised_model(before: Encoded) -> nn.Module:
    """The model the file must hold: the one encode was given, its float32 tensors rounded to
    f16 where the config stores floats as f16 (log-grid codes stay exact)."""
    if before.float_storage != "f16":
        return before.model
    exact = _log_grid_names(before.path)
    state = {
        name: t.to(torch.float16).to(torch.float32)
        if t.dtype == torch.float32 and name not in exact
        else t
        for name, t in before.model.state_dict().items()
    }
    model = copy.deepcopy(before.model)
    model.load_state_dict(state)
    return model.eval()


def assert_same_tensors(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    """The same tensor names in the same order, every tensor bit for bit (dtype included)."""
    assert list(theirs) == list(ours), "the file's tensors are not the model's"
    for name, tensor in ours.items():
        assert theirs[name].dtype == tensor.dtype, name
        assert torch.equal(theirs[name], tensor), f"{name} did not survive the file bit for bit"


def assert_file_holds(before: Encoded, inputs: torch.Tensor, path: Path | None = None) -> nn.Module:
    """``jointcomp.load`` of the file equals the model encode was given: the same tensor names,
    every tensor bit for bit (f16 storage: the f16-rounded value, except log-grid codes) and
    the same outputs on ``inputs``. Returns the loaded module."""
    import jointcomp

    loaded = jointcomp.load(Path(path or before.path), trust=True)
    reference = promised_model(before)
    assert_same_tensors(reference.state_dict(), loaded.state_dict())
    with torch.no_grad():
        ref_out, out = reference(inputs), loaded.eval()(inputs)
    if not isinstance(out, torch.Tensor):  # e.g. a Hugging Face output
        ref_out, out = ref_out.logits, out.logits
    assert torch.equal(out, ref_out), "the loaded model's outputs differ from the encoded one's"
    return loaded


def assert_learned(
    report: dict, *, baseline_floor: float, final_floor: float, max_drop: float
) -> None:
    """The run trained: its reported test top-1 (baseline and file) clears stated floors, and
    the file is within ``max_drop`` (a fraction: 0.3 is 30 points) of the baseline. Ten digit
    classes put chance at 0.1; a pipeline that does not train stays there."""
    base, final = report["baseline"]["accuracy"], report["final"]["accuracy"]
    assert base >= baseline_floor, f"baseline test top-1 {base:.1%} < {baseline_floor:.0%}"
    assert final >= final_floor, f"the file's test top-1 {final:.1%} < {final_floor:.0%}"
    assert base - final <= max_drop, f"test top-1 fell {base - final:.1%} (> {max_drop:.0%})"
