"""ONNX export: the materialized module (factorized layers as their factors), its integer
tensors stored as the file's own integers, and the written file checked in onnxruntime.

Weights (``weights=``):

- ``"qdq"``: every tensor that came from a uniform grid of at most 8 bits is stored as its int8 /
  uint8 integers with a ``DequantizeLinear`` (scale, zero point, axis) — the values are exactly
  the exact module's; onnxruntime dequantizes them once and runs float kernels;
- ``"dynamic"``: as ``"qdq"``, except that the weights of ``MatMul`` / ``Gemm`` nodes run as
  ``DynamicQuantizeLinear`` on the activations + ``MatMulInteger`` with the file's int8 weights
  (the form ``onnxruntime.quantization.quantize_dynamic`` writes, fused by onnxruntime into
  int8 kernels): faster on CPU, the activations rounded to 8 bits per tensor on the fly;
- ``"float"``: every tensor as float32.

The graph comes from torch's TorchScript exporter (``dynamo=False``: the dynamo exporter needs
onnxscript, which jointcomp does not require) without constant folding, so every weight keeps
its module path as its initializer name and the rewrite below finds the tensor a grid belongs
to; a ``Transpose`` of a quantized weight (a ``Linear`` on 3-D inputs) is folded into the
stored integers instead.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..container import write_atomic
from ..runtime import IntGrid
from .common import (
    PREFIX,
    ExportCheckError,
    ExportError,
    Inputs,
    Traced,
    call,
    compare,
    deployable,
    flat_outputs,
    output_names,
    require,
)

WEIGHTS = ("qdq", "dynamic", "float")
DEFAULT_WEIGHTS = "dynamic"
OPSET = 17
# the check: with float kernels, exact weights (qdq / float) differ from torch only by the
# kernels' summation order; as deployed, int8 kernels (dynamic int8, and the MatMulNBits ORT
# fuses weight-only QDQ MatMuls into) round activations to 8 bits, so only the direction holds
EXACT_TOLERANCE = {"rtol": 1e-3, "atol": 1e-4, "cosine": 0.9999}
DEPLOYED_TOLERANCE = {"cosine": 0.99}


@dataclass
class OnnxReport:
    """What ``to_onnx`` wrote and how the file compares with the module it came from."""

    path: Path
    bytes: int
    weights: str
    opset: int
    tensors: dict[str, int] = field(default_factory=dict)  # "qdq" / "dynamic" / "float" counts
    check: dict[str, float] | None = None


@dataclass(frozen=True)
class _Grid:
    """A grid as ONNX stores it: integers of int8/uint8, 1-D (or scalar) scale and zero point
    along ``axis``."""

    ints: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None

    def transposed(self) -> _Grid:
        axis = None if self.axis is None else 1 - self.axis
        return _Grid(np.ascontiguousarray(self.ints.T), self.scale, self.zero_point, axis)

    def signed(self) -> _Grid:
        """The same values on int8 integers (uint8 ones shifted by 128, zero point too)."""
        if self.ints.dtype == np.int8:
            return self
        shift = lambda a: (a.astype(np.int16) - 128).astype(np.int8)  # noqa: E731
        return _Grid(shift(self.ints), self.scale, shift(self.zero_point), self.axis)


def onnx_grid(grid: IntGrid) -> _Grid | None:
    """``grid`` as int8 (signed) or uint8 (unsigned) integers with an integer zero point and a
    float32 scale varying along at most one axis; None when it is not one (it stays float)."""
    if grid.bits > 8 or grid.scale.dtype != torch.float32:
        return None
    zp = grid.zero_point.to(torch.float64)
    if not torch.equal(zp, torch.round(zp)):
        return None
    ints = grid.ints.to(torch.int64)
    lo, hi = (-128, 127) if grid.signed else (0, 255)
    if ints.numel() and (int(ints.min()) < lo or int(ints.max()) > hi):
        return None
    if zp.numel() and (float(zp.min()) < lo or float(zp.max()) > hi):
        return None
    shape = tuple(ints.shape)
    scale, zero = grid.scale, grid.zero_point
    axis = grid.axis
    if axis is None:
        varying = [d for d in range(len(shape)) if max(scale.dim(), zero.dim()) > 0 and (
            _size(scale, d, len(shape)) > 1 or _size(zero, d, len(shape)) > 1)]  # fmt: skip
        if len(varying) > 1:
            return None
        axis = varying[0] if varying else None
    if axis is not None and axis < 0:
        axis += len(shape)
    n = 1 if axis is None else shape[axis]
    try:
        scale = torch.broadcast_to(scale.reshape(-1), (n,)).contiguous()
        zero = torch.broadcast_to(zero.reshape(-1), (n,)).contiguous()
    except RuntimeError:
        return None
    dtype = np.int8 if grid.signed else np.uint8
    if axis is None:
        scale, zero = scale.reshape(()), zero.reshape(())
    return _Grid(
        ints.numpy().astype(dtype),
        scale.numpy().astype(np.float32),
        zero.to(torch.int64).numpy().astype(dtype),
        axis,
    )


def _size(t: torch.Tensor, d: int, ndim: int) -> int:
    """The size of ``t`` along dimension ``d`` of an ``ndim``-D tensor it broadcasts to."""
    offset = ndim - t.dim()
    return 1 if d < offset else t.shape[d - offset]


class _Graph:
    """An ONNX graph being rewritten: initializers and consumers by name, nodes to add."""

    def __init__(self, model: Any) -> None:
        self.onnx = require("onnx")
        self.model = model
        self.graph = model.graph
        self.inits = {i.name: i for i in self.graph.initializer}
        self.users: dict[str, list[Any]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.users.setdefault(name, []).append(node)
        self.front: list[Any] = []  # nodes fed by initializers alone: placed first
        self.replaced: dict[int, list[Any]] = {}  # id(node) → nodes in its place
        self.removed: set[int] = set()
        self.dql: dict[str, Any] = {}  # activation name → its DynamicQuantizeLinear

    def const(self, name: str, array: np.ndarray) -> str:
        self.graph.initializer.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def drop_initializer(self, name: str) -> None:
        self.graph.initializer.remove(self.inits.pop(name))

    def node(self, op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> Any:
        return self.onnx.helper.make_node(op, inputs, outputs, name=outputs[0] + "_" + op, **attrs)

    def dequantize(self, name: str, grid: _Grid, output: str) -> None:
        """``output`` = DequantizeLinear of ``grid`` stored under ``name``."""
        args = [
            self.const(f"{name}_quantized", grid.ints),
            self.const(f"{name}_scale", grid.scale),
            self.const(f"{name}_zero_point", grid.zero_point),
        ]
        attrs = {} if grid.axis is None else {"axis": grid.axis}
        self.front.append(self.node("DequantizeLinear", args, [output], **attrs))

    def gather_rows(self, name: str, grid: _Grid, users: list[Any]) -> bool:
        """Embedding lookups (``Gather`` along axis 0 of the table ``name``) of the integers,
        dequantizing only the rows looked up — a DequantizeLinear of the whole table would run
        on every call (onnxruntime does not constant-fold it). Same float ops as the exact
        module: (float(ints) − zero point) × scale. False when ``users`` are not all such."""
        onnx = self.onnx
        for node in users:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type != "Gather" or node.input[0] != name or attrs.get("axis", 0) != 0:
                return False
        if grid.ints.ndim != 2 or grid.axis not in (None, 0, 1):
            return False
        shape = {None: [], 0: [-1, 1], 1: [1, -1]}[grid.axis]
        table = self.const(f"{name}_quantized", grid.ints)
        scale = self.const(f"{name}_scale", grid.scale.reshape(shape))
        zero = self.const(f"{name}_zero_point", grid.zero_point.astype(np.float32).reshape(shape))
        for node in users:
            out, ids = node.output[0], node.input[1]
            if grid.axis == 0:  # one scale per row: look those up too
                scale_in, zero_in = f"{out}_row_scale", f"{out}_row_zero_point"
                nodes = [self.node("Gather", [scale, ids], [scale_in]),
                         self.node("Gather", [zero, ids], [zero_in])]  # fmt: skip
            else:
                scale_in, zero_in, nodes = scale, zero, []
            nodes += [
                self.node("Gather", [table, ids], [f"{out}_row_ints"]),
                self.node("Cast", [f"{out}_row_ints"], [f"{out}_row_float"], to=1),
                self.node("Sub", [f"{out}_row_float", zero_in], [f"{out}_row_centered"]),
                self.node("Mul", [f"{out}_row_centered", scale_in], [out]),
            ]
            self.replaced[id(node)] = nodes
        return True

    def quantized_input(self, x: str) -> tuple[str, str, str]:
        """DynamicQuantizeLinear of activation ``x``: one per tensor, shared by its users,
        placed before the first of them by ``finish``."""
        if x not in self.dql:
            names = [f"{x}_dynamic_uint8", f"{x}_dynamic_scale", f"{x}_dynamic_zero_point"]
            self.dql[x] = self.node("DynamicQuantizeLinear", [x], names)
        q, s, z = self.dql[x].output
        return q, s, z

    def matmul_integer(self, node: Any, name: str, grid: _Grid) -> bool:
        """Replace MatMul / Gemm ``node`` whose weight input is ``name`` by the dynamic int8
        form; False (nothing changed) when the node is not one it applies to."""
        attrs = {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "MatMul" and list(node.input).index(name) == 1:
            pass
        elif node.op_type == "Gemm" and len(node.input) >= 2 and node.input[1] == name:
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
                return False
            if len(node.input) > 2 and attrs.get("beta", 1.0) != 1.0:
                return False
            if attrs.get("transB", 0):
                grid = grid.transposed()
        else:
            return False
        if grid.ints.ndim != 2 or grid.axis == 0:  # scales along K cannot leave the sum
            return False
        grid = grid.signed()
        out = node.output[0]
        xq, xs, xz = self.quantized_input(node.input[0])
        w = self.const(f"{name}_quantized", grid.ints)
        wz = self.const(f"{name}_zero_point", grid.zero_point)
        ws = self.const(f"{name}_scale", grid.scale)
        product = out if node.op_type == "MatMul" or len(node.input) < 3 else f"{out}_matmul"
        nodes = [
            self.node("MatMulInteger", [xq, w, xz, wz], [f"{out}_int32"]),
            self.node("Cast", [f"{out}_int32"], [f"{out}_float"], to=1),
            self.node("Mul", [xs, ws], [f"{out}_scales"]),
            self.node("Mul", [f"{out}_float", f"{out}_scales"], [product]),
        ]
        if product != out:
            nodes.append(self.node("Add", [product, node.input[2]], [out]))
        self.replaced[id(node)] = nodes
        return True

    def finish(self) -> None:
        nodes = list(self.front)
        quantizers = {n.output[0]: n for n in self.dql.values()}
        for node in self.graph.node:
            if id(node) in self.removed:
                continue
            for new in self.replaced.get(id(node), [node]):
                for name in new.input:
                    if name in quantizers:
                        nodes.append(quantizers.pop(name))
                nodes.append(new)
        del self.graph.node[:]
        self.graph.node.extend(nodes)


def quantize_initializers(model: Any, grids: dict[str, IntGrid | None], weights: str) -> dict:
    """Rewrite ``model`` (an onnx ModelProto, in place): the initializers ``grids`` names as
    their integers (``weights`` "qdq" or "dynamic", see the module docstring). Returns how many
    tensors took each form."""
    counts = {"qdq": 0, "dynamic": 0, "float": 0}
    if weights == "float":
        counts["float"] = sum(1 for g in grids if g is not None)
        return counts
    g = _Graph(model)
    for key, grid in grids.items():
        name = PREFIX + key
        if name not in g.inits:
            continue
        stored = None if grid is None else onnx_grid(grid)
        array = g.onnx.numpy_helper.to_array(g.inits[name])
        if stored is None or tuple(array.shape) != stored.ints.shape:
            counts["float"] += 1
            continue
        users = g.users.get(name, [])
        output = name
        if (
            len(users) == 1
            and users[0].op_type == "Transpose"
            and stored.ints.ndim == 2
            and list(g.onnx.helper.get_attribute_value(users[0].attribute[0])) == [1, 0]
        ):
            g.removed.add(id(users[0]))
            stored, output = stored.transposed(), users[0].output[0]
            users = g.users.get(output, [])
        g.drop_initializer(name)
        if weights == "dynamic" and len(users) == 1 and g.matmul_integer(users[0], output, stored):
            counts["dynamic"] += 1
            continue
        if users and g.gather_rows(output, stored, users):
            counts["qdq"] += 1
            continue
        g.dequantize(output, stored, output)
        counts["qdq"] += 1
    g.finish()
    return counts


def export_graph(
    model: nn.Module, example: Inputs, dynamic: dict[str, dict[int, str]], opset: int
) -> tuple[Any, dict[str, IntGrid | None]]:
    """The ONNX ModelProto of ``model``'s deployable form traced on ``example``, and the
    grids of its quantized tensors."""
    onnx = require("onnx")
    if opset < 17:
        raise ExportError(f"opset {opset}: jointcomp writes opset 17 or later")
    plain, grids = deployable(model)
    names = list(example)
    outputs = output_names(plain, example)
    axes: dict[str, dict[int, str]] = {k: v for k, v in dynamic.items() if k in names}
    with torch.no_grad():
        for name, value in zip(outputs, flat_outputs(call(plain, example)), strict=True):
            if value.dim() and 0 in axes.get(names[0], {}):
                axes[name] = {0: "batch"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation, tracer notes
        torch.onnx.export(
            Traced(plain, names),
            tuple(example.values()),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=names,
            output_names=outputs,
            dynamic_axes=axes,
            do_constant_folding=False,
        )
    return onnx.load_from_string(buffer.getvalue()), grids


def session(
    source: str | Path | bytes, threads: int | None = None, *, float_kernels: bool = False
) -> Any:
    """An onnxruntime CPU session of ``source`` (``threads`` intra-op threads; None: ORT's
    default). ``float_kernels``: keep weight-only QDQ MatMuls in float (ORT otherwise fuses
    them into ``MatMulNBits``, which by default rounds the activations to int8)."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if float_kernels:
        options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    data = source if isinstance(source, bytes) else str(source)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def feeds(sess: Any, inputs: Inputs) -> dict[str, np.ndarray]:
    """``inputs`` as numpy arrays for the graph inputs ``sess`` has (the exporter leaves out
    inputs a graph does not use)."""
    return {i.name: inputs[i.name].detach().cpu().numpy() for i in sess.get_inputs()}


