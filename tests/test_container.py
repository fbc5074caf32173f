"""The .jcz file: structure and tensors round-trip bit-exactly; anything malformed is a
FormatError."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from torch import nn

from jointcomp.container import TensorChoice, open_artifact, read_header, save
from jointcomp.container.framing import PREFIX_SIZE, pack, unpack
from jointcomp.container.header_dict import HEADER_DICT, HEADER_DICT_ADLER32
from jointcomp.errors import FormatError, ModelError
from jointcomp.models import build_model
from jointcomp.stages.prune import attention_heads


def _pruned(builder: str, kwargs: dict, shape: tuple[int, ...], ratio: float = 0.5) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(builder, kwargs).eval()
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    pruner = tp.pruner.BasePruner(
        model,
        torch.randn(1, *shape),
        importance=tp.importance.GroupMagnitudeImportance(p=1),
        pruning_ratio=ratio,
        ignored_layers=[last],
        num_heads=attention_heads(model),
    )
    pruner.step()
    return model.eval()


@pytest.mark.parametrize(
    "builder,kwargs,shape",
    [
        ("zoo:lenet5", {}, (1, 28, 28)),
        ("zoo:small_cnn", {}, (1, 8, 8)),
        ("zoo:resnet20", {"in_channels": 1}, (1, 28, 28)),
        ("zoo:vit", {}, (1, 28, 28)),
    ],
)
def test_pruned_model_round_trip_is_bit_exact(tmp_path: Path, builder, kwargs, shape) -> None:
    model = _pruned(builder, kwargs, shape)
    with torch.no_grad():  # give BN stats non-default values so they must travel too
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    path = tmp_path / "m.jcz"
    report = save(path, model, builder, kwargs)
    art = open_artifact(path)
    assert report.file_bytes == path.stat().st_size == art.file_bytes
    x = torch.randn(4, *shape)
    with torch.no_grad():
        assert torch.equal(model(x), art.model(x))
    for (n1, t1), (n2, t2) in zip(model.state_dict().items(), art.model.state_dict().items()):
        assert n1 == n2 and torch.equal(t1, t2)
    assert art.manifest.edits, "pruned layers must be recorded as structural edits"


def test_unpruned_model_needs_no_edits(tmp_path: Path) -> None:
    model = build_model("zoo:lenet300", {}).eval()
    save(tmp_path / "m.jcz", model, "zoo:lenet300", {})
    art = open_artifact(tmp_path / "m.jcz")
    assert art.manifest.edits == [] and art.manifest.attrs == []


def test_replaced_layer_lists_only_arguments_off_their_defaults(tmp_path: Path) -> None:
    """A layer of another type than the builder's (a CP conv for lenet5's conv2) is described
    by the constructor arguments that differ from the defaults; the reader's constructor fills
    in the rest and rebuilds the same layer."""
    from jointcomp.nn.cp import CPConv2d
    from jointcomp.registry import module_type_of

    model = build_model("zoo:lenet5", {}).eval()
    conv = model.get_submodule("conv2")
    cp = CPConv2d(conv.in_channels, conv.out_channels, list(conv.kernel_size), 3)
    model.conv2 = cp
    path = tmp_path / "cp.jcz"
    save(path, model, "zoo:lenet5", {})
    art = open_artifact(path)
    (edit,) = [e for e in art.manifest.edits if e[0] == "conv2"]
    full = module_type_of(cp).config(cp)
    assert edit[1] == "CPConv2d" and set(edit[2]) < set(full)
    assert "stride" not in edit[2] and "groups" not in edit[2]  # 1 and [1, 1]: the defaults
    assert module_type_of(art.model.conv2).config(art.model.conv2) == full
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), art.model(x))


class TiedNet(nn.Module):
    """Encoder and decoder share one weight (as in tied embeddings)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(6, 6, bias=False)
        self.dec = nn.Linear(6, 6)
        self.dec.weight = self.enc.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(torch.relu(self.enc(x)))


def test_tied_parameters_stored_once_and_stay_tied(tmp_path: Path) -> None:
    model = TiedNet().eval()
    path = tmp_path / "tied.jcz"
    report = save(path, model, "tests.test_container:TiedNet", {})
    assert [e["n"] for e in report.entries] == ["enc.weight", "dec.bias"]
    art = open_artifact(path, trust=True)
    assert art.manifest.ties == {"dec.weight": "enc.weight"}
    assert art.model.dec.weight is art.model.enc.weight
    x = torch.randn(3, 6)
    assert torch.equal(model(x), art.model(x))


