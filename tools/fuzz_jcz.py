"""Structured fuzzing of the .jcz reader (issue 30): mutate real files where a hostile writer
would — header fields (shapes, dtypes, storage, codec names and parameters, lengths, names,
quantizer arguments and bits, builder kwargs, edits, attrs, ties, shared modules, table
entries), not only bytes — reseal every checksum (tests/hostile.py's helpers), and open each
file as `jointcomp.load` does, with a per-case time and memory limit.

    python tools/fuzz_jcz.py --count 10000 --seed 0

Every case ends in one outcome:

    refused     FormatError with a message naming the problem (what a bad file should get)
    same        loads the very model of the original file (every tensor bit for bit, the same
                outputs on a fixed input)
    equivalent  loads a model whose state dict differs only in how it holds the same values
                (a quantizer's codes in a wider integer type after its bits were raised): every
                tensor as the module computes it, and the outputs, bit for bit the same
    changed     loads another model, the mutation having changed a *value-bearing* field: one a
                writer sets to say what the model is (tensor payload bytes, a tensor's name,
                storage dtype, codec and its parameters, builder kwargs, a module edit's type,
                path or arguments, attrs, ties, shared modules) — a valid file describing
                another model, which no reader can tell from the intended one
    silent      loads another model (or one whose forward fails) although only fields that
                cannot change a valid file's values were touched: lengths, shapes, dtypes,
                a quantizer's arguments (axis, shapes; bits, signed and narrow_range too,
                except where its integers are coded raw without parameters, which its range
                then implies), meta, the list of own modules — a file a writer never makes,
                which the reader should have refused
    unexpected  a FormatError the reader's last-resort boundary made of another exception
    escaped     any other exception
    hang        still running after --hang seconds
    crash       the worker process died (killed for memory, a segfault)

Cases that cost more than 2 s of CPU time (the worker's, every thread: what the reader
costs, however loaded the machine) or grow the process by more than 256 MB are counted too;
--hang is wall time. The run passes (exit 0) with 0 unexpected, escaped, hang, crash and
silent. tests/test_hostile_files.py runs a short one (--count 150) in the suite.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from jointcomp.errors import FormatError  # noqa: E402  (after the path is set)
from tests import hostile  # noqa: E402

SLOW_SECONDS = 2.0
HEAVY_MB = 256.0
FAILURES = ("unexpected", "escaped", "hang", "crash", "silent")
DTYPE_CODES = ["f32", "f16", "bf16", "f64", "i8", "u8", "i16", "i32", "i64", "b", "l64", "l16"]
CODECS = ["plain", "raw", "huffman", "tunstall", "ans", "range", "range_parts", "sparse", "auto"]
MODULE_TYPES = ["Identity", "Linear", "Conv2d", "BatchNorm2d", "LayerNorm", "TuckerConv2d"]
MODULE_TYPES += ["SVDLinear", "TTLinear", "TBasisLinear", "Embedding", "PReLU", "GroupNorm"]
STRINGS = ["", "x", "../..", "/etc/passwd", "[/]", "[link=http://x]a[/link]", "\x1b[2J", "é" * 3]
# fields that cannot change a valid file's values: a change must be refused or load the same
NEUTRAL_ENTRY_FIELDS = {"b", "s", "d"}
QUANTIZER_TYPES = {"IntQuantized", "Codebook"}


# ---------------------------------------------------------------------------- value helpers


def _int_variants(v: int, rng: random.Random) -> int:
    return rng.choice(
        [
            0,
            -1,
            1,
            v + 1,
            v - 1,
            v * 2,
            -v,
            v + rng.randint(-64, 64),
            2 ** rng.randint(8, 62),
            -(2**63) + 1,
            2**63 - 1,
        ]
    )


def _replacement(value: Any, rng: random.Random) -> Any:
    """A value for a JSON leaf: mostly of its own type and nearby, sometimes of another."""
    if rng.random() < 0.2:  # another JSON type
        return rng.choice([None, True, 0, -1, 2**40, 1.5, -0.0, "x", [], {}, [1, 2], {"a": 1}])
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return _int_variants(value, rng)
    if isinstance(value, float):
        return rng.choice([0.0, -value, value * 2, value / 2, 1e308, -1e308, 5e-324, 1.0])
    if isinstance(value, str):
        return rng.choice(
            [
                *STRINGS,
                value + "x",
                value[:-1],
                value.upper(),
                rng.choice(CODECS),
                rng.choice(DTYPE_CODES),
                rng.choice(MODULE_TYPES),
                value + ".0",
            ]
        )
    if isinstance(value, list):
        return _list_variant(value, rng)
    if isinstance(value, dict):
        return _dict_variant(value, rng)
    return 0


def _list_variant(value: list, rng: random.Random) -> list:
    out = list(value)
    op = rng.randrange(6)
    if op == 0 and out:
        del out[rng.randrange(len(out))]
    elif op == 1 and out:
        out.insert(rng.randrange(len(out) + 1), copy.deepcopy(rng.choice(out)))
    elif op == 2:
        rng.shuffle(out)
    elif op == 3:
        out = []
    elif op == 4:
        out = [*out, rng.choice([0, 1, 2**31, -1, "x", None])]
    else:
        out = [out]
    return out


def _dict_variant(value: dict, rng: random.Random) -> dict:
    out = dict(value)
    op = rng.randrange(3)
    if op == 0 and out:
        del out[rng.choice(list(out))]
    elif op == 1:
        out[rng.choice(["x", "shape", "bits", "min", "device", "dtype", "n", "s", "_x"])] = (
            rng.choice([0, 1, -1, 2**33, "meta", [2**20], None, True])
        )
    else:
        out = {}
    return out


def _nodes(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path into a JSON value (containers and leaves)."""
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_nodes(v, (*path, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_nodes(v, (*path, i)))
    return out


def _get(value: Any, path: tuple) -> Any:
    for p in path:
        value = value[p]
    return value


def _set(value: Any, path: tuple, new: Any) -> None:
    _get(value, path[:-1])[path[-1]] = new


def _quantizer_path(header: dict[str, Any], path: tuple) -> bool:
    """Whether ``path`` lies in a quantizer's arguments: (model, edits, i, 2, tensor, k, 1, …)
    of a @parametrize edit whose chain link k is an IntQuantized or Codebook."""
    if len(path) < 7 or path[:2] != ("model", "edits") or path[3] != 2 or path[6] != 1:
        return False
    try:
        edit = header["model"]["edits"][path[2]]
        return edit[1] == "@parametrize" and edit[2][path[4]][path[5]][0] in QUANTIZER_TYPES
    except (KeyError, IndexError, TypeError):
        return False


RANGE_KEYS = {"bits", "signed", "narrow_range"}


def implied_raw(image: bytes, header: dict[str, Any]) -> set[str]:
    """Names of the quantizer integers coded raw without parameters: their quantizer's range
    implies the lowest code and the width they are packed at (container/grid_params.py)."""
    entries = _table(image)
    return {
        entries[i]["n"]
        for i, e in enumerate(header["tensors"])
        if isinstance(e, dict) and e.get("c") == "raw" and "p" not in e and i < len(entries)
    }


def _quantizer_tensor(header: dict[str, Any], path: tuple) -> str:
    """The state-dict name of the integers of the quantizer at ``path`` (a quantizer path)."""
    edit_path, tensor, link = header["model"]["edits"][path[2]][0], path[4], path[5]
    prefix = f"{edit_path}." if edit_path else ""
    return f"{prefix}parametrizations.{tensor}.{link}.int_repr"


def value_bearing(original: dict[str, Any], path: tuple, implied: set[str]) -> bool:
    """Whether a change at ``path`` of the original header may describe another valid model
    (see the module docstring); False where any change must be refused or harmless. A
    quantizer's range (bits, signed, narrow_range) bears values where its integers are coded
    raw without parameters: the range says which code the packed zero stands for."""
    if not path:
        return True
    if path[0] == "meta":
        return False
    if path[0] == "tensors":
        return not (len(path) >= 3 and path[2] in NEUTRAL_ENTRY_FIELDS)
    if path[:2] == ("model", "own"):
        return False
    if not _quantizer_path(original, path):
        return True
    ranges = len(path) == 7 or path[7] in RANGE_KEYS
    return ranges and _quantizer_tensor(original, path) in implied


# ------------------------------------------------------------------------------- mutations


_TABLES: dict[bytes, list[dict[str, Any]]] = {}


def _table(image: bytes) -> list[dict[str, Any]]:
    """hostile.table, remembered for the base files (each case mutates one of three)."""
    key = hashlib.sha256(image).digest()
    if key not in _TABLES:
        if len(_TABLES) > 16:
            _TABLES.clear()
        _TABLES[key] = hostile.table(image)
    return copy.deepcopy(_TABLES[key])


def _resolved(image: bytes, header: dict[str, Any]) -> list[dict[str, Any]]:
    """The table entries that are not packed scalars, every implied field spelled out."""
    entries = _table(image)
    packed = sum(1 for e in header["tensors"] if isinstance(e.get("n"), list))
    return [
        {k: v for k, v in e.items() if k != "o"} for e in entries[: len(header["tensors"]) - packed]
    ]


def mutate(image: bytes, rng: random.Random) -> tuple[bytes, str, bool]:
    """One structured mutation of ``image``: (new image, what was done, value-bearing)."""
    header, payload = hostile.parts(image)
    original = copy.deepcopy(header)
    kinds = [
        ("json", 30),
        ("entry", 20),
        ("quantizer", 12),
        ("edit", 10),
        ("kwargs", 6),
        ("links", 6),
        ("table", 6),
        ("payload", 6),
        ("multi", 4),
    ]
    kind = rng.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
    if kind == "multi":
        done, bearing = [], False
        for _ in range(rng.randint(2, 3)):
            try:
                image, what, vb = mutate(image, rng)
            except FormatError:  # the file so far no longer has a table to mutate
                break
            done.append(what)
            bearing = bearing or vb
        return image, " + ".join(done), bearing
    if kind == "payload":
        return _mutate_payload(image, header, payload, rng)
    if kind == "entry":
        return _mutate_entry(image, header, payload, rng)
    if kind == "table":
        entries = header["tensors"]
        if rng.random() < 0.5:
            entries = _resolved(image, header) + [
                e for e in entries if isinstance(e.get("n"), list)
            ]
        op = rng.randrange(5)
        if op == 0 and len(entries) > 1:
            i, j = rng.sample(range(len(entries)), 2)
            entries[i], entries[j] = entries[j], entries[i]
        elif op == 1:
            del entries[rng.randrange(len(entries))]
        elif op == 2:
            entries.insert(rng.randrange(len(entries) + 1), copy.deepcopy(rng.choice(entries)))
        elif op == 3:
            entries.insert(rng.randrange(len(entries) + 1), {"n": rng.randint(0, 5), "c": "raw"})
        else:
            entries.reverse()
        header["tensors"] = entries
        return hostile.reseal(header, payload), f"table op {op}", True
    model = header["model"]
    if kind == "quantizer":
        links = [p[:7] for p in _nodes(header) if _quantizer_path(header, p) and len(p) == 7]
        if not links:
            kind = "json"
        else:
            link = rng.choice(links)
            config = _get(header, link)
            key = rng.choice(
                [
                    "bits",
                    "bits",
                    "signed",
                    "narrow_range",
                    "axis",
                    "scale_shape",
                    "zero_point_shape",
                    "shape",
                    "size",
                    "zero_index",
                ]
            )
            old = config.get(key, {"bits": 8, "signed": True, "narrow_range": False}.get(key))
            if key == "bits":
                new = rng.choice([1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 0, -1])
                if isinstance(old, int) and rng.random() < 0.5:
                    new = old + rng.choice([-2, -1, 1, 2])
            elif key in ("signed", "narrow_range"):
                new = rng.choice([True, False, 0, 1, "no"])
            elif key in ("scale_shape", "zero_point_shape", "shape"):
                new = rng.choice([[1], [1, 1], [2**30, 1], [0], [], [16, 1, 1, 1], [1, 784]])
            else:
                new = _replacement(old if old is not None else 0, rng)
            config[key] = new
            bearing = key in RANGE_KEYS and _quantizer_tensor(header, link) in implied_raw(
                image, header
            )
            return hostile.reseal(header, payload), f"quantizer {key}={new!r}", bearing
    if kind == "edit" and model.get("edits"):
        edits = model["edits"]
        i = rng.randrange(len(edits))
        op = rng.randrange(6)
        if op == 0:
            edits.insert(i, copy.deepcopy(edits[i]))
        elif op == 1:
            del edits[i]
        elif op == 2:
            j = rng.randrange(len(edits))
            edits[i], edits[j] = edits[j], edits[i]
        elif op == 3:
            path = edits[i][0]
            edits[i][0] = rng.choice(
                [path + ".0", path.rpartition(".")[0], "new", f"{path}x", "..", "", "a." * 40]
            )
        elif op == 4 and edits[i][1] != "@parametrize":
            edits[i][1] = rng.choice(MODULE_TYPES)
        else:
            config = edits[i][2]
            if config and edits[i][1] != "@parametrize":
                key = rng.choice(list(config))
                config[key] = _replacement(config[key], rng)
            else:
                config[rng.choice(["stride", "padding", "bias", "out_channels", "x"])] = rng.choice(
                    [0, 1, 2, 2**31, -1, True, 1.5, [1, 1]]
                )
        return hostile.reseal(header, payload), f"edit {i} op {op}", True
    if kind == "kwargs":
        kwargs = model.setdefault("kwargs", {})
        if kwargs and rng.random() < 0.6:
            key = rng.choice(list(kwargs))
            kwargs[key] = _replacement(kwargs[key], rng)
        elif rng.random() < 0.5:
            key = rng.choice(["hidden", "widths", "depth", "dim", "num_classes", "weights"])
            kwargs[key] = rng.choice([1, 2**20, [2**12, 2**12], "DEFAULT", 0, -3, 2.5])
        else:
            model["builder"] = rng.choice(
                ["zoo:vit", "zoo:lenet5", "zoo:resnet20", "torchvision:resnet18", "os:system"]
            )
        return hostile.reseal(header, payload), "kwargs", True
    if kind == "links":
        names = [e["n"] for e in _table(image)]
        paths = sorted({n.rpartition(".")[0] for n in names})
        which = rng.choice(["ties", "shared", "attrs", "own"])
        if which == "ties":
            model.setdefault("ties", {})[rng.choice(names)] = rng.choice(names)
        elif which == "shared":
            model.setdefault("shared", {})[rng.choice(paths) or "x"] = rng.choice(paths)
        elif which == "attrs":
            model.setdefault("attrs", []).append(
                [rng.choice(paths), {rng.choice(["stride", "p", "inplace", "eps"]): 0}]
            )
        else:
            model["own"] = [rng.choice(paths) or "x"]
        return hostile.reseal(header, payload), f"links {which}", which != "own"
    # json: any node of the header
    path = rng.choice([p for p in _nodes(header) if p])
    _set(header, path, _replacement(_get(header, path), rng))
    what = "json " + ".".join(map(str, path))
    bearing = value_bearing(original, path, implied_raw(image, original))
    return hostile.reseal(header, payload), what, bearing


def _mutate_entry(
    image: bytes, header: dict[str, Any], payload: bytes, rng: random.Random
) -> tuple[bytes, str, bool]:
    """Spell out one table entry's fields and change one of them."""
    resolved = _resolved(image, header)
    i = rng.randrange(len(resolved))
    entry = resolved[i]
    names = [e["n"] for e in resolved]
    key = rng.choice(["s", "s", "d", "d", "st", "c", "c", "b", "n", "p", "p"])
    old = entry.get(key)
    if key == "s":
        shape = list(entry["s"])
        new = rng.choice(
            [
                shape[::-1],
                [*shape, 1],
                shape[:-1],
                [0],
                [2**31],
                [0, 2**40],
                [d + 1 for d in shape],
                [max(1, d // 2) for d in shape],
                [-1],
                [1] * 9,
            ]
        )
    elif key in ("d", "st"):
        new = rng.choice([*DTYPE_CODES, "x", None])
    elif key == "c":
        new = rng.choice([*CODECS, "nope"])
    elif key == "b":
        new = rng.choice([0, (old or 0) + 1, (old or 0) - 1, 2**40, -1])
    elif key == "n":
        new = rng.choice([*rng.sample(names, min(2, len(names))), "nope", 7, ""])
    else:
        params = dict(entry.get("p") or {})
        if params and rng.random() < 0.8:
            k = rng.choice(list(params))
            params[k] = _replacement(params[k], rng)
        else:
            params[rng.choice(["min", "bits", "block", "x"])] = rng.choice([0, 1, 64, 2**40, -5])
        new = params
    entry[key] = new
    header["tensors"][i] = entry
    bearing = key not in NEUTRAL_ENTRY_FIELDS
    return hostile.reseal(header, payload), f"entry {i}.{key}={str(new)[:40]}", bearing


def _mutate_payload(
    image: bytes, header: dict[str, Any], payload: bytes, rng: random.Random
) -> tuple[bytes, str, bool]:
    """Bytes of one tensor's payload changed in place (a valid file of other values, or a
    stream its coder must refuse), or the payload cut or extended (lengths then disagree)."""
    entries = _table(image)
    e = rng.choice([e for e in entries if e["b"]] or entries)
    data = bytearray(payload)
    op = rng.randrange(4)
    if op < 2 and e["b"]:
        for _ in range(rng.randint(1, 4)):
            data[e["o"] + rng.randrange(e["b"])] = rng.randrange(256)
        return hostile.reseal(header, bytes(data)), f"payload bytes of {e['n']}", True
    if op == 2 and data:
        cut = rng.randint(1, min(8, len(data)))
        return hostile.reseal(header, bytes(data[:-cut])), "payload cut", False
    return hostile.reseal(header, bytes(data) + b"\0" * rng.randint(1, 8)), "payload +", False


# ---------------------------------------------------------------------------------- worker


def _inputs() -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    return {
        "quickstart": torch.randn(2, 1, 8, 8, generator=g),
        "lenet300": torch.randn(2, 1, 28, 28, generator=g),
        "built": torch.randn(2, 1, 28, 28, generator=g),
    }


def _outputs(model: Any, x: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(x)


def _state_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    return list(a) == list(b) and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a
    )


def _effective(model: Any) -> dict[str, Any]:
    """Every tensor as the module computes it (a quantized weight dequantized, not its codes)."""
    import torch
    from torch.nn.utils import parametrize

    out = {}
    for path, module in model.named_modules():
        if "parametrizations" in path.split("."):
            continue
        names = [*module._parameters, *module._buffers]
        if parametrize.is_parametrized(module):
            names += list(module.parametrizations)
        for name in sorted(set(names) - {"parametrizations"}):
            t = getattr(module, name, None)
            if isinstance(t, torch.Tensor):
                out[f"{path}.{name}"] = t.detach()
    return out


def compare(model: Any, reference: Any, ref_out: Any, x: Any) -> str:
    """ "same" (state dict bit for bit, the same outputs), "equivalent" (another state dict,
    e.g. codes held in a wider integer type, but every tensor as the module computes it and
    the outputs bit for bit equal) or "different"."""
    import torch

    with torch.no_grad():
        out = model(x)
        if not (
            isinstance(out, torch.Tensor)
            and out.shape == ref_out.shape
            and torch.equal(out, ref_out)
        ):
            return "different"
        if _state_equal(model.state_dict(), reference.state_dict()):
            return "same"
        if _state_equal(_effective(model), _effective(reference)):
            return "equivalent"
    return "different"


def worker(seed: int, start: int, count: int, hang: int) -> None:
    """Open cases start..start+count-1, one JSON line each (a "start" line first, so that the
    parent can name a case that killed the process)."""
    import gc
    import signal

    import torch

    from jointcomp.container import open_artifact
    from jointcomp.container.artifact import UNEXPECTED

    torch.set_num_threads(1)
    import torchvision.models  # noqa: F401  (imported once, not timed in a case)

    files = hostile.bases()
    names = sorted(files)
    originals = {n: open_artifact(files[n]).model for n in names}
    inputs = _inputs()
    ref_out = {n: _outputs(originals[n], inputs[n]) for n in names}
    hostile.block_network()
    hostile._limit_memory(3.0)

    def alarm(*_: Any) -> None:
        raise TimeoutError("hang")

    signal.signal(signal.SIGALRM, alarm)
    for i in range(start, start + count):
        rng = random.Random(f"{seed}:{i}")
        base = rng.choice(names)
        try:
            image, what, bearing = mutate(files[base], rng)
        except Exception as exc:  # a mutation that cannot be written (e.g. NaN): not a case
            print(json.dumps({"i": i, "outcome": "skipped", "what": repr(exc)[:120]}), flush=True)
            continue
        print(json.dumps({"i": i, "event": "start"}), flush=True)
        if i % 100 == 0:  # per case, it would cost more than most cases
            gc.collect()
        exact = hostile._reset_peak()
        before = hostile._status()
        t0, cpu0 = time.perf_counter(), time.process_time()
        message = ""
        signal.alarm(hang)
        try:
            model = open_artifact(image).model
            try:
                outcome = compare(model, originals[base], ref_out[base], inputs[base])
            except TimeoutError:
                raise
            except Exception as exc:  # loads, then fails when run
                outcome, message = "different", f"forward: {type(exc).__name__}: {exc}"[:200]
            if outcome == "different":
                outcome = "changed" if bearing else "silent"
            del model
        except FormatError as exc:
            message = str(exc)[:200]
            outcome = "unexpected" if message.startswith(UNEXPECTED) else "refused"
        except TimeoutError:
            outcome = "hang"
        except BaseException as exc:
            outcome, message = "escaped", f"{type(exc).__name__}: {exc}"[:200]
        finally:
            signal.alarm(0)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        if hostile.NETWORK_ATTEMPTS:
            outcome, message = "escaped", f"network: {hostile.NETWORK_ATTEMPTS[:2]}"
            hostile.NETWORK_ATTEMPTS.clear()
        after = hostile._status()
        peak = after["VmHWM"] if exact else max(after["VmHWM"], before["VmRSS"])
        row = {
            "i": i,
            "base": base,
            "what": what[:160],
            "bearing": bearing,
            "outcome": outcome,
            "seconds": round(seconds, 3),
            "cpu": round(cpu, 3),
            "mb": round((peak - before["VmRSS"]) / 1024, 1),
            "message": message,
        }
        print(json.dumps(row), flush=True)


# ---------------------------------------------------------------------------------- parent


def run(seed: int, count: int, hang: int, log: Path | None) -> dict[str, Any]:
    """Run ``count`` cases in worker processes (restarted after a crash)."""
    rows: list[dict[str, Any]] = []
    next_case = 0
    sink = log.open("w") if log else None
    while next_case < count:
        cmd = [sys.executable, __file__, "--worker", f"--seed={seed}", f"--start={next_case}"]
        cmd += [f"--count={count - next_case}", f"--hang={hang}"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        started = None
        assert proc.stdout is not None
        for line in proc.stdout:
            row = json.loads(line)
            if row.get("event") == "start":
                started = row["i"]
                continue
            started = None
            next_case = row["i"] + 1
            rows.append(row)
            if sink:
                sink.write(line)
                sink.flush()
            done = len(rows)
            if done % 500 == 0:
                tally = Counter(r["outcome"] for r in rows)
                print(f"{done:6d} cases  {dict(tally)}", file=sys.stderr, flush=True)
        code = proc.wait()
        if started is not None or (code != 0 and next_case < count):
            i = started if started is not None else next_case
            rows.append({"i": i, "outcome": "crash", "what": f"worker exit {code}", "seconds": 0})
            rows[-1].update(cpu=0.0, mb=0.0, base="?", bearing=False, message="")
            next_case = i + 1
    if sink:
        sink.close()
    return summarize(rows)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    cases = [r for r in rows if r["outcome"] != "skipped"]
    tally = Counter(r["outcome"] for r in cases)
    kinds = Counter(r["what"].split(" ")[0] for r in cases)
    return {
        "cases": len(cases),
        "skipped": len(rows) - len(cases),
        "outcomes": dict(tally),
        "kinds": dict(kinds),
        "failures": sum(tally[k] for k in FAILURES),
        "slow": sum(1 for r in cases if r["cpu"] > SLOW_SECONDS),
        "heavy": sum(1 for r in cases if r["mb"] > HEAVY_MB),
        "max_cpu": max((r["cpu"] for r in cases), default=0.0),
        "max_seconds": max((r["seconds"] for r in cases), default=0.0),
        "max_mb": max((r["mb"] for r in cases), default=0.0),
        "examples": [r for r in cases if r["outcome"] in FAILURES][:20]
        + sorted(cases, key=lambda r: -r["cpu"])[:3],
    }


def print_table(summary: dict[str, Any]) -> None:
    print(f"{summary['cases']:,} cases ({summary['skipped']} mutations not writable, skipped)")
    print(f"{'outcome':12} {'count':>7}")
    for outcome in ("refused", "same", "equivalent", "changed", *FAILURES):
        print(f"{outcome:12} {summary['outcomes'].get(outcome, 0):7,}")
    print(
        f"{'slow >2s CPU':12} {summary['slow']:7,}   (max {summary['max_cpu']:.2f} s CPU, "
        f"{summary['max_seconds']:.2f} s wall)"
    )
    print(f"{'heavy >256MB':12} {summary['heavy']:7,}   (max {summary['max_mb']:.1f} MB)")
    print("mutation kinds: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["kinds"].items())))
    for r in summary["examples"]:
        print(
            f"  [{r['outcome']}] #{r['i']} {r['base']}: {r['what']} ({r['cpu']} s CPU) "
            f"{r.get('message', '')[:120]}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hang", type=int, default=20, help="seconds before a case is a hang")
    parser.add_argument("--log", type=Path, help="write every case as a JSON line here")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.seed, args.start, args.count, args.hang)
        return 0
    summary = run(args.seed, args.count, args.hang, args.log)
    if args.json:
        print(json.dumps(summary))
    else:
        print_table(summary)
    bad = summary["failures"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