def _problems(result: dict[str, float], tolerance: dict[str, float], scale: float) -> list[str]:
    problems = []
    if "atol" in tolerance:
        bound = tolerance["atol"] + tolerance.get("rtol", 0.0) * scale
        if not result["max_abs_err"] <= bound:
            problems.append(f"max abs error {result['max_abs_err']:.3g} > {bound:.3g}")
    if not result["cosine"] >= tolerance.get("cosine", -1.0):
        problems.append(f"cosine {result['cosine']:.6f} < {tolerance['cosine']}")
    return problems


def check_onnx(
    source: str | Path | bytes,
    model: nn.Module,
    samples: Inputs,
    *,
    exact: bool = True,
    tolerance: dict[str, float] | None = None,
) -> dict[str, float]:
    """Run ``source`` in onnxruntime on ``samples`` and compare with ``model`` (the exact
    module). Returns, as onnxruntime runs the file by default: ``max_abs_err``, the smallest
    per-sample ``cosine``, ``top1_agreement`` for 2-D outputs; with ``exact`` (a graph of
    exact weights: "qdq" or "float") also ``exact_max_abs_err``, with float kernels throughout.

    ExportCheckError when the float-kernel run passes EXACT_TOLERANCE (the file holds other
    values than the module), or the default run passes ``tolerance`` (default
    DEPLOYED_TOLERANCE: a least cosine)."""
    with torch.no_grad():
        reference = flat_outputs(call(model.eval(), samples))
    scale = max((float(r.abs().max()) for r in reference if r.numel()), default=0.0)
    problems = []
    exact_err = None
    if exact:
        sess = session(source, float_kernels=True)
        strict = compare(reference, sess.run(None, feeds(sess, samples)))
        exact_err = strict["max_abs_err"]
        problems += [f"{p} with float kernels" for p in _problems(strict, EXACT_TOLERANCE, scale)]
    sess = session(source)
    result = compare(reference, sess.run(None, feeds(sess, samples)))
    problems += _problems(result, tolerance or DEPLOYED_TOLERANCE, scale)
    if problems:
        raise ExportCheckError("the ONNX file does not match the module: " + "; ".join(problems))
    if exact_err is not None:
        result["exact_max_abs_err"] = exact_err
    return result


