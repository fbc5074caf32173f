"""Re-measure every table of docs/RESULTS.md and rewrite each in place.

    python tools/reproduce.py                   # every table: run its commands, rewrite the file
    python tools/reproduce.py --only anchors    # one table (repeatable)
    python tools/reproduce.py --dry-run         # list the commands, run nothing
    python tools/reproduce.py --quick           # small runs; prints tables, RESULTS.md untouched
    python tools/reproduce.py --quick --results /tmp/RESULTS.md   # ... or writes that copy
    python tools/reproduce.py --only anchors --last-step          # re-table runs already on disk

Each table lives between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` in the results file
(``--results FILE``, default docs/RESULTS.md); only that block is replaced. A table whose tool is
missing, whose command fails, or whose markers the file lacks is skipped with a message (the
others still run). Exit status: 0 when every chosen table was rewritten (or printed, with
--quick), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from anchors_table import MODELS
from readme_tables import last_markdown_table, markdown_tables, md_table, replace_block

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "RESULTS.md"  # the file whose tables are rewritten by default
PY = "python"  # replaced by sys.executable when run, shown as "python" in listings
QUICK_SET = ("train.max_batches=20",)  # --set for recipes: short baseline, short fine-tunes

Command = tuple[str, ...]


def codecs_markdown(stdout: str) -> str:
    """bench_codecs.py --json rows → one Markdown table."""
    rows = json.loads(stdout[stdout.index("[") :])
    out = []
    for r in rows:
        if "skipped" in r:
            continue
        coder = r["coder"] + (f" → {r['chosen']}" if "chosen" in r else "")
        out.append(
            [
                r["source"],
                coder,
                f"{r['entropy_bits']:.3f}",
                f"{r['coded_bits']:.3f}",
                r["side_bytes"],
                f"{r['encode_msym_s']:.1f}",
                f"{r['decode_msym_s']:.1f}",
                "yes" if r["exact"] else "NO",
            ]
        )
    headers = ["source", "coder", "H0 bits", "coded bits", "side B", "enc M/s", "dec M/s", "exact"]
    return md_table(headers, out)


def markdown(stdout: str) -> str:
    table = last_markdown_table(stdout)
    if table is None:
        raise ValueError("the last command printed no Markdown table")
    return table


@dataclass(frozen=True)
class Table:
    """One results table: the tools it needs, its commands (full and quick) and how the last
    command's stdout becomes the block's Markdown."""

    name: str
    tools: tuple[str, ...]
    commands: tuple[Command, ...]
    quick: tuple[Command, ...]
    extract: Callable[[str], str] = markdown
    note: str = field(default="")


def _tool(script: str, *args: str) -> Command:
    return (PY, f"tools/{script}", *args)


def _anchor_commands(quick: bool) -> tuple[Command, ...]:
    """Every jointcomp and Deep Compression run of the anchors table, NNCodec, then the table."""
    runs = "runs/quick" if quick else "runs"
    cmds: list[Command] = []
    for m in MODELS:
        cmds += [r.command(runs, QUICK_SET if quick else ()) for r in m.runs]
        nnc = _tool("bench_nncodec.py", "--model", m.key)
        if quick:
            nnc += ("--out", f"{runs}/{m.nncodec}", "--quick", "--set", *QUICK_SET)
        cmds.append(nnc)
    cmds.append(_tool("anchors_table.py", "--runs", runs))
    return tuple(cmds)


def all_tables(stdout: str) -> str:
    tables = markdown_tables(stdout)
    if not tables:
        raise ValueError("the last command printed no Markdown table")
    return "\n\n".join(tables)


# The bundled recipes of the recipes table, with the overrides their rows were run with.
RECIPE_RUNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("quickstart", ()),
    ("lenet5-fashion-prune", ()),
    ("lenet5-fashion-lrs", ()),
    ("lenet5-fashion-joint", ()),
    ("deep-compression-lenet5", ()),
    ("lenet300-fashion-joint", ()),
    ("deep-compression-lenet300", ()),
    ("resnet20-fashion-budget", ("data.limit=10000",)),  # full data: hours on 2 CPU cores
    # resnet32-fashion-tbasis: the T-Basis table's quantized row (its 6,000-image protocol)
)


def _recipe_commands(quick: bool) -> tuple[Command, ...]:
    runs = "runs/quick" if quick else "runs"
    cmds: list[Command] = []
    for name, overrides in RECIPE_RUNS:
        cmd: Command = ("jointcomp", "run", f"recipes/{name}.yaml", "--force")
        for o in (*overrides, *(QUICK_SET if quick else ())):
            cmd += ("--set", o)
        if quick:
            cmd += ("--set", f"output={runs}/{name}")
        cmds.append(cmd)
    cmds.append(_tool("recipes_table.py", "--runs", runs, *(n for n, _ in RECIPE_RUNS)))
    return tuple(cmds)


# The T-Basis study: float T-Basis rows (a sweep of B/R together), plain TT rows (a sweep of
# the rank), and the bundled recipe's quantized row, all on the same 6,000-image baseline.
TBASIS_FLOAT = "recipes/studies/resnet32-fashion-tbasis-float.yaml"
TBASIS_TT = "recipes/studies/resnet32-fashion-tt.yaml"
TBASIS_RECIPE = "recipes/resnet32-fashion-tbasis.yaml"
TBASIS_PROTOCOL = (  # the bundled recipe at the study's protocol (docs/RESULTS.md)
    "data.limit=6000",
    "train.epochs=10",
    "stages.0.share.finetune.epochs=3",
    "stages.1.quantize.qat.finetune.epochs=18",
)
TBASIS_QUICK = (  # tiny: 1,000 images, 600 validation images, one epoch, 20 fit steps
    "data.limit=1000",
    "data.val_split=0.01",
    "train.epochs=1",
)


def _sets(*overrides: str) -> Command:
    """``--set`` options, one per key (a later override of a key replaces an earlier one)."""
    merged = {o.partition("=")[0]: o for o in overrides}
    return tuple(part for o in merged.values() for part in ("--set", o))


def _tbasis_commands(quick: bool) -> tuple[Command, ...]:
    out = "runs/quick/tbasis-study" if quick else "runs/tbasis-study"
    pairs, ranks = ("16,8", "5") if quick else ("32,16,8,4", "5,2")
    share = ("stages.0.share.finetune.epochs=1", "stages.0.share.fit_steps=20") if quick else ()
    tt = ("stages.0.decompose.finetune.epochs=1",) if quick else ()
    qat = ("stages.1.quantize.qat.finetune.epochs=1",) if quick else ()
    tiny = TBASIS_QUICK if quick else ()
    varied = ("--zip", "--vary", f"stages.0.share.basis={pairs}")
    varied += ("--vary", f"stages.0.share.rank={pairs}")
    ranked = ("--vary", f"stages.0.decompose.rank={ranks}")
    float_sets, tt_sets = _sets(*tiny, *share), _sets(*tiny, *tt)
    q_sets = _sets(*TBASIS_PROTOCOL, *tiny, *share, *qat)
    return (
        (
            "jointcomp",
            "sweep",
            TBASIS_FLOAT,
            *varied,
            *float_sets,
            "-o",
            f"{out}/tbasis",
            "--force",
        ),
        ("jointcomp", "sweep", TBASIS_TT, *ranked, *tt_sets, "-o", f"{out}/tt", "--force"),
        ("jointcomp", "run", TBASIS_RECIPE, *q_sets, "-o", f"{out}/tbasis-q", "--force"),
        _tool("tbasis_table.py", f"{out}/tbasis", f"{out}/tt", f"{out}/tbasis-q"),
    )


# all-MiniLM-L6-v2 from the PyPI package (no hub): both recipes, then the benchmark against
# NNCodec's qp sweep on the same held-out glosses.
MINILM = "models/all-MiniLM-L6-v2"
MINILM_QPS = ("-38", "-34", "-30", "-26", "-22")


def _minilm_commands(quick: bool) -> tuple[Command, ...]:
    runs = "runs/quick" if quick else "runs"
    extract = (PY, "-c", "import all_minilm_l6_v2 as m; m.extract_model('models')")
    cmds: list[Command] = [extract]
    quick_sets = (
        "data.limit=256",
        "train.max_batches=2",
        "stages.2.quantize.qat.finetune.max_batches=2",
    )
    for name in ("minilm-ptq", "minilm-distill"):
        cmd: Command = ("jointcomp", "run", f"recipes/{name}.yaml", "--force")
        if quick:
            sets = quick_sets if name == "minilm-distill" else ("data.limit=256",)
            for o in (*sets, f"output={runs}/{name}"):
                cmd += ("--set", o)
        cmds.append(cmd)
    bench = _tool("bench_minilm.py", "--folder", MINILM)
    for name in ("minilm-ptq", "minilm-distill"):
        bench += ("--jcz", f"{runs}/{name}/model.jcz")
    bench += ("--qp", *(("-26",) if quick else MINILM_QPS))
    if quick:
        bench += ("--limit", "200")
    cmds.append(bench)
    return tuple(cmds)


# the target table: the LeNets' max_drop recipes and MiniLM at the distill recipe's size
TARGET_RUNS = ("lenet300-fashion-target", "lenet5-fashion-target", "minilm-target")

# the target table's quick run: a few thousand images, two tries, short fine-tunes
TARGET_QUICK_RUN: Command = (
    "jointcomp", "run", "recipes/lenet300-fashion-target.yaml", "--force",
    *(x for o in ("data.limit=3000", "target.tries=2", *QUICK_SET,
                  "output=runs/quick/lenet300-fashion-target") for x in ("--set", o)),
)  # fmt: skip

# the files of the deploy table: a small CNN, a pruned + factorized ResNet-20, a distilled MiniLM
DEPLOY_RUNS = ("runs/quickstart", "runs/resnet20-fashion-budget", "runs/minilm-distill")

TABLES: tuple[Table, ...] = (
    Table(
        "recipes",
        ("recipes_table.py",),
        _recipe_commands(quick=False),
        _recipe_commands(quick=True),
    ),
    Table(
        "codecs",
        ("bench_codecs.py",),
        (_tool("bench_codecs.py", "--json", "--weights", "recipes/lenet5-fashion-joint.yaml"),),
        (_tool("bench_codecs.py", "--quick", "--json"),),
        codecs_markdown,
    ),
    Table(
        "layers",
        ("bench_layers.py",),
        (_tool("bench_layers.py"),),
        (_tool("bench_layers.py", "--quick"),),
    ),
    Table(
        "lrs",
        ("compare_lrs.py",),
        (_tool("compare_lrs.py"),),
        (_tool("compare_lrs.py", "--quick"),),
    ),
    Table(
        "qdecomp",
        ("compare_qdecomp.py",),
        (_tool("compare_qdecomp.py"),),
        (_tool("compare_qdecomp.py", "--bits", "2", "4", "8", "--max-test", "2000"),),
    ),
    Table(
        "measures",
        ("compare_measures.py",),
        (_tool("compare_measures.py"),),
        (_tool("compare_measures.py", "--quick"),),
    ),
    Table(
        "tbasis",
        ("tbasis_table.py",),
        _tbasis_commands(quick=False),
        _tbasis_commands(quick=True),
    ),
    Table(
        "anchors",
        ("bench_nncodec.py", "anchors_table.py"),
        _anchor_commands(quick=False),
        _anchor_commands(quick=True),
        all_tables,
    ),
    Table(
        "minilm",
        ("bench_minilm.py",),
        _minilm_commands(quick=False),
        _minilm_commands(quick=True),
    ),
    Table(  # times the files the recipes and minilm tables' runs wrote
        "deploy",
        ("export_check.py",),
        (_tool("export_check.py", *DEPLOY_RUNS, "--weights", "dynamic", "--tokens", "128"),),
        (
            _tool(
                "export_check.py", "runs/quick/quickstart", "--weights", "dynamic", "--rounds", "2"
            ),
        ),
    ),
    Table(
        "target",
        ("target_table.py",),
        (
            *(("jointcomp", "run", f"recipes/{name}.yaml", "--force") for name in TARGET_RUNS),
            _tool("target_table.py", *(f"runs/{name}" for name in TARGET_RUNS)),
        ),
        (TARGET_QUICK_RUN, _tool("target_table.py", "runs/quick/lenet300-fashion-target")),
    ),
    Table(  # reads what the anchors table's bench_nncodec runs wrote: no measuring of its own
        "anchor-coders",
        ("anchors_table.py",),
        (_tool("anchors_table.py", "--coders"),),
        (_tool("anchors_table.py", "--coders", "--runs", "runs/quick"),),
    ),
)
NAMES = tuple(t.name for t in TABLES)


def shown(cmd: Command) -> str:
    return shlex.join(cmd)


def run_command(cmd: Command) -> str:
    """Run ``cmd`` in the repository root with one torch thread; stream its output to stderr and
    return its stdout. Raises CalledProcessError on failure."""
    argv = [sys.executable if cmd[0] == PY else cmd[0], *cmd[1:]]
    if cmd[0] == "jointcomp":
        argv = [sys.executable, "-m", "jointcomp", *cmd[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    lines: list[str] = []
    with subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            sys.stderr.write(f"    {line}")
        rc = proc.wait()
    if rc != 0:
        raise subprocess.CalledProcessError(rc, argv)
    return "".join(lines)


def measure(
    table: Table, quick: bool, last_step: bool = False, ran: set[Command] | None = None
) -> str:
    """Run the table's commands (only the last, which prints the table, with ``last_step``);
    the block's content (table + how to reproduce it). A command in ``ran`` (run already for
    another table of this invocation, e.g. a recipe both the recipes and the anchors tables
    use) is not run again; every command run is added to it."""
    stdout = ""
    ran = set() if ran is None else ran
    cmds = table.quick if quick else table.commands
    cmds = cmds[-1:] if last_step else cmds
    for i, cmd in enumerate(cmds):
        if cmd in ran and i < len(cmds) - 1:
            print(f"  $ {shown(cmd)}  (done for an earlier table)", file=sys.stderr, flush=True)
            continue
        print(f"  $ {shown(cmd)}", file=sys.stderr, flush=True)
        stdout = run_command(cmd)
        ran.add(cmd)
    how = f"python tools/reproduce.py --only {table.name}" + (" --quick" if quick else "")
    return f"{table.extract(stdout)}\n\n<sub>Reproduce: `{how}`</sub>"


def missing_tools(table: Table) -> list[str]:
    return [t for t in table.tools if not (ROOT / "tools" / t).is_file()]


def main(argv: list[str] | None = None) -> int:
    doc = __doc__.splitlines()
    ap = argparse.ArgumentParser(
        description=doc[0],
        epilog="\n".join(doc[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--only", action="append", choices=NAMES, help="a table to redo (repeatable)")
    ap.add_argument(
        "--quick", action="store_true", help="small runs; the file untouched unless --results"
    )
    ap.add_argument("--dry-run", action="store_true", help="list the commands, run nothing")
    ap.add_argument(
        "--last-step",
        action="store_true",
        help="run only each table's last command: tables from the runs already on disk",
    )
    ap.add_argument(
        "--results",
        metavar="FILE",
        help=f"the file whose tables are rewritten (default: {RESULTS.relative_to(ROOT)})",
    )
    args = ap.parse_args(argv)
    results = Path(args.results) if args.results else (None if args.quick else RESULTS)
    chosen = [t for t in TABLES if not args.only or t.name in args.only]
    text = results.read_text(encoding="utf-8") if results and results.is_file() else None
    ok = True
    ran: set[Command] = set()
    if results and text is None and not args.dry_run:
        print(f"{results}: not found; tables are printed only", file=sys.stderr)
        ok = False
    for table in chosen:
        cmds = table.quick if args.quick else table.commands
        print(f"[{table.name}]", file=sys.stderr, flush=True)
        if args.dry_run:
            for cmd in cmds:
                print(f"{table.name}: {shown(cmd)}")
            continue
        gone = missing_tools(table)
        if gone:
            print(f"  skipped: tools/{', tools/'.join(gone)} not found", file=sys.stderr)
            ok = False
            continue
        start = time.perf_counter()
        try:
            block = measure(table, args.quick, args.last_step, ran)
        except (subprocess.CalledProcessError, ValueError, OSError) as exc:
            print(f"  skipped: {exc}", file=sys.stderr)
            ok = False
            continue
        print(f"  measured in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        print(f"<!-- table:{table.name} -->\n{block}\n<!-- /table:{table.name} -->\n")
        if text is None:
            continue
        try:
            text = replace_block(text, table.name, block)
        except (KeyError, ValueError) as exc:
            why = exc if isinstance(exc, ValueError) else f"no <!-- table:{table.name} --> block"
            print(f"  {results}: {why}; printed only", file=sys.stderr)
            ok = False
            continue
        results.write_text(text, encoding="utf-8")  # after each table: a later failure keeps it
        print(f"  rewrote the {table.name} table in {results}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
