"""Careless commands and hostile inputs on the command line (issue 30, items 1, 5, 6, 7, 9):
--force deletes only what jointcomp made, decode never overwrites without --force (nor its own
input), --resume opens only the run's own checkpoints, YAML alias bombs and huge seeds are
refused fast, output names stay inside the output folder, and text from files reaches the
terminal as plain text. Every refusal: exit 2, one `error:` line, no traceback."""

from __future__ import annotations

import gc
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from jointcomp.cli import cli
from tests import hostile

from .conftest import tiny_recipe

GOLDEN = Path(__file__).resolve().parent / "golden" / "quickstart.jcz"
STATE = {"jointcomp": "0", "fingerprint": "0123456789abcdef", "stages": []}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def assert_refused(result: Result, *words: str) -> str:
    """Exit 2, one `error:` line (a recipe's problems follow it, one a line) naming the
    problem, no traceback."""
    text = result.output
    assert result.exit_code == 2, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    assert "Traceback" not in text and "\x1b" not in text, text
    for word in words:
        assert word in text, text
    return errors[0]


def write_recipe(tmp_path: Path, **overrides: Any) -> Path:
    recipe = tiny_recipe(tmp_path, stages=[{"encode": {}}], **overrides)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture()
def no_rmtree(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """shutil.rmtree as the pipeline calls it, recorded and stopped: a regression here must
    not delete anything for real."""
    import jointcomp.pipeline as pipeline

    calls: list[Path] = []

    def record(path: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(Path(path))
        raise RuntimeError("rmtree stopped by the test")

    monkeypatch.setattr(pipeline.shutil, "rmtree", record)
    return calls


# ------------------------------------------------------------------------- 1: run --force


def test_force_keeps_a_users_folder(tmp_path: Path, no_rmtree: list[Path]) -> None:
    recipe = write_recipe(tmp_path)
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("precious")
    result = invoke("run", str(recipe), "-o", str(folder), "--force", "-q")
    assert_refused(result, "not a jointcomp run folder")
    assert (folder / "chapter1.tex").read_text() == "precious" and no_rmtree == []


def test_force_refuses_root_home_cwd_and_their_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_rmtree: list[Path]
) -> None:
    """Even when they hold a state file (so that only this rule protects them)."""
    home, work = tmp_path / "home", tmp_path / "home" / "work"
    work.mkdir(parents=True)
    for place in (tmp_path, home, work):
        (place / "state.json").write_text(json.dumps(STATE))
        (place / "mine.txt").write_text("keep")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    recipe = write_recipe(tmp_path)
    for output, what in (
        ("/", "root"),
        (".", "working directory"),
        (str(work), "working directory"),
        ("~", "home"),
        (str(home), "home"),
        ("..", "home"),
        (str(tmp_path), "holding"),
    ):
        result = invoke("run", str(recipe), "-o", output, "--force", "-q")
        assert_refused(result, "refused", what)
    assert no_rmtree == []
    assert all((p / "mine.txt").read_text() == "keep" for p in (tmp_path, home, work))


def test_force_replaces_a_run_folder(tmp_path: Path, no_rmtree: list[Path]) -> None:
    recipe = write_recipe(tmp_path)
    run_dir = tmp_path / "old-run"
    run_dir.mkdir()
    (run_dir / "state.json").write_text(json.dumps(STATE))
    result = invoke("run", str(recipe), "-o", str(run_dir), "--force", "-q")
    assert no_rmtree == [run_dir], result.output  # the one folder it may replace


# ----------------------------------------------------------------------------- 9: decode


def test_decode_never_overwrites_without_force_nor_its_input(tmp_path: Path) -> None:
    source = tmp_path / "model.jcz"
    shutil.copy(GOLDEN, source)
    existing = tmp_path / "weights.safetensors"
    existing.write_bytes(b"mine")
    assert_refused(invoke("decode", str(source), "--to", str(existing)), "already exists")
    assert existing.read_bytes() == b"mine"
    for spelling in (str(source), str(tmp_path / "." / "model.jcz")):
        for force in ([], ["--force"]):
            assert_refused(invoke("decode", str(source), "--to", spelling, *force), "FILE itself")
    link = tmp_path / "link.jcz"
    link.symlink_to(source)
    assert_refused(invoke("decode", str(source), "--to", str(link), "--force"), "FILE itself")
    assert source.read_bytes() == GOLDEN.read_bytes()
    ok = invoke("decode", str(source), "--to", str(existing), "--force")
    assert ok.exit_code == 0, ok.output
    assert existing.read_bytes()[:8] != b"mine"


# ------------------------------------------------------------------------------ 6: resume


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny run (encode only): its recipe and its folder, whose state records model.jcz
    and its SHA-256."""
    tmp = tmp_path_factory.mktemp("resume")
    recipe = write_recipe(tmp)
    result = invoke("run", str(recipe), "-q")
    assert result.exit_code == 0, result.output
    return recipe, tmp / "run"


def _edit_state(run_dir: Path, change: Any) -> None:
    state = json.loads((run_dir / "state.json").read_text())
    change(state)
    (run_dir / "state.json").write_text(json.dumps(state))


@pytest.fixture()
def fresh_run(finished_run: tuple[Path, Path], tmp_path: Path) -> Any:
    """The finished run restored after each test (tests tamper with it)."""
    run_dir = finished_run[1]
    backup = tmp_path / "backup"
    shutil.copytree(run_dir, backup)
    yield finished_run
    shutil.rmtree(run_dir)
    shutil.copytree(backup, run_dir)


def test_resume_refuses_a_checkpoint_outside_the_run(fresh_run: tuple[Path, Path]) -> None:
    recipe, run_dir = fresh_run
    outside = run_dir.parent / "elsewhere.jcz"
    shutil.copy(run_dir / "model.jcz", outside)
    digest = hashlib.sha256(outside.read_bytes()).hexdigest()
    for name in ("../elsewhere.jcz", str(outside)):

        def point(state: dict, name: str = name) -> None:
            state["stages"][-1].update(checkpoint=name, sha256=digest)

        _edit_state(run_dir, point)
        assert_refused(invoke("run", str(recipe), "--resume", "-q"), "outside the run folder")


def test_resume_refuses_a_changed_checkpoint(fresh_run: tuple[Path, Path]) -> None:
    """Same name, other bytes (a file naming a builder that would run code, had it been
    opened with trust): refused by its hash before it is opened."""
    recipe, run_dir = fresh_run
    original = (run_dir / "model.jcz").read_bytes()
    evil = {"model": {"builder": "os:system", "kwargs": {"command": "touch pwned"}}, "tensors": []}
    (run_dir / "model.jcz").write_bytes(hostile.reseal(evil))
    assert_refused(invoke("run", str(recipe), "--resume", "-q"), "changed since the run")
    assert not (Path.cwd() / "pwned").exists()

    (run_dir / "model.jcz").write_bytes(original)
    _edit_state(run_dir, lambda state: state["stages"][-1].pop("sha256"))
    assert_refused(invoke("run", str(recipe), "--resume", "-q"), "SHA-256")


# -------------------------------------------------------------------------- 7: YAML bombs

# the classic "billion laughs": 9 levels of 10 aliases, 10^9 strings once expanded
BOMB = "\n".join(
    ["lol1: &lol1 [" + ", ".join(['"lol"'] * 10) + "]"]
    + [f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * 10) + "]" for i in range(2, 10)]
)


def _bounded(result_of: Any) -> Result:
    """Run a command measuring its time and how far the process's resident memory grows at
    its peak (the high-water mark reset first, where Linux allows it)."""
    import jointcomp.audit.report  # imported before timing: what `run` imports
    import jointcomp.pipeline  # noqa: F401

    gc.collect()
    exact = hostile._reset_peak()
    before = hostile._status()
    start = time.perf_counter()
    result = result_of()
    seconds = time.perf_counter() - start
    after = hostile._status()
    peak = after["VmHWM"] if exact else max(after["VmHWM"], before["VmRSS"])
    assert seconds < hostile.LIMIT_SECONDS, seconds
    assert (peak - before["VmRSS"]) / 1024 < hostile.LIMIT_MB, (peak - before["VmRSS"]) / 1024
    return result


def test_alias_bomb_is_refused_fast(tmp_path: Path) -> None:
    assert len(BOMB) < 1300
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB + "\n")
    assert_refused(_bounded(lambda: invoke("validate", str(path))), "alias")


def test_alias_bomb_in_model_kwargs_is_refused_before_the_run(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, stages=[{"encode": {}}])
    text = yaml.safe_dump(recipe).replace("model:\n", "model:\n  kwargs: {lol: *lol9}\n", 1)
    path = tmp_path / "recipe.yaml"
    path.write_text(BOMB + "\n" + text)
    assert_refused(_bounded(lambda: invoke("validate", str(path))), "alias")
    assert_refused(_bounded(lambda: invoke("run", str(path), "-q")), "alias")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------- 9: seeds, names, output


def test_huge_seed_is_refused_by_validate_and_before_the_run(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path)
    for seed in ("9" * 40, str(2**64), "-1"):
        assert_refused(invoke("validate", str(recipe), "--set", f"seed={seed}"), "seed")
        assert_refused(invoke("run", str(recipe), "--set", f"seed={seed}", "-q"), "seed")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "override",
    [
        "stages.0.encode.filename=../../escape.jcz",
        "stages.0.encode.filename=/tmp/escape.jcz",
        "stages.0.encode.filename=..",
        "stages.0.encode.filename=a/b.jcz",
        "name=../../escape",
        "name=/tmp/escape",
    ],
)
def test_output_names_stay_inside_the_output_folder(
    tmp_path: Path, override: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the default output, runs/NAME, is relative
    recipe = write_recipe(tmp_path, output=None)
    assert_refused(invoke("validate", str(recipe), "--set", override), "plain")
    assert_refused(invoke("run", str(recipe), "--set", override, "-q"), "plain")


def test_output_tilde_is_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    recipe = write_recipe(tmp_path)
    result = invoke("validate", str(recipe), "--set", "output=~/runs/q")
    assert result.exit_code == 0, result.output
    assert f"output: {tmp_path / 'home' / 'runs' / 'q'}" in result.output


# ------------------------------------------------------ 5: markup and terminal escapes

MARKUP = "[/][link=http://evil.example]block1.0.weight[/link]\x1b[2J\x1b]0;pwned\x07[bold]x"


def _markup_file(tmp_path: Path, kwargs: bool = True) -> Path:
    """The quickstart file with markup and escape sequences in its kwargs, an edit path and a
    table entry's name (checksums resealed)."""
    header, payload = hostile.parts(GOLDEN.read_bytes())
    if kwargs:
        header["model"]["kwargs"]["note"] = MARKUP
    header["model"]["edits"].append([MARKUP, "Identity", {}])
    header["tensors"][3]["n"] = MARKUP
    path = tmp_path / "markup.jcz"
    path.write_bytes(hostile.reseal(header, payload))
    return path


def test_file_text_is_printed_literally(tmp_path: Path) -> None:
    path = _markup_file(tmp_path)
    shown = invoke("inspect", str(path))
    assert shown.exit_code == 0, shown.output
    assert "\x1b" not in shown.output and "\x07" not in shown.output
    assert "[link=http://evil.example]block1.0.weight[/link]" in shown.output
    assert "\\x1b[2J" in shown.output  # the escape written out, not sent
    as_json = invoke("inspect", "--json", str(path))
    assert as_json.exit_code == 0 and "\x1b" not in as_json.output


def test_error_messages_from_files_are_printed_literally(tmp_path: Path) -> None:
    """The error handler prints a message holding `[/]` (rich markup would crash on it)."""
    path = _markup_file(tmp_path, kwargs=False)
    for command in (["decode", str(path), "--to", str(tmp_path / "x.st")], ["inspect"]):
        if command == ["inspect"]:
            command = ["inspect", "--structure", str(path)]
        line = assert_refused(invoke(*command))
        assert "[/]" in line or "\\x1b" in line or "malformed" in line, line
    header, payload = hostile.parts(GOLDEN.read_bytes())
    header["model"]["builder"] = MARKUP
    bad = tmp_path / "builder.jcz"
    bad.write_bytes(hostile.reseal(header, payload))
    line = assert_refused(invoke("decode", str(bad), "--to", str(tmp_path / "y.st")))
    assert "[/][link=http://evil.example]" in line and "\\x1b" in line