def test_module_added_outside_the_builder_is_refused(tmp_path: Path) -> None:
    model = build_model("zoo:lenet300", {}).eval()
    model.extra = nn.Sequential(nn.ReLU())  # not registered and not what the builder makes
    with pytest.raises(ModelError, match="extra"):
        save(tmp_path / "bad.jcz", model, "zoo:lenet300", {})


def test_unregistered_module_type_is_refused(tmp_path: Path) -> None:
    class Weird(nn.Module):
        def forward(self, x):
            return x

    model = build_model("zoo:lenet300", {})
    model.act = Weird()
    with pytest.raises(ModelError, match="not a registered module type"):
        save(tmp_path / "m.jcz", model, "zoo:lenet300", {})


def test_untrusted_builder_is_refused(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 2))
    path = tmp_path / "m.jcz"
    save(path, model, "torch.nn:Sequential", {})
    with pytest.raises(FormatError, match="not on the allow-list"):
        open_artifact(path)


def _image(tmp_path: Path) -> bytes:
    model = _pruned("zoo:small_cnn", {}, (1, 8, 8))
    path = tmp_path / "m.jcz"
    save(path, model, "zoo:small_cnn", {})
    return path.read_bytes()


def test_every_truncation_is_a_format_error(tmp_path: Path) -> None:
    data = _image(tmp_path)
    for n in list(range(0, 64)) + list(range(64, len(data), 97)) + [len(data) - 1]:
        with pytest.raises(FormatError):
            open_artifact(data[:n])


def test_byte_flips_are_format_errors(tmp_path: Path) -> None:
    data = _image(tmp_path)
    for pos in list(range(0, PREFIX_SIZE + 8)) + list(range(PREFIX_SIZE, len(data), 53)):
        corrupted = bytearray(data)
        corrupted[pos] ^= 0x41
        with pytest.raises(FormatError):
            open_artifact(bytes(corrupted))


def test_resealed_malicious_headers_are_rejected() -> None:
    """A crafted file with valid checksums but lying fields must still be refused cleanly."""
    base = {"model": {"builder": "zoo:lenet300", "kwargs": {}}, "tensors": []}
    cases = {
        "payload lengths": {
            **base,
            "tensors": [{"n": "fc1.weight", "s": [300, 784], "d": "f32", "c": "plain", "b": 10**9}],
        },
        "more than": {
            **base,
            "tensors": [{"n": "fc1.weight", "s": [2**20, 2**20], "d": "f32", "c": "plain", "b": 0}],
        },
        "unknown dtype": {
            **base,
            "tensors": [{"n": "x", "s": [1], "d": "f128", "c": "plain", "b": 0}],
        },
        "invalid shape": {
            **base,
            "tensors": [{"n": "x", "s": [-1], "d": "f32", "c": "plain", "b": 0}],
        },
        "does not match the model": {
            **base,
            "tensors": [{"n": "fc9.weight", "s": [0], "d": "f32", "c": "plain", "b": 0}],
        },
        "not registered": {
            **base,
            "model": {"builder": "zoo:lenet300", "kwargs": {}, "edits": [["fc1", "Evil", {}]]},
        },
        "cannot build": {
            **base,
            "model": {
                "builder": "zoo:lenet300",
                "kwargs": {},
                "edits": [["fc1", "Linear", {"in_features": -5}]],
            },
        },
    }
    for expected, header in cases.items():
        with pytest.raises(FormatError, match=expected):
            open_artifact(pack(header, []))


def test_wrong_magic() -> None:
    image = pack({"model": {"builder": "zoo:lenet300", "kwargs": {}}, "tensors": []}, [])
    with pytest.raises(FormatError, match="bad magic"):
        unpack(b"PK\x03\x04" + image[4:])


def test_header_is_deflated_json_with_crc() -> None:
    image = pack({"model": {"builder": "zoo:x", "kwargs": {}}, "tensors": []}, [])
    _, major, minor, length, crc = struct.unpack_from("<8sHHII", image, 0)
    header = image[PREFIX_SIZE : PREFIX_SIZE + length]
    assert (major, minor) == (1, 7) and zlib.crc32(header) == crc
    inflater = zlib.decompressobj(zdict=HEADER_DICT)
    assert inflater.decompress(header).startswith(b'{"model"')


def test_header_dictionary_is_frozen() -> None:
    # a file written with another dictionary could not be read: it changes only with the version
    assert zlib.adler32(HEADER_DICT) == HEADER_DICT_ADLER32 == 313033898
    assert len(HEADER_DICT) == 24572
    header = {"model": {"builder": "zoo:x", "kwargs": {}}, "tensors": []}
    text = json.dumps(header, separators=(",", ":")).encode()
    _, _, _, length, _ = struct.unpack_from("<8sHHII", pack(header, []), 0)
    assert length < len(zlib.compress(text, 9))  # the dictionary pays even on a tiny header


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="no such file"):
        open_artifact(tmp_path / "absent.jcz")