def to_onnx(
    model: nn.Module,
    path: str | Path,
    example: Inputs,
    *,
    samples: Inputs | None = None,
    dynamic: dict[str, dict[int, str]] | None = None,
    weights: str = DEFAULT_WEIGHTS,
    opset: int = OPSET,
    check: bool = True,
    tolerance: dict[str, float] | None = None,
) -> OnnxReport:
    """Write ``model`` (a decoded file's exact module) as ONNX at ``path``, traced on
    ``example`` (inputs by name; ``{"input": x}`` for one positional input) with ``dynamic``
    axes, and check the written file in onnxruntime on ``samples`` (default: ``example``).

    >>> import tempfile, torch, jointcomp
    >>> from jointcomp.export import to_onnx
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> model, _ = jointcomp.quantize(model, {"ptq": {}, "bits": {"weights": 4}})
    >>> path = tempfile.mkdtemp() + "/model.onnx"
    >>> report = to_onnx(model, path, {"input": torch.randn(1, 8)}, weights="qdq")
    >>> report.tensors["qdq"], report.check["exact_max_abs_err"] < 1e-5
    (2, True)
    """
    if weights not in WEIGHTS:
        raise ExportError(f"weights {weights!r}: one of {', '.join(WEIGHTS)}")
    onnx = require("onnx")
    if dynamic is None:  # the batch axis of every input
        dynamic = {k: {0: "batch"} for k, v in example.items() if v.dim()}
    proto, grids = export_graph(model, example, dynamic, opset)
    counts = quantize_initializers(proto, grids, weights)
    proto.producer_name = "jointcomp"
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    report = OnnxReport(Path(path), len(data), weights, opset, counts)
    if check:
        report.check = check_onnx(
            data, model, example if samples is None else samples,
            exact=counts["dynamic"] == 0, tolerance=tolerance,
        )  # fmt: skip
    write_atomic(path, data)
    return report


def time_session(sess: Any, inputs: Inputs, min_run_time: float = 0.5) -> float:
    """Median milliseconds of one ``sess.run`` on ``inputs`` over at least ``min_run_time``
    seconds (after a warm-up run)."""
    feed = feeds(sess, inputs)
    sess.run(None, feed)
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_run_time or len(times) < 5:
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3
