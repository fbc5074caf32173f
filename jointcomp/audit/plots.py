"""Report plots (matplotlib, Agg), returned as base64 PNG strings for self-contained HTML."""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ..tasks.base import PERCENT_METRICS


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def size_waterfall(report: dict[str, Any]) -> str:
    """Size after each step, as a waterfall: each bar starts where the previous step ended."""
    labels = ["baseline"] + [f"{s['index']}:{s['name']}" for s in report["stages"]]
    sizes = [report["baseline"]["bytes"]] + [s["bytes"] for s in report["stages"]]
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    prev = sizes[0]
    for i, (label, size) in enumerate(zip(labels, sizes)):
        if i == 0:
            ax.bar(label, size, color="#4c72b0")
        else:
            low, high = sorted((prev, size))
            ax.bar(label, high - low, bottom=low, color="#55a868" if size <= prev else "#c44e52")
        ax.annotate(f"{size / 1024:,.1f} KB", (i, size), ha="center", va="bottom", fontsize=8)
        prev = size
    ax.set_yscale("log")
    ax.set_ylabel("bytes (log)")
    ax.set_title("Size by step (the last bar is the file)")
    ax.tick_params(axis="x", rotation=25)
    return _png(fig)


def bytes_by_layer(report: dict[str, Any], top: int = 25) -> str:
    """Coded bytes of each layer in the final file, with its H0 bound where one applies."""
    rows = sorted(report["layers"], key=lambda r: r["bytes"], reverse=True)[:top]
    names = [r["name"] for r in rows][::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.3 * len(rows) + 1.2))
    ax.barh(names, [r["bytes"] for r in rows][::-1], color="#4c72b0", label="coded bytes")
    bound = [r.get("entropy_bytes") or 0 for r in rows][::-1]
    if any(bound):
        ax.scatter(bound, names, color="#dd8452", marker="|", s=120, label="H0 bound")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("bytes in model.jcz")
    ax.set_title("Bytes by layer")
    return _png(fig)


def planned_bytes(report: dict[str, Any]) -> str:
    """A target's plan: predicted bytes per layer and for the file beside the measured ones."""
    plan = report["plan"]
    rows = [r for r in plan["layers"] if r["measured_bytes"] is not None]
    rows.append({"name": "(file)", **plan["file"]})
    names = [r["name"] for r in rows]
    y = range(len(rows))
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(rows) + 1.3))
    ax.barh([i + 0.2 for i in y], [r["predicted_bytes"] or 0 for r in rows], height=0.4,
            color="#dd8452", label="predicted")  # fmt: skip
    ax.barh([i - 0.2 for i in y], [r["measured_bytes"] or 0 for r in rows], height=0.4,
            color="#4c72b0", label="measured in the file")  # fmt: skip
    ax.set_yticks(list(y), names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("bytes (log)")
    ax.set_title("Plan: predicted vs measured bytes")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both size (lower) and accuracy (higher)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def accuracy_vs_size(
    series: list[dict[str, Any]], title: str = "Accuracy vs file size", metric: str = "top-1"
) -> str:
    """Scatter of a metric (higher is better; top-1 by default, in %) against bytes (log x).
    ``series``: dicts with ``label``, ``points`` (list of (bytes, metric)), optional ``front``
    (draw the Pareto front) and ``marker``."""
    scale = 100 if metric in PERCENT_METRICS else 1
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for s in series:
        pts = [p for p in s["points"] if p[0] is not None and p[1] is not None]
        if not pts:
            continue
        ax.scatter(
            [p[0] for p in pts],
            [scale * p[1] for p in pts],
            label=s["label"],
            marker=s.get("marker", "o"),
            s=s.get("size", 36),
            zorder=3,
        )
        if s.get("front"):
            idx = pareto_front(pts)
            ax.plot(
                [pts[i][0] for i in idx],
                [scale * pts[i][1] for i in idx],
                "--",
                color="gray",
                zorder=2,
                label=f"{s['label']} Pareto front",
            )
    ax.set_xscale("log")
    ax.set_xlabel("bytes (log)")
    ax.set_ylabel(f"{metric} (%)" if scale == 100 else metric)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)