def test_quantized_and_codebook_tensors_round_trip(tmp_path: Path) -> None:
    from jointcomp.nn.quantized import Codebook, IntQuantized, attach, quantized_tensors

    torch.manual_seed(0)
    model = _pruned("zoo:lenet5", {}, (1, 28, 28))
    w = model.conv2.weight.detach()
    scale = w.abs().amax(dim=(1, 2, 3), keepdim=True) / 7
    ints = torch.clamp(torch.round(w / scale), -8, 7)
    attach(model.conv2, "weight", IntQuantized.from_ints(ints, scale, bits=4, axis=0))
    idx = torch.randint(0, 16, model.fc1.weight.shape)
    attach(model.fc1, "weight", Codebook.from_assignment(idx, torch.linspace(-0.1, 0.1, 16), 0))
    assert set(quantized_tensors(model)) == {"conv2.weight", "fc1.weight"}
    assert torch.equal(model.conv2.weight, ints * scale)
    assert float(model.fc1.weight.detach()[idx == 0].abs().sum()) == 0.0

    path = tmp_path / "q.jcz"
    report = save(
        path,
        model,
        "zoo:lenet5",
        {},
        choose=lambda n, t: TensorChoice("plain" if t.is_floating_point() else "auto"),
    )
    coded = {e["n"]: e for e in report.entries}
    assert coded["conv2.parametrizations.weight.0.int_repr"]["d"] == "i8"
    assert coded["conv2.parametrizations.weight.0.int_repr"]["c"] != "plain"
    assert coded["fc1.parametrizations.weight.0.indices"]["d"] == "u8"
    art = open_artifact(path)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), art.model(x))
    assert torch.equal(art.model.conv2.weight, model.conv2.weight)
    # 4-bit integers cost about half a byte each, not four
    int_bytes = coded["conv2.parametrizations.weight.0.int_repr"]["b"]
    assert int_bytes < 0.6 * model.conv2.weight.numel()


def test_all_zero_tensors_need_no_entry_and_negative_zero_is_kept(tmp_path: Path) -> None:
    """Tensors that the rebuilt module already has right (every bit zero, same shape) are left
    out of the table and come back bit for bit; -0.0 is not +0.0 and is stored."""
    from jointcomp.nn.quantized import IntQuantized, attach

    model = build_model("zoo:lenet300", {}).eval()
    with torch.no_grad():
        model.fc1.bias.zero_()
        model.fc2.bias.fill_(-0.0)
    w = model.fc3.weight.detach()
    attach(model.fc3, "weight", IntQuantized.from_ints(torch.round(w / 0.01), 0.01, bits=8))
    report = save(tmp_path / "z.jcz", model, "zoo:lenet300", {})
    names = {e["n"] for e in report.entries}
    assert "fc1.bias" not in names and "fc2.bias" in names
    assert "fc3.parametrizations.weight.0.zero_point" not in names  # symmetric: 0
    assert "fc3.parametrizations.weight.original" not in names  # an empty placeholder
    loaded = open_artifact(tmp_path / "z.jcz").model
    for (n1, t1), (n2, t2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and t1.dtype == t2.dtype and torch.equal(t1.view(-1), t2.view(-1))
    assert torch.signbit(loaded.fc2.bias).all() and not torch.signbit(loaded.fc1.bias).any()


def test_parametrization_types_are_allow_listed() -> None:
    header = {
        "model": {
            "builder": "zoo:lenet300",
            "kwargs": {},
            "edits": [["fc1", "@parametrize", {"weight": [["Linear", {}]]}]],
        },
        "tensors": [],
    }
    with pytest.raises(FormatError, match="not a parametrization type"):
        open_artifact(pack(header, []))


def test_scalars_share_one_entry(tmp_path: Path) -> None:
    """A quantized model's per-tensor scales sit in one packed entry at the end of the table.
    Opening expands them back."""
    from jointcomp.nn.quantized import attach
    from jointcomp.quant import QuantSpec, ptq_tensor

    model = build_model("zoo:lenet300", {}).eval()
    for layer in (model.fc2, model.fc3):
        spec = QuantSpec(4, "tensor", True, True)
        attach(layer, "weight", ptq_tensor(layer.weight.detach(), spec, None, "absmax"))
    save(tmp_path / "m.jcz", model, "zoo:lenet300", {})
    image = (tmp_path / "m.jcz").read_bytes()
    table = unpack(image).header["tensors"]
    packed = table[-1]
    assert isinstance(packed["n"], list) and len(packed["n"]) == 2
    assert "b" not in packed  # two f32 scalars imply their 8 bytes
    assert not any(isinstance(e.get("n"), list) for e in table[:-1])
    art = open_artifact(image)
    names = [e["n"] for e in art.entries]
    assert names[-2:] == [
        "fc2.parametrizations.weight.0.scale",
        "fc3.parametrizations.weight.0.scale",
    ]
    x = torch.randn(4, 784)
    with torch.no_grad():
        assert torch.equal(model(x), art.model(x))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda e: e.__setitem__("b", e["b"] + 2), "need 8 bytes"),
        (lambda e: e.__setitem__("s", [1]), "plain 0-d"),
        (lambda e: e.__setitem__("n", []), "non-empty list"),
        (lambda e: e.__setitem__("d", "f128"), "unknown dtype"),
    ],
)
def test_malformed_packed_scalars_are_format_errors(change, message) -> None:
    entry = {"n": ["a.scale", "b.scale", "c.scale", "d.scale"], "s": [], "d": "f32"}
    entry.update(st="f16", c="plain", b=8)
    change(entry)
    header = {"model": {"builder": "zoo:lenet300", "kwargs": {}}, "tensors": [entry]}
    with pytest.raises(FormatError, match=message):
        open_artifact(pack(header, [bytes(8)]))


