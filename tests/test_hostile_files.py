"""Hostile .jcz files (issue 30): every case of tests/hostile.py — semantic attacks with their
checksums recomputed — opened in one subprocess under its resource limits (address space
capped, the network blocked), each refused with a FormatError (or loading the very same model,
where the edit is harmless) within 2 s and +256 MB; torchvision builders never fetch weights,
whatever a file's kwargs ask.

The 2 s bound is on the CPU time the reader's process spends on a case (time.process_time,
every thread), not on wall time: CI runs the suite with `pytest -n 2` on two cores, where a
case that costs 1 s of CPU can take 2.4 s of wall time while other tests run. A real hang is
still caught by the wall clock: a case running past hostile.HANG_SECONDS (20 s) is stopped and
fails as "hang". Memory is the growth of the process's peak RSS (+256 MB).
test_structured_fuzz_smoke runs 150 cases of tools/fuzz_jcz.py, the structured fuzzer."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests import hostile

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, Any]]:
    """Every case's outcome, seconds and memory growth, measured by `python -m tests.hostile`
    in a process of its own (its memory capped by the runner: +3 GiB of address space)."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.hostile", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {row["name"]: row for row in rows}


def test_every_case_ran(results: dict[str, dict[str, Any]]) -> None:
    assert sorted(results) == sorted(c.name for c in hostile.CASES)


@pytest.mark.parametrize("case", hostile.CASES, ids=lambda c: c.name)
def test_hostile_file(case: hostile.Case, results: dict[str, dict[str, Any]]) -> None:
    row = results[case.name]
    assert row["outcome"] == case.expect, f"{case.item}: {row['outcome']}: {row['message']}"
    assert row["cpu_seconds"] < hostile.LIMIT_SECONDS, f"{case.item}: {row['cpu_seconds']} s CPU"
    assert row["seconds"] < hostile.HANG_SECONDS, f"{case.item}: {row['seconds']} s wall"
    assert row["mb"] < hostile.LIMIT_MB, f"{case.item}: +{row['mb']} MB"


