"""report.html and sweep.html render in headless Chromium with every plot decoded."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from jointcomp.audit.report import render_html
from jointcomp.pipeline import run
from jointcomp.recipe import validate_recipe
from jointcomp.sweep import render_sweep_html

from .conftest import CHROMIUM, needs_chromium, tiny_recipe

PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.querySelectorAll('img')];
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-decoded',
    imgs.filter(i => i.complete && i.naturalWidth > 100 && i.naturalHeight > 100).length);
});
</script>"""


def _render_in_chromium(html_text: str, tmp_path: Path) -> tuple[int, int]:
    """Load the page in headless Chromium; return (images, images decoded to real pixels)."""
    page = tmp_path / "page.html"
    page.write_text(html_text.replace("</body>", PROBE + "</body>"))
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body[^>]*>", proc.stdout)
    assert body, proc.stdout[:500]
    images = re.search(r'data-images="(\d+)"', body.group(0))
    decoded = re.search(r'data-decoded="(\d+)"', body.group(0))
    assert images and decoded, body.group(0)
    return int(images.group(1)), int(decoded.group(1))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("html")
    return run(validate_recipe(tiny_recipe(tmp)), show_progress=False).report


def test_report_html_is_self_contained(report: dict) -> None:
    page = render_html(report)
    assert 'src="http' not in page and "<link" not in page  # nothing fetched from anywhere
    for ident in ("size-by-step", "accuracy-vs-size", "bytes-by-layer"):
        assert f'id="{ident}"' in page
    assert "Stage 0: prune" in page or "Per layer" in page


@needs_chromium
def test_report_html_renders_with_plots(report: dict, tmp_path: Path) -> None:
    images, decoded = _render_in_chromium(render_html(report), tmp_path)
    assert images == 3 and decoded == 3


@needs_chromium
def test_sweep_html_renders_with_plot(report: dict, tmp_path: Path) -> None:
    fin = report["final"]
    summary = {
        "recipe": "tiny.yaml",
        "axes": {"stages.0.prune.ratio": [0.5]},
        "points": [
            {
                "overrides": {"stages.0.prune.ratio": 0.5},
                "bytes": fin["bytes"],
                "compression_ratio": fin["compression_ratio"],
                "accuracy": fin["accuracy"],
                "pareto": True,
                "baseline_bytes": report["baseline"]["bytes"],
                "baseline_accuracy": report["baseline"]["accuracy"],
            }
        ],
        "anchors": [{"label": "other tool", "points": [[fin["bytes"] * 2, fin["accuracy"]]]}],
    }
    json.dumps(summary)
    images, decoded = _render_in_chromium(render_sweep_html(summary), tmp_path)
    assert images == 1 and decoded == 1
