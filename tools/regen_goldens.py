"""Regenerate the golden files of tests/test_golden.py, after a deliberate format change (one
that bumped FORMAT_MINOR): re-run the bundled recipes that wrote them, copy each run's model.jcz
into tests/golden/ and pin its hashes and encode settings in tests/golden/goldens.json.

    python tools/regen_goldens.py              # runs the recipes into runs/golden/ (minutes)
    python tools/regen_goldens.py --runs DIR   # copies DIR/NAME/model.jcz of runs already made

Review the diff before committing: a changed state_sha256 means the recipe now trains another
model, not only that the format writes it differently.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
RECIPES = ("quickstart", "lenet300-fashion-joint")  # small files: 2 KB and 14 KB


def run_recipe(name: str, runs: Path) -> None:
    recipe = ROOT / "recipes" / f"{name}.yaml"
    command = ["jointcomp", "run", str(recipe), "-o", str(runs / name), "--force", "-q"]
    subprocess.run([sys.executable, "-m", *command], check=True)


def encode_settings(run: Path) -> dict:
    """The run's encode stage settings, as StoragePolicy's arguments."""
    stages = json.loads((run / "recipe.json").read_text())["stages"]
    encode = next((s["encode"] for s in stages if "encode" in s), {})
    return {
        "codec": encode.get("codec", "auto"),
        "overrides": encode.get("layers", {}),
        "options": encode.get("options", {}),
        "float_storage": encode.get("float_storage", "f32"),
    }


def pin(name: str, run: Path) -> dict:
    """Copy the run's file into tests/golden/ and return what goldens.json pins of it."""
    from jointcomp.container import open_artifact
    from tests.test_golden import state_digest

    data = (run / "model.jcz").read_bytes()
    shutil.copyfile(run / "model.jcz", GOLDEN / f"{name}.jcz")
    return {
        "recipe": f"recipes/{name}.yaml",
        "bytes": len(data),
        "file_sha256": hashlib.sha256(data).hexdigest(),
        "state_sha256": state_digest(open_artifact(data).model),
        "encode": encode_settings(run),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, help="finished runs, one directory per recipe name")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    runs = args.runs or ROOT / "runs" / "golden"
    if args.runs is None:
        for name in RECIPES:
            run_recipe(name, runs)
    pins = {f"{name}.jcz": pin(name, runs / name) for name in RECIPES}
    (GOLDEN / "goldens.json").write_text(json.dumps({"files": pins}, indent=2) + "\n")
    for file, values in pins.items():
        print(f"{file}: {values['bytes']:,} bytes, sha256 {values['file_sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