def _lenet300_quantized(tmp_path: Path) -> tuple[nn.Module, bytes]:
    from jointcomp.nn.quantized import attach
    from jointcomp.quant import QuantSpec, ptq_tensor

    model = build_model("zoo:lenet300", {}).eval()
    for layer in (model.fc2, model.fc3):
        spec = QuantSpec(4, "tensor", True, True)
        attach(layer, "weight", ptq_tensor(layer.weight.detach(), spec, None, "absmax"))
    save(tmp_path / "m.jcz", model, "zoo:lenet300", {})
    return model, (tmp_path / "m.jcz").read_bytes()


def test_table_leaves_out_what_the_structure_implies(tmp_path: Path) -> None:
    """Entries in state-dict order carry no name, shape or dtype (skips where the writer omitted
    zero tensors); the header is smaller than with every name spelled out, and both tables open
    to the same module."""
    model, image = _lenet300_quantized(tmp_path)
    frame, _, named, _ = read_header(image)
    table = frame.header["tensors"]
    assert all(not isinstance(e.get("n"), str) for e in table)
    assert all("s" not in e and "d" not in e for e in table[:-1])
    assert [e["n"] for e in named][:2] == ["fc1.weight", "fc1.bias"]
    spelled = json.loads(json.dumps(frame.header))
    spelled["tensors"] = [{**e} for e in named]  # every field spelled out, scalars unpacked
    explicit = pack(spelled, [bytes(frame.payload)])
    assert len(explicit) > len(image)
    x = torch.randn(4, 784)
    with torch.no_grad():
        assert torch.equal(model(x), open_artifact(image).model(x))
        assert torch.equal(model(x), open_artifact(explicit).model(x))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda t: t[-2].__setitem__("n", 10**6), "runs past the model's"),
        (lambda t: t[-1].__setitem__("n", [0, 10**6]), "runs past the model's"),
        (lambda t: t[0].__setitem__("n", -1), "invalid name -1"),
        (lambda t: t[0].__setitem__("n", True), "invalid name True"),
        # fc1.weight is stored plain: a lying shape implies a length the payload disagrees with
        (lambda t: t[0].__setitem__("s", [3]), "payload lengths .* add up to"),
    ],
)
def test_implied_names_that_lie_are_format_errors(tmp_path: Path, change, message) -> None:
    _, image = _lenet300_quantized(tmp_path)
    frame = unpack(image)
    header = json.loads(json.dumps(frame.header))
    change(header["tensors"])
    with pytest.raises(FormatError, match=message):
        open_artifact(pack(header, [bytes(frame.payload)]))


def test_implied_names_need_a_trusted_builder(tmp_path: Path) -> None:
    """The structure must be built to name a table's implied tensors: refused before anything
    is built for a builder outside the allow-list, read with trust."""
    model = TiedNet().eval()
    path = tmp_path / "tied.jcz"
    save(path, model, "tests.test_container:TiedNet", {})
    assert "n" not in unpack(path.read_bytes()).header["tensors"][0]
    with pytest.raises(FormatError, match="not on the allow-list"):
        read_header(path.read_bytes())
    _, _, entries, _ = read_header(path.read_bytes(), trust=True)
    assert [e["n"] for e in entries] == ["enc.weight", "dec.bias"]