def test_structured_fuzz_smoke() -> None:
    """150 structured mutations of the three base files (tools/fuzz_jcz.py, fixed seed; about
    10 s): each refused, the same model, or a valid file of another model where a value-bearing
    field changed — none escaping, hanging, crashing or loading silently wrong, each under 2 s
    of CPU and +256 MB. The 10,000-case run is the tool's own (docs/FORMAT.md)."""
    proc = subprocess.run(
        [sys.executable, "tools/fuzz_jcz.py", "--count", "150", "--seed", "1", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["cases"] == 150
    assert summary["failures"] == 0, summary["examples"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["outcomes"]["refused"] > 75  # most mutations break the file
    assert summary["slow"] == 0 and summary["heavy"] == 0, (summary["max_cpu"], summary["max_mb"])


def test_the_issue_items_are_covered() -> None:
    """Items 2, 3, 4 and 8 of issue 30 are file attacks (here); 1, 5, 6, 7 and 9 are commands
    (tests/test_hostile_cli.py)."""
    items = {c.item.split(":")[0] for c in hostile.CASES}
    assert {"2", "3", "4", "8"} <= {i for item in items for i in item.split("/")}


def test_refusals_name_the_problem(results: dict[str, dict[str, Any]]) -> None:
    """A refusal says what is wrong, not that the reader fell over (the last-resort boundary's
    UNEXPECTED wording is its own outcome, so it never counts as an error here)."""
    refused = [r for r in results.values() if r["outcome"] == "error"]
    assert refused and all(r["message"] for r in refused)


# ------------------------------------------------------------------- torchvision, offline

HOSTILE_KWARGS = [
    {"weights": "DEFAULT"},
    {"weights": "IMAGENET1K_V1", "progress": True},
    {"weights_backbone": "DEFAULT"},
    {"pretrained": True},
    {"pretrained_backbone": True},
    {"weights": {"url": "http://example.com/x.pth"}},
]


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every way out of the process raises, and the attempt is recorded."""
    import torch.hub

    attempts: list[str] = []

    def refuse(what: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            attempts.append(what)
            raise OSError(f"network blocked in this test ({what})")

        return call

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(urllib.request, "urlopen", refuse("urlopen"))
    monkeypatch.setattr(torch.hub, "urlopen", refuse("torch.hub.urlopen"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse("download_url_to_file"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse("load_state_dict_from_url"))
    return attempts


def _downloads_by_default(name: str) -> bool:
    """Whether torchvision's builder ``name`` has a weights argument whose default is not
    None (the detection and segmentation models' ``weights_backbone``)."""
    import inspect

    import torchvision.models

    params = inspect.signature(torchvision.models.get_model_builder(name)).parameters
    return any(
        p.default not in (None, False, inspect.Parameter.empty)
        for k, p in params.items()
        if "weights" in k or "pretrained" in k
    )


def _open_every_way(image: bytes) -> list[str]:
    """load, and read the table as `inspect --structure` does (the module built for its
    names); each outcome "ok" or "refused", anything else raised."""
    from jointcomp.container import open_artifact, read_header
    from jointcomp.container.artifact import UNEXPECTED
    from jointcomp.errors import FormatError

    outcomes = []
    for open_it in (open_artifact, read_header):
        try:
            open_it(image)
            outcomes.append("ok")
        except FormatError as exc:
            assert not str(exc).startswith(UNEXPECTED), str(exc)
            outcomes.append("refused")
    return outcomes


def test_torchvision_weights_kwargs_are_refused_offline(offline: list[str]) -> None:
    """Every allow-listed torchvision builder, every way of asking for weights: refused
    before anything is built, and no connection attempted."""
    import torchvision.models

    names = torchvision.models.list_models()
    assert len(names) > 100
    for name in names:
        for kwargs in HOSTILE_KWARGS:
            image = hostile.reseal(hostile._implied_first(f"torchvision:{name}", **kwargs))
            assert _open_every_way(image) == ["refused", "refused"], (name, kwargs)
    assert offline == []


def test_torchvision_default_backbones_never_download(offline: list[str]) -> None:
    """The builders whose defaults would download a backbone (weights_backbone=IMAGENET1K_V1):
    built with every weights argument None — a clean load or a refusal, never a fetch."""
    import torchvision.models

    risky = [n for n in torchvision.models.list_models() if _downloads_by_default(n)]
    assert "fasterrcnn_mobilenet_v3_large_320_fpn" in risky and "lraspp_mobilenet_v3_large" in risky
    outcomes = {}
    for name in risky:
        for kwargs in ({}, {"progress": True}):
            image = hostile.reseal(hostile._implied_first(f"torchvision:{name}", **kwargs))
            outcomes[name] = _open_every_way(image)
    assert offline == []
    assert outcomes["lraspp_mobilenet_v3_large"] == ["ok", "ok"]  # small enough to load


def test_inspect_builds_nothing_without_structure(
    offline: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`jointcomp inspect FILE` shows what the header states; it builds no module (so names no
    builder a chance to run or download) unless --structure."""
    import jointcomp.container.artifact as artifact
    import jointcomp.models.resolve as resolve
    from jointcomp.cli import cli

    def no_build(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("inspect built a module")

    monkeypatch.setattr(artifact, "build_reference", no_build)
    monkeypatch.setattr(resolve, "build_model", no_build)
    for builder, kwargs in (
        ("torchvision:fasterrcnn_mobilenet_v3_large_fpn", {"weights_backbone": "DEFAULT"}),
        ("torchvision:lraspp_mobilenet_v3_large", {}),
        ("os:system", {"command": "echo pwned"}),
    ):
        path = tmp_path / "x.jcz"
        path.write_bytes(hostile.reseal(hostile._implied_first(builder, **kwargs)))
        for extra in ([], ["--json"]):
            result = CliRunner().invoke(cli, ["inspect", *extra, str(path)])
            assert result.exit_code == 0, result.output
    assert offline == []
